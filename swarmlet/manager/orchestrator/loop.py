"""The orchestrator's I/O edge: while this manager leads, reconcile every service that a
store event touched (a full pass when it becomes leader, when the state was reset, or
when a node changed), and again when a restart or update delay runs out. Each
service's decision is committed with ``commit_batched`` (bounded transactions, the
service's status last). The decision's operations are independent of each other, so a
part that did not commit (a conflict: the dispatcher or the scheduler wrote one of its
tasks meanwhile) just reconciles that service again, from what the store says then.

A decision touches at most ``WRITE_BATCH`` tasks (retry.py): a service scaled to thousands
of replicas is reconciled in parts, the event loop running between them (and between
services), so the API keeps answering meanwhile."""
from __future__ import annotations

import asyncio
import logging
import time

from swarmlet.api.views import Node, Service, Task
from swarmlet.manager.leaderloop import LeaderLoop, drain
from swarmlet.manager.orchestrator.reconcile import Decision, dependencies_waiting, reconcile_service
from swarmlet.manager.retry import WRITE_BATCH
from swarmlet.node.config import new_id
from swarmlet.store import StoreError

log = logging.getLogger("swarmlet.orchestrator")

ALL = "*"


def decision_ops(service: Service | None, decision: Decision) -> list[dict]:
    """The transaction that carries out a decision (task IDs are picked here)."""
    deleted = {t.id for t in decision.deletes}
    updates = {t.id: (t, spec) for t, spec in decision.updates if t.id not in deleted}
    ops = [{"op": "create", "kind": "task", "id": new_id(), "spec": c["spec"], "status": c["status"]}
           for c in decision.creates]
    ops += [{"op": "update", "kind": "task", "id": task_id, "version": t.version, "spec": spec}
            for task_id, (t, spec) in updates.items()]
    ops += [{"op": "delete", "kind": "task", "id": t.id, "version": t.version} for t in decision.deletes]
    if decision.service_status is not None and service is not None:
        op = {"op": "update", "kind": "service", "id": service.id, "version": service.version,
              "status": decision.service_status}
        if decision.rollback is not None:  # the spec goes back; the previous spec is used up
            op.update(spec=decision.rollback.spec, previous_spec=None)
        ops.append(op)
    return ops


def touched_services(event) -> set[str]:
    if event.reset:
        return {ALL}
    touched = set()
    for change in event.changes:
        if change.kind == Task.kind:
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


class Orchestrator(LeaderLoop):
    name = "orchestrator"

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
            for item in [event, *drain(queue)]:
                dirty |= touched_services(item)

    async def reconcile(self, dirty: set[str]) -> tuple[float | None, set[str]]:
        """Reconcile the dirty services; returns the earliest wake-up and what to redo."""
        services = {s.id: s for s in self.store.list(Service)}
        nodes = {n.id: n for n in self.store.list(Node)}
        tasks_by_service = TasksByService(self.store)
        if ALL in dirty:
            tasks_by_service.read_all()
            dirty = set(services) | set(tasks_by_service.read)
        # A service held back by depends_on is looked at again whenever anything moves.
        dirty |= {s.id for s in services.values() if s.raw_spec.get("depends_on") and not tasks_by_service.get(s.id)}
        now = time.time()
        wake_at, redo = None, set()
        for service_id in sorted(dirty):
            service = services.get(service_id)
            tasks = tasks_by_service.get(service_id, [])
            waiting = None
            if service is not None and not tasks and service.raw_spec.get("depends_on"):
                waiting = dependencies_waiting(service, list(services.values()), tasks_by_service)
            decision = reconcile_service(service, tasks, nodes, now, waiting, budget=WRITE_BATCH)
            if decision.wake_at is not None:
                wake_at = decision.wake_at if wake_at is None else min(wake_at, decision.wake_at)
            if decision.truncated:
                redo.add(service_id)  # the rest of it, at once
            if decision.empty:
                continue
            if not self.store.is_leader:
                return None, set()
            try:
                await self.store.commit_batched(decision_ops(service, decision),
                                                proceed=lambda: self.store.is_leader)
            except StoreError as err:
                log.debug("reconciling service %s: %s; again", service_id, err)
                redo.add(service_id)
            await asyncio.sleep(0)  # let the API (and the rest of the leader) run between transactions
        return wake_at, redo
