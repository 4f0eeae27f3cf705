"""The node side of the dispatcher session: find the leader, say hello, heartbeat,
renew the certificate before it expires, and notice when the cluster wants this node
in another role. Assignment sets from the leader go to the executor; the executor's
task statuses go back over the session (all of them again on every new session, so
none is lost to a failover).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from datetime import datetime, timezone
from typing import Callable

import aiohttp

from swarmlet.api.ipam import DATA_PLANE_NONE, DATA_PLANE_OVERLAY
from swarmlet.api.netplane import DataPlane, NetworkPlane
from swarmlet.api.objects import HEARTBEAT_MISSES_ALLOWED, NANO_CPUS_PER_CPU
from swarmlet.api.session import (HANDSHAKE_TIMEOUT, MAX_MESSAGE_SIZE, SESSION_PATH, SESSION_PROTOCOL,
                                  AssignmentChanges, Assignments, AssignmentSet, Heartbeat,
                                  HeartbeatAck, Hello, Log, LogEnd, Logs, LogsCancel, Message, NetworkPlaneUpdate,
                                  OutOfSequence, ProtocolError, Redirect, Status, UnknownMessage, USAGE_PERIOD, Welcome, pack,
                                  unpack)
from swarmlet.ca import generate_key_pem, make_csr, renewal_delay
from swarmlet.node.config import DataDir, NodeConfig
from swarmlet.node.identity import NodeTls
from swarmlet.node.rpc import CALL_ERRORS, ApiCallError, api_call, connector
from swarmlet.runtime.base import NodeDescription, TaskRuntimeError, host_description

log = logging.getLogger("swarmlet.agent")

RECONNECT_DELAY = 0.2
# The hello waits for the runtime's description no longer than this (the leader waits for the hello).
DESCRIBE_TIMEOUT = 5.0
# A plane the data plane failed to apply (not one it refused as bad: a ``ValueError``) is
# applied again after this long unless a newer one came: the failure can pass by itself
# (an engine network of a removed stack that still has endpoints keeps a new one from
# being made, until the old containers are gone), and the leader sends nothing new then.
PLANE_RETRY_DELAY = 1.0
# A plane apply still not done after this long is stuck (a netlink, nft or engine call that
# never answered): it is given up and tried again, for the assignments queued behind it
# must not wait forever. A slow legitimate apply takes well under a second (1,000 VIPs:
# ~0.3 s; docs/performance.md); each engine call has its own 60 s timeout, so an apply
# stuck on one is cut short here first.
PLANE_APPLY_TIMEOUT = 30.0


def describe_node(config: NodeConfig, described: NodeDescription, data_plane: str = DATA_PLANE_NONE) -> dict:
    """What the scheduler needs to know about this node (kept as its `status.description`):
    `described` is what its runtime reports (`Runtime.describe`); `data_plane` what
    carries its overlay networks (the manager sends planes and allows ingress ports by it)."""
    return {"hostname": config.hostname,
            "platform": {"os": described.os, "arch": described.architecture},
            "resources": {"nano_cpus": round(described.cpus * NANO_CPUS_PER_CPU),
                          "memory_bytes": described.memory_bytes},
            "runtime": config.runtime, "engine_labels": dict(described.engine_labels), "data_plane": data_plane}


def load_data_plane(config: NodeConfig, runtime=None) -> DataPlane | None:
    """The node's overlay data plane when it is run with ``--data-plane overlay``; None
    (and a line saying why) when it is not, or when this build has no ``swarmlet.network``.
    On a Docker node each overlay network's bridge is a network of the node's engine (the
    one its containers attach to), made holding the runtime's network lock."""
    if config.data_plane != DATA_PLANE_OVERLAY:
        return None
    try:
        from swarmlet.network import OverlayDataPlane  # lazily: only overlay nodes load netlink and nftables
    except ImportError as err:
        log.error("this node is configured with --data-plane overlay, but the overlay data plane is not available "
                  "(%s): running without one; ingress ports and cross-node networks will not work here", err)
        return None
    if runtime is not None and config.runtime == "docker":
        from swarmlet.network.bridges import DockerBridges
        return OverlayDataPlane(DockerBridges(runtime.engine, runtime.network_lock))
    return OverlayDataPlane()


def _plane_version(message: NetworkPlaneUpdate) -> int:
    version = message.plane.get("version") if isinstance(message.plane, dict) else None
    return version if isinstance(version, int) else -1


class Agent:
    def __init__(self, data_dir: DataDir, config: NodeConfig, tls: NodeTls,
                 on_role_change: Callable[[str], None], on_expelled: Callable[[str], None], executor=None,
                 data_plane: DataPlane | None = None):
        """``data_plane``: what applies the node's network planes; by default the one
        ``config.data_plane`` names (``load_data_plane``)."""
        self.executor = executor
        self.data_plane = (data_plane if data_plane is not None else
                           load_data_plane(config, executor.runtime if executor is not None else None))
        self.plane: NetworkPlane | None = None  # the last plane applied
        # Planes are applied, and assignment sets handed to the executor, one after the
        # other in the order they came: a task starts only once its networks are there.
        self._inbox: asyncio.Task | None = None
        self._plane_floor = 0  # planes of one session only move forward; a new leader starts again
        self._newest_plane: NetworkPlaneUpdate | None = None  # the newest received, not yet applied
        self._plane_retry: asyncio.Task | None = None  # applies a failed plane again (PLANE_RETRY_DELAY)
        if executor is not None and self.data_plane is not None:
            # An overlay node's tasks attach to the data plane's networks only, never to a
            # local stand-in: until a plane is applied, it has none.
            executor.network_plane = NetworkPlane(node_address=config.advertise_addr, version=-1)
        if executor is not None:
            executor.sink = self.task_status
        self._ws = None
        self._held: AssignmentSet | None = None  # the assignment set as the leader last sent it
        self._log_streams: dict[tuple, asyncio.Task] = {}
        self._outbox: dict[str, dict] = {}
        self._flushing = False
        self.data_dir = data_dir
        self.config = config
        self.tls = tls
        self._on_role_change = on_role_change
        self._on_expelled = on_expelled
        self._leader_hint: str | None = None
        self.connected = asyncio.Event()
        self.sessions_established = 0  # metrics (swarmlet/node/metrics.py)
        # Called with each heartbeat's round trip, in seconds (metrics); acks come in order.
        self.on_heartbeat_rtt: Callable[[float], None] | None = None
        self._heartbeats_sent: collections.deque[float] = collections.deque()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._session_loop()), asyncio.ensure_future(self._renewal_loop())]

    async def stop(self) -> None:
        if self._inbox is not None:
            self._tasks.append(self._inbox)
        if self._plane_retry is not None:
            self._tasks.append(self._plane_retry)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.data_plane is not None:
            # Its kernel state stays (a restarted agent adopts it, traffic goes on); only
            # the resolver stops with the process.
            await self.data_plane.close()

    # -- the session ---------------------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        managers = list(self.config.managers)
        random.shuffle(managers)  # spread first contact over managers
        if self._leader_hint:
            managers = [self._leader_hint] + [m for m in managers if m != self._leader_hint]
        return managers

    async def _session_loop(self) -> None:
        while True:
            for address in self._candidates():
                try:
                    await self._run_session(address)
                except aiohttp.WSServerHandshakeError as err:
                    if err.status == 403:  # revoked or removed: this node has no place in the cluster
                        self._on_expelled(f"the manager at {address} refuses this node's certificate")
                        return
                    log.debug("session with %s refused: %s", address, err)
                except CALL_ERRORS as err:
                    log.debug("session with %s ended: %s", address, err)
                except (ValueError, TypeError) as err:  # aiohttp raises TypeError on an unexpected frame type
                    log.warning("session with %s: unexpected message (%s)", address, err)
                except Exception:  # the session loop is the node's lifeline: log and reconnect
                    log.exception("session with %s failed", address)
                self.connected.clear()
            await asyncio.sleep(RECONNECT_DELAY)

    async def _description(self) -> dict:
        """Asked of the runtime at every session, so a changed engine (labels, say) shows."""
        described = None
        if self.executor is not None:
            try:
                described = await asyncio.wait_for(self.executor.runtime.describe(), DESCRIBE_TIMEOUT)
            except (TaskRuntimeError, TimeoutError) as err:
                log.warning("the runtime cannot describe this node (%s); reporting the host instead",
                            str(err) or "no answer in time")
        return describe_node(self.config, described or host_description(),
                             DATA_PLANE_OVERLAY if self.data_plane is not None else DATA_PLANE_NONE)

    async def _run_session(self, address: str) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=3, sock_connect=3)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector(self.config.bind_host)) as http:
            async with http.ws_connect(f"https://{address}{SESSION_PATH}", ssl=self.tls.client_context(),
                                       max_msg_size=MAX_MESSAGE_SIZE) as ws:
                await ws.send_bytes(pack(Hello(description=await self._description(), protocol=SESSION_PROTOCOL)))
                first = unpack(await ws.receive_bytes(timeout=HANDSHAKE_TIMEOUT))
                if isinstance(first, Redirect):
                    self._leader_hint = first.leader
                    if self._leader_hint and self._leader_hint != address:
                        await self._run_session(self._leader_hint)
                    return
                if not isinstance(first, Welcome):
                    raise ProtocolError(f"expected a welcome, got {first.TYPE}")
                self._leader_hint = address
                self._plane_floor = 0
                self._apply_welcome(first)
                self.connected.set()
                self.sessions_established += 1
                self._heartbeats_sent.clear()
                log.info("session established with leader %s", address)
                self._ws = ws
                self._held = None  # the leader starts every session with a whole set
                heartbeats = asyncio.ensure_future(self._heartbeats(ws))
                usage = asyncio.ensure_future(self._report_usage(ws))
                try:
                    if self.executor is not None:
                        self._outbox = dict(self.executor.statuses)  # the full report
                        await self._flush_statuses()
                    while True:
                        reply = await ws.receive(timeout=self._period * HEARTBEAT_MISSES_ALLOWED)
                        if reply.type != aiohttp.WSMsgType.BINARY:
                            return
                        try:
                            self._handle(unpack(reply.data))
                        except UnknownMessage as err:  # a newer leader's: nothing this node must act on
                            log.debug("leader %s sent %s; ignored", address, err)
                        except OutOfSequence as err:  # a new session starts with a whole set again
                            log.warning("leader %s: %s; starting a new session", address, err)
                            return
                finally:
                    self._ws = None
                    heartbeats.cancel()
                    usage.cancel()
                    for stream in self._log_streams.values():
                        stream.cancel()
                    self._log_streams.clear()

    async def _heartbeats(self, ws) -> None:
        while not ws.closed:
            self._heartbeats_sent.append(time.monotonic())
            await ws.send_bytes(pack(Heartbeat()))
            await asyncio.sleep(self._period)

    async def _report_usage(self, ws) -> None:
        """Every USAGE_PERIOD, the running tasks' usage, one batch for the node."""
        while not ws.closed and self.executor is not None:
            try:
                samples = await self.executor.usage(time.time())
                if samples and not ws.closed:
                    await ws.send_bytes(pack(Status(usage=samples)))
            except (ConnectionError, RuntimeError) as err:
                log.debug("usage not sent: %s", err)
            except Exception:  # a runtime that fails to measure must not end the session
                log.exception("measuring the tasks' usage failed")
            await asyncio.sleep(USAGE_PERIOD)

    def _handle(self, message: Message) -> None:
        if isinstance(message, HeartbeatAck):
            if self._heartbeats_sent:
                sent = self._heartbeats_sent.popleft()
                if self.on_heartbeat_rtt is not None:
                    self.on_heartbeat_rtt(time.monotonic() - sent)
            self._apply_welcome(message)
        elif isinstance(message, Assignments) and self.executor is not None:
            self._held = AssignmentSet.of(message)
            self._in_order(self._assign(message))
        elif isinstance(message, AssignmentChanges) and self.executor is not None:
            if self._held is None:
                raise OutOfSequence(f"assignment changes {message.sequence} before any whole set")
            self._held.apply(message)  # raises OutOfSequence, changing nothing, on a gap
            self._in_order(self._assign_changes(message, dict(self._held.secrets), dict(self._held.configs)))
        elif isinstance(message, NetworkPlaneUpdate):
            if self._newest_plane is None or _plane_version(message) >= _plane_version(self._newest_plane):
                self._newest_plane = message
            self._in_order(self._apply_plane())
        elif isinstance(message, Logs) and self._ws is not None:
            key = (message.request_id, message.task_id)
            self._log_streams[key] = asyncio.ensure_future(self._stream_logs(self._ws, message))
        elif isinstance(message, LogsCancel):
            stream = self._log_streams.pop((message.request_id, message.task_id), None)
            if stream is not None:
                stream.cancel()

    def _in_order(self, step) -> None:
        previous = self._inbox

        async def after_previous() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            try:
                await step
            except Exception:  # one failed step must not stop the ones after it
                log.exception("handling a message from the leader failed")

        self._inbox = asyncio.ensure_future(after_previous())

    async def _assign(self, message: Assignments) -> None:
        self.executor.assign(message)

    async def _assign_changes(self, changes: AssignmentChanges, secrets: dict, configs: dict) -> None:
        self.executor.assign_changes(changes, secrets, configs)

    async def _apply_plane(self) -> None:
        # A plane is a whole state: when several arrived while one was being applied (every
        # task that starts anywhere changes every node's plane), only the newest is
        # applied, at the place of the first one waiting, so that the assignments after
        # each still find a plane at least as new as theirs (a 50-replica deploy queued 50
        # applies of ~0.1-0.3 s on every node before).
        message, self._newest_plane = self._newest_plane, None
        if message is None:
            return  # applied already, at an earlier place in the order
        try:
            plane = NetworkPlane.from_wire(message.plane)
        except (KeyError, TypeError, ValueError) as err:
            log.warning("the leader sent a malformed network plane (%s); ignored", err)
            return
        if plane.version < self._plane_floor:
            return  # an older one than this session already sent
        if self.data_plane is not None:
            try:
                await asyncio.wait_for(self.data_plane.apply(plane), PLANE_APPLY_TIMEOUT)
            except TimeoutError:
                log.error("network plane %d not applied: still not done after %.0fs; giving it up and trying again",
                          plane.version, PLANE_APPLY_TIMEOUT)
                self._retry_plane(message, plane.version)
                return
            except Exception as err:  # the data plane refused it or failed: keep the last good one
                log.error("network plane %d not applied: %s", plane.version, err)
                if not isinstance(err, ValueError):  # a refused plane stays refused; a failure may pass
                    self._retry_plane(message, plane.version)
                return
        self.plane, self._plane_floor = plane, plane.version
        if self.executor is not None:
            self.executor.network_plane = plane

    def _retry_plane(self, message: NetworkPlaneUpdate, version: int) -> None:
        async def later() -> None:
            await asyncio.sleep(PLANE_RETRY_DELAY)
            newer = self._newest_plane is not None or (self.plane is not None and self.plane.version >= version)
            if not newer and version >= self._plane_floor:
                self._newest_plane = message
                self._in_order(self._apply_plane())

        if self._plane_retry is not None:
            self._plane_retry.cancel()
        self._plane_retry = asyncio.ensure_future(later())

    async def _stream_logs(self, ws, request: Logs) -> None:
        """One task's output to the leader, a line per message, then ``LogEnd``."""
        error = None
        try:
            if self.executor is None:
                raise TaskRuntimeError("this node runs no tasks")
            async for line in self.executor.runtime.logs(request.task_id, follow=request.follow, tail=request.tail):
                await ws.send_bytes(pack(Log(request.request_id, request.task_id, lines=[line])))
        except TaskRuntimeError as err:
            error = str(err) or type(err).__name__
        except (ConnectionError, RuntimeError):
            return  # the session is gone; so is the request
        finally:
            self._log_streams.pop((request.request_id, request.task_id), None)
        if not ws.closed:
            await ws.send_bytes(pack(LogEnd(request.request_id, request.task_id, error=error)))

    # -- task statuses ---------------------------------------------------------------------------------
    def task_status(self, task_id: str, status: dict) -> None:
        """The executor's sink: queue the status; send what is queued at the next turn."""
        self._outbox[task_id] = status
        if not self._flushing and self._ws is not None:
            self._flushing = True
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._flush_statuses()))

    async def _flush_statuses(self) -> None:
        self._flushing = False
        ws, updates = self._ws, self._outbox
        if ws is None or ws.closed or not updates:
            return  # sent with the full report of the next session
        self._outbox = {}
        try:
            await ws.send_bytes(pack(Status(updates=[{"task_id": k, "status": v} for k, v in updates.items()])))
        except (ConnectionError, RuntimeError) as err:
            log.info("task statuses not sent (%s); the next session sends them all", err)

    def _apply_welcome(self, message: Welcome) -> None:
        self._period = message.heartbeat_period
        if message.managers and sorted(message.managers) != sorted(self.config.managers):
            self.config.managers = sorted(message.managers)
            self.data_dir.save(self.config)
        node = message.node
        if node and node["spec"]["role"] != self.tls.identity.role:
            self._on_role_change(node["spec"]["role"])

    # -- certificate renewal ------------------------------------------------------------------------------
    async def _renewal_loop(self) -> None:
        while True:
            identity = self.tls.identity
            delay = renewal_delay(identity.not_before, identity.not_after, datetime.now(timezone.utc))
            await asyncio.sleep(delay)
            try:
                await self.renew_certificate()
            except (ApiCallError, *CALL_ERRORS) as err:
                log.warning("certificate renewal failed (%s); retrying", err)
                await asyncio.sleep(min(30.0, max(1.0, delay / 10)))

    async def renew_certificate(self) -> None:
        """Get a new certificate (in the role the cluster now assigns) from any manager."""
        key = generate_key_pem()
        body = {"csr": make_csr(key).decode(), "api_port": self.config.api_port, "raft_port": self.config.raft_port}
        last_error: Exception | None = None
        for address in self._candidates():
            try:
                answer = await api_call(self.tls.client_context(), address, "POST", "/v1/node/renew", body, timeout=10,
                                        source=self.config.bind_host)
            except (ApiCallError, *CALL_ERRORS) as err:
                last_error = err
                continue
            if answer.get("cluster_key"):  # promoted: the manager-only secrets come with the certificate
                self.data_dir.write_cluster_key(answer["cluster_key"])
                self.config.raft_members = answer["raft_members"]
                self.data_dir.save(self.config)
            self.tls.replace(answer["cert"].encode(), key)
            log.info("certificate renewed: valid until %s, role %s", self.tls.identity.not_after,
                     self.tls.identity.role)
            return
        raise last_error or ApiCallError(503, "no manager known")

