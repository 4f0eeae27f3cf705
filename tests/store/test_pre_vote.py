"""Pre-vote (Raft thesis §9.6), which pysyncobj lacks: a manager whose election deadline
passes asks the others first, and raises its term only once a majority would vote
for it; a manager that hears from a leader says no.

The hazard it fixes: in CI, a follower SIGSTOPped during a 20,000-task write
(tests/store/test_big_writes.py) came back with its deadline passed and no connection
to the leader yet (the leader had dropped it after its connection timeout), but still
connected to the other follower. pysyncobj stood for election at once: its higher term
deposed the healthy leader, three elections in a row. Each test here drives one real
ReplicatedStore by direct calls (tests/store/raft_harness.py): no timing, no peer.
"""
from __future__ import annotations

import time

import pysyncobj.syncobj
import pytest

from swarmlet.store.raft import PRE_VOTE, PRE_VOTE_REPLY, would_grant_pre_vote

from tests.store.raft_harness import Manager, stand_and_win


@pytest.fixture
def manager(tmp_path):
    manager = Manager(tmp_path)
    yield manager
    manager.close()


def due(manager: Manager) -> list[dict]:
    """The election deadline passes (connected to the peer): what one tick sends."""
    raft = manager.raft
    raft._SyncObj__connectedNodes.add(manager.peer)
    raft._SyncObj__raftElectionDeadline = 0
    manager.sent.clear()
    raft.doTick(0.0)
    return list(manager.sent)


def kinds(messages: list[dict]) -> list[str]:
    return [m["type"] for m in messages]


def heartbeat(term: int) -> dict:
    return {"type": "append_entries", "term": term, "commit_index": 0, "entries": [],
            "prevLogIdx": 1, "prevLogTerm": 0}


def test_a_due_deadline_asks_first_and_keeps_the_term(manager):
    term = manager.raft.raftCurrentTerm
    sent = due(manager)
    assert kinds(sent) == [PRE_VOTE]  # pysyncobj alone sends a request_vote here, at term + 1
    assert sent[0]["term"] == term + 1
    assert manager.raft.raftCurrentTerm == term and not manager.raft._isLeader()
    assert manager.raft._SyncObj__raftElectionDeadline > 0  # moved on: the next tick does not stand


def test_it_stands_only_once_a_majority_said_yes(manager):
    raft = manager.raft
    term = raft.raftCurrentTerm
    question = due(manager)[0]
    assert manager.deliver({"type": PRE_VOTE_REPLY, "term": question["term"], "granted": False}) == []
    manager.sent.clear()
    raft.doTick(0.0)
    assert "request_vote" not in kinds(manager.sent) and raft.raftCurrentTerm == term

    # Asked again (the deadline passes again); a yes from the peer is a majority of two.
    question = due(manager)[0]
    manager.deliver({"type": PRE_VOTE_REPLY, "term": question["term"], "granted": True})
    manager.sent.clear()
    raft.doTick(0.0)
    votes = [m for m in manager.sent if m["type"] == "request_vote"]
    assert [v["term"] for v in votes] == [term + 1] and raft.raftCurrentTerm == term + 1


def test_a_yes_for_another_round_or_a_heard_leader_starts_nothing(manager):
    raft = manager.raft
    term = raft.raftCurrentTerm
    question = due(manager)[0]
    manager.deliver({"type": PRE_VOTE_REPLY, "term": question["term"] + 5, "granted": True})  # not this round
    manager.deliver(heartbeat(term))  # a leader after all: the round is over
    manager.deliver({"type": PRE_VOTE_REPLY, "term": question["term"], "granted": True})  # late
    manager.sent.clear()
    raft.doTick(0.0)
    assert "request_vote" not in kinds(manager.sent) and raft.raftCurrentTerm == term


def test_a_manager_that_hears_a_leader_says_no_and_changes_nothing(manager):
    raft = manager.raft
    manager.deliver(heartbeat(1))
    term, voted = raft.raftCurrentTerm, raft._SyncObj__votedForNodeId
    ask = {"type": PRE_VOTE, "term": term + 1, "last_log_index": 100, "last_log_term": term}
    assert manager.deliver(ask) == [{"type": PRE_VOTE_REPLY, "term": term + 1, "granted": False}]
    assert (raft.raftCurrentTerm, raft._SyncObj__votedForNodeId) == (term, voted)  # a request_vote would raise it


def test_a_manager_that_hears_no_leader_says_yes_to_an_up_to_date_log_only(manager):
    raft = manager.raft
    term, voted = raft.raftCurrentTerm, raft._SyncObj__votedForNodeId
    index = raft._SyncObj__getCurrentLogIndex()
    log_term = raft._SyncObj__getCurrentLogTerm()
    up_to_date = {"type": PRE_VOTE, "term": term + 1, "last_log_index": index, "last_log_term": log_term}
    assert manager.deliver(up_to_date)[0]["granted"] is True
    behind = dict(up_to_date, last_log_index=index - 1)
    assert manager.deliver(behind)[0]["granted"] is False
    stale_term = dict(up_to_date, term=term)
    assert manager.deliver(stale_term)[0]["granted"] is False
    assert (raft.raftCurrentTerm, raft._SyncObj__votedForNodeId) == (term, voted)


def test_a_leader_says_no(manager):
    stand_and_win(manager)
    raft = manager.raft
    term = raft.raftCurrentTerm
    ask = {"type": PRE_VOTE, "term": term + 1, "last_log_index": 10_000, "last_log_term": term}
    assert manager.deliver(ask)[0]["granted"] is False
    assert raft._isLeader() and raft.raftCurrentTerm == term


def test_a_leadership_transfer_is_not_held_back(manager):
    """The leader's timeout_now: the chosen manager stands at once (the others still hear
    the old leader, so a pre-vote would fail)."""
    raft = manager.raft
    manager.deliver(heartbeat(1))  # the peer leads
    term = raft.raftCurrentTerm
    manager.deliver({"type": "timeout_now", "term": term})
    raft._SyncObj__connectedNodes.add(manager.peer)
    manager.sent.clear()
    raft.doTick(0.0)
    assert kinds(manager.sent)[:1] == ["request_vote"] and raft.raftCurrentTerm == term + 1


@pytest.mark.parametrize("case, granted", [
    (dict(), True),
    (dict(is_leader=True), False),
    (dict(leader_heard_for=0.1), False),  # heard a leader 0.1 s ago, 0.15 s of silence needed
    (dict(asked_term=3), False),  # not newer than its own term 3
    (dict(asker_log=(2, 50)), False),  # an older last term, however long
    (dict(asker_log=(3, 9)), False),  # the same last term, shorter
    (dict(asker_log=(3, 10)), True),
    (dict(asker_log=(4, 1)), True),
])
def test_the_pre_vote_rule(case, granted):
    args = dict(asked_term=4, asker_log=(3, 12), own_term=3, own_log=(3, 10), is_leader=False,
                leader_heard_for=1.0, leader_silence_needed=0.15)
    assert would_grant_pre_vote(**{**args, **case}) is granted


# -- pysyncobj's clock -----------------------------------------------------------------------
# Its deadlines and response times are on CLOCK_MONOTONIC_RAW, 0.25 s from time.monotonic
# on this machine after 12 hours: compared with time.monotonic, the deadline passed that
# much early (pre-votes 0.06 s after a heartbeat). Moved 1,000 s away here, so that a
# comparison on the wrong clock cannot pass.

@pytest.fixture
def far_clock(monkeypatch):
    monkeypatch.setattr(pysyncobj.syncobj, "monotonicTime", lambda: time.monotonic() - 1000.0)


def test_a_deadline_not_yet_due_on_pysyncobjs_clock_asks_nothing(far_clock, manager):
    raft = manager.raft
    raft._SyncObj__connectedNodes.add(manager.peer)
    raft._SyncObj__raftElectionDeadline = pysyncobj.syncobj.monotonicTime() + 100.0
    manager.sent.clear()
    raft.doTick(0.0)
    assert kinds(manager.sent) == []


def test_a_follower_that_just_answered_is_responding_in_the_view(far_clock, tmp_path):
    views = []
    manager = Manager(tmp_path, on_view=views.append)
    try:
        stand_and_win(manager)
        manager.raft._SyncObj__lastResponseTime[manager.peer] = pysyncobj.syncobj.monotonicTime()
        manager.raft._last_view_at = 0.0
        manager.raft.doTick(0.0)
        assert views[-1].peers[manager.peer.address]["responding"] is True
        # one that answered last a third of the stalled-follower timeout ago (frozen since,
        # as SIGSTOP leaves its connection up) no longer is: the watchdog must not take it
        # for a livelocked one
        timeout = manager.raft._settings.stalled_follower_timeout
        manager.raft._SyncObj__lastResponseTime[manager.peer] = pysyncobj.syncobj.monotonicTime() - timeout / 3
        manager.raft._last_view_at = 0.0
        manager.raft.doTick(0.0)
        assert views[-1].peers[manager.peer.address]["responding"] is False
    finally:
        manager.close()
