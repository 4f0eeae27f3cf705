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
import time

import pytest

from swarmlet.store.raft import AtRestSealers, pack_in_pieces, raft_clock

from tests.store.raft_harness import CLUSTER_KEY, NO_OP, Manager, stand_and_win


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
    vote = stand_and_win(manager)
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
    assert raft._SyncObj__lastResponseTime[leader.peer] > raft_clock() - 5  # still a response
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
