"""Large independent changes with several transactions in flight (``commit_batched(...,
in_flight=N)``, ``commit_each_on_conflict``): one at a time, each transaction of a
10,000-task deploy waited a Raft round trip plus the leader's loop getting back to it,
with the Raft thread idle meanwhile (docs/performance.md, ninth session)."""
from __future__ import annotations

import asyncio

import pytest

from swarmlet.manager.retry import commit_each_on_conflict
from swarmlet.store import Conflict, NoQuorum
from swarmlet.store.store import commit_in_batches


class Raft:
    """Commits that take a turn of the loop each, answered in the order proposed (as
    Raft applies a leader's entries), recording how many were in flight at once."""

    def __init__(self, fail: dict[str, Exception] | None = None):
        self.flying = self.most = 0
        self.proposed: list[str] = []
        self.fail = fail or {}

    async def commit(self, ops: list[dict], request_id: str) -> dict:
        self.proposed.append(request_id)
        self.flying += 1
        self.most = max(self.most, self.flying)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            if request_id in self.fail:
                raise self.fail[request_id]
            return {"ok": True, "index": len(self.proposed)}
        finally:
            self.flying -= 1


def creates(count: int) -> list[dict]:
    return [{"op": "create", "kind": "task", "id": f"t{i}", "spec": {}} for i in range(count)]


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_every_transaction_is_proposed_in_order_with_at_most_the_window_in_flight(in_flight):
    raft = Raft()
    result = await commit_in_batches(raft.commit, creates(10), "r", None, 0, in_flight=in_flight, batch_ops=2)
    assert raft.proposed == [f"r.{i}" for i in range(5)] and raft.most == in_flight
    assert result == {"ok": True, "index": 5, "operations": 10, "transactions": 5, "complete": True}


async def test_after_a_failure_nothing_more_is_proposed_and_what_was_in_flight_is_counted():
    raft = Raft(fail={"r.1": NoQuorum("no quorum")})
    with pytest.raises(NoQuorum) as caught:
        await commit_in_batches(raft.commit, creates(10), "r", None, 0, in_flight=3, batch_ops=2)
    # r.3 was proposed before r.1's answer came back (r.0's freed a place); r.0, r.2 and r.3
    # committed, the last two in flight when r.1 failed; r.4 was never proposed
    assert raft.proposed == ["r.0", "r.1", "r.2", "r.3"]
    assert caught.value.committed_operations == 6


async def test_proceed_is_asked_before_each_transaction_after_the_first():
    raft = Raft()
    asked = []
    result = await commit_in_batches(raft.commit, creates(10), "r", lambda: asked.append(1) or len(asked) < 2, 0,
                                     in_flight=3, batch_ops=2)
    assert raft.proposed == ["r.0", "r.1"] and result["operations"] == 4 and not result["complete"]


async def test_a_cancelled_caller_leaves_nothing_waiting():
    raft = Raft()
    task = asyncio.ensure_future(commit_in_batches(raft.commit, creates(10), "r", None, 0, in_flight=3, batch_ops=2))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5):
        await asyncio.sleep(0)
    assert raft.flying == 0 and len(raft.proposed) == 3


async def test_batches_of_keys_commit_several_at_once_and_a_conflict_is_retried_key_by_key():
    committed, flying, most = [], [0], [0]
    raced = {"k3"}

    class Store:
        async def commit_batched(self, ops):
            flying[0] += 1
            most[0] = max(most[0], flying[0])
            try:
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if raced & {op["id"] for op in ops} and len(ops) > 1:
                    raise Conflict("raced")
                committed.extend(op["id"] for op in ops)
                return {"ok": True}
            finally:
                flying[0] -= 1

        async def commit(self, ops):
            return await self.commit_batched(ops)

    keys = [f"k{i}" for i in range(10)]
    failures = await commit_each_on_conflict(Store(), keys, lambda ks: [{"id": k} for k in ks], batch=2, in_flight=3)
    assert failures == [] and sorted(committed) == sorted(keys) and most[0] == 3
