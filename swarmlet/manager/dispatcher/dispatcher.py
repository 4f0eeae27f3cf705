"""The dispatcher: every node (workers and managers alike) holds one session with the
leader, a WebSocket over mutual TLS carrying msgpack messages.

- node -> leader: ``hello`` (the node's description), then ``heartbeat`` every period.
- leader -> node: ``welcome`` (heartbeat period, managers), ``heartbeat_ack`` (the
  node's current spec and the managers, so nodes learn of role changes and new
  managers), or ``redirect`` when this manager is not the leader.
- leader -> node: ``assignments``, the node's whole assignment set (its tasks and the
  secrets/configs they use, see assignments.py), at session start and whenever it changes.
- leader -> node ``logs`` ({"request_id", "task_id", "tail", "follow"}) and
  ``logs_cancel``; node -> leader ``log`` ({"request_id", "task_id", "lines"}) and
  ``log_end`` (with an ``error`` when the task's output cannot be read): service logs
  travel over the sessions, no listener on workers.
- node -> leader: ``status`` ({"updates": [{"task_id", "status"}]}), task status changes;
  a full report of every task the node knows at session start. The leader collects them
  for ``STATUS_BATCH_WINDOW`` and writes them as one transaction (conflicting ones again,
  one by one).

Heartbeats are kept in memory, as in SwarmKit: only a change of a node's state
(ready <-> down) is written to the store. A new leader gives every node a full grace
period before declaring it down, so a failover alone never marks nodes down.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING

import msgpack
from aiohttp import WSMsgType, web

from swarmlet.api.objects import (CLUSTER_ID, DEFAULT_HEARTBEAT_PERIOD, HEARTBEAT_MISSES_ALLOWED, NODE_DOWN,
                                  NODE_READY, manager_api_addresses)
from swarmlet.manager.dispatcher.assignments import (accepted_status, assignment_digest, node_assignment,
                                                     nodes_touched)
from swarmlet.manager.leaderloop import drain
from swarmlet.store import Conflict, StoreError

if TYPE_CHECKING:
    from swarmlet.manager.manager import Manager

log = logging.getLogger("swarmlet.dispatcher")

HELLO_TIMEOUT = 10.0
STATUS_BATCH_WINDOW = 0.05


def pack(message: dict) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def unpack(data: bytes) -> dict:
    message = msgpack.unpackb(data, raw=False)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("a session message must be a map with a 'type'")
    return message


def nodes_to_mark_down(nodes: list[dict], last_seen: dict[str, float], now: float, grace: float) -> list[dict]:
    """Ready nodes whose last heartbeat is older than the grace period."""
    return [n for n in nodes
            if n["status"].get("state") != NODE_DOWN and now - last_seen.get(n["id"], now) > grace]


class Dispatcher:
    def __init__(self, manager: "Manager"):
        self.manager = manager
        self.store = manager.store
        self._sessions: dict[str, web.WebSocketResponse] = {}
        self._last_seen: dict[str, float] = {}
        self._checker: asyncio.Task | None = None
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._sent: dict[str, str] = {}  # node -> digest of the assignment set it last received
        self._statuses: dict[str, tuple[str, dict]] = {}  # task -> (node, status) not yet written
        self._statuses_waiting = asyncio.Event()
        self._workers: list[asyncio.Task] = []
        self._log_streams: dict[str, tuple[asyncio.Queue, dict[str, str]]] = {}  # request -> (queue, task -> node)

    @property
    def heartbeat_period(self) -> float:
        cluster = self.store.get("cluster", CLUSTER_ID)
        return float((cluster or {}).get("spec", {}).get("heartbeat_period", DEFAULT_HEARTBEAT_PERIOD))

    @property
    def grace(self) -> float:
        return self.heartbeat_period * HEARTBEAT_MISSES_ALLOWED

    # -- leadership -----------------------------------------------------------------------------
    async def leadership_changed(self, leading: bool) -> None:
        if leading:
            now = time.monotonic()
            self._last_seen = {n["id"]: now for n in self.store.list("node")}
            if self._checker is None or self._checker.done():
                self._checker = asyncio.ensure_future(self._check_heartbeats())
            if not self._workers:
                self._workers = [asyncio.ensure_future(self._push_assignments()),
                                 asyncio.ensure_future(self._write_statuses())]
        else:
            await self.stop()

    async def stop(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            self._checker = None
        for worker in self._workers:
            worker.cancel()
        self._workers = []
        self._statuses.clear()
        for node_id in list(self._sessions):
            self.drop_session(node_id)

    def drop_session(self, node_id: str) -> None:
        ws = self._sessions.pop(node_id, None)
        if ws is not None and not ws.closed:
            asyncio.ensure_future(ws.close(message=b"session closed by the manager"))

    async def _check_heartbeats(self) -> None:
        while self.store.is_leader:
            await asyncio.sleep(self.heartbeat_period / 2)
            if not self.store.is_leader:
                break
            now = time.monotonic()
            nodes = self.store.list("node")
            for node in nodes:  # a node that joined since we took over gets a full grace period
                self._last_seen.setdefault(node["id"], now)
            for node in nodes_to_mark_down(nodes, self._last_seen, now, self.grace):
                silent_for = now - self._last_seen.get(node["id"], now)
                await self._set_state(node["id"], NODE_DOWN, f"heartbeat failure: none for {silent_for:.1f}s")

    async def _set_state(self, node_id: str, state: str, message: str, description: dict | None = None) -> None:
        node = self.store.get("node", node_id)
        if node is None:
            return
        status = dict(node["status"], state=state, message=message)
        if description is not None:
            status["description"] = description
        if status == node["status"]:
            return
        try:
            await self.store.commit([{"op": "update", "kind": "node", "id": node_id, "version": node["version"],
                                      "status": status}])
            log.info("node %s (%s) is %s%s", node_id, status.get("hostname"), state, f": {message}" if message else "")
        except StoreError as err:  # a conflict or lost leadership: the next round decides again
            log.info("could not mark node %s %s: %s", node_id, state, err)

    # -- sessions -----------------------------------------------------------------------------------
    async def serve_session(self, request: web.Request, identity) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        node_id = identity.node_id
        if not self.store.is_leader:
            await ws.send_bytes(pack({"type": "redirect", "leader": self.manager.leader_api_address()}))
            await ws.close()
            return ws
        try:
            hello = unpack(await ws.receive_bytes(timeout=HELLO_TIMEOUT))
            if hello["type"] != "hello" or not isinstance(hello.get("description", {}), dict):
                raise ValueError(f"expected hello, got {hello['type']!r}")
        except (ValueError, TypeError, asyncio.TimeoutError, msgpack.UnpackException) as err:
            log.warning("session from node %s refused: malformed hello (%s)", node_id, err)
            await ws.close(message=b"malformed hello")
            return ws

        previous = self._sessions.pop(node_id, None)
        if previous is not None and not previous.closed:
            await previous.close(message=b"replaced by a newer session")
        self._sessions[node_id] = ws
        self._send_locks[node_id] = asyncio.Lock()
        self._sent.pop(node_id, None)
        self._last_seen[node_id] = time.monotonic()
        await self._set_state(node_id, NODE_READY, "", hello.get("description", {}))
        try:
            await self._send(node_id, ws, self._welcome(node_id, "welcome"))
            await self._send_assignment(node_id)
            async for message in ws:
                if message.type != WSMsgType.BINARY:
                    break
                try:
                    payload = unpack(message.data)
                except (ValueError, TypeError, msgpack.UnpackException) as err:
                    log.warning("node %s sent a malformed message (%s); closing its session", node_id, err)
                    break
                if not self.store.is_leader:
                    break  # fenced: a deposed leader stops dispatching; the node finds the new one
                if payload["type"] == "heartbeat":
                    self._last_seen[node_id] = time.monotonic()
                    node = self.store.get("node", node_id)
                    if node is not None and node["status"].get("state") != NODE_READY:
                        await self._set_state(node_id, NODE_READY, "")
                    await self._send(node_id, ws, self._welcome(node_id, "heartbeat_ack"))
                elif payload["type"] == "status":
                    self._take_statuses(node_id, payload.get("updates"))
                elif payload["type"] in ("log", "log_end"):
                    stream = self._log_streams.get(payload.get("request_id"))
                    if stream is not None and stream[1].get(payload.get("task_id")) == node_id:
                        stream[0].put_nowait(payload)
                else:
                    log.warning("node %s sent an unknown message type %r; ignored", node_id, payload["type"])
        except ConnectionError as err:
            log.info("session with node %s lost: %s", node_id, err)
        finally:
            if self._sessions.get(node_id) is ws:
                del self._sessions[node_id]
                self._sent.pop(node_id, None)
            for request_id, (queue, nodes) in self._log_streams.items():
                for task_id in [t for t, n in nodes.items() if n == node_id]:
                    queue.put_nowait({"type": "log_end", "request_id": request_id, "task_id": task_id,
                                      "error": "the node's session ended"})
            if not ws.closed:
                await ws.close()
        return ws

    def _welcome(self, node_id: str, kind: str) -> dict:
        node = self.store.get("node", node_id)
        return {"type": kind, "heartbeat_period": self.heartbeat_period,
                "managers": manager_api_addresses(self.store.list("node")),
                "node": {"spec": node["spec"]} if node else None}

    # -- assignments and statuses ---------------------------------------------------------------------
    async def _send(self, node_id: str, ws: web.WebSocketResponse, message: dict) -> None:
        lock = self._send_locks.setdefault(node_id, asyncio.Lock())
        async with lock:  # one frame at a time: heartbeats and pushes come from different tasks
            await ws.send_bytes(pack(message))

    async def _send_assignment(self, node_id: str) -> None:
        ws = self._sessions.get(node_id)
        if ws is None or ws.closed or not self.store.is_leader:
            return
        message = node_assignment(node_id, self.store.list("task"), self.store.list("secret"),
                                  self.store.list("config"))
        digest = assignment_digest(message)
        if self._sent.get(node_id) == digest:
            return
        try:
            await self._send(node_id, ws, message)
            self._sent[node_id] = digest
        except (ConnectionError, RuntimeError) as err:  # the session is ending; the next one gets it all
            log.info("assignments for node %s not sent: %s", node_id, err)

    async def _push_assignments(self) -> None:
        queue = self.store.subscribe()
        try:
            while self.store.is_leader:
                events = [await queue.get(), *drain(queue)]
                touched: set[str] | None = set()
                for event in events:
                    nodes = None if event.reset else nodes_touched(event.changes)
                    touched = None if nodes is None or touched is None else touched | nodes
                for node_id in list(self._sessions) if touched is None else sorted(touched & set(self._sessions)):
                    await self._send_assignment(node_id)
        finally:
            self.store.unsubscribe(queue)

    def _take_statuses(self, node_id: str, updates) -> None:
        for update in updates if isinstance(updates, list) else []:
            if isinstance(update, dict) and isinstance(update.get("task_id"), str):
                self._statuses[update["task_id"]] = (node_id, update.get("status"))
        if self._statuses:
            self._statuses_waiting.set()

    async def _write_statuses(self) -> None:
        while self.store.is_leader:
            await self._statuses_waiting.wait()
            await asyncio.sleep(STATUS_BATCH_WINDOW)  # collect what else arrives: one Raft write for all
            self._statuses_waiting.clear()
            batch, self._statuses = self._statuses, {}
            ops = self._status_ops(batch)
            if not ops or not self.store.is_leader:
                continue
            try:
                await self.store.commit(ops)
            except Conflict:
                for task_id, report in batch.items():  # again one by one, each on a fresh read
                    for op in self._status_ops({task_id: report}):
                        try:
                            await self.store.commit([op])
                        except StoreError as err:
                            log.info("status of task %s not written: %s", task_id, err)
            except StoreError as err:  # no quorum, a timeout: keep them for the next write
                log.info("%d task statuses not written: %s", len(ops), err)
                for task_id, report in batch.items():
                    self._statuses.setdefault(task_id, report)
                self._statuses_waiting.set()

    def _status_ops(self, batch: dict[str, tuple[str, dict]]) -> list[dict]:
        ops = []
        for task_id, (node_id, status) in batch.items():
            task = self.store.get("task", task_id)
            merged = accepted_status(task, node_id, status)
            if merged is not None:
                ops.append({"op": "update", "kind": "task", "id": task_id, "version": task["version"],
                            "status": merged})
        return ops

    # -- logs ----------------------------------------------------------------------------------------------
    async def task_logs(self, tasks: list[dict], tail: int | None, follow: bool):
        """(task, line) pairs from the nodes holding ``tasks``, as they arrive; a line
        ``error: …`` for a task whose output cannot be had. Ends when every task's stream
        ended (never, with ``follow``, while tasks run: the caller stops reading)."""
        request_id = secrets.token_hex(8)
        queue: asyncio.Queue = asyncio.Queue()
        nodes: dict[str, str] = {}
        by_id = {t["id"]: t for t in tasks}
        self._log_streams[request_id] = (queue, nodes)
        try:
            for task in tasks:
                node_id = task["spec"].get("node_id")
                ws = self._sessions.get(node_id)
                if ws is None:
                    yield task, f"error: node {node_id} is not connected"
                    continue
                try:
                    await self._send(node_id, ws, {"type": "logs", "request_id": request_id, "task_id": task["id"],
                                                   "tail": tail, "follow": follow})
                    nodes[task["id"]] = node_id
                except (ConnectionError, RuntimeError) as err:
                    yield task, f"error: node {node_id}: {err}"
            while nodes:
                message = await queue.get()
                task = by_id[message["task_id"]]
                if message["type"] == "log_end":
                    nodes.pop(message["task_id"], None)
                    if message.get("error"):
                        yield task, f"error: {message['error']}"
                    continue
                for line in message.get("lines") or []:
                    yield task, line
        finally:
            del self._log_streams[request_id]
            for task_id, node_id in nodes.items():
                ws = self._sessions.get(node_id)
                if ws is not None and not ws.closed:
                    asyncio.ensure_future(self._send(node_id, ws, {"type": "logs_cancel", "request_id": request_id,
                                                                   "task_id": task_id}))
