"""Filters deciding whether a node can take a task.

Each filter is a small pure unit: `accepts(node, task)` and `explain(count)`.
`filters_for(task)` returns only the filters that apply to a task, in the order
their rejections are reported.
"""

from __future__ import annotations

from swarmlet.api.constraints import Constraint
from swarmlet.api.objects import Availability, NodeState
from swarmlet.manager.scheduler.types import NodeInfo, TaskRequest

# Architectures reported under different names by different tools: engines report the
# kernel's (`x86_64`, `aarch64`), images Go's (`amd64`, `arm64`). Compared under Go's names,
# as SwarmKit's platform filter does.
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armv7l": "arm"}


def nodes_phrase(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


class Filter:
    name = "filter"
    reason = "rejected"
    # True when the verdict can change as tasks are placed on the node; such
    # filters are re-checked on the chosen node before every placement.
    changes_as_node_fills = False

    def accepts(self, node: NodeInfo, task: TaskRequest) -> bool:
        raise NotImplementedError

    def explain(self, count: int) -> str:
        return f"{self.reason} on {nodes_phrase(count)}"


class ReadyFilter(Filter):
    name = "ready"
    reason = "node not ready"

    def accepts(self, node, task):
        return node.state == NodeState.READY


class AvailabilityFilter(Filter):
    """Paused and drained nodes keep their tasks but get no new ones."""

    name = "availability"
    reason = "node paused or drained"

    def accepts(self, node, task):
        return node.availability == Availability.ACTIVE


class ResourceFilter(Filter):
    """Rejects a node whose free amount (capacity minus reserved) of one resource is too small."""

    changes_as_node_fills = True

    def __init__(self, name: str, resource: str):
        self.name = name
        self.reason = f"insufficient {name}"
        self.resource = resource  # a field of ResourceAmount

    def accepts(self, node, task):
        free = getattr(node.capacity, self.resource) - getattr(node.reserved, self.resource)
        return getattr(task.reservations, self.resource) <= free


CPU_FILTER = ResourceFilter("cpu", "nano_cpus")
MEMORY_FILTER = ResourceFilter("memory", "memory_bytes")


class ConstraintFilter(Filter):
    """One filter per constraint, so the explanation names the unmet expression."""

    name = "constraint"

    def __init__(self, constraint: Constraint):
        self.constraint = constraint
        self.reason = f"constraint {constraint.expression} unmet"

    def accepts(self, node, task):
        return self.constraint.matches(node)


def normalize_arch(arch: str) -> str:
    arch = arch.lower()
    return _ARCH_ALIASES.get(arch, arch)


def platform_supported(node_os: str, node_arch: str, platforms) -> bool:
    """True if any (os, arch) matches the node; an empty os or arch is a wildcard."""
    node_os, node_arch = node_os.lower(), normalize_arch(node_arch)
    return any(
        (not os or os.lower() == node_os) and (not arch or normalize_arch(arch) == node_arch)
        for os, arch in platforms
    )


class PlatformFilter(Filter):
    name = "platform"
    reason = "unsupported platform"

    def accepts(self, node, task):
        return platform_supported(node.platform_os, node.platform_arch, task.platforms)


class HostPortFilter(Filter):
    name = "host-port"
    reason = "host-mode published port in use"
    changes_as_node_fills = True

    def accepts(self, node, task):
        return node.host_ports.isdisjoint(task.host_ports)


class MaxReplicasFilter(Filter):
    name = "max-replicas"
    changes_as_node_fills = True

    def __init__(self, limit: int):
        self.reason = f"max replicas per node ({limit}) reached"

    def accepts(self, node, task):
        return node.tasks_by_service.get(task.service_id, 0) < task.max_replicas_per_node


_READY = ReadyFilter()
_AVAILABILITY = AvailabilityFilter()
_PLATFORM = PlatformFilter()
_HOST_PORT = HostPortFilter()


def filters_for(task: TaskRequest) -> tuple[Filter, ...]:
    """The filters that apply to `task`, in reporting order (as in Swarm's pipeline)."""
    filters: list[Filter] = [_READY, _AVAILABILITY]
    if task.reservations.nano_cpus:
        filters.append(CPU_FILTER)
    if task.reservations.memory_bytes:
        filters.append(MEMORY_FILTER)
    filters.extend(ConstraintFilter(constraint) for constraint in task.parsed_constraints)
    if task.platforms:
        filters.append(_PLATFORM)
    # Port 0 means "any free port", chosen by the engine, so it cannot conflict.
    if any(port for _, port in task.host_ports):
        filters.append(_HOST_PORT)
    if task.max_replicas_per_node > 0:
        filters.append(MaxReplicasFilter(task.max_replicas_per_node))
    return tuple(filters)
