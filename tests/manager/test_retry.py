"""Optimistic concurrency: a write that raced another is built again from a fresh read."""
from __future__ import annotations

import pytest

from swarmlet.manager.retry import commit_each_on_conflict, retry_on_conflict
from swarmlet.store import Conflict, NoQuorum


def bump(store, kind, object_id, version=None, **status):
    obj = store.raw(kind, object_id)
    return {"op": "update", "kind": kind, "id": object_id, "version": obj["version"] if version is None else version,
            "status": dict(obj["status"], **status)}


async def test_a_conflicting_write_is_built_again_from_a_fresh_read(store):
    await store.add_node("n1")
    stale = store.raw("node", "n1")["version"]
    await store.commit([bump(store, "node", "n1", message="someone else wrote meanwhile")])
    versions = iter([stale, None])  # the first build read before the other write
    result = await retry_on_conflict(store, lambda: [bump(store, "node", "n1", next(versions), state="down")])
    assert result["ok"] and store.raw("node", "n1")["status"]["state"] == "down"
    assert store.raw("node", "n1")["status"]["message"] == "someone else wrote meanwhile"


async def test_nothing_to_write_writes_nothing(store):
    before = len(store.commits)
    assert await retry_on_conflict(store, lambda: []) is None
    assert len(store.commits) == before


async def test_a_write_that_keeps_losing_gives_up(store):
    await store.add_node("n1")
    stale = store.raw("node", "n1")["version"]
    await store.commit([bump(store, "node", "n1", message="moved on")])
    before = len(store.commits)
    with pytest.raises(Conflict):
        await retry_on_conflict(store, lambda: [bump(store, "node", "n1", stale, state="down")], attempts=3)
    assert len(store.commits) == before + 3


async def test_a_batch_that_conflicts_is_written_key_by_key(store):
    for node_id in ("a", "b", "c"):
        await store.add_node(node_id)
    stale_b = store.raw("node", "b")["version"]
    await store.commit([bump(store, "node", "b", message="raced")])
    built = []

    def ops(keys):
        built.append(list(keys))
        # "b" is first built from the read before the race, then from a fresh one
        return [bump(store, "node", k, stale_b if k == "b" and len(built) == 1 else None, state="ready") for k in keys]

    assert await commit_each_on_conflict(store, ["a", "b", "c"], ops) == []
    assert built == [["a", "b", "c"], ["a"], ["b"], ["c"]]
    assert all(store.raw("node", k)["status"]["state"] == "ready" for k in "abc")


async def test_many_keys_are_written_in_batches(store):
    for node_id in "abcde":
        await store.add_node(node_id)
    before = len(store.commits)
    ops = lambda keys: [bump(store, "node", k, state="ready") for k in keys]  # noqa: E731
    assert await commit_each_on_conflict(store, list("abcde"), ops, batch=2) == []
    assert [len(t) for t in store.commits[before:]] == [2, 2, 1]


async def test_a_batch_refused_for_another_reason_is_raised(store):
    await store.add_node("a")
    store.fail_next = NoQuorum("no quorum")
    with pytest.raises(NoQuorum):
        await commit_each_on_conflict(store, ["a"], lambda keys: [bump(store, "node", k, state="ready") for k in keys])


async def test_the_keys_that_could_not_be_written_are_returned(store):
    await store.add_node("a")
    await store.add_node("b")
    stale_b = store.raw("node", "b")["version"]
    await store.commit([bump(store, "node", "b", message="raced")])
    ops = lambda keys: [bump(store, "node", k, stale_b if k == "b" else None, state="ready") for k in keys]
    failures = await commit_each_on_conflict(store, ["a", "b"], ops)  # "b" is built stale every time
    assert [(key, type(err)) for key, err in failures] == [("b", Conflict)]
    assert store.raw("node", "a")["status"]["state"] == "ready"


async def test_a_large_batch_is_written_in_bounded_transactions(store):
    from swarmlet.store import MAX_TRANSACTION_OPS

    keys = [f"k{i}" for i in range(2 * MAX_TRANSACTION_OPS + 1)]
    before = len(store.commits)
    # A loop's batch larger than the store's bound is still cut to the store's bound.
    failures = await commit_each_on_conflict(
        store, keys, lambda ks: [{"op": "create", "kind": "task", "id": k, "spec": {}} for k in ks], batch=len(keys))
    assert failures == []
    sizes = [len(ops) for ops in store.commits[before:]]
    assert sizes == [MAX_TRANSACTION_OPS, MAX_TRANSACTION_OPS, 1]
    assert len(store.raw_list("task")) == len(keys)


async def test_guarded_writes_carry_the_guard_in_every_transaction_with_chained_versions(store):
    from swarmlet.manager.retry import commit_guarded
    await store.add("network", "net", {"name": "net"}, {"gateways": {}})
    for i in range(5):
        await store.add("task", f"t{i}", {"node_id": None}, {"state": "pending"})
    ops = [bump(store, "task", f"t{i}", state="assigned") for i in range(5)]
    guard = bump(store, "network", "net", gateways={"n1": "10.0.0.254"})
    before = len(store.commits)
    await commit_guarded(store, ops, [guard], batch=2)
    transactions = store.commits[before:]
    assert [len(t) for t in transactions] == [3, 3, 2]  # 2 + 2 + 1 tasks, each with the network
    assert all(t[-1]["id"] == "net" for t in transactions)
    assert all(store.raw("task", f"t{i}")["status"]["state"] == "assigned" for i in range(5))
    assert store.raw("network", "net")["status"]["gateways"] == {"n1": "10.0.0.254"}


async def test_a_guard_written_by_another_between_transactions_stops_the_rest(store):
    from swarmlet.manager.retry import commit_guarded
    await store.add("network", "net", {"name": "net"}, {"vips": {}})
    for i in range(4):
        await store.add("task", f"t{i}", {"node_id": None}, {"state": "pending"})
    ops = [bump(store, "task", f"t{i}", state="assigned") for i in range(4)]
    guard = bump(store, "network", "net")
    original_commit = store.commit

    async def commit_then_race(transaction, request_id=None):
        result = await original_commit(transaction, request_id)
        if transaction is not None and any(op["id"] == "t1" for op in transaction):  # a deploy gets in between
            await original_commit([bump(store, "network", "net", vips={"s": "10.0.0.3"})])
        return result

    store.commit = commit_then_race
    with pytest.raises(Conflict):
        await commit_guarded(store, ops, [guard], batch=2)
    states = [store.raw("task", f"t{i}")["status"]["state"] for i in range(4)]
    assert states == ["assigned", "assigned", "pending", "pending"]  # decided again by the caller, from a fresh read
