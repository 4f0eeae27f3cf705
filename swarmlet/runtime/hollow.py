"""A simulated runtime, for hollow nodes (scale tests; see swarmlet/node/hollow.py).

Nothing is executed: a task is a record in memory. `start` returns after
`start_delay` (what a real engine spends creating a process), the task then runs
until it is asked to stop, and a stop ends it at once with the exit code a stop
signal gives (128 + SIGTERM). A health check, if the task has one, reports healthy
as soon as the task runs. The task writes no output. What the node reports of itself
(`describe`) is fixed at creation: the host's platform and, unless given, its CPUs and
memory, with the engine label ``swarmlet.hollow=true`` so placement can aim at hollow
nodes (``engine.labels.swarmlet.hollow==true``).

The records die with the process, as a machine's containers die with the machine:
`list_owned` of a new runtime is empty.
"""
from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from swarmlet.runtime.base import (DEFAULT_STOP_SIGNAL, ContainerConfig, ContainerState, EventKind, ExitStatus,
                                   HealthStatus, NodeDescription, OwnedTask, Runtime, RuntimeEvent,
                                   TaskNotFoundError, TaskRuntimeState, describe_exit, host_description)
from swarmlet.runtime.events import EventHub, EventSubscription

# A container start on a warm Docker engine takes about this long.
DEFAULT_START_DELAY = 0.1
HOLLOW_ENGINE_LABEL = "swarmlet.hollow"
# What a task stopped by its stop signal exits with, as a real process would.
STOPPED_EXIT_CODE = 128 + signal.Signals[DEFAULT_STOP_SIGNAL].value
_DISABLED_HEALTHCHECK = "NONE"


@dataclass
class _HollowTask:
    config: ContainerConfig
    state: ContainerState = ContainerState.CREATED
    health: HealthStatus = HealthStatus.NONE
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)


def hollow_description(cpus: float | None = None, memory_bytes: int | None = None) -> NodeDescription:
    """The host's platform, the given capacity (the host's where not given), marked hollow."""
    host = host_description()
    return replace(host, cpus=host.cpus if cpus is None else cpus,
                   memory_bytes=host.memory_bytes if memory_bytes is None else memory_bytes,
                   engine_labels={HOLLOW_ENGINE_LABEL: "true"})


class HollowRuntime(Runtime):
    def __init__(self, node_id: str, start_delay: float = DEFAULT_START_DELAY,
                 description: NodeDescription | None = None):
        self.node_id = node_id
        self.start_delay = start_delay
        self._description = description or hollow_description()
        self._tasks: dict[str, _HollowTask] = {}
        self._hub = EventHub()

    def _require(self, task_id: str) -> _HollowTask:
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(f"task {task_id} has no hollow container on node {self.node_id}")
        return task

    async def prepare(self, config: ContainerConfig) -> None:
        self._tasks.setdefault(config.task_id, _HollowTask(config))

    async def start(self, task_id: str) -> None:
        task = self._require(task_id)
        if task.state is not ContainerState.CREATED:
            return
        await asyncio.sleep(self.start_delay)  # the simulated engine's work, not a synchronisation
        if self._tasks.get(task_id) is not task or task.state is not ContainerState.CREATED:
            return  # removed or stopped meanwhile
        task.state, task.started_at = ContainerState.RUNNING, _now()
        check = task.config.healthcheck
        if check is not None and check.test and check.test[0] != _DISABLED_HEALTHCHECK:
            task.health = HealthStatus.HEALTHY
            self._hub.publish(RuntimeEvent(task_id, EventKind.HEALTH, HealthStatus.HEALTHY.value))

    async def wait(self, task_id: str) -> ExitStatus:
        task = self._require(task_id)
        await task.exited.wait()
        return ExitStatus(exit_code=task.exit_code, error=describe_exit(task.exit_code))

    async def shutdown(self, task_id: str, grace: float | None = None) -> None:
        task = self._require(task_id)
        if task.state is ContainerState.RUNNING:
            self._exit(task_id, task, STOPPED_EXIT_CODE)

    def _exit(self, task_id: str, task: _HollowTask, exit_code: int) -> None:
        task.state, task.exit_code, task.finished_at = ContainerState.EXITED, exit_code, _now()
        task.exited.set()
        self._hub.publish(RuntimeEvent(task_id, EventKind.EXITED, describe_exit(exit_code) or "exit code 0",
                                       exit_code=exit_code))

    async def remove(self, task_id: str) -> None:
        task = self._tasks.pop(task_id, None)
        if task is None:
            return
        if task.state is ContainerState.RUNNING:
            self._exit(task_id, task, STOPPED_EXIT_CODE)
        task.exited.set()  # whoever waits or follows its (empty) output is done

    async def inspect(self, task_id: str) -> TaskRuntimeState | None:
        task = self._tasks.get(task_id)
        if task is None:
            return None
        return TaskRuntimeState(task_id=task_id, state=task.state, health=task.health, exit_code=task.exit_code,
                                started_at=task.started_at, finished_at=task.finished_at,
                                error=describe_exit(task.exit_code) if task.exit_code is not None else None)

    async def logs(self, task_id: str, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        task = self._require(task_id)
        if follow and task.state is not ContainerState.EXITED:
            await task.exited.wait()  # no output, ever; a follow ends when the task does
        return
        yield  # an async generator that yields nothing

    async def list_owned(self) -> list[OwnedTask]:
        return [OwnedTask(task_id=task_id, service_id=t.config.service_id, service_name=t.config.service_name,
                          stack_namespace=t.config.stack_namespace, state=t.state, labels=t.config.all_labels())
                for task_id, t in self._tasks.items()]

    async def describe(self) -> NodeDescription:
        return self._description

    def events(self) -> EventSubscription:
        return self._hub.subscribe()

    async def close(self) -> None:
        self._hub.close()


def _now() -> datetime:
    return datetime.now(timezone.utc)
