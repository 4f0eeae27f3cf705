"""The scheduling loop, the I/O edge around the pure scheduler: while this manager
leads, pick up pending tasks, batch them (wait ``BATCH_QUIET`` for more, at most
``BATCH_MAX``), place them with ``schedule()`` and write every assignment (node and
state ``assigned``) of a batch as one transaction. A task no node can take stays
pending, with the scheduler's explanation as its status message (rewritten only when
it changes). When the batch's transaction conflicts with another write, each task is
retried on its own (``commit_each_on_conflict``).

Placing a task on a node that runs the overlay data plane also allocates its network
addresses (manager/allocator.py): its address on each of its overlay networks, and its
node's gateway on a network the node had no task on. Those assignments are committed with the networks they took addresses from
(``commit_guarded``), so that a concurrent allocation on the same network makes the
pass decide again; a task whose network has no address left stays pending, the
allocator's error as its message."""
from __future__ import annotations

import asyncio
import logging
import time

from swarmlet.api.objects import ACTIVE_DESIRED_STATES, TaskState
from swarmlet.api.views import Network, Node, Service, Task
from swarmlet.api.ipam import DATA_PLANE_OVERLAY
from swarmlet.manager.allocator import AddressBook, AllocationError, mesh_gateways
from swarmlet.manager.leaderloop import LeaderLoop, drain
from swarmlet.api.constraints import PlacementSpecError
from swarmlet.manager.scheduler.scheduler import schedule
from swarmlet.manager.scheduler.storemap import node_infos, task_request
from swarmlet.manager.scheduler.types import TaskRequest
from swarmlet.manager.retry import CONFLICT_ATTEMPTS, commit_each_on_conflict, commit_guarded
from swarmlet.store import Conflict, StoreError

log = logging.getLogger("swarmlet.scheduler")

BATCH_QUIET = 0.05
BATCH_MAX = 1.0
# A task entering one of these states needs a node, or frees its node's resources.
FREES_OR_NEEDS_A_PLACE = frozenset((TaskState.PENDING, TaskState.COMPLETE, TaskState.FAILED, TaskState.SHUTDOWN,
                                    TaskState.REJECTED))


def pending_tasks(tasks: list[Task]) -> list[Task]:
    return [t for t in tasks if t.status.state == TaskState.PENDING and t.spec.desired_state in ACTIVE_DESIRED_STATES]


def assignment_ops(nodes: list[Node], tasks: list[Task], now: float, book: AddressBook | None = None) -> list[dict]:
    """The writes of one scheduling pass over the store's nodes and tasks (pure); with
    ``book``, the network addresses of the tasks placed on nodes that run the overlay data
    plane too (then ``network_ops(book)`` are the networks to write with them). A node
    without it makes nothing of an address (its engine's bridge networks give their own),
    so its tasks take none: a /24 does not cap a service's replicas there."""
    pending = pending_tasks(tasks)
    if not pending:
        return []
    requests, ops = [], []
    # The replicas of one service spec share their requirements: converted once, so a
    # pass over 5,000 pending replicas holds the leader's loop about half as long.
    made_from: dict[tuple[str, str], TaskRequest] = {}
    for task in pending:
        key = (task.spec.service_id, task.spec.spec_digest)
        try:
            request = task_request(task, made_from.get(key) if key[1] else None)
        except PlacementSpecError as err:
            ops.append(_status_op(task, f"invalid placement: {err}", now))
            continue
        made_from.setdefault(key, request)
        requests.append(request)
    by_id = {t.id: t for t in pending}
    overlay_nodes = {n.id for n in nodes if n.data_plane == DATA_PLANE_OVERLAY}
    hostnames = {n.id: n.status.hostname or n.id for n in nodes}
    for placement in schedule(node_infos(nodes, tasks), requests):
        task = by_id[placement.task_id]
        if placement.node_id is None:
            ops.append(_status_op(task, placement.explanation, now))
            continue
        spec = task.spec.replace(node_id=placement.node_id)
        if book is not None and placement.node_id in overlay_nodes:
            try:
                addresses = book.allocate_task(task, placement.node_id)
            except AllocationError as err:
                ops.append(_status_op(task, f"no network address: {err}", now))
                continue
            if addresses:
                spec["network_addresses"] = addresses
        ops.append({"op": "update", "kind": "task", "id": task.id, "version": task.version,
                    "spec": spec,
                    "status": task.status.replace(state=TaskState.ASSIGNED, timestamp=now,
                                   message=f"scheduled on {hostnames.get(placement.node_id, placement.node_id)}")})
    return [op for op in ops if op is not None]


def network_ops(book: AddressBook) -> list[dict]:
    """The networks whose allocation a pass changed, each written with the version read."""
    return [{"op": "update", "kind": Network.kind, "id": network.id, "version": network.version,
             "status": book.status(network)} for network in book.written()]


def _status_op(task: Task, message: str, now: float) -> dict | None:
    if task.status.message == message:
        return None
    return {"op": "update", "kind": "task", "id": task.id, "version": task.version,
            "status": task.status.replace(message=message, timestamp=now)}


def wants_scheduling(event) -> bool:
    return event.reset or any(c.kind == "node" or (c.kind == "task" and (
        c.action == "delete" or Task(c.object).status.state in FREES_OR_NEEDS_A_PLACE))
        for c in event.changes)


class SchedulerLoop(LeaderLoop):
    name = "scheduler"

    async def run(self, queue: asyncio.Queue) -> None:
        await self.schedule_pass()
        while self.store.is_leader:
            if not wants_scheduling(await queue.get()):
                continue
            started = time.monotonic()
            while time.monotonic() - started < BATCH_MAX:  # more work coming in: wait for it
                try:
                    await asyncio.wait_for(queue.get(), BATCH_QUIET)
                except asyncio.TimeoutError:
                    break
            drain(queue)
            await self.schedule_pass()

    async def schedule_pass(self) -> None:
        for _attempt in range(CONFLICT_ATTEMPTS):
            nodes, tasks, services = self.store.list(Node), self.store.list(Task), self.store.list(Service)
            book = AddressBook.build(self.store.list(Network), tasks, (s.id for s in services), (n.id for n in nodes))
            ops = assignment_ops(nodes, tasks, time.time(), book)
            for problem in mesh_gateways(book, (s.raw_spec for s in services),
                                         (n.id for n in nodes if n.data_plane == DATA_PLANE_OVERLAY)):
                log.warning("%s", problem)
            guards = network_ops(book)
            if not (ops or guards) or not self.store.is_leader:
                return
            try:
                if not guards:  # no address taken: each raced task on its own, the rest goes on
                    failures = await commit_each_on_conflict(self.store, ops, self._unchanged)
                    for op, err in failures:
                        log.debug("assignment of %s: %s", op["id"], err)
                    return
                await commit_guarded(self.store, ops, guards)
                return
            except Conflict as err:  # another write to a task or network of this pass: decide again
                log.debug("scheduling pass raced another write (%s); again", err)
            except StoreError as err:
                log.info("scheduling pass not written: %s", err)
                return

    def _unchanged(self, ops: list[dict]) -> list[dict]:
        """The ops whose task nobody wrote since the pass read it; a changed task is
        left for the next pass, which looks at it again."""
        current = {op["id"]: self.store.get(Task, op["id"]) for op in ops}
        return [op for op in ops if current[op["id"]] is not None and current[op["id"]].version == op["version"]]
