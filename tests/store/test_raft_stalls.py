"""A Raft thread that goes longer than the shortest election timeout without a tick says
so (swarmlet/store/raft.py ``_note_stall``), as etcd's "leader failed to send out
heartbeat on time": the warning that pointed at the garbage collector's pauses in a
10,000-task deploy (docs/performance.md, "Garbage collection and elections")."""
from __future__ import annotations

import logging

import pytest

from tests.store.raft_harness import Manager, stand_and_win


def last_tick(raft) -> float:
    """When the Raft thread's last tick began, on its own clock (monotonic: the
    machine's uptime). The made-up ticks below follow it: a fixed made-up time read
    as a stall of its own on a machine up for less than that (seen: one just booted)."""
    return raft._tick_started_at if raft._tick_started_at is not None else 0.0


@pytest.fixture
def manager(tmp_path):
    manager = Manager(tmp_path)
    yield manager
    manager.close()


def test_a_tick_within_the_election_timeout_says_nothing(manager, caplog):
    raft, shortest = manager.raft, manager.raft._settings.election_timeout_min
    with caplog.at_level(logging.INFO, logger="swarmlet.raft"):
        at = last_tick(raft) + 0.01
        raft._note_stall(at, 0.05)
        raft._note_stall(at + shortest, 0.05)  # the gap minus the wait is under the timeout
    assert caplog.records == []
    assert raft.longest_tick_gap == pytest.approx(shortest)


def test_a_follower_that_went_without_a_tick_says_it_read_its_leader_late(manager, caplog):
    raft, shortest = manager.raft, manager.raft._settings.election_timeout_min
    with caplog.at_level(logging.INFO, logger="swarmlet.raft"):
        at = last_tick(raft) + 0.01
        raft._note_stall(at, 0.05)
        raft._note_stall(at + 2 * shortest, 0.05)
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.INFO  # costs the cluster nothing
    assert "no tick for" in caplog.messages[0] and "follower's reads of its leader were late" in caplog.messages[0]
    assert raft.longest_tick_gap == pytest.approx(2 * shortest)


def test_a_leader_says_its_heartbeats_were_late(manager, caplog):
    stand_and_win(manager)
    raft, shortest = manager.raft, manager.raft._settings.election_timeout_min
    with caplog.at_level(logging.INFO, logger="swarmlet.raft"):
        at = last_tick(raft) + 0.01
        raft._note_stall(at, 0.05)
        raft._note_stall(at + 2 * shortest, 0.05)
    assert [r.levelname for r in caplog.records if "leader's heartbeats were late" in r.getMessage()] == ["WARNING"]
