"""The scheduling loop, the I/O edge around the pure scheduler: while this manager
leads, pick up pending tasks, batch them (wait ``BATCH_QUIET`` for more, at most
``BATCH_MAX``), place them with ``schedule()`` and write every assignment (node and
state ``assigned``) of a batch as one transaction. A task no node can take stays
pending, with the scheduler's explanation as its status message (rewritten only when
it changes). When the batch's transaction conflicts with another write, each task is
retried on its own."""
from __future__ import annotations

import asyncio
import logging
import time

from swarmlet.api.objects import DESIRED_READY, DESIRED_RUNNING
from swarmlet.manager.leaderloop import LeaderLoop, drain
from swarmlet.api.constraints import PlacementSpecError
from swarmlet.manager.scheduler.scheduler import schedule
from swarmlet.manager.scheduler.storemap import node_infos, task_request
from swarmlet.store import Conflict, StoreError

log = logging.getLogger("swarmlet.scheduler")

BATCH_QUIET = 0.05
BATCH_MAX = 1.0


def pending_tasks(tasks: list[dict]) -> list[dict]:
    return [t for t in tasks if t["status"].get("state") == "pending"
            and t["spec"].get("desired_state") in (DESIRED_READY, DESIRED_RUNNING)]


def assignment_ops(nodes: list[dict], tasks: list[dict], now: float) -> list[dict]:
    """The writes of one scheduling pass over the store's nodes and tasks (pure)."""
    pending = pending_tasks(tasks)
    if not pending:
        return []
    requests, ops = [], []
    for task in pending:
        try:
            requests.append(task_request(task))
        except PlacementSpecError as err:
            ops.append(_status_op(task, f"invalid placement: {err}", now))
    by_id = {t["id"]: t for t in pending}
    hostnames = {n["id"]: n["status"].get("hostname", n["id"]) for n in nodes}
    for placement in schedule(node_infos(nodes, tasks), requests):
        task = by_id[placement.task_id]
        if placement.node_id is None:
            ops.append(_status_op(task, placement.explanation, now))
            continue
        ops.append({"op": "update", "kind": "task", "id": task["id"], "version": task["version"],
                    "spec": dict(task["spec"], node_id=placement.node_id),
                    "status": dict(task["status"], state="assigned", timestamp=now,
                                   message=f"scheduled on {hostnames.get(placement.node_id, placement.node_id)}")})
    return [op for op in ops if op is not None]


def _status_op(task: dict, message: str, now: float) -> dict | None:
    if task["status"].get("message") == message:
        return None
    return {"op": "update", "kind": "task", "id": task["id"], "version": task["version"],
            "status": dict(task["status"], message=message, timestamp=now)}


def wants_scheduling(event) -> bool:
    return event.reset or any(c.kind == "node" or (c.kind == "task" and (
        c.action == "delete" or c.object["status"].get("state") in ("pending", "complete", "failed", "shutdown",
                                                                    "rejected")))
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
        ops = assignment_ops(self.store.list("node"), self.store.list("task"), time.time())
        if not ops or not self.store.is_leader:
            return
        try:
            await self.store.commit(ops)
        except Conflict:
            for op in ops:  # someone wrote some of these tasks meanwhile: one by one
                current = self.store.get("task", op["id"])
                if current is None or current["version"] != op["version"]:
                    continue  # changed: the next pass looks at it again
                try:
                    await self.store.commit([op])
                except StoreError as err:
                    log.debug("assignment of %s: %s", op["id"], err)
        except StoreError as err:
            log.info("scheduling pass not written: %s", err)
