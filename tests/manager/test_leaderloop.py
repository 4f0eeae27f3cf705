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


class TwoPartWriter(LeaderLoop):
    """Writes its decision in two parts, waiting in between as a loop does between batches."""
    name = "two-part writer"

    def __init__(self, store):
        super().__init__(store)
        self.first_written = asyncio.Event()
        self.go_on = asyncio.Event()
        self.outcome: Exception | None = None

    async def run(self, queue):
        await self.store.commit([{"op": "create", "kind": "task", "id": "slot-1", "spec": {}}])
        self.first_written.set()
        await self.go_on.wait()
        try:
            await self.store.commit([{"op": "create", "kind": "task", "id": "slot-2", "spec": {}}])
        except Exception as err:
            self.outcome = err
        await asyncio.Event().wait()


async def test_a_deposed_leaders_write_in_flight_is_refused_once_a_new_leader_has_claimed(store):
    """The hazard behind duplicate tasks after a leader kill mid-deploy: the old leader's
    loop still had a part to write; a later leader claimed and decided on its own. The
    old part must not land after that claim."""
    from swarmlet.store import Conflict

    old = TwoPartWriter(store)
    await old.leadership_changed(True)
    await asyncio.wait_for(old.first_written.wait(), 5)
    fence = await store.leadership_fence()
    from swarmlet.api.views import Leadership
    claim = store.get(Leadership, "leadership")
    assert fence > 0 and claim.version == fence and claim.address == "memory"

    newer = await store.claim()  # another manager's leadership begins
    assert newer > fence
    old.go_on.set()
    await asyncio.wait_for(_until(lambda: old.outcome is not None), 5)
    assert isinstance(old.outcome, Conflict)
    assert [t["id"] for t in store.raw_list("task")] == ["slot-1"]  # the part written before the claim stays
    await old.stop()


async def test_writes_outside_leader_loops_are_not_fenced(store):
    await store.claim()
    await store.commit([{"op": "create", "kind": "task", "id": "api-write", "spec": {}}])
    assert store.commits[-1] == [{"op": "create", "kind": "task", "id": "api-write", "spec": {}}]


async def test_every_leader_loop_of_one_leadership_shares_one_claim(store):
    first, second = TwoPartWriter(store), Recorder(store)
    await first.leadership_changed(True)
    await second.leadership_changed(True)
    await asyncio.wait_for(first.first_written.wait(), 5)
    await asyncio.wait_for(second.running.wait(), 5)
    claims = [ops for ops in store.commits if ops[0]["kind"] == "leadership"]
    assert len(claims) == 1
    first.go_on.set()
    await asyncio.wait_for(_until(lambda: store.raw("task", "slot-2") is not None), 5)
    assert store.commits[-1][-1] == {"op": "expect", "kind": "leadership", "id": "leadership",
                                     "version": store.raw("leadership", "leadership")["version"]}
    await first.stop(), await second.stop()


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.01)
