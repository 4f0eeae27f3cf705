"""Which store changes wake the orchestrator, and how long it lets them gather
(swarmlet/manager/orchestrator/loop.py): a 10,000-task deploy writes each task's status
four times or so, and each 50 ms batch of them used to cost a reconcile of every task of
the service (0.3-0.4 s of the leader's loop each)."""
from __future__ import annotations

import pytest

from swarmlet.api.objects import TaskState
from swarmlet.manager.orchestrator.loop import (MAX_PAUSE, ORCHESTRATOR_SHARE, can_change_a_decision, pause_after,
                                                touched_services)
from swarmlet.store import StoreEvent
from swarmlet.store.state import Change


def task(state: str, node_id: str | None = "n1", desired: str = "running") -> dict:
    return {"id": "t1", "spec": {"service_id": "s1", "node_id": node_id, "desired_state": desired},
            "status": {"state": state}}


def update(before: dict, after: dict) -> Change:
    return Change("update", "task", "t1", after, before)


BEFORE_RUNNING = ["assigned", "accepted", "preparing", "ready", "starting"]


@pytest.mark.parametrize("before, after", list(zip(BEFORE_RUNNING, BEFORE_RUNNING[1:])))
def test_a_status_moving_before_running_decides_nothing(before, after):
    assert not can_change_a_decision(update(task(before), task(after)))


@pytest.mark.parametrize("before, after", [
    ("starting", "running"), ("running", "failed"), ("starting", "failed"), ("running", "complete"),
    ("running", "shutdown"), ("failed", "orphaned"), ("pending", "rejected")])
def test_running_and_every_end_state_can_change_a_decision(before, after):
    assert can_change_a_decision(update(task(before), task(after)))


def test_a_spec_change_always_can():
    assert can_change_a_decision(update(task("pending", node_id=None), task("assigned")))
    assert can_change_a_decision(update(task("accepted"), task("accepted", desired="shutdown")))


def test_creates_deletes_other_kinds_and_updates_without_the_old_object_always_can():
    assert can_change_a_decision(Change("create", "task", "t1", task("pending")))
    assert can_change_a_decision(Change("delete", "task", "t1", task("accepted")))
    assert can_change_a_decision(Change("update", "task", "t1", task("accepted")))
    assert can_change_a_decision(Change("update", "service", "s1", {}, {}))


def test_touched_services_leaves_out_what_decides_nothing():
    quiet = update(task("accepted"), task("preparing"))
    loud = Change("update", "task", "t2", {**task("running"), "spec": {"service_id": "s2"}},
                  {**task("starting"), "spec": {"service_id": "s2"}})
    assert touched_services(StoreEvent(1, [quiet])) == set()
    assert touched_services(StoreEvent(2, [quiet, loud])) == {"s2"}


def test_every_state_is_covered():
    # A new state must be placed on one side or the other on purpose.
    assert {s.value for s in TaskState} - set(BEFORE_RUNNING) == {
        "new", "pending", "running", "complete", "shutdown", "failed", "rejected", "remove", "orphaned"}


def test_the_pause_keeps_deciding_within_its_share_of_the_loop():
    assert pause_after(0.0) == 0.0
    assert pause_after(0.001) == pytest.approx(0.001 * (1 / ORCHESTRATOR_SHARE - 1))
    deciding = 0.3  # a pass over 10,000 tasks
    assert deciding / (deciding + pause_after(deciding)) == pytest.approx(ORCHESTRATOR_SHARE)
    deciding = 3.0  # a pass over 100,000 tasks: still a quarter of the loop (at a 2 s cap, 60 %)
    assert deciding / (deciding + pause_after(deciding)) == pytest.approx(ORCHESTRATOR_SHARE)
    assert pause_after(60.0) == MAX_PAUSE
