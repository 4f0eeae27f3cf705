"""The cluster store as the manager's asyncio code sees it.

Reads are local (any manager answers them, possibly a little behind the leader).
Writes are transactions committed through Raft, one transaction one Raft entry:
``await store.commit(ops)`` applies all of ``ops`` or none of them, and returns once
the transaction is applied on *this* manager, or raises:

- :class:`TransactionTooLarge` at once, proposing nothing, when the transaction is over
  ``MAX_TRANSACTION_OPS`` operations or ``MAX_TRANSACTION_BYTES`` encoded (an entry must
  stay small: it is applied on the Raft thread, between heartbeats),

- :class:`NoQuorum` when no leader could be reached within the deadline (the write was
  not committed unless the error says the outcome is unknown),
- :class:`CommitTimeout` when a leader took the write but did not confirm it in time:
  the outcome is unknown, and retrying with the same request ID is safe because the
  state machine remembers applied request IDs,
- :class:`Conflict`, :class:`NotFound`, :class:`AlreadyExists`, :class:`InvalidTransaction`
  when the state machine refused the transaction (then nothing of it was applied).

Every applied transaction is delivered, in order, to the subscribers on the loop.

``await store.commit_batched(ops)`` is for large changes made of *independent*
operations (the orchestrator's task creates, the scheduler's assignments, agents'
status reports): it cuts them into bounded transactions committed one after the other.
Each transaction is atomic; the whole is not. If one fails, those before it stay
committed, none after it is tried, and the error says how many operations were
committed. Level-triggered callers (which compare desired and actual state again on
the next pass) need no more; a change that must be all-or-nothing goes through
``commit`` and so must fit one transaction.

Fenced leader writes. A leader's loops decide from what the store says and commit in
parts. A manager that has just lost leadership may still have a part in flight: its
commit retries, and a follower forwards it to the new leader. Applied after the new
leader has looked, that part duplicates what the new leader decided (seen: 24,033 tasks
for 20,000 replicas after a leader was killed mid-deploy). So every leadership begins
with a claim, a write to the one ``leadership`` object (``leadership_fence()``, once per
leadership, shared by its loops), and while a leader loop runs, every write it makes
carries a precondition on that claim's version (``hold_fence``). Once a later claim is
applied, a deposed leader's parts are refused (``conflict``) instead of applied. A
loop whose claim was superseded while its manager still leads asks for a new one
(``leadership_fence(stale)``, LeadershipClaims); a claim whose leadership has ended gives
up rather than claim over a later one (manager/leaderloop.py: leadership flaps).
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

from pysyncobj import FAIL_REASON

from swarmlet.api import errors
from swarmlet.api.views import StoredObject
from swarmlet.store.raft import MAX_ENTRY_BYTES, RaftSettings, RaftView, ReplicatedStore
from swarmlet.store.state import Applied, Change, TransactionError, cut_transaction, encode_transaction
from swarmlet.store.transport import TlsPolicy

log = logging.getLogger("swarmlet.store")

DEFAULT_WRITE_TIMEOUT = 5.0
# One transaction, one Raft entry, bounded (etcd refuses requests over 1.5 MiB; SwarmKit
# cuts store batches at 200 changes): 2,000 task creates encode to ~1 MB and apply in
# ~25 ms on the Raft thread, against elections after 0.3-0.6 s without a heartbeat. The
# byte bound also admits one config of the largest size (manager/configs.py).
MAX_TRANSACTION_BYTES = 1536 * 1024
MAX_TRANSACTION_OPS = 2_000
assert MAX_TRANSACTION_BYTES + 1024 < MAX_ENTRY_BYTES  # sealing adds a few dozen bytes
O = TypeVar("O", bound=StoredObject)


# Each store error is also the domain error it is (swarmlet.api.errors), which the API
# maps to a status; ``code`` is the one the state machine reports.
class StoreError(errors.SwarmletError):
    code = "error"


class NoQuorum(StoreError, errors.NoQuorum):
    code = "no_quorum"


class CommitTimeout(StoreError, errors.Timeout):
    code = "timeout"


class Conflict(StoreError, errors.Conflict):
    code = "conflict"


class NotFound(StoreError, errors.NotFound):
    code = "not_found"


class AlreadyExists(StoreError, errors.AlreadyExists):
    code = "exists"


class InvalidTransaction(StoreError, errors.Invalid):
    code = "invalid"


class TransactionTooLarge(StoreError, errors.TooLarge):
    code = "too_large"


_REFUSALS = {cls.code: cls for cls in (Conflict, NotFound, AlreadyExists, InvalidTransaction, TransactionTooLarge)}


LEADERSHIP = "leadership"  # the kind, and the ID of its one object
# What a fence adds to a transaction: one operation of ~70 bytes encoded.
FENCE_OPS, FENCE_BYTES = 1, 128
_leader_fence: contextvars.ContextVar[int | None] = contextvars.ContextVar("swarmlet_leader_fence", default=None)


def hold_fence(version: int | None) -> None:
    """Fence every write the current task (and the tasks it starts) makes from now on
    with the leadership claim at ``version`` (None: no fence)."""
    _leader_fence.set(version)


def fenced(ops: list[dict]) -> list[dict]:
    """``ops`` with the current task's fence, if it holds one."""
    fence = _leader_fence.get()
    if fence is None:
        return ops
    return [*ops, {"op": "expect", "kind": LEADERSHIP, "id": LEADERSHIP, "version": fence}]


async def claim_leadership(commit: Callable[[list[dict]], Awaitable[dict]], read_claim: Callable[[], dict | None],
                           claimant: str, still_ours: Callable[[], bool] = lambda: True) -> int:
    """Write a new leadership claim; returns its version, the fence of this leadership.

    ``still_ours`` says whether the leadership this claim is for still lasts. A claim
    that finds a later one applied since it read claims over it only while it does: a
    claim left in flight by a leadership that has ended (lost, or lost and regained)
    would otherwise land over the next leadership's and leave its loops with a stale
    fence (seen: "leadership at version 8, expected 6" for good)."""
    hold_fence(None)  # the claim itself is never fenced (this runs in a task of its own)
    while True:
        current = read_claim()
        if not still_ours():
            raise Conflict(f"leadership claim by {claimant} abandoned: the leadership it was for has ended "
                           f"(the claim is at version {current['version'] if current else None})")
        spec = {"address": claimant}
        op = ({"op": "create", "kind": LEADERSHIP, "id": LEADERSHIP, "spec": spec} if current is None else
              {"op": "update", "kind": LEADERSHIP, "id": LEADERSHIP, "version": current["version"], "spec": spec})
        try:
            result = await commit([op])
        except (Conflict, AlreadyExists):
            await asyncio.sleep(0)  # a later claim was applied since we read: claim over it if still ours
            continue
        return result["versions"][LEADERSHIP]


class LeadershipClaims:
    """The claims of one manager's leaderships (see "Fenced leader writes"): one claim per
    leadership, shared by all its loops. ``new_leadership()`` when one begins or ends;
    ``fence(stale)`` from a loop that found its fence ``stale`` (a later claim applied)
    makes a new claim while the same leadership lasts, once however many loops ask."""

    def __init__(self, claim: Callable[[Callable[[], bool]], Awaitable[int]], leading: Callable[[], bool]):
        self._claim = claim  # claim(still_ours) -> version
        self._leading = leading
        self._leadership = 0  # counts leaderships begun and ended: which one a claim is for
        self._current: asyncio.Future | None = None

    def new_leadership(self) -> None:
        self._leadership += 1
        self._current = None

    async def fence(self, stale: int | None = None) -> int:
        current = self._current
        if current is None or (current.done() and (current.cancelled() or current.exception() is not None
                                                   or current.result() == stale)):
            leadership = self._leadership
            current = self._current = asyncio.ensure_future(
                self._claim(lambda: self._leading() and self._leadership == leadership))
        return await asyncio.shield(current)


def check_bounds(ops: list[dict], command: bytes) -> None:
    """Raise :class:`TransactionTooLarge`, naming the limits, for a transaction over them."""
    if len(ops) > MAX_TRANSACTION_OPS or len(command) > MAX_TRANSACTION_BYTES:
        raise TransactionTooLarge(
            f"a transaction holds at most {MAX_TRANSACTION_OPS} operations and {MAX_TRANSACTION_BYTES // 1024} KiB "
            f"encoded; this one has {len(ops)} operations, {len(command) // 1024} KiB")


async def commit_in_batches(commit: Callable[[list[dict], str], Awaitable[dict]], ops: list[dict],
                            request_id: str, proceed: Callable[[], bool] | None, index: int,
                            in_flight: int = 1, batch_ops: int = MAX_TRANSACTION_OPS) -> dict:
    """``ClusterStore.commit_batched`` over any ``commit(ops, request_id)`` (the
    manager's tests use it with an in-memory store)."""
    try:
        room = (FENCE_OPS, FENCE_BYTES) if _leader_fence.get() is not None else (0, 0)  # what commit adds
        batches = cut_transaction(ops, min(batch_ops, MAX_TRANSACTION_OPS - room[0]), MAX_TRANSACTION_BYTES - room[1])
    except TransactionError as err:
        raise TransactionTooLarge(str(err)) from None
    committed, transactions, result = 0, 0, {"index": index}
    flying: collections.deque[tuple[int, asyncio.Future]] = collections.deque()
    failure: StoreError | None = None
    proposed = 0
    try:
        while proposed < len(batches) or flying:
            while failure is None and proposed < len(batches) and len(flying) < in_flight:
                if proposed and proceed is not None and not proceed():
                    proposed = len(batches)  # the rest is left out
                    break
                flying.append((proposed, asyncio.ensure_future(
                    commit(batches[proposed], f"{request_id}.{proposed}"))))
                proposed += 1
            if not flying:
                break
            position, done = flying.popleft()
            try:
                result = await done
            except StoreError as err:  # none is proposed after it; those in flight are counted
                failure = failure or err
                continue
            committed, transactions = committed + len(batches[position]), transactions + 1
    finally:
        for _position, done in flying:  # only when cancelled: the caller is gone
            done.cancel()
    if failure is not None:
        failure.committed_operations = committed
        raise failure
    return {"ok": True, "index": result.get("index"), "operations": committed, "transactions": transactions,
            "complete": committed == len(ops)}


_RETRYABLE = {FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER, FAIL_REASON.LEADER_CHANGED,
              FAIL_REASON.DISCARDED, FAIL_REASON.QUEUE_FULL, FAIL_REASON.REQUEST_DENIED}


@dataclass
class StoreEvent:
    """What subscribers receive: the changes of one applied transaction, or
    ``reset=True`` when the whole state was replaced by a snapshot (re-read it all)."""

    index: int
    changes: list[Change]
    reset: bool = False
    timestamp: float = 0.0  # the proposer's clock in the transaction (Applied.timestamp)


def new_request_id() -> str:
    return secrets.token_hex(12)


class LoopHandoff:
    """Hands calls from the Raft thread to the asyncio loop in batches: each
    ``call_soon_threadsafe`` writes to the loop's self-pipe, which at thousands of
    commits per second costs more than the commits; here the loop is woken only when
    no drain is already pending. Calls run in the order they were posted."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._pending: collections.deque = collections.deque()
        self._scheduled = False

    def post(self, fn: Callable, *args) -> None:  # any thread
        self._pending.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the node is shutting down
                pass

    def _drain(self) -> None:  # the loop
        # Reset before draining: a post that sees True after this is drained below.
        self._scheduled = False
        pending = self._pending
        while pending:
            fn, args = pending.popleft()
            fn(*args)


class ClusterStore:
    def __init__(self, *, self_address: str, peers: list[str], data_dir: str, cluster_key: str,
                 tls_policy: TlsPolicy, settings: RaftSettings | None = None,
                 bind_address: str | None = None,
                 on_members_changed: Callable[[list[str]], None] | None = None):
        self.self_address = self_address
        self.settings = settings or RaftSettings()
        self._initial_peers = list(peers)
        self._data_dir = data_dir
        self._cluster_key = cluster_key
        self._tls_policy = tls_policy
        self._bind_address = bind_address
        self._on_members_changed = on_members_changed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handoff: LoopHandoff | None = None
        self._raft: ReplicatedStore | None = None
        self._subscribers: list[asyncio.Queue] = []
        self._view: RaftView | None = None
        self._latest_view: RaftView | None = None  # set on the Raft thread, ahead of the loop's _view
        self._members: list[str] = sorted(set(peers) | {self_address})
        self._leadership_listeners: list[Callable[[bool], Awaitable[None] | None]] = []
        self._was_leader = False
        self._claims = LeadershipClaims(
            lambda still_ours: claim_leadership(self.commit, lambda: self._raft.state.get(LEADERSHIP, LEADERSHIP),
                                                self.self_address, still_ours),
            lambda: self.is_leader)
        self._view_changed = asyncio.Event()
        # Metrics hooks (manager/metrics.py): seconds to apply each entry (called on the Raft
        # thread), and each commit's seconds and outcome (on the loop).
        self.observe_apply: Callable[[float], None] | None = None
        self.observe_commit: Callable[[float, str], None] | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start Raft. Call from the thread that runs the loop and lives as long as the
        node (the main thread): pysyncobj's tick thread ends with its creator."""
        self._loop = asyncio.get_running_loop()
        self._handoff = LoopHandoff(self._loop)
        self._raft = ReplicatedStore(
            self.self_address, self._initial_peers, self._data_dir, self._cluster_key,
            self._tls_policy, self.settings,
            on_applied=self._from_raft_applied, on_reset=self._from_raft_reset,
            on_view=self._from_raft_view, bind_address=self._bind_address)

    def close(self) -> None:
        if self._raft is not None:
            self._raft.destroy()
            self._raft = None

    # -- reads -------------------------------------------------------------------------------
    # Typed views of the state machine's own (frozen) objects: nothing is copied, and
    # nothing handed out can change the replicated state (swarmlet.api.views).
    def get(self, kind: type[O], object_id: str) -> O | None:
        with self._raft.state_lock:
            raw = self._raft.state.get(kind.kind, object_id)
        return kind(raw) if raw is not None else None

    def list(self, kind: type[O]) -> list[O]:
        with self._raft.state_lock:
            raws = self._raft.state.list(kind.kind)
        return [kind(raw) for raw in raws]

    def select(self, kind: type[O], **criterion) -> list[O]:
        """The objects whose indexed field has a value, e.g. ``select(Task, service_id=S)``:
        O(matches), not O(objects) (state.INDEXES lists what is indexed)."""
        ((name, value),) = criterion.items()
        with self._raft.state_lock:
            raws = self._raft.state.select(kind.kind, name, value)
        return [kind(raw) for raw in raws]

    def picture(self) -> dict:
        """The whole state as it is now (``StoreState.picture``: later applies do not
        change it); for backups."""
        with self._raft.state_lock:
            return self._raft.state.picture()

    @property
    def index(self) -> int:
        return self._raft.state.index

    # -- writes --------------------------------------------------------------------------------
    async def commit(self, ops: list[dict], request_id: str | None = None,
                     timeout: float = DEFAULT_WRITE_TIMEOUT) -> dict:
        """Commit ``ops`` as one atomic transaction (see the module's docstring)."""
        request_id = request_id or new_request_id()
        ops = fenced(ops)
        command = encode_transaction(request_id, time.time(), ops)
        check_bounds(ops, command)
        started = time.monotonic()
        try:
            result = await self._replicate(lambda cb: self._raft.propose(command, cb),
                                           f"request {request_id}", timeout)
        except StoreError as err:
            self._observe_commit(started, err.code)
            raise
        self._observe_commit(started, "ok" if result.get("ok") else str(result.get("code", "refused")))
        if not result.get("ok"):
            raise _REFUSALS.get(result.get("code"), StoreError)(result.get("error", "refused"))
        return result

    def _observe_commit(self, started: float, outcome: str) -> None:
        if self.observe_commit is not None:
            self.observe_commit(time.monotonic() - started, outcome)

    async def read_barrier(self, timeout: float = DEFAULT_WRITE_TIMEOUT) -> int:
        """Commit an empty transaction and return its index once this manager has applied
        it: everything acknowledged before the barrier began is then in the local copy,
        so a read made after it is linearisable (Raft's read-through-the-log). It carries
        no request ID, so barriers never push real writes out of the remembered results."""
        command = encode_transaction("", time.time(), [])
        result = await self._replicate(lambda cb: self._raft.propose(command, cb), "read barrier", timeout)
        return result.get("index", self.index)

    async def commit_batched(self, ops: list[dict], request_id: str | None = None,
                             timeout: float = DEFAULT_WRITE_TIMEOUT,
                             proceed: Callable[[], bool] | None = None, in_flight: int = 1,
                             batch_ops: int = MAX_TRANSACTION_OPS) -> dict:
        """Commit independent ``ops`` as consecutive bounded transactions, in order (see
        the module's docstring: each is atomic, the whole is not).

        ``timeout`` applies to each transaction. ``proceed`` is asked before each one
        after the first; when it says no, the rest is left out (``complete`` is False).
        ``in_flight``: how many transactions are proposed before the first is confirmed
        (``WRITE_WINDOW`` for the leader's large changes). With more than one, Raft
        replicates the next while the loop handles the last, a commit is no longer a
        round trip each, and a transaction may commit after one before it failed (it was
        in flight already), so the ops must be independent; ``committed_operations``
        counts every one that did. ``batch_ops``: at most this many ops a transaction.
        Batch ``i`` has request ID ``{request_id}.{i}``: retrying the same ``ops`` with
        the same request ID does not apply a batch twice. An error is that of the
        failing transaction, with ``committed_operations`` set on it.
        """
        return await commit_in_batches(lambda batch, rid: self.commit(batch, rid, timeout), ops,
                                       request_id or new_request_id(), proceed, self.index, in_flight, batch_ops)

    async def add_member(self, address: str, timeout: float = 10.0) -> None:
        """Add a manager to the Raft configuration (it should be running already)."""
        if address in self.members:
            return
        await self._replicate(lambda cb: self._raft.addNodeToCluster(address, callback=cb),
                              f"adding manager {address}", timeout)

    async def remove_member(self, address: str, timeout: float = 10.0) -> None:
        if address not in self.members:
            return
        await self._replicate(lambda cb: self._raft.removeNodeFromCluster(address, callback=cb),
                              f"removing manager {address}", timeout)

    async def transfer_leadership(self, timeout: float = 5.0) -> None:
        """Hand leadership to the most caught-up follower and wait until it has it."""
        deadline = self._loop.time() + timeout
        while self.is_leader:
            done = self._loop.create_future()
            self._raft.transferLeadership(
                callback=lambda res, err: self._handoff.post(_settle, done, (res, err)))
            await asyncio.wait_for(done, max(0.01, deadline - self._loop.time()))
            await self.wait_for(lambda: not self.is_leader, min(1.0, max(0.01, deadline - self._loop.time())),
                                raise_on_timeout=False)
            if self._loop.time() > deadline:
                raise CommitTimeout(f"leadership transfer did not complete within {timeout:.1f}s")

    async def _replicate(self, submit: Callable, what: str, timeout: float):
        """Submit to Raft until it succeeds or the deadline passes. Retrying is safe:
        transactions carry request IDs and membership changes are idempotent."""
        deadline = self._loop.time() + timeout
        maybe_sent = False
        last_failure = "no attempt"
        while True:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise self._deadline_error(what, timeout, maybe_sent, last_failure)
            done = self._loop.create_future()
            submit(lambda res, err: self._handoff.post(_settle, done, (res, err)))
            try:
                result, error = await asyncio.wait_for(asyncio.shield(done), remaining)
            except asyncio.TimeoutError:
                raise self._deadline_error(what, timeout, True, "no answer from the leader") from None
            if error == FAIL_REASON.SUCCESS:
                return result if result is not None else {"ok": True}
            if error not in _RETRYABLE:
                raise StoreError(f"{what} failed: {_reason(error)}")
            if error != FAIL_REASON.MISSING_LEADER:
                maybe_sent = True
            last_failure = _reason(error)
            await asyncio.sleep(min(0.05, max(0.0, deadline - self._loop.time())))

    def _deadline_error(self, what: str, timeout: float, maybe_sent: bool, last_failure: str) -> StoreError:
        view = self._view
        reachable = 1 + sum(1 for p in (view.peers.values() if view else []) if p["connected"])
        total = len(self.members)
        outcome = ("outcome unknown: it may still commit; retrying with the same request ID is safe"
                   if maybe_sent else "not committed")
        if view is None or not view.has_quorum or view.leader is None:
            return NoQuorum(f"no quorum: this manager reaches {reachable} of {total} managers and no leader "
                            f"is elected; {what} {outcome} (gave up after {timeout:.1f}s; last: {last_failure})")
        return CommitTimeout(f"timed out after {timeout:.1f}s, {outcome} ({what}; last: {last_failure})")

    # -- watching ----------------------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue:
        """A queue of :class:`StoreEvent`, from now on, in commit order."""
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def _from_raft_applied(self, applied: Applied) -> None:  # Raft thread
        if self.observe_apply is not None:
            self.observe_apply(applied.apply_seconds)
        if applied.changes and self._handoff is not None:
            self._handoff.post(self._publish, StoreEvent(applied.index, applied.changes, timestamp=applied.timestamp))

    def _from_raft_reset(self) -> None:  # Raft thread
        if self._handoff is not None:
            self._handoff.post(self._publish, StoreEvent(self._raft.state.index, [], reset=True))

    def _publish(self, event: StoreEvent) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)

    # -- leadership and health -------------------------------------------------------------------------
    def _from_raft_view(self, view: RaftView) -> None:  # Raft thread
        # Leadership is judged from the newest view at once, not from the one the loop
        # reached: a loop that was busy for a second found the views queued behind it a
        # second old, lost and regained leadership within a millisecond, and each time the
        # dispatcher dropped every session (1,000 hollow nodes reconnecting with TLS
        # handshakes kept the loop busy: an election storm).
        self._latest_view = view
        if self._handoff is not None:
            self._handoff.post(self._set_view, view)

    def _set_view(self, view: RaftView) -> None:
        if view is not self._latest_view and self._latest_view is not None:
            return  # a newer one is queued behind it
        self._view = view
        members = sorted(set(view.peers) | {self.self_address})
        if members != self._members:
            self._members = members
            if self._on_members_changed:
                self._on_members_changed(members)
        leading = self.is_leader
        if leading != self._was_leader:
            self._was_leader = leading
            self._claims.new_leadership()  # a new leadership needs a claim of its own
            log.info("this manager %s leader", "became" if leading else "is no longer")
            for listener in list(self._leadership_listeners):
                outcome = listener(leading)
                if asyncio.iscoroutine(outcome):
                    asyncio.ensure_future(outcome)
        self._view_changed.set()
        self._view_changed = asyncio.Event()

    @property
    def view(self) -> RaftView | None:
        return self._view

    @property
    def members(self) -> list[str]:
        return list(self._members)

    @property
    def is_leader(self) -> bool:
        """Fenced leadership: Raft says leader, a majority is connected, and the Raft
        thread reported so recently. Leader-only work must check this before acting."""
        view = self._latest_view
        return bool(view and view.is_leader and view.has_quorum
                    and time.monotonic() - view.taken_at < self.settings.leader_fallback_timeout)

    @property
    def leader_address(self) -> str | None:
        view = self._view
        if view is None:
            return None
        return self.self_address if self.is_leader else view.leader

    async def leadership_fence(self, stale: int | None = None) -> int:
        """The version of this leadership's claim, claiming it on the first call (see the
        module's docstring, "Fenced leader writes"). Every leader loop waits for it; one
        whose fence ``stale`` was superseded while this manager leads gets a new claim."""
        return await self._claims.fence(stale)

    def on_leadership_change(self, listener: Callable[[bool], Awaitable[None] | None]) -> None:
        self._leadership_listeners.append(listener)

    @property
    def ready(self) -> bool:
        """True once this manager has applied what the leader had committed when it
        joined (pysyncobj's onReady)."""
        return bool(self._raft and self._raft.isReady())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, raise_on_timeout: bool = True) -> bool:
        """Wait until ``predicate()`` holds, re-checking on every Raft view."""
        deadline = self._loop.time() + timeout
        while not predicate():
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                if raise_on_timeout:
                    raise CommitTimeout(f"condition not reached within {timeout:.1f}s")
                return False
            try:
                await asyncio.wait_for(self._view_changed.wait(), min(remaining, 0.1))
            except asyncio.TimeoutError:
                pass
        return True


def _settle(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _reason(error) -> str:
    names = {value: name.lower().replace("_", " ") for name, value in vars(FAIL_REASON).items()
             if not name.startswith("_")}
    return names.get(error, f"error {error}")
