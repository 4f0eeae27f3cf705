"""Python's cyclic garbage collector in a node process: timed, and kept off the
long-lived objects.

A collection runs with the GIL held: while it walks the heap, no other thread of
the process runs, the Raft thread included. A manager deploying 10,000 tasks on
1,000 hollow nodes had full (generation 2) collections of 0.3-1.4 s every few
seconds (each 25 % of heap growth starts one), every one a stall of its Raft
thread past the 0.3-0.6 s election timeout: 8-10 leader changes per deploy
(docs/performance.md, "Garbage collection and elections").

So the survivors of every full collection are frozen (``gc.freeze``: moved to the
permanent generation, which no collection walks). The next full collection only
walks what was allocated since, and costs what the change costs, not what the
cluster holds. Frozen objects are still freed by reference counting when they are
dropped (the store's objects, messages and sessions hold no cycles); only cyclic
garbage made of objects that lived through a freeze is never reclaimed. The number
of frozen objects is reported (``swarmlet_gc_frozen_objects``), and ``SIGUSR1`` makes
a node collect everything once, frozen objects included, and log what that freed
(``audit``): how an operator, or a benchmark, sees whether such a leak exists. (That
collection walks the whole heap: a leader stalls for it.)
"""
from __future__ import annotations

import gc
import logging
import signal
import time
from dataclasses import dataclass, field

log = logging.getLogger("swarmlet.gc")

# A collection longer than this is logged (at most once per WARN_INTERVAL): a third
# of the shortest Raft election timeout.
LONG_COLLECTION_SECONDS = 0.1
WARN_INTERVAL = 10.0
OLDEST_GENERATION = 2


@dataclass
class CollectionTimes:
    """Per generation: how many collections, their total and longest duration."""

    count: list[int] = field(default_factory=lambda: [0, 0, 0])
    total: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    longest: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


class GcWatch:
    """A ``gc.callbacks`` entry: times each collection and freezes the survivors of
    each full one (``freeze`` is a parameter so that tests can watch it)."""

    def __init__(self, clock=time.perf_counter, freeze=gc.freeze, freeze_survivors: bool = True):
        self.times = CollectionTimes()
        self._clock = clock
        self._freeze = freeze
        self._freeze_survivors = freeze_survivors
        self._started: float | None = None
        self._warned_at = float("-inf")

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        if self._started is None:
            return
        took, self._started = self._clock() - self._started, None
        generation = info["generation"]
        self.times.count[generation] += 1
        self.times.total[generation] += took
        self.times.longest[generation] = max(self.times.longest[generation], took)
        if generation == OLDEST_GENERATION and self._freeze_survivors:
            # Safe here: the collection is over, its lists are consistent; freezing only
            # moves them onto the permanent generation's list.
            self._freeze()
        now = time.monotonic()
        if took >= LONG_COLLECTION_SECONDS and now - self._warned_at >= WARN_INTERVAL:
            self._warned_at = now
            log.warning("garbage collection of generation %d held the interpreter for %.2fs (%d objects freed)",
                        generation, took, info.get("collected", 0))


def audit() -> dict:
    """What freezing keeps that a collection would free: collect as usual (the objects
    not frozen), then once more with everything unfrozen, then freeze the survivors
    again. ``frozen_garbage`` is what only the second collection freed."""
    frozen = gc.get_freeze_count()
    began = time.perf_counter()
    young_garbage = gc.collect()
    gc.unfreeze()
    frozen_garbage = gc.collect()
    gc.freeze()
    figures = {"frozen_before": frozen, "young_garbage": young_garbage, "frozen_garbage": frozen_garbage,
               "frozen_after": gc.get_freeze_count(), "seconds": round(time.perf_counter() - began, 3)}
    log.warning("garbage collector audit (SIGUSR1): %(frozen_before)d objects were frozen, of which "
                "%(frozen_garbage)d were garbage; %(young_garbage)d other garbage objects; %(frozen_after)d "
                "frozen now; took %(seconds).2fs", figures)
    return figures


_installed: GcWatch | None = None


def install() -> GcWatch:
    """Time this process's collections and freeze the survivors of full ones (once
    per process)."""
    global _installed
    if _installed is None:
        _installed = GcWatch()
        gc.callbacks.append(_installed)
        try:
            signal.signal(signal.SIGUSR1, lambda signum, frame: audit())
        except ValueError:  # not the main thread (an embedded use): no audit on signal
            pass
    return _installed


def installed() -> GcWatch | None:
    return _installed
