"""Spreading a batch of tasks over feasible nodes.

Placement preferences split the nodes into a tree: one level per preference,
one branch per label value (nodes without the label form their own branch).
Each task goes to the branch holding the fewest tasks of the service, then to
the least loaded node inside it. Placing one task at a time this way gives the
same even split as Swarm's per-level water-filling, and a branch or node that
can no longer fit the task is dropped from its heap for the rest of the batch.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Sequence

from swarmlet.manager.scheduler.nodeinfo import add_task
from swarmlet.manager.scheduler.pipeline import Pipeline
from swarmlet.manager.scheduler.types import NodeInfo


class Leaf:
    """Feasible nodes in a heap keyed on (tasks of this service, tasks overall, node id)."""

    def __init__(self, nodes: Sequence[NodeInfo], service_id: str):
        # node_id is unique, so tuple comparison never reaches the NodeInfo itself.
        self.heap = [(n.tasks_by_service.get(service_id, 0), n.total_tasks, n.node_id, n) for n in nodes]
        heapq.heapify(self.heap)
        self.service_tasks = sum(entry[0] for entry in self.heap)

    def place_one(self, pipeline: Pipeline) -> NodeInfo | None:
        heap = self.heap
        while heap:
            service_tasks, total_tasks, node_id, node = heap[0]
            if pipeline.still_fits(node):
                add_task(node, pipeline.task)
                heapq.heapreplace(heap, (service_tasks + 1, total_tasks + 1, node_id, node))
                return node
            heapq.heappop(heap)  # full for this batch: every later task has the same needs
        return None


class Branch:
    """Subtrees in a heap keyed on (tasks of this service, label-value order)."""

    def __init__(self, subtrees: Sequence[Leaf | Branch]):
        self.heap = [(subtree.service_tasks, order, subtree) for order, subtree in enumerate(subtrees)]
        heapq.heapify(self.heap)
        self.service_tasks = sum(entry[0] for entry in self.heap)

    def place_one(self, pipeline: Pipeline) -> NodeInfo | None:
        heap = self.heap
        while heap:
            service_tasks, order, subtree = heap[0]
            node = subtree.place_one(pipeline)
            if node is not None:
                heapq.heapreplace(heap, (service_tasks + 1, order, subtree))
                return node
            heapq.heappop(heap)
        return None


def _label_order(value: str | None) -> tuple[bool, str]:
    return (value is None, value or "")


def build_tree(
    nodes: Sequence[NodeInfo], service_id: str, preferences: Sequence[Callable[[NodeInfo], str | None]]
) -> Leaf | Branch:
    """Nest the nodes by the value of each preference, outermost first."""
    if not preferences:
        return Leaf(nodes, service_id)
    read, inner = preferences[0], preferences[1:]
    groups: dict[str | None, list[NodeInfo]] = defaultdict(list)
    for node in nodes:
        groups[read(node)].append(node)
    return Branch([build_tree(groups[value], service_id, inner) for value in sorted(groups, key=_label_order)])
