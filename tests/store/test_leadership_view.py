"""Fenced leadership judged from the Raft thread's newest view: an event loop that fell
behind on the views queued for it does not lose and regain leadership (each time the
dispatcher dropped every node's session), and a Raft thread that stops reporting still
fences the leader."""
from __future__ import annotations

import types

import pytest

from swarmlet.store import ClusterStore, RaftView
from swarmlet.store import store as store_module

ADDRESS = "127.0.0.1:4000"


def view(taken_at: float, leader: bool = True) -> RaftView:
    return RaftView(self_address=ADDRESS, leader=ADDRESS if leader else None, is_leader=leader, has_quorum=True,
                    term=1, commit_index=1, last_applied=1, peers={}, taken_at=taken_at)


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_a_loop_behind_on_its_views_keeps_leadership_and_a_silent_raft_thread_loses_it(tmp_path, clock):
    store = ClusterStore(self_address=ADDRESS, peers=[], data_dir=str(tmp_path), cluster_key="k", tls_policy=None)
    changes: list[bool] = []
    store.on_leadership_change(changes.append)
    first = view(100.0)
    store._from_raft_view(first)  # the Raft thread (no loop here: the test runs the posts itself)
    store._set_view(first)
    assert changes == [True] and store.is_leader
    # The loop is stuck for 1.5 s while the Raft thread goes on reporting every 20 ms.
    queued = [view(100.0 + 0.02 * i) for i in range(1, 76)]
    for posted in queued:
        store._from_raft_view(posted)
    clock[0] = 101.5
    assert store.is_leader  # leader-only work that runs now sees the newest view
    for posted in queued:  # the loop catches up: the old views are a second old by now
        store._set_view(posted)
    assert changes == [True]  # before: [True, False, True] within a millisecond
    # The Raft thread stops reporting: fenced as before, whatever the loop does.
    clock[0] = 103.0
    assert not store.is_leader
    # A view saying another leader was elected is acted on at once.
    deposed = view(103.0, leader=False)
    store._from_raft_view(deposed)
    assert not store.is_leader
    store._set_view(deposed)
    assert changes == [True, False]
