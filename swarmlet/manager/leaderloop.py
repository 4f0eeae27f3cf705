"""The shape every leader-only component shares: runs while this manager leads, watching
the store from the moment it took over, and stops (dropping what it was doing) when
leadership is lost. A new leader's loop starts with a full pass, so nothing missed
during a failover is lost; and its writes are fenced (store.py, "Fenced leader writes"),
so nothing a deposed leader's loop still had in flight lands after it.

Leadership flaps. Between ``leadership_changed(True)`` and ``(False)`` the loop is kept
going by ``_guarded`` whatever happens inside it:

- ``store.is_leader`` depends on time (a Raft view too old no longer counts), so it can
  lapse and return with no view change and no ``leadership_changed`` call. A pass ends
  when it sees it lapse; the loop waits until this manager leads again and runs anew.
- A later claim can supersede the one the loop holds while this manager still leads
  (another manager led and claimed in between, unseen). Every write the loop makes would
  be refused from then on, so the loop watches the claim: once it has moved past its
  fence, the pass is stopped, the store claims again (once, for all loops), and the loop
  runs with the new fence. A write refused that way ends the pass the same way (logged
  once, as a warning). A deposed manager's loop waits instead (it no longer leads), so
  it never claims over the new leader.
- Any other failure is logged with its traceback and the pass started again.
Passes are started ``RESTART_DELAY`` apart (a lapse storm on a loaded machine must not
turn into back-to-back full passes): nothing loops hot.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from swarmlet.api.views import Leadership
from swarmlet.store import ClusterStore
from swarmlet.store.store import LEADERSHIP, hold_fence

log = logging.getLogger("swarmlet.manager")

RESTART_DELAY = 0.2  # seconds between two passes of one loop (after a failure, a superseded claim, a lapse)
# The longest a leader loop runs on the event loop before it lets the rest of the manager
# (the API, sessions, heartbeats, other loops) have a turn.
LOOP_TURN_S = 0.01
LEADING_RECHECK = 1.0  # the longest one wait for leadership to return lasts before it is asked again


class Superseded(Exception):
    """The loop's fence is stale: a later leadership claim is applied."""

    def __init__(self, fence: int, claim: int | None):
        super().__init__(f"leadership claim {fence} superseded by claim {claim}")
        self.fence, self.claim = fence, claim


class LeaderLoop:
    name = "leader loop"

    def __init__(self, store: ClusterStore):
        self.store = store
        self._task: asyncio.Task | None = None
        # What the loop is doing: "stopped", "waiting" (to lead), "claiming", "running", "restarting".
        self.phase = "stopped"

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
        queue, claims = self.store.subscribe(), self.store.subscribe()  # the pass's events; the claim's
        stale: int | None = None
        try:
            while True:
                self.phase = "waiting"
                while not self.store.is_leader:
                    await self.store.wait_for(lambda: self.store.is_leader, LEADING_RECHECK, raise_on_timeout=False)
                try:
                    self.phase = "claiming"
                    fence = await self.store.leadership_fence(stale)
                    # Nothing this loop writes may land after a later leader's claim.
                    hold_fence(fence)
                    self.phase = "running"
                    await self._run_fenced(queue, claims, fence)  # returns: it saw leadership lapse
                except asyncio.CancelledError:
                    raise
                except Superseded as superseded:
                    stale = self._stale(superseded)
                except Exception as err:
                    superseded = self._superseding(fence) if self.phase == "running" else None
                    if self.phase == "claiming":  # no quorum, or its leadership ended meanwhile
                        log.warning("%s: no leadership claim (%s); trying again while this manager leads",
                                    self.name, err)
                    elif superseded is None:
                        log.exception("%s failed; restarting it", self.name)
                    else:  # a write refused by a later claim (its event not seen yet)
                        stale = self._stale(Superseded(fence, superseded), err)
                self.phase = "restarting"
                await asyncio.sleep(RESTART_DELAY)
        finally:
            self.phase = "stopped"
            self.store.unsubscribe(queue)
            self.store.unsubscribe(claims)

    def _stale(self, superseded: Superseded, refusal: Exception | None = None) -> int:
        log.warning("%s stopped: its leadership claim (version %s) was superseded by version %s%s; it runs again "
                    "with a new claim while this manager leads", self.name, superseded.fence, superseded.claim,
                    f" (a write was refused: {refusal})" if refusal is not None else "")
        return superseded.fence

    def _superseding(self, fence: int) -> int | None:
        """The claim that superseded ``fence``, if one is applied (-1: the claim is gone)."""
        claim = self.store.get(Leadership, LEADERSHIP)
        if claim is None:
            return -1
        return claim.version if claim.version > fence else None

    async def _run_fenced(self, queue: asyncio.Queue, claims: asyncio.Queue, fence: int) -> None:
        """One pass of ``run``, stopped with :class:`Superseded` once a later claim is applied."""
        drain(claims)  # what came before is judged by reading the claim itself
        if (newer := self._superseding(fence)) is not None:
            raise Superseded(fence, newer)
        passing = asyncio.ensure_future(self.run(queue))  # in this context: it holds the fence
        watching = asyncio.ensure_future(self._watch_claim(claims, fence))
        try:
            await asyncio.wait((passing, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (passing, watching):
                task.cancel()
            await asyncio.gather(passing, watching, return_exceptions=True)
        if passing.done() and not passing.cancelled():
            passing.result()  # its failure, if it failed
            return
        raise Superseded(fence, watching.result())

    async def _watch_claim(self, claims: asyncio.Queue, fence: int) -> int:
        while True:
            events = [await claims.get(), *drain(claims)]
            if any(e.reset or any(c.kind == LEADERSHIP for c in e.changes) for e in events):
                if (newer := self._superseding(fence)) is not None:
                    return newer

    async def run(self, queue: asyncio.Queue) -> None:
        raise NotImplementedError


async def run_together(*coroutines) -> None:
    """Run the parts of one pass until the first ends (returns or fails), then stop the
    others: a part that saw leadership lapse ends the whole pass, which its loop starts
    again in full (a TaskGroup would keep the other parts running without it)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled():
            task.result()


def status_moved_across(change, state_class: Callable[[str | None], str]) -> bool:
    """Whether a store change may matter to a loop that tells task states apart only by
    ``state_class``: anything but a task update that kept its spec and moved its status
    between two states of one class (the orchestrator's and the scheduler's filters on
    the status reports of a deploy, a few per task)."""
    if change.action != "update" or change.previous is None:
        return True
    before, after = change.previous, change.object
    if before.get("spec") != after.get("spec"):
        return True
    return (state_class((before.get("status") or {}).get("state"))
            != state_class((after.get("status") or {}).get("state")))


def timed_call(fn: Callable, *args):
    """(``fn(*args)``, the CPU seconds the calling thread spent in it)."""
    began = time.thread_time()
    result = fn(*args)
    return result, time.thread_time() - began


async def off_loop(fn: Callable, *args):
    """``timed_call(fn, *args)`` on a worker thread: (its result, the CPU seconds it took there).

    For a pure computation over many objects (a reconcile or a scheduling pass over
    10,000 tasks takes 0.2-0.5 s): on the event loop, every API request and node
    message waited that long (docs/performance.md, "Tenth session: a loop that is never held long"). On a
    thread the loop keeps its turns at the GIL's switch interval. The store's reads are
    safe from any thread (under its state lock), and reading on a thread adds no new
    kind of staleness: the Raft thread applies other writes beside the loop's reads
    already, which is why every write a pass makes is versioned or fenced."""
    return await asyncio.to_thread(timed_call, fn, *args)


class LoopTurns:
    """Gives the event loop back every ``turn`` seconds of a long run of work that does
    not await anything that blocks (a send that only fills a buffer does not yield):
    ``await turns.take()`` between items."""

    def __init__(self, turn: float = LOOP_TURN_S):
        self.turn = turn
        self._since = time.monotonic()

    async def take(self) -> None:
        if time.monotonic() - self._since >= self.turn:
            await asyncio.sleep(0)
            self._since = time.monotonic()


def drain(queue: asyncio.Queue) -> list:
    """Everything already waiting in ``queue``, without blocking."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
