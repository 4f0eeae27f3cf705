"""The scheduling loop, the I/O edge around the pure scheduler: while this manager
leads, pick up pending tasks, batch them (wait until no new work has come for
``BATCH_QUIET``, at most ``BATCH_MAX``, and no longer once ``BATCH_ENOUGH`` tasks wait),
place them with ``schedule()`` and write every assignment (node and state ``assigned``)
of a batch as one transaction. A task no node can take stays
pending, with the scheduler's explanation as its status message (rewritten only when
it changes). When the batch's transaction conflicts with another write, each task is
retried on its own (``commit_each_on_conflict``).

A pass costs what changed, not the cluster (issue 8): it keeps each node's
``NodeInfo`` between passes and rebuilds only those of nodes whose tasks or node object
changed (reading that node's tasks from the store's index), and it looks only at the
tasks that became pending since the last pass, unless something may have made room
(a node changed, a task ended or went away): then at every pending task, as before.

Placing a task on a node that runs the overlay data plane also allocates its network
addresses (manager/allocator.py): its address on each of its overlay networks, and its
node's gateway on a network the node had no task on. Those assignments are committed
with the networks they took addresses from (``commit_guarded``), so that a concurrent
allocation on the same network makes the pass decide again; a task whose network has no
address left stays pending, the allocator's error as its message. (The address book is
built from every task, so on a cluster with overlay nodes a pass still reads them all:
known, and left for when overlay clusters grow large.)"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from swarmlet.api.objects import ACTIVE_DESIRED_STATES, TaskState, is_terminal
from swarmlet.api.views import Network, Node, Service, Task
from swarmlet.api.ipam import DATA_PLANE_OVERLAY
from swarmlet.manager.allocator import AddressBook, AllocationError, mesh_gateways
from swarmlet.manager.leaderloop import LeaderLoop, drain, off_loop, status_moved_across
from swarmlet.api.constraints import PlacementSpecError
from swarmlet.manager.scheduler.scheduler import schedule
from swarmlet.manager.scheduler.storemap import holds_resources, node_info, node_infos, task_request
from swarmlet.manager.scheduler.types import NodeInfo, TaskRequest
from swarmlet.manager.retry import (CONFLICT_ATTEMPTS, WRITE_BATCH, WRITE_WINDOW, commit_each_on_conflict,
                                    commit_guarded)
from swarmlet.store import Conflict, StoreError

log = logging.getLogger("swarmlet.scheduler")

BATCH_QUIET = 0.05
BATCH_MAX = 1.0
# A batch this big is placed at once: waiting for more saves nothing (its assignments are
# committed in WRITE_BATCH transactions anyway), and a 10,000-task deploy's tasks waited
# ~2 s pending on average while the scheduler waited out BATCH_MAX behind every batch.
BATCH_ENOUGH = WRITE_BATCH * WRITE_WINDOW


def pending_tasks(tasks: list[Task]) -> list[Task]:
    return [t for t in tasks if t.status.state == TaskState.PENDING and t.spec.desired_state in ACTIVE_DESIRED_STATES]


def assignment_ops(nodes: list[Node], tasks: list[Task], now: float, book: AddressBook | None = None) -> list[dict]:
    """The writes of one scheduling pass over the store's nodes and tasks (pure); with
    ``book``, the network addresses of the tasks placed on nodes that run the overlay data
    plane too (then ``network_ops(book)`` are the networks to write with them)."""
    return placement_ops(pending_tasks(tasks), node_infos(nodes, tasks), hostnames(nodes), now, book,
                         overlay_node_ids(nodes))


def hostnames(nodes: list[Node]) -> dict[str, str]:
    return {n.id: n.status.hostname or n.id for n in nodes}


def overlay_node_ids(nodes: list[Node]) -> frozenset[str]:
    return frozenset(n.id for n in nodes if n.data_plane == DATA_PLANE_OVERLAY)


def placement_ops(pending: list[Task], infos: list[NodeInfo], names: dict[str, str], now: float,
                  book: AddressBook | None = None, overlay_nodes: frozenset[str] = frozenset()) -> list[dict]:
    """The writes that place ``pending`` on the nodes ``infos`` describe (pure). A node
    without the overlay data plane makes nothing of an address (its engine's bridge
    networks give their own), so its tasks take none: a /24 does not cap a service's
    replicas there."""
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
    for placement in schedule(infos, requests):
        task = by_id[placement.task_id]
        if placement.node_id is None:
            ops.append(_status_op(task, placement.explanation, now))
            continue
        # Only what placing changes (not the whole spec again: it goes through Raft to every manager).
        fields = {"node_id": placement.node_id}
        if book is not None and placement.node_id in overlay_nodes:
            try:
                addresses = book.allocate_task(task, placement.node_id)
            except AllocationError as err:
                ops.append(_status_op(task, f"no network address: {err}", now))
                continue
            if addresses:
                fields["network_addresses"] = addresses
        ops.append({"op": "update", "kind": "task", "id": task.id, "version": task.version, "spec_fields": fields,
                    "status": task.status.replace(state=TaskState.ASSIGNED, timestamp=now,
                                   message=f"scheduled on {names.get(placement.node_id, placement.node_id)}")})
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


@dataclass
class Changed:
    """What the store events since the last pass say the next pass must look at."""

    everything: bool = True  # the first pass, a reset: rebuild every NodeInfo, look at every pending task
    room: bool = False  # something may have made room: look at every pending task
    nodes: set[str] = field(default_factory=set)  # NodeInfos to rebuild
    tasks: set[str] = field(default_factory=set)  # tasks that may have become pending

    @property
    def any(self) -> bool:
        return self.everything or self.room or bool(self.tasks)

    def note(self, event) -> bool:
        """Take an event in; whether it gave the next pass anything to do."""
        if event.reset:
            self.everything = True
            return True
        work = False
        for change in event.changes:
            if change.kind == Node.kind:
                self.room = True
                self.nodes.add(change.id)
                work = True
            elif change.kind == Task.kind:
                if not can_change_placement(change):
                    continue
                task = Task(change.object)
                if task.spec.node_id:
                    self.nodes.add(task.spec.node_id)
                if change.action == "delete" or is_terminal(task.status.state):
                    self.room = True
                elif task.status.state == TaskState.PENDING:
                    self.tasks.add(change.id)
                work = True
        return work


def _placement_state(state: str | None) -> str:
    """What of a task's state placing tells apart: pending, ended, and placed (every
    state between, which holds the same resources and ports: ``holds_resources``)."""
    return state if state == TaskState.PENDING else "ended" if is_terminal(state) else "placed"


def can_change_placement(change) -> bool:
    """False for a task update that only moved its status between two states of a task
    placed and not ended (assigned → accepted → … → running): its node's NodeInfo need
    not be rebuilt, and it is no work. Every task of a deploy makes four or so. A task
    still pending is always looked at again."""
    return (status_moved_across(change, _placement_state)
            or (change.object.get("status") or {}).get("state") == TaskState.PENDING)


class SchedulerLoop(LeaderLoop):
    name = "scheduler"

    def __init__(self, store):
        super().__init__(store)
        self._infos: dict[str, NodeInfo] = {}  # node ID -> its NodeInfo, kept between passes

    async def run(self, queue: asyncio.Queue) -> None:
        self._infos: dict[str, NodeInfo] = {}
        changed = Changed()
        while self.store.is_leader:
            if changed.any:
                await self.schedule_pass(changed)
                changed = Changed(everything=False)
            changed.note(await queue.get())
            started = last_work = time.monotonic()
            # More work coming in: wait for it, but not behind events that bring none (the
            # status reports of placed tasks come every few ms during a deploy)
            while changed.any and len(changed.tasks) < BATCH_ENOUGH and time.monotonic() - started < BATCH_MAX:
                quiet_left = BATCH_QUIET - (time.monotonic() - last_work)
                if quiet_left <= 0:
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), quiet_left)
                except asyncio.TimeoutError:
                    break
                if changed.note(event):
                    last_work = time.monotonic()
            for event in drain(queue):
                changed.note(event)

    async def schedule_pass(self, changed: Changed | None = None) -> None:
        """One pass over what ``changed`` names (everything when None)."""
        changed = changed or Changed()
        for _attempt in range(CONFLICT_ATTEMPTS):
            # Read and decided on a worker thread: placing 2,000 tasks held the loop for
            # 0.15-0.27 s (leaderloop.off_loop). The NodeInfos come back with the plan
            # rather than being kept by the thread: a pass cancelled meanwhile (leadership
            # lost) must not leave its infos to the next leader's pass.
            (ops, guards, self._infos), _took = await off_loop(self._plan, changed, self._infos)
            if not (ops or guards) or not self.store.is_leader:
                return
            # The nodes this pass places on are rebuilt next time, from what was committed.
            placed_on = {op["spec_fields"]["node_id"] for op in ops if "spec_fields" in op}
            self._infos = {node_id: info for node_id, info in self._infos.items() if node_id not in placed_on}
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
                changed = Changed()  # from scratch
            except StoreError as err:
                log.info("scheduling pass not written: %s", err)
                return

    def _plan(self, changed: Changed, infos: dict[str, NodeInfo]
              ) -> tuple[list[dict], list[dict], dict[str, NodeInfo]]:
        """(the placements of a pass, the network guards to commit with them, the
        NodeInfos they were placed with) from what the store says now and ``infos``
        (kept from the last pass; not changed here)."""
        if changed.everything or changed.room:
            pending = pending_tasks(self.store.select(Task, state=TaskState.PENDING))
        else:
            fresh = (self.store.get(Task, task_id) for task_id in sorted(changed.tasks))
            pending = pending_tasks([task for task in fresh if task is not None])
        nodes = self.store.list(Node)
        overlay = overlay_node_ids(nodes)
        if not pending and not overlay:  # (overlay nodes may need mesh gateways all the same)
            return [], [], infos
        infos = self._refreshed(infos, nodes, None if changed.everything else changed.nodes)
        book, guards = None, []
        if overlay:
            services = self.store.list(Service)
            book = AddressBook.build(self.store.list(Network), self.store.list(Task), (s.id for s in services),
                                     (n.id for n in nodes))
        ops = placement_ops(pending, list(infos.values()), hostnames(nodes), time.time(), book, overlay)
        if book is not None:
            for problem in mesh_gateways(book, (s.raw_spec for s in services), overlay):
                log.warning("%s", problem)
            guards = network_ops(book)
        return ops, guards, infos

    def _refreshed(self, infos: dict[str, NodeInfo], nodes: list[Node], stale: set[str] | None
                   ) -> dict[str, NodeInfo]:
        """``infos`` brought up to date: all of them (``stale`` None) or those named."""
        current = {}
        for node in nodes:
            info = infos.get(node.id)
            if info is None or stale is None or node.id in stale:
                info = node_info(node, [t for t in self.store.select(Task, node_id=node.id) if holds_resources(t)])
            current[node.id] = info
        return current

    def _unchanged(self, ops: list[dict]) -> list[dict]:
        """The ops whose task nobody wrote since the pass read it; a changed task is
        left for the next pass, which looks at it again."""
        current = {op["id"]: self.store.get(Task, op["id"]) for op in ops}
        return [op for op in ops if current[op["id"]] is not None and current[op["id"]].version == op["version"]]
