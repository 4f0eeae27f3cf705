"""The one lifecycle of leader-only work (orchestrator, scheduler, dispatcher)."""
from __future__ import annotations

import asyncio

from swarmlet.manager.leaderloop import LeaderLoop


class Recorder(LeaderLoop):
    name = "recorder"

    def __init__(self, store, failures: int = 0):
        super().__init__(store)
        self.runs = 0
        self.failures = failures
        self.running = asyncio.Event()
        self.ended = 0

    async def run(self, queue):
        self.runs += 1
        if self.failures:
            self.failures -= 1
            raise RuntimeError("boom")
        self.running.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.ended += 1


async def test_stop_returns_only_once_the_loop_has_ended(store):
    loop = Recorder(store)
    await loop.leadership_changed(True)
    await asyncio.wait_for(loop.running.wait(), 5)
    await loop.leadership_changed(True)  # already running: not a second one
    await loop.leadership_changed(False)
    assert (loop.runs, loop.ended, store.subscribers) == (1, 1, 0)


async def test_leadership_regained_while_stopping_starts_a_new_loop(store):
    loop = Recorder(store)
    await loop.leadership_changed(True)
    await asyncio.wait_for(loop.running.wait(), 5)
    loop.running.clear()
    stopping = asyncio.ensure_future(loop.leadership_changed(False))
    await asyncio.sleep(0)  # let the stop begin: it cancels the loop and waits for it
    await loop.leadership_changed(True)
    await stopping
    await asyncio.wait_for(loop.running.wait(), 5)
    assert loop.runs == 2
    await loop.stop()


async def test_a_failing_pass_is_started_again(store):
    loop = Recorder(store, failures=1)
    await loop.leadership_changed(True)
    await asyncio.wait_for(loop.running.wait(), 5)
    assert loop.runs == 2
    await loop.stop()
