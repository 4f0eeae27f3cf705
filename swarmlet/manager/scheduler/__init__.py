"""The scheduler: pure placement of tasks onto nodes, no I/O.

Public API:
    schedule(nodes, tasks) -> list[Placement]
    plan(nodes, tasks) -> Plan            (placements and updated node copies)
    choose_tasks_to_remove(tasks_by_node, count) -> list[task_id]
    NodeInfo, TaskRequest, ResourceAmount, Placement, Plan
    parse_constraint(expr) -> Constraint, PlacementSpecError
"""

from swarmlet.api.constraints import Constraint, PlacementSpecError, parse_constraint
from swarmlet.manager.scheduler.scaledown import choose_tasks_to_remove
from swarmlet.manager.scheduler.scheduler import plan, schedule
from swarmlet.api.objects import NANO_CPUS_PER_CPU
from swarmlet.manager.scheduler.types import NodeInfo, Placement, Plan, ResourceAmount, TaskRequest

__all__ = [
    "NANO_CPUS_PER_CPU",
    "Constraint",
    "NodeInfo",
    "Placement",
    "PlacementSpecError",
    "Plan",
    "ResourceAmount",
    "TaskRequest",
    "choose_tasks_to_remove",
    "parse_constraint",
    "plan",
    "schedule",
]
