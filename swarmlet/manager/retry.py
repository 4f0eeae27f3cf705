"""Optimistic concurrency, in one place. Every write names the versions it read, so a
write that raced another is refused (``Conflict``) instead of overwriting it; the
writer then reads again and decides again. Writers build their operations with a
function of the store as it is now, and these helpers call it again after a conflict."""
from __future__ import annotations

import asyncio
import collections
from typing import Callable, Sequence, TypeVar

import msgpack

from swarmlet.store import MAX_TRANSACTION_BYTES, MAX_TRANSACTION_OPS, ClusterStore, Conflict, StoreError
from swarmlet.store.state import TRANSACTION_ENVELOPE_BYTES, cut_transaction

CONFLICT_ATTEMPTS = 5  # a write that loses this many races in a row gives up (raises Conflict)
# The most objects a leader-only loop (orchestrator, scheduler, dispatcher) writes in one
# transaction: ~30 ms of the leader's event loop on a 2-core machine to build, encode and
# apply, so that thousands of tasks are written in parts with the API answering between.
WRITE_BATCH = 500
# How many of those transactions one large change has in flight at once: one at a time,
# each waited a Raft round trip plus the leader's loop getting back to it (~170 ms a
# 500-task transaction during a 10,000-task deploy on 2 cores), the Raft thread idle
# meanwhile. The ops of such a change are independent (commit_batched).
WRITE_WINDOW = 4

Key = TypeVar("Key")


async def retry_on_conflict(store: ClusterStore, make_ops: Callable[[], list[dict]],
                            attempts: int = CONFLICT_ATTEMPTS) -> dict | None:
    """Commit ``make_ops()``; on a conflict build the operations again from a fresh read
    and commit those. None when ``make_ops`` finds nothing (left) to write."""
    for attempt in range(1, attempts + 1):
        ops = make_ops()
        if not ops:
            return None
        try:
            return await store.commit(ops)
        except Conflict:
            if attempt == attempts:
                raise
    return None


async def commit_each_on_conflict(store: ClusterStore, keys: Sequence[Key],
                                  make_ops: Callable[[Sequence[Key]], list[dict]],
                                  batch: int = WRITE_BATCH, in_flight: int = WRITE_WINDOW
                                  ) -> list[tuple[Key, StoreError]]:
    """The writes for ``keys``, ``batch`` keys at a time, up to ``in_flight`` batches
    committing at once, with the event loop running between (each batch in as few
    transactions as the store's bounds allow: ``commit_batched``); when another write
    got in between, each key of that batch again on its own, so that one raced object
    does not hold back the rest (a key already written reads as unchanged then).
    Returns the keys that could not be written, with why; an error other than a
    conflict on a batch (no quorum, a timeout) is raised."""
    failures = []
    flying: collections.deque[asyncio.Future] = collections.deque()
    try:
        for start in range(0, len(keys), batch):
            if len(flying) >= in_flight:
                failures += await flying.popleft()
            elif start:
                await asyncio.sleep(0)
            flying.append(asyncio.ensure_future(_commit_batch(store, keys[start:start + batch], make_ops)))
        while flying:
            failures += await flying.popleft()
    finally:
        for part in flying:  # an error was raised (or the caller cancelled): the rest is not waited for
            part.cancel()
    return failures


async def _commit_batch(store: ClusterStore, keys: Sequence[Key],
                        make_ops: Callable[[Sequence[Key]], list[dict]]) -> list[tuple[Key, StoreError]]:
    ops = make_ops(keys)
    if not ops:
        return []
    try:
        await store.commit_batched(ops)
        return []
    except Conflict:
        pass
    failures = []
    for key in keys:
        try:
            await retry_on_conflict(store, lambda: make_ops([key]))
        except StoreError as err:
            failures.append((key, err))
    return failures


async def commit_guarded(store: ClusterStore, ops: list[dict], guards: list[dict],
                         batch: int = WRITE_BATCH) -> None:
    """Commit ``ops`` in bounded transactions of at most ``batch`` operations, each with
    every one of ``guards`` (updates of the objects the ops' decisions were made from:
    the networks an allocation took addresses from) in it, the versions chained from one
    transaction to the next. So no transaction commits once anyone else wrote a guard
    since the decisions were read: that one raises ``Conflict`` (those before it stay
    committed) and the caller decides again from a fresh read."""
    versions = {guard["id"]: guard["version"] for guard in guards}
    guard_bytes = sum(len(msgpack.packb(guard, use_bin_type=True)) for guard in guards)
    chunks = cut_transaction(ops, min(batch, MAX_TRANSACTION_OPS - len(guards)),
                             MAX_TRANSACTION_BYTES - guard_bytes - TRANSACTION_ENVELOPE_BYTES) if ops else [[]]
    for position, chunk in enumerate(chunks):
        if position:
            await asyncio.sleep(0)  # the API runs between transactions
        result = await store.commit(chunk + [dict(guard, version=versions[guard["id"]]) for guard in guards])
        versions.update({guard_id: result["versions"][guard_id] for guard_id in versions})
