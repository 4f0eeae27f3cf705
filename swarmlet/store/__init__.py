"""The Raft-replicated cluster store."""
from swarmlet.store.raft import RaftSettings, RaftView
from swarmlet.store.store import (AlreadyExists, ClusterStore, CommitTimeout, Conflict, InvalidTransaction,
                                  MAX_TRANSACTION_BYTES, MAX_TRANSACTION_OPS, NoQuorum, NotFound, StoreError,
                                  StoreEvent, TransactionTooLarge, new_request_id)
from swarmlet.store.transport import TlsPolicy

__all__ = ["AlreadyExists", "ClusterStore", "CommitTimeout", "Conflict", "InvalidTransaction",
           "MAX_TRANSACTION_BYTES", "MAX_TRANSACTION_OPS", "NoQuorum",
           "NotFound", "RaftSettings", "RaftView", "StoreError", "StoreEvent", "TlsPolicy", "TransactionTooLarge",
           "new_request_id"]
