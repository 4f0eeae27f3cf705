"""One real ReplicatedStore with one peer that never connects: a test delivers the
peer's messages by direct calls of the message handler and reads what the manager
sends back (no timing, no second process). Used by the Raft hazard tests."""
from __future__ import annotations

import socket
import struct
import time

from swarmlet.store.raft import PRE_VOTE, PRE_VOTE_REPLY, RaftSettings, ReplicatedStore
from swarmlet.store.transport import TlsPolicy

CLUSTER_KEY = "test-cluster-key"
ADDRESS = "127.0.239.2"
PEER = "127.0.239.3"  # never listened on; a larger address, so this manager never dials it
NO_OP = struct.pack("B", 1)  # pysyncobj's no-op entry (applies to nothing)


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def no_tls():
    raise AssertionError("no connection is ever opened")


class Manager:
    """A ReplicatedStore with one peer that never connects; the test delivers the
    peer's messages and collects what the manager sends it."""

    def __init__(self, data_dir, on_view=lambda view: None):
        # Elections only when the test starts one: nothing here depends on timing.
        settings = RaftSettings(election_timeout_min=600.0, election_timeout_max=601.0,
                                leader_fallback_timeout=600.0, connection_timeout=602.0,
                                snapshot_every_entries=1_000_000,
                                snapshot_min_interval=3600.0, extra={"autoTick": False})
        self.raft = ReplicatedStore(f"{ADDRESS}:{free_port(ADDRESS)}", [f"{PEER}:{free_port(PEER)}"],
                                    str(data_dir), CLUSTER_KEY, TlsPolicy(no_tls, no_tls, lambda der: "none"),
                                    settings, on_applied=lambda applied: None, on_reset=lambda: None,
                                    on_view=on_view)
        self.peer = next(iter(self.raft.otherNodes))
        self.sent: list[dict] = []
        transport = self.raft._SyncObj__transport
        transport.send = lambda node, message: self.sent.append(message) or True
        self.raft.doTick(0.0)  # loads nothing, binds the (unused) Raft port

    @property
    def log(self) -> list[tuple]:
        raft_log = self.raft._SyncObj__raftLog
        return [raft_log[i] for i in range(len(raft_log))]

    def indices(self) -> list[int]:
        return [entry[1] for entry in self.log]

    def receive(self, message: dict) -> list[dict]:
        """The replication replies (``next_node_idx``) the manager sent in answer."""
        return [m for m in self.deliver(message) if m["type"] == "next_node_idx"]

    def deliver(self, message: dict) -> list[dict]:
        """Every message the manager sent in answer to ``message`` from the peer."""
        self.sent.clear()
        self.raft._SyncObj__onMessageReceived(self.peer, message)
        return list(self.sent)

    def apply_committed(self) -> None:
        deadline = time.monotonic() + 10
        while self.raft.raftLastApplied < self.raft.raftCommitIndex:
            assert time.monotonic() < deadline
            self.raft.doTick(0.0)

    def close(self) -> None:
        self.raft._doDestroy()


def stand_and_win(manager: Manager) -> dict:
    """Make the manager leader: its deadline passes, the peer says yes to its pre-vote
    and votes for it. Returns the vote it asked for."""
    raft = manager.raft
    raft._SyncObj__connectedNodes.add(manager.peer)  # as if connected, so it stands for election
    raft._SyncObj__raftElectionDeadline = 0
    manager.sent.clear()
    raft.doTick(0.0)
    question = [m for m in manager.sent if m["type"] == PRE_VOTE][-1]
    manager.deliver({"type": PRE_VOTE_REPLY, "term": question["term"], "granted": True})
    manager.sent.clear()
    raft.doTick(0.0)
    vote = [m for m in manager.sent if m["type"] == "request_vote"][-1]
    manager.deliver({"type": "response_vote", "term": vote["term"]})
    assert raft._isLeader()
    return vote
