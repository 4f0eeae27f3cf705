"""Input and output types of the scheduler.

The leader maps store objects into `NodeInfo` and `TaskRequest`, calls
`schedule`/`plan`, and writes the resulting `Placement`s back. Nothing here
does I/O.

CPU is counted in integer nano-CPUs (1 CPU = 1_000_000_000) everywhere, as in
Swarm, so that reservations add and subtract exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmlet.api.constraints import Constraint, parse_constraints, parse_preferences
from swarmlet.api.objects import NANO_CPUS_PER_CPU, Availability, NodeState



@dataclass(frozen=True, slots=True)
class ResourceAmount:
    """An amount of CPU and memory as the scheduler adds them up: integers (nano-CPUs,
    bytes), as SwarmKit counts them. What a service asks for is ``api.specs.Resources``
    (CPUs as a float); ``from_cpus`` converts."""

    nano_cpus: int = 0
    memory_bytes: int = 0

    @classmethod
    def from_cpus(cls, cpus: float, memory_bytes: int = 0) -> ResourceAmount:
        return cls(round(cpus * NANO_CPUS_PER_CPU), memory_bytes)

    def __add__(self, other: ResourceAmount) -> ResourceAmount:
        return ResourceAmount(self.nano_cpus + other.nano_cpus, self.memory_bytes + other.memory_bytes)


@dataclass(slots=True)
class NodeInfo:
    """A node as the scheduler sees it: its description plus what already runs on it.

    Mutable only so that the scheduler's private working copies can be updated
    in place; `schedule`/`plan` never modify the objects they are given.
    """

    node_id: str
    hostname: str = ""
    role: str = "worker"  # 'manager' | 'worker'
    state: NodeState = NodeState.READY
    availability: Availability = Availability.ACTIVE
    platform_os: str = "linux"
    platform_arch: str = "x86_64"
    labels: dict[str, str] = field(default_factory=dict)
    engine_labels: dict[str, str] = field(default_factory=dict)
    capacity: ResourceAmount = ResourceAmount()
    tasks_by_service: dict[str, int] = field(default_factory=dict)
    total_tasks: int = 0
    reserved: ResourceAmount = ResourceAmount()
    host_ports: set[tuple[str, int]] = field(default_factory=set)  # (protocol, published_port)


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """One task waiting for a node.

    Constraints and preferences are parsed when the request is built, so a
    malformed expression raises `PlacementSpecError` here, before scheduling.
    """

    task_id: str
    service_id: str
    node_id: str | None = None  # set for global-service tasks: only this node is considered
    slot: int | None = None  # informational for replicated tasks; does not affect placement
    reservations: ResourceAmount = ResourceAmount()
    constraints: tuple[str, ...] = ()
    preferences: tuple[str, ...] = ()  # label keys to spread over, outermost first
    max_replicas_per_node: int = 0  # 0 = unlimited
    host_ports: tuple[tuple[str, int], ...] = ()  # host-mode published (protocol, port)
    platforms: tuple[tuple[str, str], ...] = ()  # supported (os, arch); empty = any
    parsed_constraints: tuple[Constraint, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples: requests are hashed when grouped.
        for name in ("constraints", "preferences", "host_ports", "platforms"):
            object.__setattr__(self, name, tuple(tuple(v) if isinstance(v, list) else v for v in getattr(self, name)))
        object.__setattr__(self, "parsed_constraints", parse_constraints(self.constraints))
        parse_preferences(self.preferences)

    @property
    def requirements(self) -> tuple:
        """Everything that decides where the task may go; equal requirements = one batch."""
        return (
            self.service_id,
            self.node_id,
            self.reservations,
            self.constraints,
            self.preferences,
            self.max_replicas_per_node,
            self.host_ports,
            self.platforms,
        )


@dataclass(frozen=True, slots=True)
class Placement:
    task_id: str
    node_id: str | None
    explanation: str = ""  # why no node was found; empty when placed


@dataclass(frozen=True, slots=True)
class Plan:
    """Result of `plan`: placements in input order, and updated copies of the nodes."""

    placements: list[Placement]
    nodes: list[NodeInfo]
