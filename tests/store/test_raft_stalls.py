"""A Raft thread that goes longer than the shortest election timeout without a tick says
so (swarmlet/store/raft.py ``_note_stall``), as etcd's "leader failed to send out
heartbeat on time": the warning that pointed at the garbage collector's pauses in a
10,000-task deploy (docs/performance.md, "Garbage collection and elections")."""
from __future__ import annotations

import logging

import pytest

from tests.store.raft_harness import Manager, stand_and_win


@pytest.fixture
def manager(tmp_path):
    manager = Manager(tmp_path)
    yield manager
    manager.close()


def test_a_tick_within_the_election_timeout_says_nothing(manager, caplog):
    raft, shortest = manager.raft, manager.raft._settings.election_timeout_min
    with caplog.at_level(logging.INFO, logger="swarmlet.raft"):
        raft._note_stall(1000.0, 0.05)
        raft._note_stall(1000.0 + shortest, 0.05)  # the gap minus the wait is under the timeout
    assert caplog.records == []
    assert raft.longest_tick_gap == pytest.approx(shortest)


def test_a_follower_that_went_without_a_tick_says_it_read_its_leader_late(manager, caplog):
    raft, shortest = manager.raft, manager.raft._settings.election_timeout_min
    with caplog.at_level(logging.INFO, logger="swarmlet.raft"):
        raft._note_stall(1000.0, 0.05)
        raft._note_stall(1000.0 + 2 * shortest, 0.05)
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.INFO  # costs the cluster nothing
    assert "no tick for" in caplog.messages[0] and "follower's reads of its leader were late" in caplog.messages[0]
    assert raft.longest_tick_gap == pytest.approx(2 * shortest)


def test_a_leader_says_its_heartbeats_were_late(manager, caplog):
    stand_and_win(manager)
    raft, shortest = manager.raft, manager.raft._settings.election_timeout_min
    with caplog.at_level(logging.INFO, logger="swarmlet.raft"):
        raft._note_stall(5000.0, 0.05)
        raft._note_stall(5000.0 + 2 * shortest, 0.05)
    assert [r.levelname for r in caplog.records if "leader's heartbeats were late" in r.getMessage()] == ["WARNING"]
