"""Choosing which tasks of a service to remove when it scales down."""

from __future__ import annotations

import heapq


def choose_tasks_to_remove(tasks_by_node: dict[str, list[tuple[str, bool]]], count: int) -> list[str]:
    """Ids of `count` tasks to remove, given each node's (task_id, is_running) pairs.

    Each removal takes from the node holding the most tasks left, so the
    service stays balanced; among equally loaded nodes one with a task that is
    not running goes first, then the lowest node id. On the chosen node a
    not-running task goes before a running one, lowest task id first.
    """
    # Per node, tasks in removal order: not running first, then by id.
    queues = {node_id: sorted(tasks, key=lambda task: (task[1], task[0])) for node_id, tasks in tasks_by_node.items()}
    heap = [_removal_key(node_id, queue, 0) for node_id, queue in queues.items() if queue]
    heapq.heapify(heap)
    removed: list[str] = []
    while heap and len(removed) < count:
        _, _, node_id, taken = heapq.heappop(heap)
        queue = queues[node_id]
        removed.append(queue[taken][0])
        if taken + 1 < len(queue):
            heapq.heappush(heap, _removal_key(node_id, queue, taken + 1))
    return removed


def _removal_key(node_id: str, queue: list[tuple[str, bool]], taken: int) -> tuple[int, bool, str, int]:
    next_is_running = queue[taken][1]
    return (-(len(queue) - taken), next_is_running, node_id, taken)
