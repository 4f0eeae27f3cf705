"""Running a task's filters over nodes and explaining the rejections."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from swarmlet.manager.scheduler.filters import Filter, filters_for
from swarmlet.manager.scheduler.types import NodeInfo, TaskRequest

NO_SUITABLE_NODE = "no suitable node"


@dataclass(frozen=True, slots=True)
class Pipeline:
    task: TaskRequest
    filters: tuple[Filter, ...]
    fill_sensitive: tuple[Filter, ...]  # the filters whose verdict changes as a node fills up

    @classmethod
    def for_task(cls, task: TaskRequest) -> Pipeline:
        filters = filters_for(task)
        return cls(task, filters, tuple(f for f in filters if f.changes_as_node_fills))

    def first_rejection(self, node: NodeInfo) -> int | None:
        """Index of the first filter rejecting `node`, or None if all accept."""
        for index, node_filter in enumerate(self.filters):
            if not node_filter.accepts(node, self.task):
                return index
        return None

    def split(self, nodes) -> tuple[list[NodeInfo], Counter]:
        """Accepted nodes, and per filter index how many nodes it rejected first."""
        accepted: list[NodeInfo] = []
        rejections: Counter = Counter()
        for node in nodes:
            index = self.first_rejection(node)
            if index is None:
                accepted.append(node)
            else:
                rejections[index] += 1
        return accepted, rejections

    def still_fits(self, node: NodeInfo) -> bool:
        """Re-check only the fill-sensitive filters (the others cannot have changed)."""
        for node_filter in self.fill_sensitive:
            if not node_filter.accepts(node, self.task):
                return False
        return True

    def explain(self, rejections: Counter) -> str:
        reasons = [f.explain(rejections[i]) for i, f in enumerate(self.filters) if rejections[i]]
        return f"{NO_SUITABLE_NODE}: {', '.join(reasons)}" if reasons else NO_SUITABLE_NODE
