"""The Raft-replicated cluster store."""
from swarmlet.store.raft import RaftSettings, RaftView
from swarmlet.store.store import (AlreadyExists, ClusterStore, CommitTimeout, Conflict, InvalidTransaction,
                                  NoQuorum, NotFound, StoreError, StoreEvent, new_request_id)
from swarmlet.store.transport import TlsPolicy

__all__ = ["AlreadyExists", "ClusterStore", "CommitTimeout", "Conflict", "InvalidTransaction", "NoQuorum",
           "NotFound", "RaftSettings", "RaftView", "StoreError", "StoreEvent", "TlsPolicy", "new_request_id"]
