"""The scheduling loop over the in-memory store, with the orchestrator creating the tasks:
what a pass looks at grows with what changed, not with the cluster (issue 8), and
nothing that needs another look is missed."""
from __future__ import annotations

import asyncio
import time

import pytest

from swarmlet.api import specs
from swarmlet.api.objects import STACK_NAMESPACE_LABEL, TaskState, node_object_spec
from swarmlet.api.views import Node, Task
from swarmlet.manager.orchestrator.loop import Orchestrator
from swarmlet.manager.scheduler.service import SchedulerLoop

DEADLINE = 5.0


def service_spec(name: str, replicas: int, zone: str) -> dict:
    return specs.ServiceSpec(name=f"app_{name}", mode="replicated", replicas=replicas,
                             container=specs.ContainerSpec(image="busybox", command=["sleep", "1000"]),
                             placement=specs.Placement(constraints=[f"node.labels.zone=={zone}"]),
                             labels={STACK_NAMESPACE_LABEL: "app"}).to_dict()


async def until(predicate, what: str):
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def placed(store, service_id: str) -> dict[str, str | None]:
    return {t.id: t.spec.node_id for t in store.select(Task, service_id=service_id)}


class Reads:
    """Counts the store reads the loops make."""

    def __init__(self, store, monkeypatch):
        self.full_task_lists = 0
        self.node_task_reads: list[str] = []
        list_, select = store.list, store.select

        def counting_list(kind):
            self.full_task_lists += kind is Task
            return list_(kind)

        def counting_select(kind, **criterion):
            if "node_id" in criterion:
                self.node_task_reads.append(criterion["node_id"])
            return select(kind, **criterion)
        monkeypatch.setattr(store, "list", counting_list)
        monkeypatch.setattr(store, "select", counting_select)


@pytest.fixture
async def loops(store):
    await store.add("node", "n1", node_object_spec("worker", "active", {"zone": "a"}), {"state": "ready", "hostname": "n1"})
    await store.add("node", "n2", node_object_spec("worker", "active", {}), {"state": "ready", "hostname": "n2"})
    running = [Orchestrator(store), SchedulerLoop(store)]
    for loop in running:
        await loop.leadership_changed(True)
    yield running
    for loop in running:
        await loop.stop()


async def test_a_task_no_node_takes_is_placed_once_a_node_changes_to_take_it(store, loops):
    await store.add("service", "web", service_spec("web", 3, "a"))
    await until(lambda: sorted(placed(store, "web").values(), key=str) == ["n1"] * 3, "3 tasks on n1")
    await store.add("service", "db", service_spec("db", 1, "b"))
    await until(lambda: any("no suitable node" in (t.status.message or "") for t in store.select(Task, service_id="db")),
                "db pending with the scheduler's explanation")
    (pending,) = store.select(Task, service_id="db")
    assert pending.status.state == TaskState.PENDING and pending.spec.node_id is None
    node = store.get(Node, "n2")
    await store.commit([{"op": "update", "kind": "node", "id": "n2", "version": node.version,
                         "spec": node.spec.raw | {"labels": {"zone": "b"}}}])
    await until(lambda: list(placed(store, "db").values()) == ["n2"], "db placed on n2 after its label changed")


async def test_a_new_pending_task_is_placed_without_reading_every_task_or_unchanged_nodes(store, loops, monkeypatch):
    await store.add("service", "web", service_spec("web", 5, "a"))
    await until(lambda: sorted(placed(store, "web").values(), key=str) == ["n1"] * 5, "5 tasks on n1")
    reads = Reads(store, monkeypatch)
    await store.add("service", "api", service_spec("api", 1, "a"))
    await until(lambda: list(placed(store, "api").values()) == ["n1"], "api placed on n1")
    assert reads.full_task_lists == 0
    assert "n2" not in reads.node_task_reads  # n2 changed in no way: its NodeInfo was kept


async def test_a_pending_task_is_not_held_back_by_status_reports_that_bring_no_work(store, loops, monkeypatch):
    """During a deploy the status reports of placed tasks come every few ms. The loop
    waited for a quiet BATCH_QUIET after *any* event, so it always waited out BATCH_MAX
    (a 10,000-task deploy's tasks were ~2 s pending on average). With BATCH_MAX made
    longer than this test's deadline, the task must be placed while reports still flow."""
    from swarmlet.manager.scheduler import service as scheduling
    monkeypatch.setattr(scheduling, "BATCH_MAX", 60.0)
    await store.add("service", "web", service_spec("web", 1, "a"))
    await until(lambda: list(placed(store, "web").values()) == ["n1"], "web placed")
    (busy,) = store.select(Task, service_id="web")
    await store.add("service", "api", service_spec("api", 1, "a"))  # pending from now on
    reports = 0
    deadline = time.monotonic() + DEADLINE
    while list(placed(store, "api").values()) != ["n1"]:
        assert time.monotonic() < deadline, f"api still pending after {reports} status reports of another task"
        task = store.get(Task, busy.id)  # a placed task's report: moves nothing the scheduler uses
        await store.commit([{"op": "update", "kind": "task", "id": task.id, "version": task.version,
                             "status": dict(task.status.raw, state="running", message=f"report {reports}")}])
        reports += 1
        await asyncio.sleep(0.005)  # the pace of the reports (a load generator, not a wait on the system)


def test_only_changes_that_can_move_a_placement_count_as_work():
    from swarmlet.manager.scheduler.service import Changed, can_change_placement
    from swarmlet.store import StoreEvent
    from swarmlet.store.state import Change

    def task(state, node="n1", **spec):
        return {"id": "t", "spec": {"node_id": node, "service_id": "s", **spec}, "status": {"state": state}}

    def update(before, after):
        return Change("update", "task", "t", task(*after), task(*before))

    table = [(("assigned",), ("accepted",), False), (("accepted",), ("running",), False),
             (("running",), ("running",), False), (("pending", None), ("assigned",), True),
             (("running",), ("failed",), True), (("assigned",), ("pending",), True)]
    for before, after, moves in table:
        assert can_change_placement(update(before, after)) is moves, (before, after)
    assert can_change_placement(Change("update", "task", "t", task("running", desired_state="shutdown"),
                                       task("running")))  # a spec change
    assert can_change_placement(Change("create", "task", "t", task("pending", None)))
    changed = Changed(everything=False)
    assert not changed.note(StoreEvent(1, [update(("assigned",), ("running",))])) and not changed.any
    assert not changed.nodes  # n1's NodeInfo is kept
    assert changed.note(StoreEvent(2, [Change("create", "task", "t2", task("pending", None))]))
    assert changed.tasks == {"t2"}


async def test_planning_on_its_thread_changes_nothing_the_loop_keeps(store, loops):
    """The plan runs on a worker thread (leaderloop.off_loop), which a lost leadership
    cancels without stopping: it must hand its NodeInfos back, not keep them itself, or
    a cancelled pass finishing late would leave them to the next leader's pass."""
    from swarmlet.manager.scheduler.service import Changed
    scheduler = loops[1]
    await store.add("service", "web", service_spec("web", 2, "a"))
    await until(lambda: sorted(placed(store, "web").values(), key=str) == ["n1"] * 2, "2 tasks on n1")
    await store.add("service", "db", service_spec("db", 1, "b"))  # pending: no node is in zone b
    await until(lambda: any("no suitable node" in (t.status.message or "") for t in store.select(Task, service_id="db")),
                "db pending with the scheduler's explanation")
    await store.add("node", "n3", node_object_spec("worker", "active", {"zone": "a"}), {"state": "ready", "hostname": "n3"})
    before = scheduler._infos
    kept = {node_id: info for node_id, info in before.items() if node_id != "n3"}  # as before n3 joined
    kept_copy = dict(kept)
    ops, guards, infos = scheduler._plan(Changed(), kept)  # (synchronous: no pass of the loop runs meanwhile)
    assert scheduler._infos is before and kept == kept_copy  # nothing of the loop's was changed
    assert {"n1", "n2", "n3"} <= set(infos)  # what the plan used comes back with it
    (db_task,) = store.select(Task, service_id="db")
    assert {op["id"] for op in ops} <= {db_task.id} and guards == []  # (at most db's explanation again)
