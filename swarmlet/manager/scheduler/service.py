"""The scheduling loop, the I/O edge around the pure scheduler: while this manager
leads, pick up pending tasks, batch them (wait ``BATCH_QUIET`` for more, at most
``BATCH_MAX``), place them with ``schedule()`` and write every assignment (node and
state ``assigned``) of a batch as one transaction. A task no node can take stays
pending, with the scheduler's explanation as its status message (rewritten only when
it changes). When the batch's transaction conflicts with another write, each task is
retried on its own (``commit_each_on_conflict``).

A pass costs what changed, not the cluster (issue 8): it keeps each node's
``NodeInfo`` between passes and rebuilds only those of nodes whose tasks or node object
changed (reading that node's tasks from the store's index), and it looks only at the
tasks that became pending since the last pass, unless something may have made room
(a node changed, a task ended or went away): then at every pending task, as before."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from swarmlet.api.objects import ACTIVE_DESIRED_STATES, TaskState, is_terminal
from swarmlet.api.views import Node, Task
from swarmlet.manager.leaderloop import LeaderLoop, drain
from swarmlet.api.constraints import PlacementSpecError
from swarmlet.manager.scheduler.scheduler import schedule
from swarmlet.manager.scheduler.storemap import holds_resources, node_info, node_infos, task_request
from swarmlet.manager.scheduler.types import NodeInfo, TaskRequest
from swarmlet.manager.retry import commit_each_on_conflict
from swarmlet.store import StoreError

log = logging.getLogger("swarmlet.scheduler")

BATCH_QUIET = 0.05
BATCH_MAX = 1.0


def pending_tasks(tasks: list[Task]) -> list[Task]:
    return [t for t in tasks if t.status.state == TaskState.PENDING and t.spec.desired_state in ACTIVE_DESIRED_STATES]


def assignment_ops(nodes: list[Node], tasks: list[Task], now: float) -> list[dict]:
    """The writes of one scheduling pass over the store's nodes and tasks (pure)."""
    return placement_ops(pending_tasks(tasks), node_infos(nodes, tasks), hostnames(nodes), now)


def hostnames(nodes: list[Node]) -> dict[str, str]:
    return {n.id: n.status.hostname or n.id for n in nodes}


def placement_ops(pending: list[Task], infos: list[NodeInfo], names: dict[str, str], now: float) -> list[dict]:
    """The writes that place ``pending`` on the nodes ``infos`` describe (pure)."""
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
        ops.append({"op": "update", "kind": "task", "id": task.id, "version": task.version,
                    "spec": task.spec.replace(node_id=placement.node_id),
                    "status": task.status.replace(state=TaskState.ASSIGNED, timestamp=now,
                                   message=f"scheduled on {names.get(placement.node_id, placement.node_id)}")})
    return [op for op in ops if op is not None]


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

    def note(self, event) -> None:
        if event.reset:
            self.everything = True
            return
        for change in event.changes:
            if change.kind == Node.kind:
                self.room = True
                self.nodes.add(change.id)
            elif change.kind == Task.kind:
                task = Task(change.object)
                if task.spec.node_id:
                    self.nodes.add(task.spec.node_id)
                if change.action == "delete" or is_terminal(task.status.state):
                    self.room = True
                elif task.status.state == TaskState.PENDING:
                    self.tasks.add(change.id)


class SchedulerLoop(LeaderLoop):
    name = "scheduler"

    async def run(self, queue: asyncio.Queue) -> None:
        self._infos: dict[str, NodeInfo] = {}
        changed = Changed()
        while self.store.is_leader:
            if changed.any:
                await self.schedule_pass(changed)
                changed = Changed(everything=False)
            changed.note(await queue.get())
            started = time.monotonic()
            while time.monotonic() - started < BATCH_MAX:  # more work coming in: wait for it
                try:
                    changed.note(await asyncio.wait_for(queue.get(), BATCH_QUIET))
                except asyncio.TimeoutError:
                    break
            for event in drain(queue):
                changed.note(event)

    async def schedule_pass(self, changed: Changed) -> None:
        if changed.everything or changed.room:
            pending = pending_tasks(self.store.select(Task, state=TaskState.PENDING))
        else:
            pending = pending_tasks([t for t in map(lambda i: self.store.get(Task, i), sorted(changed.tasks)) if t])
        if not pending:
            return
        nodes = self.store.list(Node)
        self._refresh_infos(nodes, None if changed.everything else changed.nodes)
        ops = placement_ops(pending, list(self._infos.values()), hostnames(nodes), time.time())
        if not ops or not self.store.is_leader:
            return
        # The nodes this pass places on are rebuilt next time, from what was committed.
        self._infos = {node_id: info for node_id, info in self._infos.items()
                       if node_id not in {op["spec"]["node_id"] for op in ops if "spec" in op}}
        try:
            failures = await commit_each_on_conflict(self.store, ops, self._unchanged)
        except StoreError as err:
            log.info("scheduling pass not written: %s", err)
            return
        for op, err in failures:
            log.debug("assignment of %s: %s", op["id"], err)

    def _refresh_infos(self, nodes: list[Node], stale: set[str] | None) -> None:
        """Bring the kept NodeInfos up to date: all of them (``stale`` None) or those named."""
        current = {}
        for node in nodes:
            info = self._infos.get(node.id)
            if info is None or stale is None or node.id in stale:
                info = node_info(node, [t for t in self.store.select(Task, node_id=node.id) if holds_resources(t)])
            current[node.id] = info
        self._infos = current

    def _unchanged(self, ops: list[dict]) -> list[dict]:
        """The ops whose task nobody wrote since the pass read it; a changed task is
        left for the next pass, which looks at it again."""
        current = {op["id"]: self.store.get(Task, op["id"]) for op in ops}
        return [op for op in ops if current[op["id"]] is not None and current[op["id"]].version == op["version"]]
