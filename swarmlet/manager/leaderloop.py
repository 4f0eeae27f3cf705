"""The shape every leader-only component shares: runs while this manager leads, watching
the store from the moment it took over, and stops (dropping what it was doing) when
leadership is lost. A new leader's loop starts with a full pass, so nothing missed
during a failover is lost; and its writes are fenced (store.py, "Fenced leader writes"),
so nothing a deposed leader's loop still had in flight lands after it."""
from __future__ import annotations

import asyncio
import logging

from swarmlet.store import ClusterStore
from swarmlet.store.store import hold_fence

log = logging.getLogger("swarmlet.manager")


class LeaderLoop:
    name = "leader loop"

    def __init__(self, store: ClusterStore):
        self.store = store
        self._task: asyncio.Task | None = None

    async def leadership_changed(self, leading: bool) -> None:
        if leading and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._guarded())
        elif not leading:
            await self.stop()

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended. Leadership regained meanwhile
        starts a new one: the cancelled task is forgotten before it is awaited."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _guarded(self) -> None:
        queue = self.store.subscribe()
        try:
            while self.store.is_leader:
                try:
                    # Nothing this loop writes may land after a later leader's claim.
                    hold_fence(await self.store.leadership_fence())
                    await self.run(queue)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:  # keep leading: log, then start over with a full pass
                    log.exception("%s failed; restarting it", self.name)
                    await asyncio.sleep(0.2)
        finally:
            self.store.unsubscribe(queue)

    async def run(self, queue: asyncio.Queue) -> None:
        raise NotImplementedError


def drain(queue: asyncio.Queue) -> list:
    """Everything already waiting in ``queue``, without blocking."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
