"""Service logs: the output of a service's tasks, fetched from the nodes that ran them
over their dispatcher sessions (only the leader holds those; the API relays)."""
from __future__ import annotations

from typing import AsyncIterator, Callable

from swarmlet.api.objects import TaskState, state_rank
from swarmlet.api.views import Node, Service, Task
from swarmlet.store import ClusterStore

TaskLogs = Callable[[list[Task], int | None, bool], AsyncIterator[tuple[Task, str]]]


def has_output(task: Task) -> bool:
    """A task that got as far as starting on a node (a rejected one never ran)."""
    state = task.status.state
    return bool(task.spec.node_id) and state_rank(state) >= state_rank(TaskState.STARTING) \
        and state != TaskState.REJECTED


def line_prefix(task: Task, hostnames: dict[str, str]) -> str:
    """``<service>.<slot>.<task>@<node>``, as ``docker service logs`` prefixes lines."""
    spec = task.spec
    slot = spec.slot if spec.slot is not None else spec.node_id[:12]
    return f"{spec.service_name}.{slot}.{task.id[:12]}@{hostnames.get(spec.node_id, '?')}"


class ServiceLogs:
    def __init__(self, store: ClusterStore, resolve_service: Callable[[str], Service], task_logs: TaskLogs):
        self.store = store
        self._resolve_service = resolve_service
        self._task_logs = task_logs

    def lines(self, ref: str, tail: int | None, follow: bool) -> AsyncIterator[str]:
        """The lines, after resolving ``ref`` at once: a missing service is refused before
        the API starts its streamed answer, not in the middle of it."""
        return self._lines(self._resolve_service(ref), tail, follow)

    async def _lines(self, service: Service, tail: int | None, follow: bool) -> AsyncIterator[str]:
        tasks = sorted((t for t in self.store.select(Task, service_id=service.id) if has_output(t)),
                       key=lambda t: (t.spec.slot or 0, t.created_at))
        hostnames = {n.id: n.status.hostname or n.id for n in self.store.list(Node)}
        async for task, line in self._task_logs(tasks, tail, follow):
            yield f"{line_prefix(task, hostnames)} | {line}"
