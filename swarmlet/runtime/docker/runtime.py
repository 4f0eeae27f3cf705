"""Runs tasks as Docker containers (the model: SwarmKit's agent/exec/dockerapi).

The runtime composes the package's parts: `client` (the SDK off the event loop), `events`
(the engine's event stream, turned into exits and health), `networks` (the tasks' local
networks and their lock), `create` (the pure ContainerConfig -> create arguments) and
`state` (the engine's answers, in the runtime's vocabulary). Everything this runtime
creates carries the node's label and every lookup filters by it, because several swarmlet
nodes may share one Docker daemon.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import docker.errors

from swarmlet.runtime.base import (
    DEFAULT_STOP_GRACE_PERIOD,
    DEFAULT_STOP_SIGNAL,
    LABEL_TASK_ID,
    ContainerConfig,
    ExitStatus,
    TaskUsage,
    ImageNotFoundError,
    NodeDescription,
    OwnedTask,
    Runtime,
    TaskNotFoundError,
    TaskRuntimeError,
    TaskRuntimeState,
)
from swarmlet.runtime.docker.client import DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_WORKERS, Engine, StreamPump
from swarmlet.runtime.docker.create import LABEL_STOP_GRACE, container_create, container_name
from swarmlet.runtime.docker.events import TaskEvents, node_filter
from swarmlet.runtime.docker.networks import NetworkLock, Networks, ProcessNetworkLock
from swarmlet.runtime.docker.state import exit_status_from_state, node_description, owned_task, runtime_state
from swarmlet.runtime.events import EventSubscription
from swarmlet.runtime.taskfiles import DEFAULT_TASK_FILES_ROOT, TaskFileStore
from swarmlet.trust import Trusted

log = logging.getLogger(__name__)

DEFAULT_PULL_TIMEOUT = 300.0  # seconds
_SIGKILL_DEADLINE = 30.0  # seconds to wait for the engine to report a SIGKILLed container dead
_NETWORK_ATTEMPTS = 3  # a task's networks made again after another node removed them
# An image found on the engine is taken on trust for this long: the tasks of a deploy
# arrive together, and each asked the engine for the same image. A create that finds
# it gone after all looks again (and pulls).
IMAGE_RECHECK_S = 5.0


def usage_from_stats(stats: dict) -> TaskUsage | None:
    """A container's usage from the engine's stats (pure): CPU time used so far, and memory
    as `docker stats` shows it (the usage less the page cache it could drop:
    ``inactive_file`` on cgroup v2, ``total_inactive_file``/``cache`` on v1). None for a
    container that does not run (the engine answers zeros)."""
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    memory = stats.get("memory_stats") or {}
    if not cpu.get("total_usage") and not memory.get("usage"):
        return None
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", details.get("cache", 0)))
    return TaskUsage(cpu_seconds=cpu.get("total_usage", 0) / 1e9, memory=max(0, memory.get("usage", 0) - cache))

class _NameTaken(Exception):
    """A container with the task's name exists already."""


class _ImageVanished(Exception):
    """The image taken on trust was removed before the task's container was created."""


class _NetworkVanished(Exception):
    """A network found for a task was removed before the task's container used it."""


def _is_missing_network(exc: docker.errors.APIError) -> bool:
    return exc.status_code == 404 and "network" in str(exc.explanation or exc).lower()


class DockerRuntime(Runtime):
    def __init__(
        self,
        node_id: str,
        *,
        base_url: str | None = None,
        task_files_root: Path | str = DEFAULT_TASK_FILES_ROOT,
        max_workers: int = DEFAULT_MAX_WORKERS,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        pull_timeout: float = DEFAULT_PULL_TIMEOUT,
        network_lock: NetworkLock | None = None,
    ):
        """`base_url` None: the engine from the environment (DOCKER_HOST or the local socket).
        `network_lock`: shared with the other nodes on this engine (see networks.py); None
        for a node alone on its engine."""
        self.node_id = node_id
        self._engine = Engine(node_id, base_url, max_workers=max_workers, call_timeout=call_timeout)
        self._task_files = TaskFileStore(node_id, task_files_root)
        self._pull_timeout = pull_timeout
        self._container_ids: dict[str, str] = {}
        self._images_found: Trusted[str, bool] = Trusted(IMAGE_RECHECK_S)  # image -> the engine has it
        self._image_locks: dict[str, asyncio.Lock] = {}
        self._networks = Networks(self._engine, network_lock or ProcessNetworkLock())
        self._events = TaskEvents(self._engine, node_id, self._inspect_raw)

    @property
    def network_lock(self) -> NetworkLock:
        return self._networks.lock

    # -- finding a task's container -------------------------------------------------

    async def _call(self, fn, *args, **kwargs):
        return await self._engine.call(fn, *args, **kwargs)

    @property
    def _api(self):
        return self._engine.api

    @property
    def engine(self) -> Engine:
        """The node's engine (the overlay data plane makes its networks' bridges there)."""
        return self._engine

    async def _find_container(self, task_id: str) -> str | None:
        if task_id in self._container_ids:
            return self._container_ids[task_id]
        found = await self._call(
            self._api.containers, all=True, filters=node_filter(self.node_id, **{LABEL_TASK_ID: task_id})
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
            return await self._call(self._api.inspect_container, container_id)
        except docker.errors.NotFound:
            self._container_ids.pop(task_id, None)  # removed behind our back
            return None

    def events(self) -> EventSubscription:
        return self._events.subscribe()

    # -- lifecycle ------------------------------------------------------------------

    async def prepare(self, config: ContainerConfig) -> None:
        if config.node_id != self.node_id:
            raise TaskRuntimeError(f"task {config.task_id} is for node {config.node_id}, not {self.node_id}")
        self._events.ensure_watching()
        if config.task_id in self._container_ids:
            return
        await self._ensure_image(config.image)
        task_files = self._task_files.write(config)
        try:
            # Not listed first (a filtered list scans every container of the engine, once
            # per task): the container's name is the task's, so an earlier one shows as a conflict.
            container_id = await self._create_with_image(config, task_files)
        except _NameTaken:
            if await self._find_container(config.task_id) is None:
                raise TaskRuntimeError(f"a container not of this node is named {container_name(config)}") from None
            return  # prepared before, by an earlier agent of this node
        except BaseException:
            self._task_files.remove(config.task_id)
            raise
        self._container_ids[config.task_id] = container_id

    async def _create_with_image(self, config: ContainerConfig, task_files) -> str:
        try:
            return await self._create_on_networks(config, task_files)
        except _ImageVanished:  # taken on trust, removed since: look again (and pull)
            self._images_found.forget(config.image)
            await self._ensure_image(config.image)
        try:
            return await self._create_on_networks(config, task_files)
        except _ImageVanished:
            raise ImageNotFoundError(f'image "{config.image}" vanished from this node while the task was created') from None

    async def _create_on_networks(self, config: ContainerConfig, task_files) -> str:
        if not config.networks:
            return await self._create_container(config, task_files, [])
        for _attempt in range(_NETWORK_ATTEMPTS):
            # An overlay's Docker network is the data plane's: found, never made here.
            network_ids = [await (self._networks.find(a.name) if a.overlay
                                  else self._networks.ensure(a.name, config.stack_namespace))
                           for a in config.networks]
            try:
                # The engine accepts a create naming a network that is gone (the start fails
                # later), so the networks are checked, under the lock that keeps them.
                async with self._networks.lock.shared():
                    if await self._networks.all_exist(network_ids):
                        return await self._create_container(config, task_files, network_ids)
            except _NetworkVanished:
                pass
            # Removed as unused (by another node sharing the engine, or by this one): make it again.
            for attachment in config.networks:
                self._networks.forget(attachment.name)
        raise TaskRuntimeError(f"the networks of task {config.task_id} keep disappearing")

    async def _ensure_image(self, image: str) -> None:
        """Found or pulled, once for the tasks that ask together (IMAGE_RECHECK_S)."""
        async with self._image_locks.setdefault(image, asyncio.Lock()):
            if self._images_found.holds(image, True):
                return
            self._images_found.forget(image)
            await self._find_or_pull(image)
            self._images_found.note(image, True)

    async def _find_or_pull(self, image: str) -> None:
        try:
            await self._call(self._api.inspect_image, image)
            return
        except docker.errors.ImageNotFound:
            pass
        try:
            await asyncio.wait_for(self._call(self._api.pull, image), self._pull_timeout)
            await self._call(self._api.inspect_image, image)
        except (docker.errors.APIError, TimeoutError) as exc:
            reason = getattr(exc, "explanation", None) or str(exc) or "pull timed out"
            raise ImageNotFoundError(
                f'image "{image}" not found on this node and could not be pulled: {reason}'
            ) from exc

    async def _create_container(self, config: ContainerConfig, task_files, network_ids: list[str]) -> str:
        create = container_create(config, self._engine.api_version, task_files, network_ids)
        try:
            created = await self._call(self._api.create_container, **create.kwargs)
        except docker.errors.APIError as exc:
            if _is_missing_network(exc):
                raise _NetworkVanished() from exc
            if exc.status_code == 409:
                raise _NameTaken() from exc
            if exc.status_code == 404 and "image" in str(exc.explanation or exc).lower():
                raise _ImageVanished() from exc
            raise TaskRuntimeError(f"cannot create container for task {config.task_id}: {exc.explanation or exc}") from exc
        container_id = created["Id"]
        try:
            for network_id, aliases, driver_opts, ipv4_address in create.later_networks:
                await self._call(self._api.connect_container_to_network, container_id, network_id, aliases=aliases,
                                 driver_opt=driver_opts, ipv4_address=ipv4_address)
        except docker.errors.APIError as exc:
            await self._call(self._api.remove_container, container_id, force=True)
            if _is_missing_network(exc):
                raise _NetworkVanished() from exc
            raise TaskRuntimeError(f"cannot attach task {config.task_id} to its networks: {exc.explanation or exc}") from exc
        return container_id

    async def start(self, task_id: str) -> None:
        self._events.ensure_watching()
        container_id = await self._require_container(task_id)
        try:
            await self._call(self._api.start, container_id)
        except docker.errors.APIError as exc:
            raise TaskRuntimeError(f"cannot start task {task_id}: {exc.explanation or exc}") from exc

    async def wait(self, task_id: str) -> ExitStatus:
        self._events.ensure_watching()
        waiter = self._events.exit_waiter(task_id)
        try:
            raw = await self._require_inspect(task_id)
            if raw["State"]["Status"] in ("exited", "dead"):
                return self._events.with_noticed_oom(task_id, exit_status_from_state(raw["State"]))
            return await waiter
        finally:
            self._events.forget_waiter(task_id, waiter)

    async def shutdown(self, task_id: str, grace: float | None = None) -> None:
        self._events.ensure_watching()
        waiter = self._events.exit_waiter(task_id)
        try:
            raw = await self._require_inspect(task_id)
            if not raw["State"]["Running"]:
                return
            if grace is None:
                grace = float(raw["Config"]["Labels"].get(LABEL_STOP_GRACE, DEFAULT_STOP_GRACE_PERIOD))
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
            self._events.forget_waiter(task_id, waiter)

    async def _signal(self, container_id: str, signal: str) -> bool:
        """Send a signal; False when the container is not running (any more)."""
        try:
            await self._call(self._api.kill, container_id, signal=signal)
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
                await self._call(self._api.remove_container, container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
        self._container_ids.pop(task_id, None)
        self._events.forget(task_id)
        self._task_files.remove(task_id)

    async def remove_unused_networks(self, stack_namespace: str) -> list[str]:
        return await self._networks.remove_unused(stack_namespace)

    async def named_volumes(self) -> set[str]:
        found = await self._call(self._api.containers, all=True, filters=node_filter(self.node_id))
        return {m["Name"] for c in found for m in c.get("Mounts") or () if m.get("Type") == "volume" and m.get("Name")}

    async def remove_volumes(self, names: set[str]) -> list[str]:
        removed = []
        for name in sorted(names):
            if await self._call(self._api.containers, all=True, filters={"volume": name}):
                continue  # another node's (or anyone's) container still uses it
            try:
                await self._call(self._api.remove_volume, name)
                removed.append(name)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                log.info("volume %s kept: %s", name, exc.explanation or exc)
        return removed

    # -- what is there ----------------------------------------------------------------

    async def usage(self, task_id: str) -> TaskUsage | None:
        """The engine's stats API, once (``one_shot``: no second sample, no 1 s wait)."""
        container_id = await self._find_container(task_id)
        if container_id is None:
            return None
        try:
            stats = await self._call(self._api.stats, container_id, stream=False, one_shot=True)
        except docker.errors.NotFound:
            self._container_ids.pop(task_id, None)
            return None
        return usage_from_stats(stats)

    async def inspect(self, task_id: str) -> TaskRuntimeState | None:
        raw = await self._inspect_raw(task_id)
        return None if raw is None else runtime_state(task_id, raw["State"])

    async def logs(self, task_id: str, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        container_id = await self._require_container(task_id)
        open_stream = functools.partial(
            self._engine.stream_api.logs,
            container_id,
            stream=True,
            follow=follow,
            tail="all" if tail is None else tail,
        )
        pump = StreamPump(open_stream, asyncio.get_running_loop(), f"docker-logs-{task_id[:12]}")
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
        found = await self._call(self._api.containers, all=True, filters=node_filter(self.node_id))
        owned = []
        for container in found:
            task = owned_task(container)
            if task is not None:
                self._container_ids[task.task_id] = container["Id"]
                owned.append(task)
        return owned

    async def describe(self) -> NodeDescription:
        try:
            info = await self._call(self._api.info)
        except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
            raise TaskRuntimeError(f"cannot describe the engine: {exc}") from exc
        return node_description(info)

    async def close(self) -> None:
        if self._engine.closed:
            return
        self._engine.closed = True  # no new calls while the event consumer winds down
        await self._events.close()
        self._engine.close()
