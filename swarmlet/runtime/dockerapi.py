"""Runs tasks as Docker containers (the model: SwarmKit's agent/exec/dockerapi).

The docker SDK is blocking, so every call runs in a bounded thread pool on one shared
client, and Docker's event stream is read by a thread of its own that hands events to the
event loop: state changes arrive as events, nothing polls. Everything this runtime creates
carries the node's label and every lookup filters by it, because several swarmlet nodes may
share one Docker daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types

from swarmlet.runtime.base import (
    DEFAULT_STOP_GRACE_PERIOD,
    DEFAULT_STOP_SIGNAL,
    LABEL_NETWORK,
    LABEL_NODE_ID,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_STACK_NAMESPACE,
    LABEL_TASK_ID,
    ContainerConfig,
    EventKind,
    ExitStatus,
    HealthCheck,
    HealthStatus,
    ImageNotFoundError,
    OwnedTask,
    Runtime,
    RuntimeEvent,
    TaskNotFoundError,
    TaskRuntimeError,
    TaskRuntimeState,
    TaskState,
    describe_exit,
    describe_unhealthy,
)
from swarmlet.runtime.events import EventHub, EventSubscription
from swarmlet.runtime.taskfiles import DEFAULT_TASK_FILES_ROOT, TaskFileStore

log = logging.getLogger(__name__)

# Private: remembered on the container so shutdown() knows it even after an agent restart
# (Docker's own StopTimeout only holds whole seconds).
_LABEL_STOP_GRACE = "swarmlet.stop.grace-period"
_WATCHED_ACTIONS = ["start", "die", "oom", "health_status"]
_CONTAINER_STATES = {
    "created": TaskState.CREATED,
    "running": TaskState.RUNNING,
    "paused": TaskState.RUNNING,
    "restarting": TaskState.RUNNING,
    "removing": TaskState.EXITED,
    "exited": TaskState.EXITED,
    "dead": TaskState.EXITED,
}
_DOCKER_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
_SIGKILL_DEADLINE = 30.0  # seconds to wait for the engine to report a SIGKILLed container dead
# The engine may report a container's OOM kill just after its exit (seen under load): a
# memory-limited task SIGKILLed waits this long for the news before its exit is reported.
_LATE_OOM_DEADLINE = 1.0


# Nodes sharing one engine are processes on one machine. This file's lock makes their
# network changes atomic, which the engine does not: held exclusively to create a missing
# network or to remove an unused one, shared while a task's container is created on
# networks (the engine accepts a container naming a network that is gone, and only its
# start fails; and a container that is only created does not keep a network in use).
NETWORK_LOCK_PATH = Path(tempfile.gettempdir()) / "swarmlet-docker-networks.lock"


@contextlib.asynccontextmanager
async def _machine_network_lock(operation: int):
    """Waits on the event loop (no thread blocks: a holder may need the pool to finish)."""
    fd = os.open(NETWORK_LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


def container_name(config: ContainerConfig) -> str:
    return f"{config.service_name}.{config.task_id[:12]}"


def _docker_timestamp(time_ns: int) -> str:
    """The engine's `since` format, exact to the nanosecond (a float is not)."""
    return f"{time_ns // 1_000_000_000}.{time_ns % 1_000_000_000:09d}"


def _seconds_to_ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _docker_healthcheck(check: HealthCheck) -> dict:
    """An empty test and zero timings are the image's (the Engine API's "inherit")."""
    healthcheck = docker.types.Healthcheck(
        test=check.test or [],
        interval=_seconds_to_ns(check.interval or 0),
        timeout=_seconds_to_ns(check.timeout or 0),
        retries=check.retries or 0,
        start_period=_seconds_to_ns(check.start_period or 0),
    )
    if check.start_interval:  # API 1.44+; the SDK does not know it, older engines ignore it
        healthcheck["StartInterval"] = _seconds_to_ns(check.start_interval)
    return healthcheck


def _docker_mount(mount) -> docker.types.Mount:
    driver = docker.types.DriverConfig(mount.volume_driver, mount.volume_driver_opts or None) \
        if mount.volume_driver or mount.volume_driver_opts else None  # no name: the engine's default driver
    return docker.types.Mount(
        target=mount.target, source=mount.source, type=mount.type, read_only=mount.read_only,
        propagation=mount.propagation, no_copy=mount.no_copy, labels=mount.volume_labels or None,
        driver_config=driver, tmpfs_size=mount.tmpfs_size, tmpfs_mode=mount.tmpfs_mode,
    )


def _parse_docker_time(value: str | None) -> datetime | None:
    # Docker reports "0001-01-01T00:00:00Z" for "never", and nanoseconds Python can't parse.
    match = _DOCKER_TIME.match(value or "")
    if match is None or value.startswith("0001-"):
        return None
    seconds, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{seconds}.{(fraction or '0')[:6]:0<6}{zone}")


def _last_health_output(state: dict) -> str:
    health_log = (state.get("Health") or {}).get("Log") or []
    return health_log[-1].get("Output", "") if health_log else ""


def exit_status_from_state(state: dict) -> ExitStatus:
    """Map a container's State (from inspect) to the task's exit status."""
    exit_code = int(state.get("ExitCode", -1))
    oom_killed = bool(state.get("OOMKilled"))
    unhealthy = (state.get("Health") or {}).get("Status") == "unhealthy"
    error = state.get("Error") or describe_exit(
        exit_code, oom_killed, _last_health_output(state) if unhealthy else None
    )
    return ExitStatus(exit_code=exit_code, oom_killed=oom_killed, error=error)


class _NameTaken(Exception):
    """A container with the task's name exists already."""


class _NetworkVanished(Exception):
    """A network found for a task was removed before the task's container used it."""


def _is_missing_network(exc: docker.errors.APIError) -> bool:
    return exc.status_code == 404 and "network" in str(exc.explanation or exc).lower()


class _StreamPump:
    """Reads a blocking SDK stream in its own thread and hands items to the event loop.

    A dedicated thread rather than the pool: a followed stream blocks for as long as the
    container lives and must not starve ordinary calls.
    """

    _END = object()

    def __init__(
        self,
        open_stream: Callable[[], Any],
        loop: asyncio.AbstractEventLoop,
        thread_name: str,
        on_arrival: Callable[[Any], None] | None = None,
    ):
        """`on_arrival` sees each item on the loop as soon as it arrives, before the reader."""
        self._open_stream = open_stream
        self._on_arrival = on_arrival
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stream = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._stream = self._open_stream()
            if self._closed.is_set():
                _close_quietly(self._stream)
            for item in self._stream:
                self._loop.call_soon_threadsafe(self._deliver, item)
        except Exception as exc:  # handed to the reader, raised there
            if not self._closed.is_set():
                self._loop.call_soon_threadsafe(self._queue.put_nowait, exc)
        finally:
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, self._END)
            except RuntimeError:  # the loop is already closed
                pass

    def _deliver(self, item) -> None:
        if self._on_arrival is not None:
            self._on_arrival(item)
        self._queue.put_nowait(item)

    async def items(self) -> AsyncIterator[Any]:
        try:
            while True:
                item = await self._queue.get()
                if item is self._END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._closed.set()
        if self._stream is not None:
            _close_quietly(self._stream)


def _close_quietly(stream) -> None:
    # Called from another thread than the reader's: the socket may already be gone.
    try:
        stream.close()
    except OSError:
        pass


class DockerRuntime(Runtime):
    def __init__(
        self,
        node_id: str,
        *,
        base_url: str | None = None,
        task_files_root: Path | str = DEFAULT_TASK_FILES_ROOT,
        max_workers: int = 16,
        call_timeout: float = 60.0,
        pull_timeout: float = 300.0,
    ):
        """`base_url` None: the engine from the environment (DOCKER_HOST or the local socket).
        The API version is negotiated: pinning a newer one fails on older engines."""
        self.node_id = node_id
        # As many pooled connections as pool threads (the SDK keeps 10 and reconnects beyond).
        self._client = self._make_client(base_url, timeout=call_timeout, pool_size=max(10, max_workers))
        # Followed logs can stay silent for longer than any sensible call timeout.
        self._stream_client = self._make_client(base_url, timeout=None)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"docker-{node_id}")
        self._task_files = TaskFileStore(node_id, task_files_root)
        self._pull_timeout = pull_timeout
        self._container_ids: dict[str, str] = {}
        self._network_locks: dict[str, asyncio.Lock] = {}
        self._network_ids: dict[str, str] = {}  # name -> ID, as last found or made
        self._exit_waiters: dict[str, set[asyncio.Future]] = {}
        self._oom_noticed: dict[str, asyncio.Event] = {}
        self._hub = EventHub()
        self._event_pump: _StreamPump | None = None
        self._event_consumer: asyncio.Task | None = None
        self._closed = False

    @staticmethod
    def _make_client(base_url: str | None, timeout: float | None, pool_size: int = 10) -> docker.DockerClient:
        if base_url is None:
            return docker.from_env(version="auto", timeout=timeout, max_pool_size=pool_size)
        return docker.DockerClient(base_url=base_url, version="auto", timeout=timeout, max_pool_size=pool_size)

    # -- plumbing -------------------------------------------------------------------

    async def _call(self, fn: Callable, *args, **kwargs):
        if self._closed:
            raise TaskRuntimeError("runtime is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def _node_filter(self, **extra_labels: str) -> dict:
        labels = [f"{LABEL_NODE_ID}={self.node_id}"] + [f"{k}={v}" for k, v in extra_labels.items()]
        return {"label": labels}

    async def _find_container(self, task_id: str) -> str | None:
        if task_id in self._container_ids:
            return self._container_ids[task_id]
        found = await self._call(
            self._client.api.containers, all=True, filters=self._node_filter(**{LABEL_TASK_ID: task_id})
        )
        if not found:
            return None
        self._container_ids[task_id] = found[0]["Id"]
        return found[0]["Id"]

    def _not_found(self, task_id: str) -> TaskNotFoundError:
        return TaskNotFoundError(f"task {task_id} has no container on node {self.node_id}")

    async def _require_container(self, task_id: str) -> str:
        container_id = await self._find_container(task_id)
        if container_id is None:
            raise self._not_found(task_id)
        return container_id

    async def _require_inspect(self, task_id: str) -> dict:
        raw = await self._inspect_raw(task_id)
        if raw is None:
            raise self._not_found(task_id)
        return raw

    async def _inspect_raw(self, task_id: str) -> dict | None:
        container_id = await self._find_container(task_id)
        if container_id is None:
            return None
        try:
            return await self._call(self._client.api.inspect_container, container_id)
        except docker.errors.NotFound:
            self._container_ids.pop(task_id, None)  # removed behind our back
            return None

    # -- events ---------------------------------------------------------------------

    def _ensure_watching(self) -> None:
        """Start reading Docker's events the first time the runtime is used on a loop."""
        if self._event_pump is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        # Replaying from this moment means no event is lost while the stream connects.
        since = _docker_timestamp(time.time_ns())
        self._event_pump = _StreamPump(
            lambda: self._events_since(since), loop, f"docker-events-{self.node_id}", on_arrival=self._notice_oom
        )
        self._event_consumer = loop.create_task(self._consume_events(), name=f"docker-events-{self.node_id}")

    def _events_since(self, since: str) -> Iterator[dict]:
        """Docker's event stream for this node, reconnecting after the engine drops it."""
        return _ReconnectingEvents(self._stream_client, since, self._event_filters())

    def _event_filters(self) -> dict:
        return {"type": ["container"], "event": _WATCHED_ACTIONS, **self._node_filter()}

    async def _consume_events(self) -> None:
        # One consumer, in order: an `oom` must reach subscribers before its `die`.
        try:
            async for event in self._event_pump.items():
                try:
                    await self._handle_event(event)
                except Exception:
                    log.exception("cannot handle docker event %r", event)
        finally:
            self._hub.close()

    def _notice_oom(self, event: dict) -> None:
        # Noted on arrival, not in turn: the `die` being handled may be waiting for it.
        task_id = event.get("Actor", {}).get("Attributes", {}).get(LABEL_TASK_ID)
        if event.get("Action") == "oom" and task_id:
            self._oom_event(task_id).set()

    def _oom_event(self, task_id: str) -> asyncio.Event:
        return self._oom_noticed.setdefault(task_id, asyncio.Event())

    async def _handle_event(self, event: dict) -> None:
        attributes = event.get("Actor", {}).get("Attributes", {})
        task_id = attributes.get(LABEL_TASK_ID)
        if not task_id or attributes.get(LABEL_NODE_ID) != self.node_id:
            return
        action = event.get("Action", "")
        if action == "start":
            self._hub.publish(RuntimeEvent(task_id, EventKind.STARTED, "container started"))
        elif action == "oom":
            self._hub.publish(RuntimeEvent(task_id, EventKind.OOM, "container ran out of memory"))
        elif action == "die":
            status = await self._exit_status_after_die(task_id, attributes)
            for waiter in self._exit_waiters.pop(task_id, set()):
                if not waiter.done():
                    waiter.set_result(status)
            self._hub.publish(
                RuntimeEvent(
                    task_id,
                    EventKind.EXITED,
                    status.error or f"exit code {status.exit_code}",
                    exit_code=status.exit_code,
                )
            )
        elif action.startswith("health_status"):
            health = action.partition(":")[2].strip()
            detail = health
            if health == HealthStatus.UNHEALTHY.value:
                raw = await self._inspect_raw(task_id)
                detail = describe_unhealthy(_last_health_output(raw["State"]) if raw else "")
            self._hub.publish(RuntimeEvent(task_id, EventKind.HEALTH, detail))

    async def _exit_status_after_die(self, task_id: str, attributes: dict) -> ExitStatus:
        raw = await self._inspect_raw(task_id)
        if raw is None:
            # Already removed (e.g. `docker rm -f`): the event still carries the exit code.
            exit_code = int(attributes.get("exitCode", -1))
            status = ExitStatus(exit_code=exit_code, error=describe_exit(exit_code))
        else:
            status = exit_status_from_state(raw["State"])
        memory_limited = raw is not None and bool(raw["HostConfig"].get("Memory"))
        if not status.oom_killed and status.exit_code == 137 and memory_limited:
            try:
                await asyncio.wait_for(self._oom_event(task_id).wait(), _LATE_OOM_DEADLINE)
            except TimeoutError:
                pass
        return self._with_noticed_oom(task_id, status)

    def _with_noticed_oom(self, task_id: str, status: ExitStatus) -> ExitStatus:
        """The status, OOM-killed if the engine's event said so though its State did not."""
        noticed = self._oom_noticed.get(task_id)
        if status.oom_killed or noticed is None or not noticed.is_set():
            return status
        return ExitStatus(status.exit_code, oom_killed=True, error=describe_exit(status.exit_code, oom_killed=True))

    def _exit_waiter(self, task_id: str) -> asyncio.Future:
        waiter = asyncio.get_running_loop().create_future()
        self._exit_waiters.setdefault(task_id, set()).add(waiter)
        return waiter

    def _forget_waiter(self, task_id: str, waiter: asyncio.Future) -> None:
        waiters = self._exit_waiters.get(task_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._exit_waiters[task_id]

    def events(self) -> EventSubscription:
        subscription = self._hub.subscribe()
        self._ensure_watching()
        return subscription

    # -- lifecycle ------------------------------------------------------------------

    async def prepare(self, config: ContainerConfig) -> None:
        if config.node_id != self.node_id:
            raise TaskRuntimeError(f"task {config.task_id} is for node {config.node_id}, not {self.node_id}")
        self._ensure_watching()
        if config.task_id in self._container_ids:
            return
        await self._ensure_image(config.image)
        task_files = self._task_files.write(config)
        try:
            # Not listed first (a filtered list scans every container of the engine, once
            # per task): the container's name is the task's, so an earlier one shows as a conflict.
            container_id = await self._create_on_networks(config, task_files)
        except _NameTaken:
            if await self._find_container(config.task_id) is None:
                raise TaskRuntimeError(f"a container not of this node is named {container_name(config)}") from None
            return  # prepared before, by an earlier agent of this node
        except BaseException:
            self._task_files.remove(config.task_id)
            raise
        self._container_ids[config.task_id] = container_id

    async def _create_on_networks(self, config: ContainerConfig, task_files) -> str:
        if not config.networks:
            return await self._create_container(config, task_files, [])
        for _attempt in range(3):
            network_ids = [await self._ensure_network(a.name, config.stack_namespace) for a in config.networks]
            try:
                async with _machine_network_lock(fcntl.LOCK_SH):
                    if all([await self._network_exists(network_id) for network_id in network_ids]):
                        return await self._create_container(config, task_files, network_ids)
            except _NetworkVanished:
                pass
            # Another node sharing the engine removed one as unused: make it again.
            for attachment in config.networks:
                self._network_ids.pop(attachment.name, None)
        raise TaskRuntimeError(f"the networks of task {config.task_id} keep disappearing")

    async def _network_exists(self, network_id: str) -> bool:
        try:
            await self._call(self._client.api.inspect_network, network_id)
            return True
        except docker.errors.NotFound:
            return False

    async def _ensure_image(self, image: str) -> None:
        try:
            await self._call(self._client.api.inspect_image, image)
            return
        except docker.errors.ImageNotFound:
            pass
        try:
            await asyncio.wait_for(self._call(self._client.api.pull, image), self._pull_timeout)
            await self._call(self._client.api.inspect_image, image)
        except (docker.errors.APIError, TimeoutError) as exc:
            reason = getattr(exc, "explanation", None) or str(exc) or "pull timed out"
            raise ImageNotFoundError(
                f'image "{image}" not found on this node and could not be pulled: {reason}'
            ) from exc

    async def _ensure_network(self, name: str, stack_namespace: str) -> str:
        """The ID of the bridge network called `name`, created if missing.

        Tasks attach by ID. The engine's duplicate-name check is not atomic: nodes on this
        machine take the machine-wide lock around look-and-create, and should a node
        elsewhere sharing the engine still race us, every racer settles on the oldest
        network of that name and removes its own extra one if nothing uses it.
        """
        if name in self._network_ids:  # a create naming it fails if it went meanwhile
            return self._network_ids[name]
        async with self._network_locks.setdefault(name, asyncio.Lock()):
            if name not in self._network_ids:
                async with _machine_network_lock(fcntl.LOCK_EX):
                    self._network_ids[name] = await self._call(self._ensure_network_locked, name, stack_namespace)
            return self._network_ids[name]

    def _ensure_network_locked(self, name: str, stack_namespace: str) -> str:
        """In a pool thread, holding the machine-wide lock exclusively."""
        api = self._client.api
        existing = self._networks_named(name)
        if existing:
            return existing[0]["Id"]
        try:
            created = api.create_network(
                name,
                driver="bridge",
                check_duplicate=True,
                labels={LABEL_NETWORK: name, LABEL_STACK_NAMESPACE: stack_namespace},
            )
        except docker.errors.APIError as exc:
            existing = self._networks_named(name)
            if exc.status_code == 409 and existing:
                return existing[0]["Id"]
            raise TaskRuntimeError(f"cannot create network {name}: {exc.explanation or exc}") from exc
        winner = self._networks_named(name)[0]["Id"]
        if winner != created["Id"]:
            log.info("network %s was created concurrently; dropping our duplicate", name)
            self._remove_network_if_unused(created["Id"], name)
        return winner

    async def remove_unused_networks(self, stack_namespace: str) -> list[str]:
        """Several nodes may share this engine, so a network goes only once no container
        at all refers to it."""
        if not stack_namespace:
            return []
        found = await self._call(
            self._client.api.networks, filters={"label": [LABEL_NETWORK, f"{LABEL_STACK_NAMESPACE}={stack_namespace}"]}
        )
        removed = []
        for network in found:
            name = network["Name"]
            async with self._network_locks.setdefault(name, asyncio.Lock()):
                self._network_ids.pop(name, None)
                async with _machine_network_lock(fcntl.LOCK_EX):
                    gone = await self._call(self._remove_network_if_unused, network["Id"], name)
                if gone:
                    removed.append(name)
        return removed

    def _remove_network_if_unused(self, network_id: str, name: str) -> bool:
        api = self._client.api
        # `network=` also matches created and stopped containers, which the engine would
        # let us strand (a created container cannot start without its network). A created
        # container is known by the name or the ID it was given, so ask for both.
        if api.containers(all=True, filters={"network": [network_id, name]}):
            return False
        try:
            api.remove_network(network_id)
        except docker.errors.NotFound:
            return False  # another node sharing the engine was first
        except docker.errors.APIError as exc:  # the engine's refusal: a container attached meanwhile
            log.info("network %s still in use, kept: %s", name, exc.explanation or exc)
            return False
        return True

    def _networks_named(self, name: str) -> list[dict]:
        """Networks with exactly this name (the engine's filter matches substrings), oldest first."""
        found = self._client.api.networks(names=[name])
        return sorted((n for n in found if n["Name"] == name), key=lambda n: (n["Created"], n["Id"]))

    async def _create_container(self, config: ContainerConfig, task_files, network_ids: list[str]) -> str:
        api = self._client.api
        mounts = [_docker_mount(mount) for mount in config.mounts]
        mounts += [
            docker.types.Mount(target=file.target, source=str(file.host_path), type="bind", read_only=True)
            for file in task_files
        ]
        resources = config.resources
        attachments = list(zip(network_ids, config.networks))
        host_config = api.create_host_config(
            mounts=mounts,
            port_bindings={f"{port.target}/{port.protocol}": port.published for port in config.ports} or None,
            nano_cpus=int(resources.cpus * 1e9) if resources.cpus else None,
            mem_limit=resources.memory,
            pids_limit=resources.pids,
            init=config.init or None,
            read_only=config.read_only or None,
            cap_add=config.cap_add or None,
            cap_drop=config.cap_drop or None,
            ulimits=[docker.types.Ulimit(name=u.name, soft=u.soft, hard=u.hard) for u in config.ulimits] or None,
            sysctls=config.sysctls or None,
            extra_hosts=config.extra_hosts or None,
            dns=config.dns or None,
            dns_search=config.dns_search or None,
            dns_opt=config.dns_options or None,
            oom_score_adj=config.oom_score_adj,
            isolation=config.isolation,
            log_config=docker.types.LogConfig(type=config.logging.driver, config=config.logging.options)
            if config.logging else None,
            tmpfs=config.tmpfs or None,
            network_mode=attachments[0][0] if attachments else None,
        )
        networking_config = None
        if attachments:
            first_id, first = attachments[0]
            networking_config = api.create_networking_config(
                {first_id: api.create_endpoint_config(aliases=first.aliases or None, driver_opt=first.driver_opts or None)}
            )
        labels = {**config.all_labels(), _LABEL_STOP_GRACE: repr(float(config.stop_grace_period))}
        try:
            created = await self._call(
                api.create_container,
                config.image,
                command=config.command,
                entrypoint=config.entrypoint,
                environment=config.env or None,
                labels=labels,
                hostname=config.hostname,
                user=config.user,
                working_dir=config.working_dir,
                tty=config.tty,
                stdin_open=config.stdin_open,
                stop_signal=config.stop_signal,
                stop_timeout=math.ceil(config.stop_grace_period),
                healthcheck=_docker_healthcheck(config.healthcheck) if config.healthcheck else None,
                ports=[(port.target, port.protocol) for port in config.ports] or None,
                name=container_name(config),
                host_config=host_config,
                networking_config=networking_config,
            )
        except docker.errors.APIError as exc:
            if _is_missing_network(exc):
                raise _NetworkVanished() from exc
            if exc.status_code == 409:
                raise _NameTaken() from exc
            raise TaskRuntimeError(f"cannot create container for task {config.task_id}: {exc.explanation or exc}") from exc
        container_id = created["Id"]
        try:
            for network_id, attachment in attachments[1:]:
                await self._call(
                    api.connect_container_to_network, container_id, network_id, aliases=attachment.aliases or None,
                    driver_opt=attachment.driver_opts or None,
                )
        except docker.errors.APIError as exc:
            await self._call(api.remove_container, container_id, force=True)
            if _is_missing_network(exc):
                raise _NetworkVanished() from exc
            raise TaskRuntimeError(f"cannot attach task {config.task_id} to its networks: {exc.explanation or exc}") from exc
        return container_id

    async def start(self, task_id: str) -> None:
        self._ensure_watching()
        container_id = await self._require_container(task_id)
        try:
            await self._call(self._client.api.start, container_id)
        except docker.errors.APIError as exc:
            raise TaskRuntimeError(f"cannot start task {task_id}: {exc.explanation or exc}") from exc

    async def wait(self, task_id: str) -> ExitStatus:
        self._ensure_watching()
        # Registered before looking, so an exit between the look and the wait is not missed.
        waiter = self._exit_waiter(task_id)
        try:
            raw = await self._require_inspect(task_id)
            if raw["State"]["Status"] in ("exited", "dead"):
                return self._with_noticed_oom(task_id, exit_status_from_state(raw["State"]))
            return await waiter
        finally:
            self._forget_waiter(task_id, waiter)

    async def shutdown(self, task_id: str, grace: float | None = None) -> None:
        self._ensure_watching()
        waiter = self._exit_waiter(task_id)
        try:
            raw = await self._require_inspect(task_id)
            if not raw["State"]["Running"]:
                return
            if grace is None:
                grace = float(raw["Config"]["Labels"].get(_LABEL_STOP_GRACE, DEFAULT_STOP_GRACE_PERIOD))
            stop_signal = raw["Config"].get("StopSignal") or DEFAULT_STOP_SIGNAL
            if not await self._signal(raw["Id"], stop_signal):
                return
            try:
                await asyncio.wait_for(asyncio.shield(waiter), grace)
                return
            except TimeoutError:
                log.info("task %s ignored %s for %.1fs; killing it", task_id, stop_signal, grace)
            if await self._signal(raw["Id"], "SIGKILL"):
                await asyncio.wait_for(waiter, _SIGKILL_DEADLINE)
        finally:
            self._forget_waiter(task_id, waiter)

    async def _signal(self, container_id: str, signal: str) -> bool:
        """Send a signal; False when the container is not running (any more)."""
        try:
            await self._call(self._client.api.kill, container_id, signal=signal)
            return True
        except docker.errors.APIError as exc:
            if exc.status_code in (404, 409):
                return False
            raise

    async def remove(self, task_id: str) -> None:
        container_id = await self._find_container(task_id)
        if container_id is not None:
            try:
                # v=True: anonymous volumes die with the task, as with `docker rm -v`.
                await self._call(self._client.api.remove_container, container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
        self._container_ids.pop(task_id, None)
        self._oom_noticed.pop(task_id, None)
        self._task_files.remove(task_id)

    async def inspect(self, task_id: str) -> TaskRuntimeState | None:
        raw = await self._inspect_raw(task_id)
        if raw is None:
            return None
        state = raw["State"]
        task_state = _CONTAINER_STATES.get(state["Status"], TaskState.EXITED)
        health_status = (state.get("Health") or {}).get("Status")
        health = HealthStatus(health_status) if health_status else HealthStatus.NONE
        if task_state is TaskState.EXITED:
            error = exit_status_from_state(state).error
        elif health is HealthStatus.UNHEALTHY:
            error = describe_unhealthy(_last_health_output(state))
        else:
            error = state.get("Error") or None
        return TaskRuntimeState(
            task_id=task_id,
            state=task_state,
            health=health,
            exit_code=state.get("ExitCode") if task_state is TaskState.EXITED else None,
            started_at=_parse_docker_time(state.get("StartedAt")),
            finished_at=_parse_docker_time(state.get("FinishedAt")) if task_state is TaskState.EXITED else None,
            error=error,
        )

    async def logs(self, task_id: str, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        container_id = await self._require_container(task_id)
        open_stream = functools.partial(
            self._stream_client.api.logs,
            container_id,
            stream=True,
            follow=follow,
            tail="all" if tail is None else tail,
        )
        pump = _StreamPump(open_stream, asyncio.get_running_loop(), f"docker-logs-{task_id[:12]}")
        pending = b""
        try:
            async for chunk in pump.items():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace")
            if pending:
                yield pending.decode("utf-8", errors="replace")
        finally:
            pump.close()  # the reader may stop early; don't leave the thread following

    async def list_owned(self) -> list[OwnedTask]:
        found = await self._call(self._client.api.containers, all=True, filters=self._node_filter())
        owned = []
        for container in found:
            labels = container.get("Labels") or {}
            task_id = labels.get(LABEL_TASK_ID)
            if not task_id:
                continue
            self._container_ids[task_id] = container["Id"]
            owned.append(
                OwnedTask(
                    task_id=task_id,
                    service_id=labels.get(LABEL_SERVICE_ID, ""),
                    service_name=labels.get(LABEL_SERVICE_NAME, ""),
                    stack_namespace=labels.get(LABEL_STACK_NAMESPACE, ""),
                    state=_CONTAINER_STATES.get(container.get("State", ""), TaskState.EXITED),
                    labels=labels,
                )
            )
        return owned

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._event_pump is not None:
            self._event_pump.close()
        if self._event_consumer is not None:
            self._event_consumer.cancel()
            try:
                await self._event_consumer
            except asyncio.CancelledError:
                pass
        self._hub.close()
        for waiters in self._exit_waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(TaskRuntimeError("runtime closed"))
                    waiter.exception()  # retrieved: no warning when nobody waited
        self._exit_waiters.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        self._stream_client.close()


class _ReconnectingEvents:
    """Docker's event stream as one endless iterator: after the engine drops the connection
    (a restart, say), it reconnects and replays from the last event it saw."""

    def __init__(self, client: docker.DockerClient, since: str, filters: dict):
        self._client = client
        self._since = since
        self._filters = filters
        self._stream = None
        self._closed = threading.Event()
        self._last_seen: set[tuple] = set()

    def __iter__(self) -> Iterator[dict]:
        while not self._closed.is_set():
            try:
                self._stream = self._client.api.events(since=self._since, filters=self._filters, decode=True)
                if self._closed.is_set():
                    _close_quietly(self._stream)
                for event in self._stream:
                    key = (event.get("timeNano"), event.get("id"), event.get("Action"))
                    if key in self._last_seen:  # replayed after a reconnect
                        continue
                    if event.get("timeNano"):
                        since = _docker_timestamp(event["timeNano"])
                        if since != self._since:
                            self._last_seen.clear()
                        self._since = since
                    self._last_seen.add(key)
                    yield event
            except docker.errors.DockerException as exc:
                log.warning("docker event stream failed: %s; reconnecting", exc)
            except OSError as exc:
                log.warning("docker event stream failed: %s; reconnecting", exc)
            # Back off before reconnecting; close() cuts the wait short.
            self._closed.wait(1.0)

    def close(self) -> None:
        self._closed.set()
        if self._stream is not None:
            _close_quietly(self._stream)
