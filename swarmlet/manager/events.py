"""Cluster events, derived from the replicated store's changes (``GET /v1/events``).

Every manager applies the same log, so ``events_of`` (pure) turns each applied
transaction into the same events on every manager, each with the cursor
``<store index>:<position>`` (swarmlet/api/events.py). A manager keeps the
transactions of its newest ``EVENT_RING_SIZE`` changes in memory (``EventRing``; their
events derived when first read); a client resumes on any manager from the last cursor
it saw. A ``since`` older than what the ring holds is
refused (``EventsGone``, HTTP 410) naming the oldest cursor that can still be
served: a gap is never served silently.

Why a ring per manager rather than a replicated event log: the store's changes
already are the replicated log, so a second one would double every write through
Raft (and the 10,000-task deploys) for history that the ring covers for anyone who
is following; ``docker events`` keeps a bounded in-memory buffer too (moby's
events.Events: 256). A manager that started late or installed a snapshot holds no
events from before that point (its ring's floor), and says so.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping

from swarmlet.api.events import DEFAULT_EVENT_LIMIT, Cursor, Event, EventsGone, Point
from swarmlet.api.objects import STACK_NAMESPACE_LABEL, NodeState
from swarmlet.store.state import Change

log = logging.getLogger("swarmlet.events")

# The changes (so at most this many events) each manager keeps in memory, ~600 B an
# event once derived (benchmarks/events_cost.py): about a 3,000-task deploy's worth (a
# task's life is ~6 state changes); a follower streaming behind by more is told so.
EVENT_RING_SIZE = 20_000

_ACTIONS = {"create": "create", "update": "update", "delete": "remove"}


# -- changes -> events (pure) ------------------------------------------------------------------------

def events_of(index: int, timestamp: float, changes: Iterable[Change]) -> list[Event]:
    """The events of the transaction applied at ``index``, in the order of its changes."""
    changes = list(changes)
    described: list[tuple[str, str, str, str, dict]] = []
    # A stack is its revisions: a deploy creates one (and may drop the oldest past the
    # history limit), a removal deletes them all, so it is removed only when none is created.
    deployed = {c.object["spec"].get("stack") for c in changes if c.kind == "stack_revision" and c.action == "create"}
    removed_stacks: set[str] = set()
    for change in changes:
        describe = _DESCRIBE.get(change.kind)
        if change.kind == "stack_revision":
            described.extend(_stack(change, deployed, removed_stacks))
        elif describe is not None:
            described.extend(describe(change))
    return [Event(Cursor(index, position), timestamp, type_, action, object_id, name, attributes)
            for position, (type_, action, object_id, name, attributes) in enumerate(described)]


def _spec(obj: Mapping | None) -> Mapping:
    return (obj or {}).get("spec") or {}


def _status(obj: Mapping | None) -> Mapping:
    return (obj or {}).get("status") or {}


def _service(change: Change):
    spec = _spec(change.object)
    attributes = {"stack": (spec.get("labels") or {}).get(STACK_NAMESPACE_LABEL, ""), "mode": spec.get("mode"),
                  "replicas": spec.get("replicas"), "image": (spec.get("container") or {}).get("image")}
    update = _status(change.object).get("update") or {}
    if update.get("state"):
        attributes["update_state"] = update["state"]
    yield "service", _ACTIONS[change.action], change.id, spec.get("name", ""), attributes


def _task(change: Change):
    spec, status = _spec(change.object), _status(change.object)
    before = None if change.action == "create" else _status(change.previous).get("state")
    name = f"{spec.get('service_name', '')}.{spec['slot'] if spec.get('slot') is not None else spec.get('node_id')}"
    if change.action == "delete":
        yield "task", "remove", change.id, name, {"service": spec.get("service_name", ""), "node": spec.get("node_id"),
                                                  "slot": spec.get("slot")}
        return
    if status.get("state") == before:
        return  # a task's other writes (assignment details, addresses) are not events
    yield "task", "state", change.id, name, {
        "from": before, "to": status.get("state"), "service": spec.get("service_name", ""),
        "node": spec.get("node_id"), "slot": spec.get("slot"), "error": status.get("err") or ""}


def _node(change: Change):
    spec, status = _spec(change.object), _status(change.object)
    name = status.get("hostname", "")
    attributes = {"role": spec.get("role"), "availability": spec.get("availability"), "state": status.get("state"),
                  "address": status.get("addr")}
    before = _status(change.previous).get("state") if change.action == "update" else None
    if change.action == "update" and before != status.get("state") and status.get("state") in _NODE_MOVES:
        yield "node", _NODE_MOVES[status["state"]], change.id, name, dict(
            attributes, **{"from": before, "message": status.get("message", "")})
        return
    yield "node", _ACTIONS[change.action], change.id, name, attributes


_NODE_MOVES = {NodeState.READY.value: "up", NodeState.DOWN.value: "down"}


def _named(type_: str):
    def describe(change: Change):
        # Names and labels only: never a secret's or config's data.
        spec = _spec(change.object)
        attributes = {"labels": dict(spec.get("labels") or {})}
        if type_ == "network":
            attributes["driver"] = spec.get("driver")
        yield type_, _ACTIONS[change.action], change.id, spec.get("name", ""), attributes
    return describe


def _cluster(change: Change):
    # The cluster's spec holds the CA key and the join tokens' secrets: only its name.
    yield "cluster", _ACTIONS[change.action], change.id, _spec(change.object).get("name", ""), {}


def _leader(change: Change):
    if change.action == "delete":
        return
    address = _spec(change.object).get("address", "")
    yield "leader", "leader", change.id, address, {"address": address}


def _stack(change: Change, deployed: set, removed: set):
    spec = _spec(change.object)
    stack = spec.get("stack", "")
    attributes = {"revision": spec.get("number"), "by": spec.get("by", "")}
    if change.action == "create":
        if spec.get("rollback_of") is not None:
            attributes["rollback_of"] = spec["rollback_of"]
        yield "stack", "create" if spec.get("number") == 1 else "update", stack, stack, attributes
    elif change.action == "update":
        outcome = _status(change.object).get("outcome")
        if outcome != _status(change.previous).get("outcome"):
            yield "stack", "update", stack, stack, dict(attributes, outcome=outcome)
    elif stack not in deployed and stack not in removed:
        removed.add(stack)
        yield "stack", "remove", stack, stack, {}


_DESCRIBE = {"service": _service, "task": _task, "node": _node, "network": _named("network"),
             "secret": _named("secret"), "config": _named("config"), "cluster": _cluster, "leadership": _leader}


# -- the ring ------------------------------------------------------------------------------------------

class _Held:
    """One applied transaction in the ring; its events derived when first read."""

    __slots__ = ("index", "timestamp", "changes", "size", "derived")

    def __init__(self, index: int, timestamp: float, changes: list[Change]):
        self.index, self.timestamp, self.changes, self.size = index, timestamp, changes, len(changes)
        self.derived: list[Event] | None = None

    @property
    def events(self) -> list[Event]:
        if self.derived is None:
            self.derived = events_of(self.index, self.timestamp, self.changes)
            self.changes = ()  # what the events need is in them now
        return self.derived


class EventRing:
    """The newest applied transactions, holding at most ``capacity`` changes (each
    change gives at most one event), and the floor below which this manager holds
    nothing: every event after ``floor`` up to the newest is held.

    Events are derived when first read, not as transactions are applied: a manager
    nobody follows spends nothing on them (deriving a 2,000-task transaction's events
    costs tens of ms of the loop: benchmarks/events_cost.py)."""

    def __init__(self, capacity: int = EVENT_RING_SIZE):
        self.capacity = capacity
        self._held: collections.deque[_Held] = collections.deque()
        self._changes = 0
        self.floor = Cursor(0, 0)
        self.delivered_index = 0  # the newest transaction added

    def add(self, index: int, timestamp: float, changes: list[Change]) -> None:
        self._held.append(_Held(index, timestamp, changes))
        self._changes += len(changes)
        while self._changes > self.capacity and len(self._held) > 1:
            dropped = self._held.popleft()
            self._changes -= dropped.size
            self.floor = Cursor.after_index(dropped.index)
        self.delivered_index = max(self.delivered_index, index)

    def reset(self, index: int) -> None:
        """The state was replaced by a snapshot at ``index``: what came before is unknown."""
        self._held.clear()
        self._changes = 0
        self.floor = Cursor.after_index(index)
        self.delivered_index = index

    @property
    def held_changes(self) -> int:
        return self._changes

    @property
    def events(self) -> list[Event]:
        return [event for held in self._held for event in held.events]

    @property
    def head(self) -> Cursor:
        """The newest event's cursor (the floor when none is held)."""
        for held in reversed(self._held):
            if held.events:
                return held.events[-1].cursor
        return self.floor

    def after(self, since: Point | None, until: Point | None = None, types: Iterable[str] = ()) -> list[Event]:
        """The events after ``since`` (all held when None) up to ``until``, of ``types``
        (all when empty), oldest first. Raises ``EventsGone`` for a cursor below the floor."""
        wanted = set(types)
        held = self._held
        start = 0
        if since is not None and since.cursor is not None:
            if since.cursor < self.floor:
                oldest = next((h.events[0].cursor for h in held if h.events), None)
                raise EventsGone(
                    f"events after {since.cursor} are no longer all held by this manager (it keeps the events of "
                    f"its newest {self.capacity} changes since it started or last installed a snapshot): the "
                    f"oldest cursor it can resume from is {self.floor}"
                    + (f" (its oldest event is {oldest})" if oldest else ""), self.floor)
            start = len(held)
            while start and held[start - 1].index >= since.cursor.index:  # from the newest end: followers are near it
                start -= 1
        out = []
        for position in range(start, len(held)):
            for event in held[position].events:
                if since is not None and (event.cursor <= since.cursor if since.cursor is not None
                                          else event.time <= since.time):
                    continue
                if until is not None and _past(event, until):
                    return out
                if not wanted or event.type in wanted:
                    out.append(event)
        return out


def _past(event: Event, until: Point) -> bool:
    return event.cursor > until.cursor if until.cursor is not None else event.time > until.time


# -- the manager's event log (the asyncio edge) --------------------------------------------------------

class EventLog:
    """Feeds an ``EventRing`` from the store's applied transactions and serves reads and
    follows. ``start`` must run before the store starts, so that no applied transaction
    (a journal replayed at start, a snapshot installed) goes by unseen."""

    def __init__(self, store, capacity: int = EVENT_RING_SIZE):
        self.store = store
        self.ring = EventRing(capacity)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    def start(self) -> None:
        self._queue = self.store.subscribe()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._queue is not None:
            self.store.unsubscribe(self._queue)
            self._queue = None

    async def _run(self) -> None:
        while True:
            self.apply(await self._queue.get())

    def apply(self, store_event) -> None:
        """One ``StoreEvent`` (an applied transaction, or a reset)."""
        if store_event.reset:
            self.ring.reset(store_event.index)
        else:
            self.ring.add(store_event.index, store_event.timestamp, store_event.changes)
        self._changed.set()
        self._changed = asyncio.Event()

    def read(self, since: Point | None, until: Point | None, types: list[str],
             limit: int = DEFAULT_EVENT_LIMIT) -> dict:
        """``follow=0``: the newest ``limit`` matching events after ``since``, oldest first,
        and the cursor to pass as the next ``since`` (the newest event looked at)."""
        looked_at = self.ring.after(since, until)
        events = [e for e in looked_at if not types or e.type in types][-limit:] if limit > 0 else []
        if looked_at:
            cursor = looked_at[-1].cursor
        elif since is not None and since.cursor is not None:
            cursor = since.cursor
        else:
            cursor = self.ring.head
        return {"events": [e.to_dict() for e in events], "cursor": str(cursor)}

    async def follow(self, since: Point | None, until: Point | None, types: list[str],
                     backlog: int | None = None) -> AsyncIterator[Event]:
        """``follow=1``: the events after ``since`` (from now when None; at most the newest
        ``backlog`` of those already held), then each new one, until ``until``. Raises
        ``EventsGone`` if the reader falls behind the ring (it could not resume without a gap)."""
        position = since if since is not None else Point(cursor=self.ring.head)
        first = True
        while True:
            changed = self._changed
            batch = self.ring.after(position, None)
            position = Point(cursor=batch[-1].cursor if batch else self.ring.head) if batch or first else position
            matching = [e for e in batch if not types or e.type in types]
            if first and backlog is not None:
                matching = matching[-backlog:] if backlog > 0 else []
            first = False
            for event in matching:
                if until is not None and _past(event, until):
                    return
                yield event
            if until is not None and (any(_past(e, until) for e in batch[-1:]) or self._until_reached(until)):
                return
            timeout = None
            if until is not None and until.time is not None:
                timeout = max(0.0, until.time - time.time())
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except asyncio.TimeoutError:
                if self._until_reached(until):
                    return

    def _until_reached(self, until: Point) -> bool:
        if until.cursor is not None:
            return self.ring.delivered_index >= until.cursor.index
        return time.time() >= until.time
