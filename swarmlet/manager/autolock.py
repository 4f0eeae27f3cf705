"""Autolock on the managers: the cluster's setting and its unlock key, and each
manager keeping its own data dir locked (or not) as the cluster says.

The cluster object's spec holds ``autolock`` (bool) and ``unlock_key``: the current
unlock key sealed under the cluster key (``swarmlet.ca.unlock.store_sealer``). Turning
autolock on, off, or rotating the key is one write of that object; every manager, on
seeing the change, re-seals its own key-encryption key under the new unlock key (or
lays it down in plain form when autolock goes off), so no manager has to be reached
by the one that made the change. The decision is the pure ``lock_decision``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from swarmlet.api import errors
from swarmlet.api.objects import CLUSTER_ID
from swarmlet.api.views import Cluster
from swarmlet.ca.unlock import autolock_spec, new_unlock_key, store_sealer
from swarmlet.manager.retry import retry_on_conflict
from swarmlet.manager.settings import cluster_of
from swarmlet.node.config import DataDir
from swarmlet.store import ClusterStore

log = logging.getLogger("swarmlet.manager")

LOCK = "lock"
UNLOCK = "unlock"


def wanted_unlock_key(cluster: Cluster | None, cluster_key: str) -> str | None:
    """The unlock key the cluster wants its managers locked under; None: unlocked."""
    if cluster is None or not cluster.spec.get("autolock"):
        return None
    return store_sealer(cluster_key).open(cluster.spec["unlock_key"]).decode()


def lock_decision(wanted: str | None, locked: bool, sealed_under: str | None) -> str | None:
    """What a manager does to its data dir: LOCK (seal the KEK under ``wanted``, again
    after a rotation), UNLOCK (lay it down in plain form) or nothing."""
    if wanted is None:
        return UNLOCK if locked else None
    return LOCK if not locked or sealed_under != wanted else None


class Autolock:
    def __init__(self, store: ClusterStore, data_dir: DataDir, read_cluster_key: Callable[[], str]):
        self.store = store
        self.data_dir = data_dir
        self._read_cluster_key = read_cluster_key
        self._task: asyncio.Task | None = None

    # -- the cluster's setting (API) ----------------------------------------------------------------
    def enabled(self) -> bool:
        return bool(cluster_of(self.store).spec.get("autolock"))

    def unlock_key(self) -> dict:
        key = wanted_unlock_key(cluster_of(self.store), self._read_cluster_key())
        if key is None:
            raise errors.Invalid("autolock is off: there is no unlock key (turn it on with "
                                 "`swarmlet cluster update --autolock=true`)")
        return {"unlock_key": key}

    async def set(self, enabled: bool) -> dict:
        """Turn autolock on (a new unlock key, unless it is on already) or off."""
        if enabled and self.enabled():
            return {"autolock": True, **self.unlock_key()}
        return await self._write(new_unlock_key() if enabled else None)

    async def rotate(self) -> dict:
        if not self.enabled():
            raise errors.Invalid("autolock is off: there is no unlock key to rotate")
        return await self._write(new_unlock_key())

    async def _write(self, unlock_key: str | None) -> dict:
        fields = autolock_spec(unlock_key, self._read_cluster_key())

        def ops() -> list[dict]:
            cluster = cluster_of(self.store)
            return [{"op": "update", "kind": Cluster.kind, "id": CLUSTER_ID, "version": cluster.version,
                     "spec": dict(cluster.spec, **fields)}]

        await retry_on_conflict(self.store, ops)
        log.info("autolock %s", "on, with a new unlock key" if unlock_key else "off")
        return {"autolock": unlock_key is not None, "unlock_key": unlock_key}

    # -- this manager's data dir --------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _follow(self) -> None:
        events = self.store.subscribe()
        try:
            self.reconcile()
            while True:
                event = await events.get()
                if event.reset or any(change.kind == Cluster.kind for change in event.changes):
                    self.reconcile()
        finally:
            self.store.unsubscribe(events)

    def reconcile(self) -> None:
        try:
            self._reconcile()
        except Exception:  # logged; the next change of the cluster object tries again
            log.exception("could not bring this manager's data dir in line with the cluster's autolock setting")

    def _reconcile(self) -> None:
        cluster = self.store.get(Cluster, CLUSTER_ID)
        if cluster is None:
            return
        wanted = wanted_unlock_key(cluster, self._read_cluster_key())
        action = lock_decision(wanted, self.data_dir.is_locked(), self.data_dir.unlock_key)
        if action == LOCK:
            self.data_dir.lock(wanted)
            log.info("locked this manager's data dir under the cluster's unlock key")
        elif action == UNLOCK:
            self.data_dir.unlock_permanently()
            log.info("autolock is off: this manager's key-encryption key lies in its data dir again")
