"""The scheduler: pure placement of tasks onto nodes, no I/O.

Public API:
    schedule(nodes, tasks) -> list[Placement]
    plan(nodes, tasks) -> Plan            (placements and updated node copies)
    choose_tasks_to_remove(tasks_by_node, count) -> list[task_id]
    NodeInfo, TaskRequest, Resources, Placement, Plan
    parse_constraint(expr) -> Constraint, PlacementSpecError
"""

from swarmlet.api.constraints import Constraint, PlacementSpecError, parse_constraint
from swarmlet.manager.scheduler.scaledown import choose_tasks_to_remove
from swarmlet.manager.scheduler.scheduler import plan, schedule
from swarmlet.manager.scheduler.types import NANO_CPUS_PER_CPU, NodeInfo, Placement, Plan, Resources, TaskRequest

__all__ = [
    "NANO_CPUS_PER_CPU",
    "Constraint",
    "NodeInfo",
    "Placement",
    "PlacementSpecError",
    "Plan",
    "Resources",
    "TaskRequest",
    "choose_tasks_to_remove",
    "parse_constraint",
    "plan",
    "schedule",
]
