"""Store objects as the pure scheduler sees them: nodes become `NodeInfo`, tasks become
`TaskRequest`. Pure: the scheduling loop and the global orchestrator (which checks
constraints node by node) share it. It reads the store's typed views
(``swarmlet.api.views``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from swarmlet.api.specs import PortConfig
from swarmlet.api.views import Node, Task, TaskSpec
from swarmlet.api.objects import is_terminal
from swarmlet.api.constraints import parse_constraints
from swarmlet.manager.scheduler.types import NodeInfo, ResourceAmount, TaskRequest

PUBLISH_MODE_HOST = "host"


def task_reservations(spec: TaskSpec) -> ResourceAmount:
    reservations = spec.resources.reservations
    return ResourceAmount.from_cpus(reservations.cpus or 0.0, reservations.memory or 0)


def host_ports(ports: list[PortConfig]) -> tuple[tuple[str, int], ...]:
    return tuple((p.protocol, p.published) for p in ports if p.mode == PUBLISH_MODE_HOST and p.published)


def holds_resources(task: Task) -> bool:
    """A task counts against its node until it has stopped."""
    return bool(task.spec.node_id) and not is_terminal(task.status.state)


def node_info(node: Node, tasks: Iterable[Task] = ()) -> NodeInfo:
    """`tasks`: the tasks placed on this node that hold resources (see `holds_resources`)."""
    status, spec = node.status, node.spec
    description = status.description
    platform = description.get("platform") or {}
    capacity = description.get("resources") or {}
    info = NodeInfo(node_id=node.id, hostname=status.hostname, role=spec.role, state=status.state,
                    availability=spec.availability,
                    platform_os=platform.get("os", "linux"), platform_arch=platform.get("arch", "x86_64"),
                    labels=dict(spec.labels), engine_labels=dict(description.get("engine_labels") or {}),
                    capacity=ResourceAmount(capacity.get("nano_cpus", 0), capacity.get("memory_bytes", 0)))
    for task in tasks:
        task_spec = task.spec
        service_id = task_spec.service_id
        info.tasks_by_service[service_id] = info.tasks_by_service.get(service_id, 0) + 1
        info.total_tasks += 1
        info.reserved = info.reserved + task_reservations(task_spec)
        info.host_ports.update(host_ports(task_spec.ports))
    return info


def node_infos(nodes: Iterable[Node], tasks: Iterable[Task]) -> list[NodeInfo]:
    by_node: dict[str, list[Task]] = {}
    for task in tasks:
        if holds_resources(task):
            by_node.setdefault(task.spec.node_id, []).append(task)
    return [node_info(node, by_node.get(node.id, ())) for node in nodes]


def task_request(task: Task, like: TaskRequest | None = None) -> TaskRequest:
    """``like``: the request of a task made from the same service spec (same service and
    ``spec_digest``), whose requirements are taken instead of converted again."""
    spec = task.spec
    bound = spec.node_id if spec.slot is None else None
    if like is not None:
        return replace(like, task_id=task.id, node_id=bound, slot=spec.slot)
    placement = spec.placement
    return TaskRequest(task_id=task.id, service_id=spec.service_id, node_id=bound, slot=spec.slot,
                       reservations=task_reservations(spec), constraints=tuple(placement.constraints),
                       preferences=tuple(placement.preferences),
                       max_replicas_per_node=placement.max_replicas_per_node,
                       host_ports=host_ports(spec.ports),
                       platforms=tuple((p.os, p.architecture) for p in placement.platforms))


def constraints_match(node: Node, constraints: Iterable[str]) -> bool:
    info = node_info(node)
    return all(c.matches(info) for c in parse_constraints(tuple(constraints)))
