"""The one lifecycle of leader-only work (orchestrator, scheduler, dispatcher)."""
from __future__ import annotations

import asyncio
import threading
import time

from swarmlet.manager.leaderloop import LeaderLoop, LoopTurns, off_loop


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


# -- leadership flaps (the loops must survive them) ----------------------------------------------

class FencedWriter(LeaderLoop):
    """Writes one task per pass (a fresh ID each time) and reports what happened to it."""
    name = "fenced writer"

    def __init__(self, store, raise_refusals: bool = False, prefix: str = ""):
        super().__init__(store)
        self.prefix = prefix
        self.runs = 0
        self.raise_refusals = raise_refusals
        self.refused: list[Exception] = []
        self.written = asyncio.Event()

    async def run(self, queue):
        self.runs += 1
        await self._write(f"{self.prefix}pass-{self.runs}")
        while self.store.is_leader:  # as the real loops: end when leadership lapses
            event = await queue.get()
            for change in event.changes:
                if change.kind == "config":  # a change to act on: one more write
                    await self._write(f"{change.id}-{self.runs}")

    async def _write(self, task_id: str) -> None:
        from swarmlet.store import Conflict
        try:
            await self.store.commit([{"op": "create", "kind": "task", "id": task_id, "spec": {}}])
            self.written.set()
        except Conflict as err:
            self.refused.append(err)
            if self.raise_refusals:
                raise


def _claims(store) -> list[list[dict]]:
    return [ops for ops in store.commits if ops[0]["kind"] == "leadership"]


def _fences_of_writes(store) -> list[int | None]:
    return [next((op["version"] for op in ops if op["op"] == "expect"), None)
            for ops in store.commits if ops[0]["kind"] == "task"]


async def test_a_loop_whose_claim_is_superseded_while_it_still_leads_reclaims_and_runs_again(store, caplog):
    """The colleague's report: the claim moved from 6 to 8 while the loop held 6, and every
    write it made was refused from then on. The loops must notice, re-claim (once for all
    of them), and run again."""
    loops = [FencedWriter(store, prefix="a-"), FencedWriter(store, prefix="b-")]
    for loop in loops:
        await loop.leadership_changed(True)
        await asyncio.wait_for(loop.written.wait(), 5)
        loop.written.clear()
    first = store.raw("leadership", "leadership")["version"]
    await store.claim()  # a claim over this leadership's (no view change: still leading)
    for loop in loops:
        await asyncio.wait_for(loop.written.wait(), 5)
    latest = store.raw("leadership", "leadership")["version"]
    assert latest > first + 1 and len(_claims(store)) == 3  # the first, the other one, one new claim
    assert _fences_of_writes(store)[-2:] == [latest, latest]
    assert all(loop.refused == [] and loop.runs == 2 for loop in loops)
    assert len([r for r in caplog.records if "superseded" in r.getMessage()]) == 2  # once per loop
    for loop in loops:
        await loop.stop()
    assert store.subscribers == 0


async def test_a_refused_fenced_write_is_logged_once_and_the_loop_refences(store, caplog):
    """A newer claim the loop had not seen yet (its event not delivered): the write is
    refused, the pass raises; the loop logs it once, re-claims, and its next pass writes."""
    loop = FencedWriter(store, raise_refusals=True)
    await loop.leadership_changed(True)
    await asyncio.wait_for(loop.written.wait(), 5)
    loop.written.clear()
    await store.claim(publish=False)
    await store.commit([{"op": "create", "kind": "config", "id": "wake", "spec": {}}])  # the pass writes
    await asyncio.wait_for(loop.written.wait(), 5)
    assert len(loop.refused) == 1 and loop.runs == 2
    assert [t["id"] for t in store.raw_list("task")] == ["pass-1", "pass-2"]
    assert _fences_of_writes(store)[-1] == store.raw("leadership", "leadership")["version"]
    assert len([r for r in caplog.records if "superseded" in r.getMessage()]) == 1
    assert not [r for r in caplog.records if r.exc_info]  # a fence refusal is not a crash
    await loop.stop()


async def test_leadership_that_lapses_with_time_and_returns_runs_the_loop_again(store):
    """``is_leader`` depends on time: it can lapse and return with no view change, so no
    leadership_changed call. The loop's pass ends; it must run again once leading."""
    loop = FencedWriter(store)
    await loop.leadership_changed(True)
    await asyncio.wait_for(loop.written.wait(), 5)
    store.is_leader = False
    await store.commit([{"op": "create", "kind": "config", "id": "wake", "spec": {}}])  # the pass sees it, ends
    await asyncio.wait_for(_until(lambda: loop.phase == "waiting"), 5)
    assert loop.runs == 1
    loop.written.clear()
    store.is_leader = True
    await asyncio.wait_for(loop.written.wait(), 5)
    assert loop.runs == 2 and len(_claims(store)) == 1  # the same leadership: the same claim
    await loop.stop()
    assert loop.phase == "stopped" and store.subscribers == 0


async def test_a_deposed_loop_stops_and_does_not_claim_over_the_new_leader(store):
    loop = FencedWriter(store)
    await loop.leadership_changed(True)
    await asyncio.wait_for(loop.written.wait(), 5)
    store.is_leader = False  # deposed (the view change has not arrived yet)
    newer = await store.claim()  # the new leader's claim: the old loop's pass is stopped
    await asyncio.wait_for(_until(lambda: loop.phase == "waiting"), 5)  # for leadership, not claiming
    assert store.raw("leadership", "leadership")["version"] == newer and len(_claims(store)) == 2
    assert [t["id"] for t in store.raw_list("task")] == ["pass-1"] and loop.runs == 1
    await loop.stop()


async def test_a_claim_made_for_a_leadership_that_has_ended_does_not_claim_over_a_later_one(store):
    """The old leadership's claim still in flight when a later claim lands: it used to
    "claim over it", leaving the later leadership's loops with a stale fence."""
    from swarmlet.store import Conflict
    from swarmlet.store.store import LEADERSHIP, claim_leadership

    later: list[int] = []

    async def commit_after_a_later_claim(ops):
        if not later:
            later.append(await store.claim())  # lands between this claim's read and its write
        return await store.commit(ops)

    ours = [True]
    claiming = asyncio.ensure_future(claim_leadership(
        commit_after_a_later_claim, lambda: store.raw(LEADERSHIP, LEADERSHIP), "old", lambda: ours[0]))
    await asyncio.sleep(0)
    ours[0] = False  # that leadership ended while its claim was on its way
    try:
        await claiming
        raised = None
    except Conflict as err:
        raised = err
    assert raised is not None and "ended" in str(raised)
    assert store.raw(LEADERSHIP, LEADERSHIP)["version"] == later[0]


async def test_the_parts_of_a_pass_stop_together_when_one_ends():
    """The dispatcher's parts: one that saw leadership lapse used to end alone, and the
    others kept the pass alive without it (no heartbeat checks for the rest of it)."""
    from swarmlet.manager.leaderloop import run_together

    cancelled = []

    async def forever(name):
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.append(name)

    async def ends():
        await asyncio.sleep(0)

    async def fails():
        raise RuntimeError("boom")

    await asyncio.wait_for(run_together(forever("a"), ends(), forever("b")), 5)
    assert sorted(cancelled) == ["a", "b"]
    try:
        await asyncio.wait_for(run_together(forever("c"), fails()), 5)
        raised = None
    except RuntimeError as err:
        raised = err
    assert str(raised) == "boom" and cancelled[-1] == "c"


async def test_a_claim_in_flight_when_leadership_is_lost_and_regained_gives_way_to_the_new_claim(store):
    """The same manager claiming twice: its first leadership's claim is still on its way
    when leadership is lost and regained (ClusterStore calls new_leadership on each
    change). That claim must not land over the new leadership's."""
    from swarmlet.store import Conflict
    from swarmlet.store.store import LEADERSHIP, LeadershipClaims, claim_leadership

    sent, on_the_wire = asyncio.Event(), asyncio.Event()

    async def commit(ops):
        if not sent.is_set():
            sent.set()
            await on_the_wire.wait()  # delayed in Raft while leadership flaps
        return await store.commit(ops)

    claims = LeadershipClaims(
        lambda still_ours: claim_leadership(commit, lambda: store.raw(LEADERSHIP, LEADERSHIP), "me", still_ours),
        lambda: True)
    old = asyncio.ensure_future(claims.fence())
    await asyncio.wait_for(sent.wait(), 5)
    claims.new_leadership(), claims.new_leadership()  # lost, regained
    new = await claims.fence()
    on_the_wire.set()
    results = await asyncio.gather(old, return_exceptions=True)
    assert isinstance(results[0], Conflict)
    assert store.raw(LEADERSHIP, LEADERSHIP)["version"] == new == await claims.fence()


async def test_off_loop_keeps_the_loop_answering_while_it_computes():
    """A pure pass over many tasks (0.2-0.5 s) held every API request and node message
    for as long when it ran on the loop; on a worker thread the loop gets its turns."""
    release = threading.Event()
    ticks = []

    def compute(n):
        release.wait(2)  # held until the loop has shown that it ran meanwhile (on the loop: never)
        return n * 2, len(ticks)

    async def ticker():
        for _ in range(3):
            ticks.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.001)
        release.set()

    ticking = asyncio.ensure_future(ticker())
    (result, ticks_meanwhile), cpu_seconds = await off_loop(compute, 21)
    await ticking
    assert result == 42 and ticks_meanwhile == 3
    assert 0 <= cpu_seconds < 1  # the thread's own CPU, not the time it waited


async def test_loop_turns_let_others_run_during_a_long_run_of_work():
    others = []
    asyncio.get_running_loop().call_soon(others.append, "ran")
    turns = LoopTurns(turn=0.005)
    seen_during = None
    for item in range(1000):
        busy_until = time.monotonic() + 0.0002
        while time.monotonic() < busy_until:  # a send that fills a buffer: no await that yields
            pass
        await turns.take()
        if others and seen_during is None:
            seen_during = item
    assert seen_during is not None and seen_during < 999  # the callback ran before the work ended

    none_due = LoopTurns(turn=60.0)
    asyncio.get_running_loop().call_soon(others.append, "late")
    for _ in range(100):
        await none_due.take()
    assert others == ["ran"]  # no turn was due: nothing else ran
