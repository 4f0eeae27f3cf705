"""An in-memory stand-in for ClusterStore: the real state machine (store/state.py)
behind the narrow interface the manager's leader-only code uses (get, list, commit,
subscribe, is_leader), without Raft. Commits apply at once and are delivered to
subscribers in order, as the real store delivers them."""
from __future__ import annotations

import asyncio
import time

import pytest

from swarmlet.api.objects import CLUSTER_ID, node_object_spec, node_object_status
from swarmlet.store import AlreadyExists, Conflict, InvalidTransaction, NotFound, StoreError, StoreEvent, new_request_id
from swarmlet.store import MAX_TRANSACTION_OPS
from swarmlet.store.state import StoreState, encode_transaction
from swarmlet.store.store import LEADERSHIP, LeadershipClaims, check_bounds, claim_leadership, commit_in_batches, fenced

_REFUSALS = {cls.code: cls for cls in (Conflict, NotFound, AlreadyExists, InvalidTransaction)}


class MemoryStore:
    def __init__(self, leading: bool = True):
        self.state = StoreState()
        self.is_leader = leading
        self.commits: list[list[dict]] = []  # every transaction tried, refused ones too
        self.fail_next: StoreError | None = None  # raised by the next commit instead of applying it
        self._subscribers: list[asyncio.Queue] = []
        self._publishing = True
        self._claims = LeadershipClaims(self._claim_as_leader, lambda: self.is_leader)

    def get(self, kind, object_id: str):
        raw = self.state.get(kind.kind, object_id)
        return kind(raw) if raw is not None else None

    def list(self, kind) -> list:
        return [kind(raw) for raw in self.state.list(kind.kind)]

    def select(self, kind, **criterion) -> list:
        ((name, value),) = criterion.items()
        return [kind(raw) for raw in self.state.select(kind.kind, name, value)]

    @property
    def index(self) -> int:
        return self.state.index

    async def commit(self, ops: list[dict], request_id: str | None = None) -> dict:
        ops = fenced(ops)
        self.commits.append(ops)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        command = encode_transaction(request_id or new_request_id(), time.time(), ops)
        check_bounds(ops, command)  # the real store's bounds
        applied = self.state.apply(command)
        if not applied.result.get("ok"):
            raise _REFUSALS.get(applied.result.get("code"), StoreError)(applied.result.get("error"))
        if applied.changes and self._publishing:
            for queue in self._subscribers:
                queue.put_nowait(StoreEvent(applied.index, applied.changes, timestamp=applied.timestamp))
        return applied.result

    async def commit_batched(self, ops: list[dict], request_id: str | None = None, proceed=None, in_flight=1,
                             batch_ops=MAX_TRANSACTION_OPS) -> dict:
        return await commit_in_batches(self.commit, ops, request_id or new_request_id(), proceed, self.index,
                                       in_flight, batch_ops)

    async def leadership_fence(self, stale: int | None = None) -> int:
        """As the real store: one claim per leadership, shared by every leader loop."""
        return await self._claims.fence(stale)

    async def _claim_as_leader(self, still_ours) -> int:
        return await claim_leadership(self.commit, lambda: self.state.get(LEADERSHIP, LEADERSHIP), "memory",
                                      still_ours)

    async def claim(self, publish: bool = True) -> int:
        """A new leadership's claim (what a manager elected after this one would write);
        ``publish=False``: its event has not reached this manager's subscribers (yet)."""
        async def claiming() -> int:  # in a task of its own, as the real store claims
            return await claim_leadership(self.commit, lambda: self.state.get(LEADERSHIP, LEADERSHIP), "memory")
        self._publishing = publish
        try:
            return await asyncio.ensure_future(claiming())
        finally:
            self._publishing = True

    async def wait_for(self, predicate, timeout: float, raise_on_timeout: bool = True) -> bool:
        """As the real store's (which re-checks on every Raft view): here, every 10 ms."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() >= deadline:
                if raise_on_timeout:
                    raise TimeoutError(f"condition not reached within {timeout:.1f}s")
                return False
            await asyncio.sleep(0.01)
        return True

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.remove(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # -- fixtures' helpers ----------------------------------------------------------------------
    def raw(self, kind: str, object_id: str) -> dict | None:
        """The stored object itself (a frozen dict), for tests to look at."""
        return self.state.get(kind, object_id)

    def raw_list(self, kind: str) -> list[dict]:
        return self.state.list(kind)

    async def add(self, kind: str, object_id: str, spec: dict, status: dict | None = None) -> dict:
        await self.commit([{"op": "create", "kind": kind, "id": object_id, "spec": spec, "status": status or {}}])
        return self.raw(kind, object_id)

    async def add_node(self, node_id: str, hostname: str | None = None, state: str = "unknown"):
        return await self.add("node", node_id, node_object_spec("worker"),
                              node_object_status(addr="127.0.0.1", hostname=hostname or node_id, state=state))


@pytest.fixture
async def store() -> MemoryStore:
    store = MemoryStore()
    await store.add("cluster", CLUSTER_ID, {"heartbeat_period": 0.2})
    return store
