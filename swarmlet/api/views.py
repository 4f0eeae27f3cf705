"""Typed, read-only views of the objects the store keeps.

The state machine stores each object as a frozen dict (``swarmlet.store.state``): that
is what Raft replicates and snapshots, and what goes on the wire. Everything above the
store reads objects through these views instead: ``task.spec.node_id``,
``task.status.state`` (a :class:`TaskState`), ``node.spec.availability``. A view costs
one small object and no copy; a field is read from the frozen dict when it is asked
for, so listing 100,000 tasks does not convert 100,000 tasks. A view cannot change
what it shows: to change an object, build the new spec or status (``replace``) and
commit it.

Every field states its default once, here (or in ``swarmlet.api.specs`` for service
specs), so no reader invents its own.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Callable, ClassVar, Generic, Mapping, TypeVar, overload

from swarmlet.api.ipam import DEFAULT_DATA_PLANE, OVERLAY_DRIVER, AddressPool
from swarmlet.api.limits import Limits
from swarmlet.api.objects import Availability, DesiredState, NodeState, ServiceMode, TaskState
from swarmlet.api.specs import (DEFAULT_NETWORK_DRIVER, ContainerSpec, NetworkAttachment, Placement, PortConfig, ResourceRequirements,
                                RestartPolicy, ServiceSpec)

T = TypeVar("T")


class Field(Generic[T]):
    """One field of a view: ``Field(default)`` or ``Field(default, convert)``; the value
    is read from the underlying dict (by the attribute's name unless ``key`` is given)
    and passed through ``convert`` unless it is None."""

    def __init__(self, default: Any = None, convert: Callable[[Any], T] | None = None, *, key: str | None = None):
        self.default = default
        self.convert = _fast_enum(convert) if isinstance(convert, type) and issubclass(convert, Enum) else convert
        self.key = key

    def __set_name__(self, owner, name: str) -> None:
        self.key = self.key or name

    @overload
    def __get__(self, view: None, owner: type) -> "Field[T]": ...

    @overload
    def __get__(self, view: "View", owner: type) -> T: ...

    def __get__(self, view, owner):
        if view is None:
            return self
        value = view.raw.get(self.key)
        if value is None:
            value = self.default
            if value is None:
                return None
        convert = self.convert
        return value if convert is None else convert(value)


def _fast_enum(enum: type[Enum]) -> Callable[[Any], Enum]:
    """``enum(value)`` as one dict lookup: the orchestrator reads a task's states a few
    times per task per pass, and ``EnumType.__call__`` was a third of a 10,000-task
    reconcile. Values that are not members still go through the enum (its error)."""
    members = enum._value2member_map_

    def convert(value):
        member = members.get(value)
        return member if member is not None else enum(value)
    return convert


class View:
    """A typed view of a (frozen) mapping: equal when the mappings are equal."""

    __slots__ = ("raw",)

    def __init__(self, raw: Mapping):
        self.raw = raw

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.raw == self.raw

    __hash__ = None  # like the dicts they show

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.raw)!r})"

    def replace(self, **changes) -> dict:
        """A plain dict of this view's fields with ``changes`` applied: what to commit."""
        return dict(self.raw, **changes)


class StoredObject(View):
    """What every stored object has (SwarmKit's ``Meta``): its ID, the store index of
    the transaction that last wrote it (``version``: name it in an update or delete),
    and when it was created and last updated (the proposer's clock)."""

    __slots__ = ()
    kind: ClassVar[str]

    id: Field[str] = Field()
    version: Field[int] = Field(0)
    created_at: Field[float] = Field(0.0)
    updated_at: Field[float] = Field(0.0)


# -- tasks -------------------------------------------------------------------------------------

class TaskSpec(View):
    """What a task is to run and where: taken from its service when it was created."""

    __slots__ = ()
    service_id: Field[str] = Field()
    service_name: Field[str] = Field("")
    stack: Field[str] = Field("")
    mode: Field[ServiceMode] = Field(ServiceMode.REPLICATED, ServiceMode)
    slot: Field[int | None] = Field()  # replicated modes; None for global ones
    node_id: Field[str | None] = Field()  # global: bound at creation; replicated: set by the scheduler
    desired_state: Field[DesiredState] = Field(DesiredState.RUNNING, DesiredState)
    spec_digest: Field[str] = Field("")
    not_before: Field[float] = Field(0.0)  # desired "ready" until then (a restart delay)
    restarts: Field[tuple] = Field((), tuple)  # timestamps of the slot's earlier restarts
    container: Field[ContainerSpec] = Field(None, ContainerSpec.from_dict)
    resources: Field[ResourceRequirements] = Field({}, ResourceRequirements.from_dict)
    restart_policy: Field[RestartPolicy] = Field({}, RestartPolicy.from_dict)
    placement: Field[Placement] = Field({}, Placement.from_dict)
    networks: Field[list] = Field((), lambda raw: [NetworkAttachment.from_dict(n) for n in raw])
    ports: Field[list] = Field((), lambda raw: [PortConfig.from_dict(p) for p in raw])
    # network ID -> the task's address on it ("10.0.1.7"), allocated when the task is
    # placed (manager/allocator.py); empty for networks that are not overlays
    network_addresses: Field[Mapping[str, str]] = Field({})


class TaskStatus(View):
    __slots__ = ()
    state: Field[TaskState] = Field(TaskState.NEW, TaskState)
    timestamp: Field[float] = Field(0.0)
    message: Field[str] = Field("")
    err: Field[str | None] = Field()
    exit_code: Field[int | None] = Field()
    container_id: Field[str | None] = Field()
    started_at: Field[float | None] = Field()


class Task(StoredObject):
    __slots__ = ()
    kind = "task"
    spec: Field[TaskSpec] = Field({}, TaskSpec)
    status: Field[TaskStatus] = Field({}, TaskStatus)


# -- nodes ---------------------------------------------------------------------------------------

class NodeSpec(View):
    """What the operator asks of a node."""

    __slots__ = ()
    role: Field[str] = Field("worker")
    availability: Field[Availability] = Field(Availability.ACTIVE, Availability)
    labels: Field[Mapping[str, str]] = Field({})


class NodeStatus(View):
    """What the node and its dispatcher session report."""

    __slots__ = ()
    state: Field[NodeState] = Field(NodeState.UNKNOWN, NodeState)
    message: Field[str] = Field("")
    addr: Field[str] = Field("")
    hostname: Field[str] = Field("")
    api_address: Field[str | None] = Field()
    raft_address: Field[str | None] = Field()
    description: Field[Mapping] = Field({})  # hostname, platform, resources, engine labels
    cert_serial: Field[int | None] = Field()


class Node(StoredObject):
    __slots__ = ()
    kind = "node"
    spec: Field[NodeSpec] = Field({}, NodeSpec)
    status: Field[NodeStatus] = Field({}, NodeStatus)

    @property
    def data_plane(self) -> str:
        """What carries overlay networks on the node, as its session's hello reported it."""
        return self.status.description.get("data_plane") or DEFAULT_DATA_PLANE

    @property
    def name(self) -> str:
        """What operators call a node: its hostname."""
        return self.status.hostname


# -- services, the cluster, files, networks ------------------------------------------------

class Service(StoredObject):
    __slots__ = ()
    kind = "service"
    # The spec as the stack API wrote it (ServiceSpec.to_dict() with cluster names).
    raw_spec: Field[Mapping] = Field({}, key="spec")
    status: Field[Mapping] = Field({})  # {"update": {...}} (rolling update), {"message": ...}
    # The spec before the last update, to roll back to (None: never updated, or used up by
    # an automatic rollback, as in SwarmKit).
    previous_spec: Field[Mapping | None] = Field()

    @property
    def spec(self) -> ServiceSpec:
        return ServiceSpec.from_dict(self.raw["spec"])

    @property
    def name(self) -> str:
        return self.raw["spec"]["name"]


class Cluster(StoredObject):
    __slots__ = ()
    kind = "cluster"
    spec: Field[Mapping] = Field({})  # CA certificate and key, join-token secrets, settings
    status: Field[Mapping] = Field({})

    @property
    def removed_node_ids(self) -> frozenset[str]:
        return frozenset(self.status.get("removed_node_ids") or ())

    @property
    def revoked_serials(self) -> frozenset[str]:
        """Certificate serials revoked one by one (hex), by `swarmlet admin revoke SERIAL`."""
        return frozenset(self.status.get("revoked_serials") or ())

    @property
    def admins(self) -> Mapping:
        """Operator identities: name -> {"role", "serials": [hex, …], "revoked": bool} (swarmlet/manager/admins.py)."""
        return self.status.get("admins") or {}

    @property
    def limits(self) -> Limits:
        return Limits.from_spec(self.spec.get("limits"))

    @property
    def address_pool(self) -> AddressPool:
        return AddressPool.from_spec(self.spec.get("address_pool"))


class Secret(StoredObject):
    __slots__ = ()
    kind = "secret"

    @property
    def name(self) -> str:
        return self.raw["spec"]["name"]
    spec: Field[Mapping] = Field({})  # {"name", "data": bytes, "labels"}


class Config(StoredObject):
    __slots__ = ()
    kind = "config"

    @property
    def name(self) -> str:
        return self.raw["spec"]["name"]
    spec: Field[Mapping] = Field({})


class Network(StoredObject):
    """spec: the stack API's (name, driver, driver_opts, labels, attachable, internal,
    ipam); status: what the allocator gave it (manager/allocator.py): ``subnet``,
    ``vni``, ``gateways`` (node ID -> that node's bridge address) and ``vips`` (service
    ID -> the service's address on this network)."""

    __slots__ = ()
    kind = "network"
    spec: Field[Mapping] = Field({})
    status: Field[Mapping] = Field({})

    @property
    def name(self) -> str:
        return self.raw["spec"]["name"]

    @property
    def is_overlay(self) -> bool:
        return self.spec.get("driver", DEFAULT_NETWORK_DRIVER) == OVERLAY_DRIVER

    @property
    def internal(self) -> bool:
        return bool(self.spec.get("internal"))

    @property
    def subnet(self) -> str | None:
        return self.status.get("subnet")

    @property
    def vni(self) -> int | None:
        return self.status.get("vni")

    @property
    def gateways(self) -> Mapping[str, str]:
        return self.status.get("gateways") or {}

    @property
    def vips(self) -> Mapping[str, str]:
        return self.status.get("vips") or {}


class StackRevision(StoredObject):
    """One ``stack deploy`` (or ``stack rollback``) of a stack, numbered: what the stack's
    services, networks, secrets and configs were once it was applied, who applied it,
    and how it went (``status.outcome``). ID ``<stack>@<number>``."""

    __slots__ = ()
    kind = "stack_revision"
    spec: Field[Mapping] = Field({})  # {"stack", "number", "by", "rollback_of", "services", "networks", "secrets", "configs"}
    status: Field[Mapping] = Field({})  # {"outcome": "deployed" | "converged" | "failed: …" | …}

    @property
    def stack(self) -> str:
        return self.raw["spec"]["stack"]

    @property
    def number(self) -> int:
        return self.raw["spec"]["number"]


def manager_api_addresses(nodes: list[Node]) -> list[str]:
    return sorted(n.status.api_address for n in nodes if n.spec.role == "manager" and n.status.api_address)


class Leadership(StoredObject):
    """The one claim of the current leadership (store.py, "Fenced leader writes"): every
    leader-only write expects its version. ID ``leadership``."""

    __slots__ = ()
    kind = "leadership"
    spec: Field[Mapping] = Field({})  # {"address": the Raft address of the manager that claimed}

    @property
    def address(self) -> str:
        return self.spec.get("address", "")


VIEWS: dict[str, type[StoredObject]] = {cls.kind: cls for cls in (Task, Node, Service, Cluster, Secret, Config, Network,
                                                                   StackRevision, Leadership)}
