"""The Raft-replicated cluster store."""
import socket as _socket

# pysyncobj's TCP connection imports its `win_inet_pton`, which replaces
# `socket.inet_ntop` on every OS with a Windows-only stand-in that raises elsewhere;
# a manager also runs the overlay data plane, whose netlink decoding (pyroute2) calls
# it for every address. Import it once here and put the real function back.
_inet_ntop = _socket.inet_ntop
import pysyncobj.win_inet_pton  # noqa: E402,F401
_socket.inet_ntop = _inet_ntop

from swarmlet.store.raft import RaftSettings, RaftView
from swarmlet.store.store import (AlreadyExists, ClusterStore, CommitTimeout, Conflict, InvalidTransaction,
                                  MAX_TRANSACTION_BYTES, MAX_TRANSACTION_OPS, NoQuorum, NotFound, StoreError,
                                  StoreEvent, TransactionTooLarge, new_request_id)
from swarmlet.store.transport import TlsPolicy

__all__ = ["AlreadyExists", "ClusterStore", "CommitTimeout", "Conflict", "InvalidTransaction",
           "MAX_TRANSACTION_BYTES", "MAX_TRANSACTION_OPS", "NoQuorum",
           "NotFound", "RaftSettings", "RaftView", "StoreError", "StoreEvent", "TlsPolicy", "TransactionTooLarge",
           "new_request_id"]
