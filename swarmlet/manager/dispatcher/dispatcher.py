"""The dispatcher: the leader's end of every node's session (the protocol, its
messages and their shapes are in ``swarmlet.api.session``).

It welcomes a node (or redirects it to the leader), keeps its heartbeats, pushes its
assignment set (see assignments.py) at session start and whenever it changes (to a node
of session protocol 2 only the changes: what it sent each node is kept), and to a
node that runs the overlay data plane its ``NetworkPlane`` (planes.py) likewise: before
every assignment set (so the node has a network before it is asked to start a task on
it) and, debounced by ``PLANE_DEBOUNCE``, whenever a store change alters it, takes
its task statuses and relays service logs from it. Statuses are collected for
``STATUS_BATCH_WINDOW`` and written as one transaction (conflicting ones again, one by
one).

Heartbeats are kept in memory, as in SwarmKit: only a change of a node's state
(ready <-> down) is written to the store. A new leader gives every node
``TAKEOVER_GRACE_FACTOR`` grace periods to reconnect before declaring it down, so a
failover alone never marks nodes down, even when all of them reconnect at once.

Like SwarmKit's, the dispatcher sees the cluster through a narrow interface, for
easier unit-testing: the store, and a function naming the leader's API address.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Callable

from aiohttp import WSMsgType, web

from swarmlet.api.objects import (CLUSTER_ID, DEFAULT_HEARTBEAT_PERIOD, HEARTBEAT_MISSES_ALLOWED, TAKEOVER_GRACE_FACTOR,
                                  NodeState)
from swarmlet.api.ipam import DATA_PLANE_OVERLAY
from swarmlet.api.netplane import NetworkPlane
from swarmlet.api.views import Cluster, Config, Network, Node, Secret, Service, Task, manager_api_addresses
from swarmlet.api.session import (HANDSHAKE_TIMEOUT, MAX_MESSAGE_SIZE, AssignmentSet, Heartbeat, HeartbeatAck,
                                  Hello, Log, LogEnd, Logs, LogsCancel, Message, NetworkPlaneUpdate, ProtocolError,
                                  Redirect, Status, UnknownMessage, Welcome, pack, unpack)
from swarmlet.ca import ROLE_MANAGER
from swarmlet.manager.dispatcher.assignments import (FILE_KINDS, accepted_status, assigned_entry, assignment_digest,
                                                     files_named, files_touched, node_assignment, plain_secret_value,
                                                     task_changes, tasks_touched, uses_any)
from swarmlet.manager.dispatcher.planes import PlaneIndex
from swarmlet.manager.leaderloop import LeaderLoop, LoopTurns, drain, run_together
from swarmlet.manager.retry import commit_each_on_conflict
from swarmlet.store import ClusterStore, StoreError

log = logging.getLogger("swarmlet.dispatcher")

STATUS_BATCH_WINDOW = 0.05
# Store changes are gathered this long before the nodes' planes are built again: a
# rollout of many tasks rebuilds them once, and a stopped task still leaves its
# backends well within a second (status write + this + the node's apply).
PLANE_DEBOUNCE = 0.05
# What can change a plane: tasks (backends, members), services (names, VIPs, ports),
# networks (allocation) and nodes (addresses, down, data plane).
PLANE_KINDS = frozenset((Task.kind, Service.kind, Network.kind, Node.kind))


def nodes_to_mark_down(nodes: list[Node], last_seen: dict[str, float], now: float, grace: float,
                       unheard: set[str] = frozenset(), takeover_grace: float | None = None) -> list[Node]:
    """Ready nodes whose last heartbeat is older than the grace period (``takeover_grace``
    for the ``unheard`` ones: not heard since this leader took over)."""
    def allowed(node_id: str) -> float:
        return takeover_grace if takeover_grace is not None and node_id in unheard else grace
    return [n for n in nodes if n.status.state != NodeState.DOWN and now - last_seen.get(n.id, now) > allowed(n.id)]


class Dispatcher(LeaderLoop):
    """Sessions are served on any manager (a follower redirects them); the background
    work (heartbeat checks, assignment pushes, status writes) runs while this manager
    leads, as the other leader-only loops do."""

    name = "dispatcher"

    def __init__(self, store: ClusterStore, leader_api_address: Callable[[], str | None],
                 open_secret: Callable[[Secret], bytes] = plain_secret_value):
        super().__init__(store)
        self._leader_api_address = leader_api_address
        self._open_secret = open_secret  # manager/secrets.py: SecretBox.open
        self._sessions: dict[str, web.WebSocketResponse] = {}
        self.clock = time.monotonic  # when heartbeats were heard (the tests stand in a clock that jumps)
        self._last_seen: dict[str, float] = {}
        self._unheard: set[str] = set()  # nodes not heard since this leader took over
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._sent: dict[str, str] = {}  # protocol-1 node -> digest of the assignment set it last received
        self._held: dict[str, AssignmentSet] = {}  # protocol-2 node -> the set it holds (what it was sent)
        self._protocols: dict[str, int] = {}  # node -> the session protocol its hello named
        self._assign_locks: dict[str, asyncio.Lock] = {}  # one node's set built and sent in order
        self._welcomed: set[str] = set()  # nodes whose session's welcome is out: sets may go to them
        self._statuses: dict[str, tuple[str, dict]] = {}  # task -> (node, status) not yet written
        self._statuses_waiting = asyncio.Event()
        self._log_streams: dict[str, tuple[asyncio.Queue, dict[str, str]]] = {}  # request -> (queue, task -> node)
        self._managers: tuple[int, list[str]] = (-1, [])  # (store index, manager API addresses then)
        # Where the nodes' usage reports go (the autoscaler's window); soft state, never written.
        self.usage_sink: Callable[[str, list[dict]], None] | None = None
        self._planes: dict[str, NetworkPlane] = {}  # node -> the plane it last received
        self._plane_locks: dict[str, asyncio.Lock] = {}  # build and send of one node's plane, in order
        self._planes_dirty = asyncio.Event()

    @property
    def session_count(self) -> int:
        """Node sessions open on this manager (only the leader keeps any; metrics)."""
        return len(self._sessions)

    @property
    def heartbeat_period(self) -> float:
        cluster = self.store.get(Cluster, CLUSTER_ID)
        return float((cluster.spec if cluster else {}).get("heartbeat_period", DEFAULT_HEARTBEAT_PERIOD))

    @property
    def grace(self) -> float:
        return self.heartbeat_period * HEARTBEAT_MISSES_ALLOWED

    # -- leadership -----------------------------------------------------------------------------
    async def run(self, queue: asyncio.Queue) -> None:
        now = self.clock()  # every node gets a full grace period from the moment we lead
        self._last_seen = {n.id: now for n in self.store.list(Node)}
        self._unheard = set(self._last_seen)
        # One ending (leadership lapsed) or failing stops the others; the loop restarts them all.
        await run_together(self._check_heartbeats(), self._push_assignments(queue), self._push_planes(),
                           self._write_statuses())

    async def stop(self) -> None:
        """Stop leading: every session closes (nodes find the new leader) and statuses
        not yet written are dropped (nodes send them all again to the new leader)."""
        self._statuses.clear()
        for node_id in list(self._sessions):
            self.drop_session(node_id)
        await super().stop()

    def drop_session(self, node_id: str) -> None:
        ws = self._sessions.pop(node_id, None)
        if ws is not None and not ws.closed:
            asyncio.ensure_future(ws.close(message=b"session closed by the manager"))

    async def _check_heartbeats(self) -> None:
        interval = self.heartbeat_period / 2
        due = self.clock() + interval
        while self.store.is_leader:
            await asyncio.sleep(max(0.0, due - self.clock()))
            if not self.store.is_leader:
                break
            now = self.clock()
            late = now - due
            if late > interval:
                # This loop did not run for a while (a long pass, a paused process): the nodes'
                # heartbeats may be waiting unread in their sockets. A node is not to blame for
                # the leader's stall (seen: 200 hollow nodes marked down during a big deploy).
                self._last_seen = {node_id: seen + late for node_id, seen in self._last_seen.items()}
            due = now + interval
            nodes = self.store.list(Node)
            for node in nodes:  # a node that joined since we took over gets a full grace period
                self._last_seen.setdefault(node.id, now)
            for node in self._silent(nodes, now):
                if not self._silent([node], self.clock()):
                    continue  # heard while the nodes before it were being written
                silent_for = now - self._last_seen.get(node.id, now)
                await self._set_state(node.id, NodeState.DOWN, f"heartbeat failure: none for {silent_for:.1f}s")

    def _silent(self, nodes: list[Node], now: float) -> list[Node]:
        return nodes_to_mark_down(nodes, self._last_seen, now, self.grace, self._unheard,
                                  self.grace * TAKEOVER_GRACE_FACTOR)

    async def _set_state(self, node_id: str, state: str, message: str, description: dict | None = None) -> None:
        node = self.store.get(Node, node_id)
        if node is None:
            return
        status = node.status.replace(state=state, message=message)
        if description is not None:
            status["description"] = description
        if status == node.status.raw:
            return
        try:
            await self.store.commit([{"op": "update", "kind": "node", "id": node_id, "version": node.version,
                                      "status": status}])
            log.info("node %s (%s) is %s%s", node_id, status.get("hostname"), state, f": {message}" if message else "")
        except StoreError as err:  # a conflict or lost leadership: the next round decides again
            log.info("could not mark node %s %s: %s", node_id, state, err)

    # -- sessions -----------------------------------------------------------------------------------
    async def serve_session(self, request: web.Request, node_id: str) -> web.WebSocketResponse:
        """The session of ``node_id`` (whose certificate the API layer verified)."""
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_SIZE)
        await ws.prepare(request)
        if not self.store.is_leader:
            await ws.send_bytes(pack(Redirect(leader=self._leader_api_address())))
            await ws.close()
            return ws
        try:
            hello = unpack(await ws.receive_bytes(timeout=HANDSHAKE_TIMEOUT))
            if not isinstance(hello, Hello):
                raise ProtocolError(f"expected hello, got {hello.TYPE}")
        except (ProtocolError, TypeError, asyncio.TimeoutError) as err:  # aiohttp: TypeError on a text frame
            log.warning("session from node %s refused: malformed hello (%s)", node_id, err)
            await ws.close(message=b"malformed hello")
            return ws

        previous = self._sessions.pop(node_id, None)
        if previous is not None and not previous.closed:
            await previous.close(message=b"replaced by a newer session")
        self._sessions[node_id] = ws
        self._send_locks[node_id] = asyncio.Lock()
        self._assign_locks[node_id] = asyncio.Lock()
        self._welcomed.discard(node_id)
        self._sent.pop(node_id, None)
        self._held.pop(node_id, None)
        self._protocols[node_id] = hello.protocol
        self._planes.pop(node_id, None)
        self._last_seen[node_id] = self.clock()
        self._unheard.discard(node_id)
        try:
            await self._set_state(node_id, NodeState.READY, "", hello.description)
            await self._send(node_id, ws, self._welcome(node_id, Welcome))
            # Only now may sets be pushed: the agent waits for the welcome first, and a store
            # change while the node was being marked ready pushed its set ahead of it. The
            # set sent next is built from the store as it is now, so nothing is missed.
            self._welcomed.add(node_id)
            await self._send_assignment(node_id)
            async for frame in ws:
                if frame.type != WSMsgType.BINARY:
                    break
                try:
                    message = unpack(frame.data)
                except UnknownMessage as err:
                    log.warning("node %s sent %s; ignored", node_id, err)
                    continue
                except ProtocolError as err:
                    log.warning("node %s sent a malformed message (%s); closing its session", node_id, err)
                    break
                if not self.store.is_leader:
                    break  # fenced: a deposed leader stops dispatching; the node finds the new one
                await self._take(node_id, ws, message)
        except ConnectionError as err:
            log.info("session with node %s lost: %s", node_id, err)
        finally:
            if self._sessions.get(node_id) is ws:
                del self._sessions[node_id]
                self._welcomed.discard(node_id)
                self._sent.pop(node_id, None)
                self._held.pop(node_id, None)
                self._planes.pop(node_id, None)
            for request_id, (queue, nodes) in self._log_streams.items():
                for task_id in [t for t, n in nodes.items() if n == node_id]:
                    queue.put_nowait(LogEnd(request_id, task_id, error="the node's session ended"))
            if not ws.closed:
                await ws.close()
        return ws

    async def _take(self, node_id: str, ws: web.WebSocketResponse, message: Message) -> None:
        """One message from a node's session."""
        if isinstance(message, Heartbeat):
            self._last_seen[node_id] = self.clock()
            self._unheard.discard(node_id)
            node = self.store.get(Node, node_id)
            if node is not None and node.status.state != NodeState.READY:
                await self._set_state(node_id, NodeState.READY, "")
            await self._send(node_id, ws, self._welcome(node_id, HeartbeatAck))
        elif isinstance(message, Status):
            self._take_statuses(node_id, message)
            if message.usage and self.usage_sink is not None:
                self.usage_sink(node_id, message.usage)
        elif isinstance(message, (Log, LogEnd)):
            stream = self._log_streams.get(message.request_id)
            if stream is not None and stream[1].get(message.task_id) == node_id:
                stream[0].put_nowait(message)
        else:
            log.warning("node %s sent a %s message, which only the leader sends; ignored", node_id, message.TYPE)

    def _welcome(self, node_id: str, kind: type[Welcome]) -> Welcome:
        node = self.store.get(Node, node_id)
        return kind(heartbeat_period=self.heartbeat_period, managers=self._manager_addresses(),
                    node={"spec": node.spec.raw} if node else None)

    def _manager_addresses(self) -> list[str]:
        """Listed again only once the store has changed: every heartbeat's ack carries
        them, and a list of every node per heartbeat costs a leader of N nodes N² a period."""
        index = self.store.index
        if self._managers[0] != index:
            self._managers = (index, manager_api_addresses(self.store.select(Node, role=ROLE_MANAGER)))
        return self._managers[1]

    # -- assignments and statuses ---------------------------------------------------------------------
    async def _send(self, node_id: str, ws: web.WebSocketResponse, message: Message) -> None:
        lock = self._send_locks.setdefault(node_id, asyncio.Lock())
        async with lock:  # one frame at a time: heartbeats and pushes come from different tasks
            await ws.send_bytes(pack(message))

    def _plane_index(self) -> PlaneIndex:
        return PlaneIndex.build(self.store.list(Node), self.store.list(Network), self.store.list(Service),
                                self.store.list(Task), self.store.index)

    async def _send_plane(self, node_id: str, index: PlaneIndex | None = None) -> None:
        """The node's plane, if it runs the overlay data plane and the plane changed."""
        ws = self._sessions.get(node_id)
        node = self.store.get(Node, node_id)
        if ws is None or ws.closed or node is None or node.data_plane != DATA_PLANE_OVERLAY:
            return
        async with self._plane_locks.setdefault(node_id, asyncio.Lock()):
            # Built under the lock: a later build is always sent later, so a node never
            # receives an older plane after a newer one.
            plane = (index if index is not None and index.version == self.store.index
                     else self._plane_index()).plane(node_id)
            if plane is None or plane.same_as(self._planes.get(node_id)):
                return
            try:
                await self._send(node_id, ws, NetworkPlaneUpdate(plane=plane.to_wire()))
                self._planes[node_id] = plane
            except (ConnectionError, RuntimeError) as err:
                log.info("network plane for node %s not sent: %s", node_id, err)

    async def _push_planes(self) -> None:
        while self.store.is_leader:
            await self._planes_dirty.wait()
            await asyncio.sleep(PLANE_DEBOUNCE)
            self._planes_dirty.clear()
            if not self.store.is_leader:
                break
            index = None
            for node_id in sorted(self._sessions):
                node = self.store.get(Node, node_id)
                if node is not None and node.data_plane == DATA_PLANE_OVERLAY:
                    index = index if index is not None and index.version == self.store.index else self._plane_index()
                    await self._send_plane(node_id, index)

    async def _send_assignment(self, node_id: str, task_ids: set[str] | None = None) -> None:
        """The node's assignment set, or what changed in it: in ``task_ids`` (the tasks a
        store change touched), or anywhere when None."""
        async with self._assign_locks.setdefault(node_id, asyncio.Lock()):  # sets go out in the order built
            ws = self._sessions.get(node_id)
            if ws is None or ws.closed or node_id not in self._welcomed or not self.store.is_leader:
                return
            message = self._assignment_message(node_id, task_ids)
            # First the plane, built after the assignment set (so from a store at least as new):
            # it has every network the set's tasks need before the node is asked to start them.
            await self._send_plane(node_id)
            if message is None:
                return
            message, done = message
            try:
                await self._send(node_id, ws, message)
                done()
            except (ConnectionError, RuntimeError) as err:  # the session is ending; the next one gets it all
                log.info("assignments for node %s not sent: %s", node_id, err)

    def _files(self, entries) -> tuple[list[Secret], list[Config]]:
        """The secrets and configs that task entries name, found by name: never every one
        of the cluster's (listing them for each node at each config write made a write
        cost O(configs), and 30,000 configs kept the leader's loop busy for good)."""
        names = files_named(entries)
        found = {kind: [obj for name in sorted(names[kind]) for obj in self.store.select(view, name=name)]
                 for kind, view in zip(FILE_KINDS, (Secret, Config))}
        return found["secrets"], found["configs"]

    def _whole_set(self, node_id: str, sequence: int = 0):
        tasks = self.store.select(Task, node_id=node_id)
        secrets, configs = self._files(assigned_entry(t) for t in tasks)
        return node_assignment(node_id, tasks, secrets, configs, sequence=sequence, open_secret=self._open_secret)

    def _assignment_message(self, node_id: str, task_ids: set[str] | None):
        """(message, what to note once it is sent), or None when the node has it all."""
        held = self._held.get(node_id)
        if self._protocols.get(node_id, 1) < 2:  # an older agent: whole sets, each sent once
            message = self._whole_set(node_id)
            digest = assignment_digest(message)
            if self._sent.get(node_id) == digest:
                return None
            return message, lambda: self._sent.__setitem__(node_id, digest)
        if held is None:  # the session's first: the whole set
            message = self._whole_set(node_id, sequence=1)
            return message, lambda: self._held.__setitem__(node_id, AssignmentSet.of(message))
        if task_ids is None:
            changes = held.changes_to(self._whole_set(node_id))
        else:
            touched = {t: self.store.get(Task, t) for t in task_ids}
            changes = task_changes(node_id, held, touched, self._files, self._open_secret)
        return (changes, lambda: held.apply(changes)) if changes else None

    def _nodes_using(self, names: dict[str, set[str]]) -> list[str]:
        """The nodes with a session to which a change of these secrets or configs may
        matter: those whose tasks use one, and any whose set is not tracked (older agents,
        sets not sent yet), which are compared whole."""
        return [node_id for node_id in self._sessions
                if self._protocols.get(node_id, 1) < 2 or node_id not in self._held
                or uses_any(self._held[node_id], names)]

    async def _push_assignments(self, queue: asyncio.Queue) -> None:
        while self.store.is_leader:
            events = [await queue.get(), *drain(queue)]
            touched: dict[str, set[str]] | None = {}
            files = {kind: set() for kind in FILE_KINDS}
            for event in events:
                tasks = None if event.reset else tasks_touched(event.changes)
                if tasks is None or touched is None:
                    touched = None
                else:
                    for node_id, task_ids in tasks.items():
                        touched.setdefault(node_id, set()).update(task_ids)
                    for kind, names in files_touched(event.changes).items():
                        files[kind] |= names
                if event.reset or any(c.kind in PLANE_KINDS for c in event.changes):
                    self._planes_dirty.set()
            # A send that fits the socket's buffer does not yield: 1,000 nodes' changes
            # held the loop 0.1-0.3 s each time, with heartbeats and the API waiting.
            turns = LoopTurns()
            if touched is None:
                for node_id in list(self._sessions):
                    await self._send_assignment(node_id)
                    await turns.take()
                continue
            whole = set(self._nodes_using(files)) if any(files.values()) else set()
            for node_id in sorted(whole):  # their files changed: compared whole (a node's tasks and files)
                await self._send_assignment(node_id)
                await turns.take()
            for node_id in sorted((touched.keys() & self._sessions.keys()) - whole):
                await self._send_assignment(node_id, touched[node_id])
                await turns.take()

    def _take_statuses(self, node_id: str, status: Status) -> None:
        for update in status.updates:
            self._statuses[update["task_id"]] = (node_id, update["status"])
        if self._statuses:
            self._statuses_waiting.set()

    async def _write_statuses(self) -> None:
        while self.store.is_leader:
            await self._statuses_waiting.wait()
            await asyncio.sleep(STATUS_BATCH_WINDOW)  # collect what else arrives: one Raft write for all
            self._statuses_waiting.clear()
            batch, self._statuses = self._statuses, {}
            if not self.store.is_leader:
                continue
            try:
                failures = await commit_each_on_conflict(
                    self.store, list(batch), lambda task_ids: self._status_ops({t: batch[t] for t in task_ids}))
            except StoreError as err:  # no quorum, a timeout: keep them for the next write
                log.info("%d task statuses not written: %s", len(batch), err)
                for task_id, report in batch.items():
                    self._statuses.setdefault(task_id, report)
                self._statuses_waiting.set()
                continue
            for task_id, err in failures:
                log.info("status of task %s not written: %s", task_id, err)

    def _status_ops(self, batch: dict[str, tuple[str, dict]]) -> list[dict]:
        ops = []
        for task_id, (node_id, status) in batch.items():
            task = self.store.get(Task, task_id)
            merged = accepted_status(task, node_id, status)
            if merged is not None:
                ops.append({"op": "update", "kind": "task", "id": task_id, "version": task.version,
                            "status": merged})
        return ops

    # -- logs ----------------------------------------------------------------------------------------------
    async def task_logs(self, tasks: list[Task], tail: int | None, follow: bool):
        """(task, line) pairs from the nodes holding ``tasks``, as they arrive; a line
        ``error: …`` for a task whose output cannot be had. Ends when every task's stream
        ended (never, with ``follow``, while tasks run: the caller stops reading)."""
        request_id = secrets.token_hex(8)
        queue: asyncio.Queue[Log | LogEnd] = asyncio.Queue()
        nodes: dict[str, str] = {}
        by_id = {t.id: t for t in tasks}
        self._log_streams[request_id] = (queue, nodes)
        try:
            for task in tasks:
                node_id = task.spec.node_id
                ws = self._sessions.get(node_id)
                if ws is None:
                    yield task, f"error: node {node_id} is not connected"
                    continue
                try:
                    await self._send(node_id, ws, Logs(request_id, task.id, tail=tail, follow=follow))
                    nodes[task.id] = node_id
                except (ConnectionError, RuntimeError) as err:
                    yield task, f"error: node {node_id}: {err}"
            while nodes:
                message = await queue.get()
                task = by_id[message.task_id]
                if isinstance(message, LogEnd):
                    nodes.pop(message.task_id, None)
                    if message.error:
                        yield task, f"error: {message.error}"
                    continue
                for line in message.lines:
                    yield task, line
        finally:
            del self._log_streams[request_id]
            for task_id, node_id in nodes.items():
                ws = self._sessions.get(node_id)
                if ws is not None and not ws.closed:
                    asyncio.ensure_future(self._send(node_id, ws, LogsCancel(request_id, task_id)))
