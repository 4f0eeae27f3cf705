"""Working copies of nodes and how a placement changes them."""

from __future__ import annotations

from dataclasses import replace

from swarmlet.manager.scheduler.types import NodeInfo, ResourceAmount, TaskRequest

_NOTHING = ResourceAmount()


def copy_node(node: NodeInfo) -> NodeInfo:
    """A copy whose placement state can change without touching the caller's node."""
    return replace(node, tasks_by_service=dict(node.tasks_by_service), host_ports=set(node.host_ports))


def add_task(node: NodeInfo, task: TaskRequest) -> None:
    """Record `task` as placed on `node` (a working copy): counters, reservations, ports."""
    node.tasks_by_service[task.service_id] = node.tasks_by_service.get(task.service_id, 0) + 1
    node.total_tasks += 1
    if task.reservations != _NOTHING:
        node.reserved = node.reserved + task.reservations
    # Port 0 is picked by the engine at run time, so it never occupies a fixed port.
    node.host_ports.update(port for port in task.host_ports if port[1])
