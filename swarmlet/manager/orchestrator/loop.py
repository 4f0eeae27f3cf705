"""The orchestrator's I/O edge: while this manager leads, reconcile every service that a
store event touched (a full pass when it becomes leader, when the state was reset, or
when a node changed), and again when a restart or update delay runs out. Each
service's decision is committed with ``commit_batched`` (bounded transactions, the
service's status last). The decision's operations are independent of each other, so a
part that did not commit (a conflict: the dispatcher or the scheduler wrote one of its
tasks meanwhile) just reconciles that service again, from what the store says then.

A decision touches at most ``DECISION_BUDGET`` tasks, carried out in transactions of at
most ``WRITE_BATCH`` (retry.py): a service scaled to thousands of replicas is reconciled
in parts, the event loop running between transactions (and between services), so the
API keeps answering meanwhile. The budget is ten transactions, not one, because each
pass reads the whole service (~30 µs a task): deciding 500 tasks a pass made a
10,000-replica deploy twenty passes over 10,000 tasks (6 s of the leader's loop). For
the same reason a big service gets a bigger budget, a ``SERVICE_PASSES``-th of the
tasks it has or is to have (``decision_budget``): with 5,000 a pass, a 100,000-replica
deploy read the service twenty times, each read longer than the last (73 s until the
last task was created)."""
from __future__ import annotations

import asyncio
import logging
import time

from swarmlet.api.objects import TaskState, is_terminal
from swarmlet.api.views import Node, Service, Task
from swarmlet.manager.leaderloop import LeaderLoop, drain, off_loop, status_moved_across, timed_call
from swarmlet.manager.orchestrator.reconcile import Decision, dependencies_waiting, reconcile_service
from swarmlet.manager.retry import WRITE_BATCH, WRITE_WINDOW
from swarmlet.node.config import new_id
from swarmlet.store import StoreError
from swarmlet.store.state import TASK_SHARED_FIELDS, spec_update

log = logging.getLogger("swarmlet.orchestrator")

ALL = "*"
DECISION_BUDGET = 10 * WRITE_BATCH  # task changes one pass decides, at least (see the module's docstring)
SERVICE_PASSES = 4  # a service of any size is reconciled in at most about this many passes
ORCHESTRATOR_SHARE = 0.25  # of the leader's event loop, at most, spent deciding (pause_after)
# A service with this many tasks is decided on a worker thread (leaderloop.off_loop), not
# on the event loop; a smaller one is quicker to decide than to hand to a thread.
OFF_LOOP_TASKS = 1000
# Seconds: the longest the orchestrator lets events gather. At 2 s a service of 100,000
# tasks (a 3 s pass) took 60 % of the loop, not a quarter, while its tasks came up (45 s of
# a 130 s deploy); a reaction within 10 s at that size is what a restart delay (5 s by
# default) nearly costs anyway.
MAX_PAUSE = 10.0


def decision_budget(service: Service | None, tasks: int) -> int:
    """How many task changes one pass over a service may decide: ``DECISION_BUDGET``, or
    for a big service a ``SERVICE_PASSES``-th of its tasks (those it has, or the replicas
    it is to have, whichever is more)."""
    replicas = service.raw_spec.get("replicas") if service is not None else None
    size = max(tasks, replicas if isinstance(replicas, int) else 0)
    return max(DECISION_BUDGET, -(-size // SERVICE_PASSES))


def creates_sharing_parts(creates: list[dict]) -> list[dict]:
    """Task creates in which only the first of each service spec version carries the
    parts every such task has (container spec, resources, ...: TASK_SHARED_FIELDS); the
    others name it (``parts_from``, store/state.py) and carry a fifth of the bytes. The
    ops are committed in order, so the one named is stored first or in the same
    transaction; if it is not, the transaction is refused and the next pass decides again."""
    first: dict[tuple, str] = {}
    ops = []
    for op in creates:
        spec = op["spec"]
        key = (spec.get("service_id"), spec.get("spec_digest"))
        if key in first:
            op = dict(op, spec={k: v for k, v in spec.items() if k not in TASK_SHARED_FIELDS}, parts_from=first[key])
        else:
            first[key] = op["id"]
        ops.append(op)
    return ops


def decision_ops(service: Service | None, decision: Decision) -> list[dict]:
    """The transaction that carries out a decision (task IDs are picked here)."""
    deleted = {t.id for t in decision.deletes}
    updates = {t.id: (t, spec) for t, spec in decision.updates if t.id not in deleted}
    ops = creates_sharing_parts([{"op": "create", "kind": "task", "id": new_id(), "spec": c["spec"],
                                  "status": c["status"]} for c in decision.creates])
    ops += [{"op": "update", "kind": "task", "id": task_id, "version": t.version, **spec_update(t.raw["spec"], spec)}
            for task_id, (t, spec) in updates.items()]
    ops += [{"op": "delete", "kind": "task", "id": t.id, "version": t.version} for t in decision.deletes]
    if decision.service_status is not None and service is not None:
        op = {"op": "update", "kind": "service", "id": service.id, "version": service.version,
              "status": decision.service_status}
        if decision.rollback is not None:  # the spec goes back; the previous spec is used up
            op.update(spec=decision.rollback.spec, previous_spec=None)
        ops.append(op)
    return ops


def decide(service: Service | None, tasks: list[Task], nodes: dict[str, Node], now: float, waiting,
           budget: int) -> tuple[Decision, list[dict]]:
    """A service's decision and the operations that carry it out (pure but for the new
    task IDs)."""
    decision = reconcile_service(service, tasks, nodes, now, waiting, budget=budget)
    return decision, ([] if decision.empty else decision_ops(service, decision))


def _decisive_state(state: str | None) -> str:
    """What of a task's state a reconcile can tell apart: every state before running is
    one ("starting"); running and each end state are their own."""
    state = state or TaskState.NEW
    return state if state == TaskState.RUNNING or is_terminal(state) else "starting"


def can_change_a_decision(change) -> bool:
    """False for a task update that only moved its status between two states before
    running (assigned → accepted → preparing → ready → starting): ``reconcile_service``
    decides the same on either side (it tells apart only running, the end states and
    everything before). A 10,000-task deploy writes each task's status four times or
    so, in 50 ms batches, and each batch used to cost a reconcile of all 10,000 tasks
    (0.3-0.4 s on the leader's loop)."""
    return change.kind != Task.kind or status_moved_across(change, _decisive_state)


def touched_services(event) -> set[str]:
    if event.reset:
        return {ALL}
    touched = set()
    for change in event.changes:
        if change.kind == Task.kind:
            if can_change_a_decision(change):
                touched.add(Task(change.object).spec.service_id or "")
        elif change.kind == Service.kind:
            touched.add(change.id)
        elif change.kind == Node.kind:
            touched.add(ALL)
    return touched


class TasksByService:
    """Each service's tasks, read from the store's index the first time they are asked
    for: a pass over the services one event touched reads only theirs, not every task."""

    def __init__(self, store):
        self.store = store
        self.read: dict[str, list[Task]] = {}

    def read_all(self) -> None:
        for task in self.store.list(Task):
            self.read.setdefault(task.spec.service_id, []).append(task)

    def get(self, service_id: str, default=None) -> list[Task]:
        """Like ``dict.get``; a service without tasks has the empty list (``default`` is
        accepted for that signature, and never needed)."""
        if service_id not in self.read:
            self.read[service_id] = self.store.select(Task, service_id=service_id)
        return self.read[service_id]


def pause_after(deciding_seconds: float) -> float:
    """How long the orchestrator lets store events gather before its next pass, given
    what deciding the last one took on the event loop: at most ``ORCHESTRATOR_SHARE``
    of the loop goes to deciding. Nothing for small services (a pass of 1 ms waits 3 ms);
    for a service of 10,000 tasks (0.3 s a pass) about a second, instead of a pass after
    every 50 ms batch of status reports (each of its tasks turning running is one); for
    one of 100,000 (3 s) nine."""
    return min(MAX_PAUSE, deciding_seconds * (1 / ORCHESTRATOR_SHARE - 1))


class Orchestrator(LeaderLoop):
    name = "orchestrator"
    last_deciding_seconds = 0.0  # what the last pass's reconcile_service calls took

    async def run(self, queue: asyncio.Queue) -> None:
        dirty = {ALL}
        wake_at: float | None = None
        while self.store.is_leader:
            if wake_at is not None and time.time() >= wake_at:
                dirty.add(ALL)
                wake_at = None
            if dirty:
                next_wake, dirty = await self.reconcile(dirty)
                if next_wake is not None:
                    wake_at = next_wake if wake_at is None else min(wake_at, next_wake)
                if dirty:
                    continue  # conflicts: at once, with what the store says now
            timeout = None if wake_at is None else max(0.0, wake_at - time.time())
            try:
                event = await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError:
                continue
            rest = pause_after(self.last_deciding_seconds)
            if rest > 0:  # more events gather meanwhile, and one pass takes them all
                await asyncio.sleep(rest)
            for item in [event, *drain(queue)]:
                dirty |= touched_services(item)

    async def reconcile(self, dirty: set[str]) -> tuple[float | None, set[str]]:
        """Reconcile the dirty services; returns the earliest wake-up and what to redo."""
        services = {s.id: s for s in self.store.list(Service)}
        nodes = {n.id: n for n in self.store.list(Node)}
        tasks_by_service = TasksByService(self.store)
        if ALL in dirty:
            await off_loop(tasks_by_service.read_all)  # every task of the cluster
            dirty = set(services) | set(tasks_by_service.read)
        # A service held back by depends_on is looked at again whenever anything moves.
        dirty |= {s.id for s in services.values() if s.raw_spec.get("depends_on") and not tasks_by_service.get(s.id)}
        now = time.time()
        wake_at, redo = None, set()
        self.last_deciding_seconds = 0.0
        for service_id in sorted(dirty):
            service = services.get(service_id)
            tasks = tasks_by_service.get(service_id, [])
            waiting = None
            if service is not None and not tasks and service.raw_spec.get("depends_on"):
                waiting = dependencies_waiting(service, list(services.values()), tasks_by_service)
            budget = decision_budget(service, len(tasks))
            arguments = (decide, service, tasks, nodes, now, waiting, budget)
            (decision, ops), took = (await off_loop(*arguments) if len(tasks) >= OFF_LOOP_TASKS
                                     else timed_call(*arguments))
            self.last_deciding_seconds += took
            if decision.wake_at is not None:
                wake_at = decision.wake_at if wake_at is None else min(wake_at, decision.wake_at)
            if decision.truncated:
                redo.add(service_id)  # the rest of it, at once
            if decision.empty:
                continue
            if not self.store.is_leader:
                return None, set()
            try:
                # WRITE_BATCH ops a transaction, WRITE_WINDOW of them in flight; the loop (the
                # API, the rest of the leader) runs while they commit
                await self.store.commit_batched(ops, proceed=lambda: self.store.is_leader, in_flight=WRITE_WINDOW,
                                                batch_ops=WRITE_BATCH)
                if not self.store.is_leader:
                    return None, set()
            except StoreError as err:
                log.debug("reconciling service %s: %s; again", service_id, err)
                redo.add(service_id)
        return wake_at, redo
