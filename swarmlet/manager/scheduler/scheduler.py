"""Batch scheduling: which node each pending task goes to.

Tasks with identical requirements (same service, reservations, constraints,
preferences, ports, ...) form one batch. A batch runs the full filter pipeline
once over the candidate nodes, then places its tasks one by one through a
heap, re-checking on the chosen node only the filters that change as it fills.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from swarmlet.api.constraints import parse_preferences
from swarmlet.manager.scheduler.decision_tree import build_tree
from swarmlet.manager.scheduler.nodeinfo import copy_node
from swarmlet.manager.scheduler.pipeline import NO_SUITABLE_NODE, Pipeline
from swarmlet.manager.scheduler.types import NodeInfo, Placement, Plan, TaskRequest


def group_tasks(tasks: Iterable[TaskRequest]) -> list[list[TaskRequest]]:
    """Batches of tasks with equal requirements, in a deterministic order.

    Tasks bound to a node (global services) go first, as they have no choice;
    then batches by service id. Inside a batch tasks are sorted by id, so the
    result does not depend on the order of the input.
    """
    batches: dict[tuple, list[TaskRequest]] = {}
    for task in tasks:
        batches.setdefault(task.requirements, []).append(task)
    for batch in batches.values():
        batch.sort(key=lambda task: task.task_id)
    return sorted(
        batches.values(),
        key=lambda batch: (batch[0].node_id is None, batch[0].service_id, batch[0].node_id or "", batch[0].task_id),
    )


def _unplaced(batch: Sequence[TaskRequest], explanation: str) -> list[Placement]:
    return [Placement(task.task_id, None, explanation) for task in batch]


def schedule_batch(
    batch: Sequence[TaskRequest], nodes: Sequence[NodeInfo], nodes_by_id: dict[str, NodeInfo]
) -> list[Placement]:
    """Place one batch, updating the working-copy `nodes` as tasks land on them."""
    pipeline = Pipeline.for_task(batch[0])
    bound_node_id = batch[0].node_id
    if bound_node_id is not None:
        if bound_node_id not in nodes_by_id:
            return _unplaced(batch, f"{NO_SUITABLE_NODE}: node {bound_node_id} not found")
        nodes = [nodes_by_id[bound_node_id]]
    feasible, rejections = pipeline.split(nodes)
    preferences = parse_preferences(batch[0].preferences) if bound_node_id is None else ()
    tree = build_tree(feasible, batch[0].service_id, preferences)

    placements: list[Placement] = []
    for index, task in enumerate(batch):
        node = tree.place_one(pipeline)
        if node is None:
            if feasible:
                # Some nodes filled up during this batch: explain with their final state.
                _, rejections = pipeline.split(nodes)
            return placements + _unplaced(batch[index:], pipeline.explain(rejections))
        placements.append(Placement(task.task_id, node.node_id))
    return placements


def plan(nodes: Iterable[NodeInfo], tasks: Iterable[TaskRequest]) -> Plan:
    """Place `tasks` on `nodes`.

    The given NodeInfo objects are not modified: the scheduler works on copies,
    returned updated (in input order) as `Plan.nodes`. Placements are in the
    order of `tasks`. The result depends only on the contents of the inputs,
    not on their order.
    """
    working = [copy_node(node) for node in nodes]
    nodes_by_id = {node.node_id: node for node in working}
    tasks = list(tasks)
    decided: dict[str, Placement] = {}
    for batch in group_tasks(tasks):
        for placement in schedule_batch(batch, working, nodes_by_id):
            decided[placement.task_id] = placement
    return Plan([decided[task.task_id] for task in tasks], working)


def schedule(nodes: Iterable[NodeInfo], tasks: Iterable[TaskRequest]) -> list[Placement]:
    """Placements for `tasks`, in input order; `nodes` are left untouched."""
    return plan(nodes, tasks).placements
