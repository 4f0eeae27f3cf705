"""The local Docker networks a node's tasks attach to, and the lock that keeps their
creation and removal apart from the containers that use them.

The engine is not atomic here: it accepts a container naming a network that is gone (only
its start fails), a network that only a created container refers to counts as unused, and
its duplicate-name check races. So network changes hold a lock exclusively, and a task's
container is created holding it shared, after checking its networks still exist. Which
lock depends on who shares the engine: a node alone on it needs one only within its
process (`ProcessNetworkLock`); the nodes of `swarmlet local`, processes of one machine
sharing one engine, share a file lock (`MachineNetworkLock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import docker.errors

from swarmlet.runtime.base import LABEL_NETWORK, LABEL_STACK_NAMESPACE, TaskRuntimeError
from swarmlet.runtime.docker.client import Engine

log = logging.getLogger(__name__)

DEFAULT_NETWORK_LOCK_PATH = Path(tempfile.gettempdir()) / "swarmlet-docker-networks.lock"
_LOCK_POLL_INTERVAL = 0.01  # seconds; a file lock cannot be awaited, only retried


class NetworkLock:
    """A readers-writer lock: `exclusive()` to create or remove a network, `shared()` while
    a container is created on networks. Both are async context managers."""

    def exclusive(self) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError

    def shared(self) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError


class ProcessNetworkLock(NetworkLock):
    """Within one process: for a node that is alone on its engine."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._readers = 0
        self._writing = False

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._writing and self._readers == 0)
            self._writing = True
        try:
            yield
        finally:
            async with self._changed:
                self._writing = False
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._writing)
            self._readers += 1
        try:
            yield
        finally:
            async with self._changed:
                self._readers -= 1
                self._changed.notify_all()


class MachineNetworkLock(NetworkLock):
    """A file lock (flock) for every node process of a machine sharing one engine."""

    def __init__(self, path: Path | str = DEFAULT_NETWORK_LOCK_PATH):
        self.path = Path(path)

    def exclusive(self) -> contextlib.AbstractAsyncContextManager:
        return self._locked(fcntl.LOCK_EX)

    def shared(self) -> contextlib.AbstractAsyncContextManager:
        return self._locked(fcntl.LOCK_SH)

    @contextlib.asynccontextmanager
    async def _locked(self, operation: int) -> AsyncIterator[None]:
        """Waits on the event loop (no thread blocks: a holder may need the pool to finish)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, operation | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(_LOCK_POLL_INTERVAL)
            yield
        finally:
            os.close(fd)  # releases the lock


class Networks:
    """One node's view of the engine's swarmlet networks: found or made by name, by ID."""

    def __init__(self, engine: Engine, lock: NetworkLock):
        self._engine = engine
        self.lock = lock
        self._name_locks: dict[str, asyncio.Lock] = {}
        self._ids: dict[str, str] = {}  # name -> ID, as last found or made

    def forget(self, name: str) -> None:
        """Another node sharing the engine may have removed it: look again next time."""
        self._ids.pop(name, None)

    async def ensure(self, name: str, stack_namespace: str) -> str:
        """The ID of the bridge network called `name`, created if missing.

        Tasks attach by ID. Look-and-create holds the lock exclusively, and should a node
        elsewhere sharing the engine still race us, every racer settles on the oldest
        network of that name and removes its own extra one if nothing uses it.
        """
        if name in self._ids:  # a create naming it fails if it went meanwhile
            return self._ids[name]
        async with self._name_locks.setdefault(name, asyncio.Lock()):
            if name not in self._ids:
                async with self.lock.exclusive():
                    self._ids[name] = await self._engine.call(self._ensure_locked, name, stack_namespace)
            return self._ids[name]

    def _ensure_locked(self, name: str, stack_namespace: str) -> str:
        """In a pool thread, holding the lock exclusively."""
        existing = self._named(name)
        if existing:
            return existing[0]["Id"]
        try:
            created = self._engine.api.create_network(
                name,
                driver="bridge",
                check_duplicate=True,
                labels={LABEL_NETWORK: name, LABEL_STACK_NAMESPACE: stack_namespace},
            )
        except docker.errors.APIError as exc:
            existing = self._named(name)
            if exc.status_code == 409 and existing:
                return existing[0]["Id"]
            raise TaskRuntimeError(f"cannot create network {name}: {exc.explanation or exc}") from exc
        winner = self._named(name)[0]["Id"]
        if winner != created["Id"]:
            log.info("network %s was created concurrently; dropping our duplicate", name)
            self._remove_if_unused(created["Id"], name)
        return winner

    async def find(self, name: str) -> str:
        """The ID of the network called `name`, which someone else (the overlay data plane)
        made; TaskRuntimeError when the engine has none. Remembered, as `ensure`'s are
        (listing the engine's networks for each task of a deploy cost the engine more
        than starting it): a caller that finds it gone calls `forget`."""
        if name in self._ids:
            return self._ids[name]
        async with self._name_locks.setdefault(name, asyncio.Lock()):  # one look for the tasks that ask together
            if name in self._ids:
                return self._ids[name]
            found = await self._engine.call(self._named, name)
            if not found:
                raise TaskRuntimeError(f"network {name} is not on this node's engine: the overlay data plane has not "
                                       "made it (is the node's network plane applied?)")
            self._ids[name] = found[0]["Id"]
            return self._ids[name]

    async def all_exist(self, network_ids: list[str]) -> bool:
        return all([await self._exists(network_id) for network_id in network_ids])

    async def _exists(self, network_id: str) -> bool:
        try:
            await self._engine.call(self._engine.api.inspect_network, network_id)
            return True
        except docker.errors.NotFound:
            return False

    async def remove_unused(self, stack_namespace: str) -> list[str]:
        """Several nodes may share this engine, so a network goes only once no container
        at all refers to it."""
        if not stack_namespace:
            return []
        found = await self._engine.call(
            self._engine.api.networks,
            filters={"label": [LABEL_NETWORK, f"{LABEL_STACK_NAMESPACE}={stack_namespace}"]},
        )
        removed = []
        for network in found:
            name = network["Name"]
            async with self._name_locks.setdefault(name, asyncio.Lock()):
                self.forget(name)
                async with self.lock.exclusive():
                    gone = await self._engine.call(self._remove_if_unused, network["Id"], name)
                if gone:
                    removed.append(name)
        return removed

    def _remove_if_unused(self, network_id: str, name: str) -> bool:
        api = self._engine.api
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

    def _named(self, name: str) -> list[dict]:
        """Networks with exactly this name (the engine's filter matches substrings), oldest first."""
        found = self._engine.api.networks(names=[name])
        return sorted((n for n in found if n["Name"] == name), key=lambda n: (n["Created"], n["Id"]))
