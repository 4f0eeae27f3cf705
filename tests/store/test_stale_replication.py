"""A follower must not lose an entry it acknowledged because of a stale or repeated
Raft message: the leader counted its acknowledgement towards a commit, and a follower
without the entry can vote for a candidate without it (an acknowledged write was lost
so in a chaos run, docs/failover-testing.md). pysyncobj 0.3.17 breaks that three ways;
each test here feeds one real ReplicatedStore the messages that do it, by direct calls
of its message handler (no peer, no timing), and reads the replies it sends.

(a) The leader moves a follower's next index to any step-back reply, also a stale one
    below what the follower has since acknowledged.
(b) A follower installing the leader's snapshot empties its log, also the entries
    after the snapshot's last one that it holds and acknowledged; and each chunk of a
    snapshot advances its commit index over entries not known to be the leader's.
(c) An AppendEntries whose previous entry is not the follower's last truncates every
    entry after it, matching and applied ones too, and re-adds only what it carries.
"""
from __future__ import annotations

import logging
import socket
import struct
import time

import pytest

from swarmlet.store.raft import AtRestSealers, RaftSettings, ReplicatedStore, pack_in_pieces
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

    def __init__(self, data_dir):
        # Elections only when the test starts one: nothing here depends on timing.
        settings = RaftSettings(election_timeout_min=600.0, election_timeout_max=601.0,
                                leader_fallback_timeout=600.0, connection_timeout=602.0,
                                snapshot_every_entries=1_000_000,
                                snapshot_min_interval=3600.0, extra={"autoTick": False})
        self.raft = ReplicatedStore(f"{ADDRESS}:{free_port(ADDRESS)}", [f"{PEER}:{free_port(PEER)}"],
                                    str(data_dir), CLUSTER_KEY, TlsPolicy(no_tls, no_tls, lambda der: "none"),
                                    settings, on_applied=lambda applied: None, on_reset=lambda: None,
                                    on_view=lambda view: None)
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
        self.sent.clear()
        self.raft._SyncObj__onMessageReceived(self.peer, message)
        return [m for m in self.sent if m["type"] == "next_node_idx"]

    def apply_committed(self) -> None:
        deadline = time.monotonic() + 10
        while self.raft.raftLastApplied < self.raft.raftCommitIndex:
            assert time.monotonic() < deadline
            self.raft.doTick(0.0)

    def close(self) -> None:
        self.raft._doDestroy()


@pytest.fixture
def manager(tmp_path):
    manager = Manager(tmp_path)
    yield manager
    manager.close()


def entry(index: int, term: int = 1) -> tuple:
    return (NO_OP + f"entry {index} term {term}".encode(), index, term)


def append(term: int, previous: tuple, entries: list[tuple], commit: int) -> dict:
    return {"type": "append_entries", "term": term, "commit_index": commit, "entries": entries,
            "prevLogIdx": previous[1], "prevLogTerm": previous[2]}


@pytest.fixture
def follower(manager):
    """A follower holding entries 2..11 of term 1, all committed and applied."""
    first = manager.log[0]
    assert first[1] == 1
    replies = manager.receive(append(1, first, [entry(i) for i in range(2, 12)], commit=11))
    assert replies[-1]["success"] and replies[-1]["next_node_idx"] == 12
    manager.apply_committed()
    assert manager.raft.raftLastApplied == 11
    return manager


# -- (c) an AppendEntries truncates only from a conflict -------------------------------------

def test_a_repeated_append_entries_keeps_the_entries_after_it(follower):
    """The leader resends 6..8 (after a step back): pysyncobj dropped 9..11, which the
    follower had acknowledged and applied."""
    replies = follower.receive(append(1, entry(5), [entry(i) for i in (6, 7, 8)], commit=11))
    assert follower.indices() == list(range(1, 12))
    assert follower.log[1:] == [entry(i) for i in range(2, 12)]
    # It vouches only for what the message showed to match the leader's log.
    assert replies == [{"type": "next_node_idx", "next_node_idx": 9, "reset": False, "success": True}]
    assert follower.raft.raftCommitIndex == 11


def test_a_heartbeat_behind_the_log_neither_truncates_nor_commits_past_itself(manager):
    first = manager.log[0]
    manager.receive(append(1, first, [entry(i) for i in range(2, 12)], commit=4))
    replies = manager.receive(append(1, entry(5), [], commit=11))
    assert manager.indices() == list(range(1, 12))
    assert replies[-1] == {"type": "next_node_idx", "next_node_idx": 6, "reset": False, "success": True}
    assert manager.raft.raftCommitIndex == 5  # 6..11 are not known to be the leader's


def test_a_conflicting_entry_still_replaces_the_uncommitted_tail(manager):
    first = manager.log[0]
    manager.receive(append(1, first, [entry(i) for i in range(2, 12)], commit=8))
    replies = manager.receive(append(2, entry(9), [entry(10, term=2)], commit=8))
    assert manager.log[-2:] == [entry(9), entry(10, term=2)]
    assert replies[-1] == {"type": "next_node_idx", "next_node_idx": 11, "reset": False, "success": True}


def test_a_conflict_with_a_committed_entry_is_ignored_and_logged(follower, caplog):
    with caplog.at_level(logging.CRITICAL, logger="swarmlet.raft"):
        replies = follower.receive(append(2, entry(5), [entry(6, term=2)], commit=11))
    assert follower.log[1:] == [entry(i) for i in range(2, 12)]
    assert replies == []
    assert "conflicts with committed entry 6" in caplog.text


# -- (b) installing a snapshot keeps the entries after it ------------------------------------

def snapshot_message(manager: Manager, last: tuple, previous: tuple, commit: int) -> dict:
    """The leader's snapshot at ``last``, in one chunk, as ReplicatedStore writes it."""
    raft = manager.raft
    with raft.state_lock:
        picture = raft.state.picture()
    payload = {"state": picture, "last": list(last), "previous": list(previous),
               "cluster": sorted([raft._self_address, manager.peer.address])}
    blob = AtRestSealers(CLUSTER_KEY).snapshot.seal(pack_in_pieces(payload))
    return {"type": "append_entries", "term": 1, "commit_index": commit, "serialized": (blob, True, True)}


def test_installing_an_older_snapshot_keeps_the_entries_held_after_it(follower):
    replies = follower.receive(snapshot_message(follower, last=entry(6), previous=entry(5), commit=11))
    assert follower.raft._snapshots_loaded == 1
    assert follower.log == [entry(i) for i in range(5, 12)]  # compacted to the snapshot, 7..11 kept
    # Only the snapshot is known to match: the leader sends the rest from 7.
    assert replies == [{"type": "next_node_idx", "next_node_idx": 7, "reset": False, "success": True}]
    follower.apply_committed()
    assert follower.raft.raftLastApplied == follower.raft.raftCommitIndex == 11


def test_installing_a_snapshot_of_another_history_replaces_the_log(follower):
    replies = follower.receive(snapshot_message(follower, last=entry(6, term=3), previous=entry(5, term=3),
                                                commit=6))
    assert follower.log == [entry(5, term=3), entry(6, term=3)]
    assert replies[-1]["success"] and replies[-1]["next_node_idx"] == 7


# -- (a) the leader ignores a stale step-back ------------------------------------------------

@pytest.fixture
def leader(manager):
    raft = manager.raft
    raft._SyncObj__connectedNodes.add(manager.peer)  # as if connected, so it stands for election
    raft._SyncObj__raftElectionDeadline = 0
    raft.doTick(0.0)
    vote = [m for m in manager.sent if m["type"] == "request_vote"][-1]
    manager.receive({"type": "response_vote", "term": vote["term"]})
    assert raft._isLeader()
    for i in range(10):
        raft._SyncObj__raftLog.add(entry(100 + i, vote["term"])[0], raft._SyncObj__raftLog[-1][1] + 1, vote["term"])
    return manager


def next_index(manager: Manager) -> int:
    return manager.raft._SyncObj__raftNextIndex[manager.peer]


def test_a_stale_step_back_does_not_move_the_next_index_below_what_the_follower_acknowledged(leader):
    raft = leader.raft
    end = raft._SyncObj__raftLog[-1][1]
    leader.receive({"type": "next_node_idx", "next_node_idx": end + 1, "reset": False, "success": True})
    assert raft._SyncObj__raftMatchIndex[leader.peer] == end
    # The follower's answer to a heartbeat it had before it took those entries.
    leader.receive({"type": "next_node_idx", "next_node_idx": 2, "reset": True, "success": False})
    assert next_index(leader) == end + 1
    assert raft._SyncObj__lastResponseTime[leader.peer] > time.monotonic() - 5  # still a response
    leader.sent.clear()
    raft._SyncObj__sendAppendEntries()
    assert [m["prevLogIdx"] for m in leader.sent if m["type"] == "append_entries"] == [end]


def test_a_step_back_on_a_new_connection_is_followed(leader):
    """A follower that restarted with a shorter log (a journal is not fsynced) must be
    sent the entries it lost: on a new connection its acknowledgements start over."""
    raft = leader.raft
    end = raft._SyncObj__raftLog[-1][1]
    leader.receive({"type": "next_node_idx", "next_node_idx": end + 1, "reset": False, "success": True})
    raft._SyncObj__onNodeDisconnected(leader.peer)
    raft._SyncObj__onNodeConnected(leader.peer)
    leader.receive({"type": "next_node_idx", "next_node_idx": 3, "reset": True, "success": False})
    assert next_index(leader) == 3
    leader.sent.clear()
    raft._SyncObj__sendAppendEntries()
    sent = [m for m in leader.sent if m["type"] == "append_entries"]
    assert sent[0]["prevLogIdx"] == 2 and sent[0]["entries"][0][1] == 3


def test_snapshot_chunks_do_not_commit_the_entries_the_follower_holds(manager):
    """While the leader sends its snapshot (or has none ready yet: ``serialized`` is
    None), nothing says the follower's entries are the leader's: pysyncobj advanced the
    commit index over them all the same."""
    first = manager.log[0]
    manager.receive(append(1, first, [entry(i) for i in range(2, 12)], commit=3))
    manager.receive({"type": "append_entries", "term": 2, "commit_index": 20, "serialized": None})
    assert manager.raft.raftCommitIndex == 3
    assert manager.raft.raftCurrentTerm == 2  # the rest of the message is pysyncobj's as before


def test_a_snapshot_older_than_the_followers_own_is_refused(follower, caplog):
    raft = follower.raft
    raft.forceLogCompaction()
    deadline = time.monotonic() + 10
    while follower.log[0][1] == 1 or raft._snapshot_job is not None:
        assert time.monotonic() < deadline, "no snapshot of its own"
        raft.doTick(0.01)
    own = follower.log
    assert own[1][1] == 11
    dump = open(raft._dump_file, "rb").read()
    replies = follower.receive(snapshot_message(follower, last=entry(6), previous=entry(5), commit=11))
    assert follower.log == own
    assert open(raft._dump_file, "rb").read() == dump
    assert raft.raftLastApplied == 11 and raft._snapshots_loaded == 0
    assert replies == []
    assert "older than this manager's own" in caplog.text
