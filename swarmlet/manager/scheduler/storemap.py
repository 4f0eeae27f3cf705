"""Store objects (plain dicts) as the pure scheduler sees them: nodes become `NodeInfo`,
tasks become `TaskRequest`. Pure: the scheduling loop and the global orchestrator
(which checks constraints node by node) share it.
"""
from __future__ import annotations

from collections.abc import Iterable

from swarmlet.api.objects import is_terminal
from swarmlet.api.constraints import parse_constraints
from swarmlet.manager.scheduler.types import NodeInfo, Resources, TaskRequest


def task_reservations(task_spec: dict) -> Resources:
    reservations = (task_spec.get("resources") or {}).get("reservations") or {}
    return Resources.from_cpus(reservations.get("cpus") or 0.0, reservations.get("memory") or 0)


def task_host_ports(task_spec: dict) -> tuple[tuple[str, int], ...]:
    return tuple((p.get("protocol", "tcp"), p["published"]) for p in task_spec.get("ports") or []
                 if p.get("mode") == "host" and p.get("published"))


def holds_resources(task: dict) -> bool:
    """A task counts against its node until it has stopped."""
    return bool(task["spec"].get("node_id")) and not is_terminal(task["status"].get("state", "new"))


def node_info(node: dict, tasks: Iterable[dict] = ()) -> NodeInfo:
    """`tasks`: the tasks placed on this node that hold resources (see `holds_resources`)."""
    status, spec = node["status"], node["spec"]
    description = status.get("description") or {}
    platform = description.get("platform") or {}
    capacity = description.get("resources") or {}
    info = NodeInfo(node_id=node["id"], hostname=status.get("hostname", ""), role=spec.get("role", "worker"),
                    state=status.get("state", "unknown"), availability=spec.get("availability", "active"),
                    platform_os=platform.get("os", "linux"), platform_arch=platform.get("arch", "x86_64"),
                    labels=dict(spec.get("labels") or {}), engine_labels=dict(description.get("engine_labels") or {}),
                    capacity=Resources(capacity.get("nano_cpus", 0), capacity.get("memory_bytes", 0)))
    for task in tasks:
        service_id = task["spec"]["service_id"]
        info.tasks_by_service[service_id] = info.tasks_by_service.get(service_id, 0) + 1
        info.total_tasks += 1
        info.reserved = info.reserved + task_reservations(task["spec"])
        info.host_ports.update(task_host_ports(task["spec"]))
    return info


def node_infos(nodes: Iterable[dict], tasks: Iterable[dict]) -> list[NodeInfo]:
    by_node: dict[str, list[dict]] = {}
    for task in tasks:
        if holds_resources(task):
            by_node.setdefault(task["spec"]["node_id"], []).append(task)
    return [node_info(node, by_node.get(node["id"], ())) for node in nodes]


def task_request(task: dict) -> TaskRequest:
    spec = task["spec"]
    placement = spec.get("placement") or {}
    bound = spec.get("node_id") if spec.get("slot") is None else None
    return TaskRequest(task_id=task["id"], service_id=spec["service_id"], node_id=bound, slot=spec.get("slot"),
                       reservations=task_reservations(spec), constraints=tuple(placement.get("constraints") or ()),
                       preferences=tuple(placement.get("preferences") or ()),
                       max_replicas_per_node=placement.get("max_replicas_per_node") or 0,
                       host_ports=task_host_ports(spec))


def constraints_match(node: dict, constraints: Iterable[str]) -> bool:
    info = node_info(node)
    return all(c.matches(info) for c in parse_constraints(tuple(constraints)))
