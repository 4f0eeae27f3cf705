"""The dispatcher session's wire protocol, the one module both ends import.

Every node (workers and managers alike) holds one session with the leader: a WebSocket
over mutual TLS at ``SESSION_PATH``, one msgpack map per binary frame, its ``type``
naming the message and the other keys its fields.

- node -> leader: ``Hello`` (the node's description), then ``Heartbeat`` every period.
- leader -> node: ``Welcome`` (heartbeat period, managers, the node's spec), then
  ``HeartbeatAck`` (the same, so nodes learn of role changes and new managers), or a
  ``Redirect`` instead of a welcome when this manager is not the leader.
- leader -> node: ``Assignments``, the node's whole assignment set, at session start
  (and whenever it changes, to a node of protocol 1). A node that says protocol 2 in its
  hello (``SESSION_PROTOCOL``) then gets ``AssignmentChanges`` instead: only the tasks,
  secrets and configs that changed or went, as Swarm's dispatcher sends incremental
  assignments after the first complete set. Each set and change carries a sequence
  number and each change the one it applies to; a node that finds a gap
  (``OutOfSequence``) closes the session, and the next one starts with a whole set.
- leader -> node: ``NetworkPlaneUpdate``, the node's whole ``NetworkPlane``
  (swarmlet.api.netplane), to nodes that run the overlay data plane: at session start
  and whenever it changes, always before an assignment set that needs it.
- node -> leader: ``Status``, task status changes (a full report at session start), and
  every ``USAGE_PERIOD`` its running tasks' usage (``usage``, for autoscaling).
- leader -> node ``Logs`` and ``LogsCancel``; node -> leader ``Log`` (lines) and
  ``LogEnd`` (with an ``error`` when the task's output cannot be read).

``pack`` and ``unpack`` are the only way onto and off the wire; ``unpack`` checks every
field against the message's annotations, so a handler only ever sees well-formed
messages.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

import msgpack

from swarmlet.api.objects import DEFAULT_HEARTBEAT_PERIOD

SESSION_PATH = "/v1/dispatcher/session"
# One message is one WebSocket frame; an assignment set carries the secrets and
# configs its tasks use (each up to 1000 KB), so the limit is generous.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
USAGE_PERIOD = 2.0  # how often a node reports its running tasks' usage (seconds)
HANDSHAKE_TIMEOUT = 10.0  # for the hello, and for the welcome or redirect that answers it
# The session protocol this side speaks: 1, whole assignment sets only; 2, assignment
# changes after the first whole set. A hello without the field is a protocol-1 node's.
SESSION_PROTOCOL = 2


class MessageType(enum.StrEnum):
    HELLO = "hello"
    WELCOME = "welcome"
    REDIRECT = "redirect"
    HEARTBEAT = "heartbeat"
    HEARTBEAT_ACK = "heartbeat_ack"
    ASSIGNMENTS = "assignments"
    ASSIGNMENT_CHANGES = "assignment_changes"
    STATUS = "status"
    LOGS = "logs"
    LOGS_CANCEL = "logs_cancel"
    LOG = "log"
    LOG_END = "log_end"
    NETWORK_PLANE = "network_plane"


class ProtocolError(ValueError):
    """A frame that is not a well-formed session message."""


class OutOfSequence(ProtocolError):
    """Assignment changes that do not apply to the set this node holds: resync."""


class UnknownMessage(ProtocolError):
    """A well-formed frame of a type this side does not know (a newer peer): ignorable."""

    def __init__(self, message_type: str):
        super().__init__(f"unknown message type {message_type!r}")
        self.type = message_type


# -- nested shapes --------------------------------------------------------------------------------

# How far the store says an assigned task got: not yet taken up by its node, under way,
# or ended (a restarted agent must not start again a task that already ran).
PHASE_NEW, PHASE_ACTIVE, PHASE_ENDED = "new", "active", "ended"


class AssignedTask(TypedDict):
    id: str
    spec: dict  # the task's stored spec (read with api.views.TaskSpec)
    phase: str  # PHASE_NEW, PHASE_ACTIVE or PHASE_ENDED


class FileData(TypedDict):
    """A secret's or config's content, by its cluster name in an assignment set."""
    data: bytes
    id: str


class StatusUpdate(TypedDict):
    task_id: str
    status: dict


class TaskUsageSample(TypedDict):
    """A running task's usage over the last period (for autoscaling)."""
    task_id: str
    at: float  # the node's clock
    cpus: float  # CPUs busy on average since the previous sample (1.0 = one core)
    memory: int  # bytes


# -- messages -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[MessageType]


@dataclass(frozen=True)
class Hello(Message):
    TYPE = MessageType.HELLO
    description: dict = field(default_factory=dict)
    protocol: int = 1  # the highest SESSION_PROTOCOL the node speaks


@dataclass(frozen=True)
class Welcome(Message):
    TYPE = MessageType.WELCOME
    heartbeat_period: float = DEFAULT_HEARTBEAT_PERIOD
    managers: list[str] = field(default_factory=list)
    node: dict | None = None  # {"spec": the node's spec}, None if the store has no such node


@dataclass(frozen=True)
class HeartbeatAck(Welcome):
    TYPE = MessageType.HEARTBEAT_ACK


@dataclass(frozen=True)
class Redirect(Message):
    TYPE = MessageType.REDIRECT
    leader: str | None = None  # the leader's API address, if this manager knows it


@dataclass(frozen=True)
class Heartbeat(Message):
    TYPE = MessageType.HEARTBEAT


@dataclass(frozen=True)
class Assignments(Message):
    """The node's whole assignment set: it replaces whatever the node held."""
    TYPE = MessageType.ASSIGNMENTS
    tasks: list[AssignedTask] = field(default_factory=list)
    secrets: dict[str, FileData] = field(default_factory=dict)
    configs: dict[str, FileData] = field(default_factory=dict)
    sequence: int = 0  # what the changes after it apply to (protocol 2)


@dataclass(frozen=True)
class AssignmentChanges(Message):
    """What changed in the node's assignment set since the message numbered
    ``applies_to``: tasks, secrets and configs added or changed (whole entries, by ID or
    name), and the ones gone. Protocol 2 only."""
    TYPE = MessageType.ASSIGNMENT_CHANGES
    sequence: int
    applies_to: int
    tasks: list[AssignedTask] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # task IDs
    secrets: dict[str, FileData] = field(default_factory=dict)
    removed_secrets: list[str] = field(default_factory=list)  # names
    configs: dict[str, FileData] = field(default_factory=dict)
    removed_configs: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:  # anything to send at all
        return bool(self.tasks or self.removed or self.secrets or self.removed_secrets or self.configs
                    or self.removed_configs)


@dataclass
class AssignmentSet:
    """A node's assignment set as a whole, as both ends hold it: the leader what it last
    sent (to send only the differences), the node what it received (to apply them).
    Pure: building, diffing and applying."""
    sequence: int = 0
    tasks: dict[str, AssignedTask] = field(default_factory=dict)
    secrets: dict[str, FileData] = field(default_factory=dict)
    configs: dict[str, FileData] = field(default_factory=dict)

    @classmethod
    def of(cls, message: Assignments) -> AssignmentSet:
        return cls(message.sequence, {t["id"]: t for t in message.tasks}, dict(message.secrets),
                   dict(message.configs))

    def whole(self) -> Assignments:
        return Assignments(tasks=list(self.tasks.values()), secrets=dict(self.secrets), configs=dict(self.configs),
                           sequence=self.sequence)

    def changes_to(self, target: Assignments) -> AssignmentChanges:
        """What turns this set into ``target`` (numbered one after this one)."""
        tasks = {t["id"]: t for t in target.tasks}
        return AssignmentChanges(
            sequence=self.sequence + 1, applies_to=self.sequence,
            tasks=[t for task_id, t in tasks.items() if self.tasks.get(task_id) != t],
            removed=sorted(set(self.tasks) - set(tasks)),
            secrets={k: v for k, v in target.secrets.items() if self.secrets.get(k) != v},
            removed_secrets=sorted(set(self.secrets) - set(target.secrets)),
            configs={k: v for k, v in target.configs.items() if self.configs.get(k) != v},
            removed_configs=sorted(set(self.configs) - set(target.configs)))

    def apply(self, changes: AssignmentChanges) -> None:
        """Take ``changes`` (``OutOfSequence`` when they follow another message than the
        last one this set took; the set is left as it was)."""
        if changes.applies_to != self.sequence:
            raise OutOfSequence(f"assignment changes {changes.sequence} apply to {changes.applies_to}, "
                                f"but the set held is {self.sequence}")
        for task_id in changes.removed:
            self.tasks.pop(task_id, None)
        self.tasks.update((t["id"], t) for t in changes.tasks)
        for held, changed, removed in ((self.secrets, changes.secrets, changes.removed_secrets),
                                       (self.configs, changes.configs, changes.removed_configs)):
            for name in removed:
                held.pop(name, None)
            held.update(changed)
        self.sequence = changes.sequence


@dataclass(frozen=True)
class NetworkPlaneUpdate(Message):
    """A message of its own rather than a field of ``Assignments``: a plane changes when
    tasks on *other* nodes start and stop (backends, peers), which leaves this node's
    assignment set alone, and the assignment set carries the secrets of its tasks, not
    to be re-sent whenever a backend moves elsewhere. An older agent ignores it."""
    TYPE = MessageType.NETWORK_PLANE
    plane: dict = field(default_factory=dict)  # NetworkPlane.to_wire()


@dataclass(frozen=True)
class Status(Message):
    TYPE = MessageType.STATUS
    updates: list[StatusUpdate] = field(default_factory=list)
    # Every running task's usage, one batch per node every USAGE_PERIOD (may come alone).
    usage: list[TaskUsageSample] = field(default_factory=list)


@dataclass(frozen=True)
class Logs(Message):
    TYPE = MessageType.LOGS
    request_id: str
    task_id: str
    tail: int | None = None  # None: all
    follow: bool = False


@dataclass(frozen=True)
class LogsCancel(Message):
    TYPE = MessageType.LOGS_CANCEL
    request_id: str
    task_id: str


@dataclass(frozen=True)
class Log(Message):
    TYPE = MessageType.LOG
    request_id: str
    task_id: str
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LogEnd(Message):
    TYPE = MessageType.LOG_END
    request_id: str
    task_id: str
    error: str | None = None


MESSAGES: dict[str, type[Message]] = {cls.TYPE.value: cls for cls in (
    Hello, Welcome, HeartbeatAck, Redirect, Heartbeat, Assignments, AssignmentChanges, Status, Logs, LogsCancel,
    Log, LogEnd, NetworkPlaneUpdate)}


# -- the wire -------------------------------------------------------------------------------------------

def pack(message: Message) -> bytes:
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    return msgpack.packb({"type": message.TYPE.value, **fields}, use_bin_type=True)


def unpack(data: bytes) -> Message:
    """The message in one frame; :class:`ProtocolError` if it is not a valid one."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"a session message is at most {MAX_MESSAGE_SIZE} bytes, this one {len(data)}")
    try:
        wire = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as err:  # msgpack raises several types
        raise ProtocolError(f"not msgpack: {err}") from None
    if not isinstance(wire, dict) or not isinstance(wire.get("type"), str):
        raise ProtocolError("a session message must be a map with a 'type'")
    cls = MESSAGES.get(wire["type"])
    if cls is None:
        raise UnknownMessage(wire["type"])
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in wire:
            if not _conforms(wire[f.name], hints[f.name]):
                raise ProtocolError(f"{cls.TYPE}: field {f.name!r} is not {_describe(hints[f.name])}")
            values[f.name] = wire[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ProtocolError(f"{cls.TYPE}: field {f.name!r} is missing")
    return cls(**values)  # keys this side does not know (a newer peer's) are left out


@functools.cache  # resolving the annotations costs more than checking a heartbeat
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:  # msgpack keeps 1.0 and 1 apart; either is a period
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.is_typeddict(hint):
        return isinstance(value, dict) and all(
            key in value and _conforms(value[key], key_hint) for key, key_hint in _hints(hint).items())
    if origin is list:
        return isinstance(value, list) and all(_conforms(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(k, args[0]) and _conforms(v, args[1])
                                               for k, v in value.items())
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("swarmlet.api.session.", "")
