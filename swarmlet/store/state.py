"""The replicated state machine, as pure code: no Raft, no threads, no I/O.

Every change to the cluster is a *transaction*: a msgpack-encoded batch of
create/update/delete operations, each stating the object version it expects. The
whole batch applies or none of it does. Applying is deterministic: it reads nothing
but the command bytes and the current state (the proposer stamps the time into the
command), so every manager that applies the same log reaches the same state.

An object is a plain dict::

    {"id", "kind", "version", "created_at", "updated_at", "spec": {...}, "status": {...}}
    (and a service's "previous_spec" once it was updated)

``version`` is the store index of the transaction that last wrote it, as in
SwarmKit's ``Meta.Version``. An update or delete must name the version it read; a
stale one is refused (``conflict``), never silently overwritten.

Stored objects are frozen (:class:`FrozenDict`, :class:`FrozenList`, all the way
down): readers get the state machine's own objects without a copy, and an in-place
edit, which would silently make one manager's state diverge from the others', raises
instead. To change an object, build a new dict from it and commit that.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import msgpack

# "leadership" holds one object: the claim of the current leader, the fence its leader-only
# writes name (store.py, "Fenced leader writes").
KINDS = ("cluster", "node", "service", "task", "secret", "config", "network", "stack_revision", "leadership")
# A service keeps the spec it had before its last update (SwarmKit's PreviousSpec), so
# that it can be rolled back; the only field besides spec and status an op may set.
PREVIOUS_SPEC = "previous_spec"

# Results of applied request IDs are remembered so that a client retrying a write
# whose outcome it never learnt (a timeout, a leader change) cannot apply it twice.
# Eviction is by insertion order, which is the same on every manager.
REMEMBERED_REQUESTS = 20_000


class ReadOnlyError(TypeError):
    pass


def _refuse(self, *args, **kwargs):
    raise ReadOnlyError("objects from the store are read-only: build a new one (e.g. dict(obj, key=value)) "
                        "and commit it")


class FrozenDict(dict):
    """A dict that refuses every change. Equal to, and serialised like, a plain dict;
    ``dict(frozen)``, ``{**frozen}`` and copies are plain, mutable dicts."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict:
        return dict(self)

    def __deepcopy__(self, memo) -> dict:
        return thaw(self)

    def __reduce__(self):
        return dict, (dict(self),)


class FrozenList(list):
    """A list that refuses every change (see :class:`FrozenDict`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = extend = insert = remove = pop = clear = sort = \
        reverse = _refuse

    def __copy__(self) -> list:
        return list(self)

    def __deepcopy__(self, memo) -> list:
        return thaw(self)

    def __reduce__(self):
        return list, (list(self),)


def freeze(value: Any) -> Any:
    """``value`` with every dict and list in it frozen (already frozen parts are kept)."""
    kind = type(value)
    if kind is FrozenDict or kind is FrozenList:
        return value
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return FrozenList(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a (possibly frozen) value."""
    if isinstance(value, dict):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, list):
        return [thaw(item) for item in value]
    return value


class TransactionError(Exception):
    """A transaction refused as a whole. ``code`` is machine-readable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Change:
    """One object changed by an applied transaction, as delivered to watchers."""

    action: str  # "create" | "update" | "delete"
    kind: str
    id: str
    object: dict  # the new object; for a delete, the object as it was
    previous: dict | None = None  # an update's object as it was before (events report what moved)


@dataclass
class Applied:
    """The outcome of applying one command."""

    index: int
    result: dict
    changes: list[Change] = field(default_factory=list)
    timestamp: float = 0.0  # the proposer's clock, stamped into the transaction (0 when unreadable)
    apply_seconds: float = 0.0  # how long applying took (set by raft.py, which has a clock; metrics)


def encode_transaction(request_id: str, timestamp: float, ops: list[dict]) -> bytes:
    """Build the command bytes for a transaction. Each op is a dict:

    ``{"op": "create", "kind", "id", "spec", "status", "parts_from"?}`` (``parts_from``: for a
    task, the ID of one of the same service spec version whose shared parts it takes,
    ``TASK_SHARED_FIELDS``, left out of ``spec``),
    ``{"op": "update", "kind", "id", "version", "spec"?, "status"?, "previous_spec"?}`` (a
    field left out keeps its value; ``previous_spec: None`` drops it); instead of ``spec``,
    ``spec_fields``: the top-level keys of the spec to set, the others kept (what
    ``update_op`` writes when that is smaller: a task's assignment names its node, not
    its whole spec again),
    ``{"op": "delete", "kind", "id", "version"}``, or
    ``{"op": "expect", "kind", "id", "version"}``: a precondition that writes nothing
    (the whole transaction is refused, ``conflict``, unless the object is at that version).
    """
    return msgpack.packb({"rid": request_id, "ts": timestamp, "ops": ops}, use_bin_type=True)


def spec_update(old_spec: dict, new_spec: dict) -> dict:
    """The fields of an update op that turn ``old_spec`` into ``new_spec``: the top-level
    keys that changed, as ``spec_fields``, unless one was dropped (then the whole spec)."""
    if any(key not in new_spec for key in old_spec):
        return {"spec": new_spec}
    return {"spec_fields": {key: value for key, value in new_spec.items()
                            if old_spec.get(key, _ABSENT) is not value and old_spec.get(key, _ABSENT) != value}}


def cut_transaction(ops: list[dict], max_ops: int, max_bytes: int) -> list[list[dict]]:
    """``ops`` cut, in order, into consecutive batches of at most ``max_ops`` operations
    whose transactions encode to at most ``max_bytes`` each. An operation that cannot
    fit a transaction on its own raises :class:`TransactionError` (``too_large``)."""
    budget = max_bytes - TRANSACTION_ENVELOPE_BYTES
    batches: list[list[dict]] = []
    current: list[dict] = []
    size = 0
    for position, op in enumerate(ops):
        op_bytes = len(msgpack.packb(op, use_bin_type=True))
        if op_bytes > budget:
            raise TransactionError("too_large", f"operation {position} alone encodes to {op_bytes} bytes; a "
                                                f"transaction holds at most {max_bytes} bytes")
        if current and (len(current) >= max_ops or size + op_bytes > budget):
            batches.append(current)
            current, size = [], 0
        current.append(op)
        size += op_bytes
    if current:
        batches.append(current)
    return batches


# What a transaction adds around its operations (request ID, timestamp, map and array
# headers: ~60 bytes), with room to spare.
TRANSACTION_ENVELOPE_BYTES = 256


def decode_transaction(command: bytes) -> dict:
    # Frozen as it is decoded: far cheaper than freezing the decoded objects afterwards
    # (a 20,000-task transaction: +0.1 s instead of +1 s on the Raft thread).
    txn = msgpack.unpackb(command, raw=False, object_hook=FrozenDict, list_hook=FrozenList)
    if not isinstance(txn, dict) or not isinstance(txn.get("ops"), list):
        raise TransactionError("invalid", "malformed transaction")
    return txn


# Secondary indexes, so that work grows with the change and not with the cluster: the
# orchestrator reads one service's tasks, the dispatcher one node's, the scheduler the
# pending ones. (kind, name) -> how the indexed value is read from a stored object.
INDEXES: dict[tuple[str, str], Callable[[dict], Any]] = {
    ("task", "service_id"): lambda obj: obj["spec"].get("service_id"),
    ("task", "node_id"): lambda obj: obj["spec"].get("node_id"),
    ("task", "state"): lambda obj: obj["status"].get("state"),
    # tasks name their secrets and configs (the dispatcher sends a node only those)
    ("secret", "name"): lambda obj: obj["spec"].get("name"),
    ("config", "name"): lambda obj: obj["spec"].get("name"),
    # the managers among the nodes: every join's answer and every session's welcome
    # lists them (a scan of all nodes per join made joining 5,000 nodes quadratic)
    ("node", "role"): lambda obj: obj["spec"].get("role"),
}


# The parts of a task's spec copied from its service's spec (api/objects.py,
# task_object_spec): the same in every task made from one version of that spec.
TASK_SHARED_FIELDS = ("container", "resources", "restart_policy", "placement", "networks", "ports")
# Service spec versions whose parts are remembered (the least recently used go first).
SHARED_SPEC_VERSIONS = 4096
_ABSENT = object()


class SharedTaskParts:
    """Stores the service-derived parts of task specs once, not once per task.

    Every task of a service carries its container spec, resources, restart policy,
    placement, networks and ports (so that a node needs nothing but its tasks), and
    each arrives in its own transaction as a new copy: at 100,000 tasks, ~30 objects
    and 5 KB per task, most of it these parts again and again. A task's part that
    equals the one last seen for the same service spec version (``service_id``,
    ``spec_digest``) is replaced by that one, so tasks of one version share it. The
    state's value is unchanged (only which equal object holds it), so managers need
    not agree on what is shared; stored objects are frozen, so sharing is safe."""

    def __init__(self, versions: int = SHARED_SPEC_VERSIONS):
        self._versions = versions
        self._parts: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()

    def task_spec(self, spec: FrozenDict) -> FrozenDict:
        """``spec``, or an equal spec whose shared parts are the ones already stored."""
        service_id, digest = spec.get("service_id"), spec.get("spec_digest")
        if not (isinstance(service_id, str) and isinstance(digest, str)):
            return spec
        key = (service_id, digest)
        known = self._parts.get(key)
        if known is None:
            self._parts[key] = {name: spec[name] for name in TASK_SHARED_FIELDS if name in spec}
            if len(self._parts) > self._versions:
                self._parts.popitem(last=False)
            return spec
        self._parts.move_to_end(key)
        reused = {}
        for name in TASK_SHARED_FIELDS:
            value, kept = spec.get(name, _ABSENT), known.get(name, _ABSENT)
            if value is kept or value is _ABSENT:
                continue
            if kept is not _ABSENT and value == kept:
                reused[name] = kept
            else:  # the first of its kind for this version, or a task spec built otherwise
                known[name] = value
        return FrozenDict(spec, **reused) if reused else spec


class StoreState:
    """All objects of the cluster, by kind and ID, plus the applied index."""

    def __init__(self) -> None:
        self.index = 0
        self.objects: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}
        self.requests: collections.OrderedDict[str, dict] = collections.OrderedDict()
        # (kind, name) -> indexed value -> the IDs having it (a dict: ordered, O(1) removal)
        self.indexes: dict[tuple[str, str], dict[Any, dict[str, None]]] = {key: {} for key in INDEXES}
        self.shared = SharedTaskParts()

    # -- reads ---------------------------------------------------------------
    def get(self, kind: str, object_id: str) -> dict | None:
        return self.objects[kind].get(object_id)

    def list(self, kind: str) -> list[dict]:
        return list(self.objects[kind].values())

    def select(self, kind: str, name: str, value: Any) -> list[dict]:
        """The objects of ``kind`` whose indexed ``name`` is ``value`` (see INDEXES)."""
        objects = self.objects[kind]
        return [objects[object_id] for object_id in self.indexes[(kind, name)].get(value, ())]

    def _reindex(self, kind: str, object_id: str, old: dict | None, new: dict | None) -> None:
        for (indexed_kind, name), read in INDEXES.items():
            if indexed_kind != kind:
                continue
            index = self.indexes[(kind, name)]
            before, after = (read(old) if old is not None else None), (read(new) if new is not None else None)
            if old is not None and (new is None or before != after):
                ids = index.get(before)
                if ids is not None:
                    ids.pop(object_id, None)
                    if not ids:
                        del index[before]
            if new is not None and (old is None or before != after):
                index.setdefault(after, {})[object_id] = None

    # -- the one write path ------------------------------------------------------
    def apply(self, command: bytes) -> Applied:
        """Apply one command. A refused transaction still consumes an index, so
        that the index stays a pure function of the log."""
        self.index += 1
        try:
            txn = decode_transaction(command)
        except TransactionError as err:
            return Applied(self.index, {"ok": False, "code": err.code, "error": str(err)})
        except Exception as err:  # msgpack errors come in many types
            return Applied(self.index, {"ok": False, "code": "invalid", "error": f"malformed transaction: {err}"})

        request_id = txn.get("rid")
        if request_id and request_id in self.requests:
            return Applied(self.index, dict(self.requests[request_id], duplicate=True))

        timestamp = float(txn.get("ts") or 0.0)
        try:
            changes = self._apply_ops(txn["ops"], timestamp)
            result = {"ok": True, "index": self.index,
                      "versions": {c.id: c.object["version"] for c in changes if c.action != "delete"}}
        except TransactionError as err:
            changes = []
            result = {"ok": False, "code": err.code, "error": str(err)}

        if request_id:
            self.requests[request_id] = result
            while len(self.requests) > REMEMBERED_REQUESTS:
                self.requests.popitem(last=False)
        return Applied(self.index, result, changes, timestamp)

    def _apply_ops(self, ops: list[dict], timestamp: float) -> list[Change]:
        # Validate every op against the state as it would be after the previous ops
        # of the same batch, then commit them all: all or nothing.
        staged: dict[tuple[str, str], dict | None] = {}
        changes: list[Change] = []

        def current(kind: str, object_id: str) -> dict | None:
            key = (kind, object_id)
            return staged[key] if key in staged else self.objects[kind].get(object_id)

        for position, op in enumerate(ops):
            kind, object_id, action = _op_fields(op, position)
            existing = current(kind, object_id)
            if action == "expect":
                if existing is None or existing["version"] != op.get("version"):
                    raise TransactionError(
                        "conflict",
                        f"{kind} {object_id} is at version {existing['version'] if existing else None}, the "
                        f"transaction expected version {op.get('version')}")
                continue
            if action == "create":
                if existing is not None:
                    raise TransactionError("exists", f"{kind} {object_id} already exists")
                spec = freeze(op.get("spec") or {})
                if "parts_from" in op:
                    spec = self._with_parts_from(kind, spec, op["parts_from"], current, position)
                obj = FrozenDict(id=object_id, kind=kind, version=self.index, created_at=timestamp,
                                 updated_at=timestamp,
                                 spec=self.shared.task_spec(spec) if kind == "task" else spec,
                                 status=freeze(op.get("status") or {}),
                                 **({PREVIOUS_SPEC: freeze(op[PREVIOUS_SPEC])} if op.get(PREVIOUS_SPEC) else {}))
            else:
                if existing is None:
                    raise TransactionError("not_found", f"{kind} {object_id} does not exist")
                expected = op.get("version")
                if expected != existing["version"]:
                    raise TransactionError(
                        "conflict",
                        f"{kind} {object_id} is at version {existing['version']}, "
                        f"the {action} expected version {expected}")
                if action == "delete":
                    staged[(kind, object_id)] = None
                    changes.append(Change("delete", kind, object_id, existing))
                    continue
                obj = dict(existing, version=self.index, updated_at=timestamp)
                if "spec" in op and "spec_fields" in op:
                    raise TransactionError("invalid", f"operation {position}: spec and spec_fields are exclusive")
                if "spec" in op:
                    obj["spec"] = freeze(op["spec"])
                elif "spec_fields" in op:
                    fields = op["spec_fields"]
                    if not isinstance(fields, dict):
                        raise TransactionError("invalid", f"operation {position}: spec_fields must be a map")
                    obj["spec"] = FrozenDict({**existing["spec"], **freeze(fields)})
                if kind == "task" and obj["spec"] is not existing["spec"]:  # (not for every status report)
                    obj["spec"] = self.shared.task_spec(obj["spec"])
                if "status" in op:
                    obj["status"] = freeze(op["status"])
                if PREVIOUS_SPEC in op:  # None drops it (an automatic rollback uses it up)
                    if op[PREVIOUS_SPEC] is None:
                        obj.pop(PREVIOUS_SPEC, None)
                    else:
                        obj[PREVIOUS_SPEC] = freeze(op[PREVIOUS_SPEC])
                obj = FrozenDict(obj)
            staged[(kind, object_id)] = obj
            changes.append(Change(action, kind, object_id, obj, existing))

        for (kind, object_id), obj in staged.items():
            old = self.objects[kind].get(object_id)
            if obj is None:
                self.objects[kind].pop(object_id, None)
            else:
                self.objects[kind][object_id] = obj
            self._reindex(kind, object_id, old, obj)
        return changes

    @staticmethod
    def _with_parts_from(kind: str, spec: FrozenDict, source_id: Any, current: Callable, position: int) -> FrozenDict:
        """A task create's ``spec`` with the shared parts (TASK_SHARED_FIELDS) of the task
        ``source_id`` (stored, or created earlier in the transaction), which must be of
        the same service spec version: the orchestrator sends a service's container spec
        and the rest once per transaction, not once per task (most of a create's bytes)."""
        source = current(kind, source_id) if kind == "task" and isinstance(source_id, str) else None
        if source is None:
            raise TransactionError("not_found" if kind == "task" else "invalid",
                                   f"operation {position}: parts_from names no task ({source_id!r})")
        theirs = source["spec"]
        if any(spec.get(key) != theirs.get(key) for key in ("service_id", "spec_digest")) or any(
                name in spec for name in TASK_SHARED_FIELDS):
            raise TransactionError("invalid", f"operation {position}: parts_from names task {source_id} of another "
                                              f"service spec, or the spec carries its own parts")
        return FrozenDict(spec, **{name: theirs[name] for name in TASK_SHARED_FIELDS if name in theirs})

    # -- snapshots -----------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"index": self.index, "objects": self.objects, "requests": list(self.requests.items())}

    def picture(self) -> dict:
        """``snapshot()`` that later applies do not change: shallow copies of the maps
        (the objects in them are frozen, so they are shared, not copied)."""
        return {"index": self.index, "objects": {kind: dict(objects) for kind, objects in self.objects.items()},
                "requests": list(self.requests.items())}

    @classmethod
    def from_snapshot(cls, data: dict) -> "StoreState":
        state = cls()
        state.index = data["index"]
        for kind in KINDS:
            state.objects[kind] = {object_id: freeze(obj) for object_id, obj in data["objects"].get(kind, {}).items()}
            if kind == "task":
                for object_id, obj in state.objects[kind].items():
                    spec = obj.get("spec")
                    if isinstance(spec, dict):
                        state.objects[kind][object_id] = FrozenDict(obj, spec=state.shared.task_spec(spec))
            for object_id, obj in state.objects[kind].items():
                state._reindex(kind, object_id, None, obj)
        state.requests = collections.OrderedDict((k, v) for k, v in data["requests"])
        return state


def _op_fields(op: Any, position: int) -> tuple[str, str, str]:
    if not isinstance(op, dict):
        raise TransactionError("invalid", f"operation {position} is not a map")
    action, kind, object_id = op.get("op"), op.get("kind"), op.get("id")
    if action not in ("create", "update", "delete", "expect"):
        raise TransactionError("invalid", f"operation {position}: unknown op {action!r}")
    if kind not in KINDS:
        raise TransactionError("invalid", f"operation {position}: unknown kind {kind!r}")
    if not isinstance(object_id, str) or not object_id:
        raise TransactionError("invalid", f"operation {position}: id must be a non-empty string")
    return kind, object_id, action

