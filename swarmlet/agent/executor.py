"""The worker side of assignments: reconcile what runs on this node with the assignment
set the leader sends, through the ``Runtime`` interface only.

One ``TaskRunner`` per assigned task walks it through accepted -> preparing -> ready ->
starting -> running (with a health check: running only once healthy; unhealthy ->
failed) and reports each state; exits become complete/failed with the exit code, image
errors rejected. A task whose desired state becomes shutdown/remove is stopped; a task
gone from the assignment set has its container/process removed. Exits and health come
from the runtime's event stream (no polling).

On start the executor lists what the runtime already owns (``list_owned``): tasks
still running after an agent restart are adopted, not started again; owned tasks the
first assignment set does not name are removed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from swarmlet.agent.taskconfig import container_config, has_healthcheck
from swarmlet.api.netplane import NetworkPlane
from swarmlet.api.objects import ACTIVE_DESIRED_STATES, DesiredState, TaskState, is_terminal, state_rank
from swarmlet.api.session import PHASE_ACTIVE, PHASE_ENDED, PHASE_NEW, AssignmentChanges, Assignments
from swarmlet.api.views import TaskSpec
from swarmlet.runtime.base import HealthStatus
from swarmlet.runtime import EventKind, ImageNotFoundError, OwnedTask, Runtime, RuntimeEvent, TaskRuntimeError, ContainerState

log = logging.getLogger("swarmlet.executor")

StatusSink = Callable[[str, dict], None]

UNHEALTHY_PREFIX = "container unhealthy"
# How long a running task with an overlay address goes on serving after its desired
# state left running, before it is stopped. The manager takes it out of the VIP and mesh
# backends (and the answers) with the same write, but the other nodes apply their new
# planes some tens of milliseconds later (a 50 ms debounce, then their apply): a task
# stopped at once would refuse what they still send it (moby#26672). Moby's agent waits
# likewise (2 s, for its gossip to converge).
BACKEND_DRAIN = 1.0


def _reserves(task_spec) -> bool:
    reservations = ((task_spec.get("resources") or {}).get("reservations")) or {}
    return bool(reservations.get("cpus") or reservations.get("memory"))


class TaskRunner:
    def __init__(self, executor: "Executor", task_id: str, entry: dict, owned: OwnedTask | None):
        self.executor = executor
        self.runtime = executor.runtime
        self.task_id = task_id
        self.spec = TaskSpec(entry["spec"])
        self.phase = entry.get("phase", PHASE_NEW)
        self.owned = owned
        self.assigned = True
        self.exit: RuntimeEvent | None = None
        self.health: str | None = None
        self.state = ""
        self._changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._guarded())

    # -- input ---------------------------------------------------------------------------------------
    def update(self, entry: dict) -> None:
        self.spec = TaskSpec(entry["spec"])
        self._changed.set()

    def unassign(self) -> None:
        self.assigned = False
        self._changed.set()

    def on_event(self, event: RuntimeEvent) -> None:
        if event.kind is EventKind.EXITED:
            self.exit = event
        elif event.kind is EventKind.HEALTH:
            self.health = HealthStatus.HEALTHY.value if event.detail == HealthStatus.HEALTHY else (
                event.detail if event.detail.startswith(UNHEALTHY_PREFIX) else None)
        self._changed.set()

    @property
    def desired(self) -> DesiredState:
        return self.spec.desired_state if self.assigned else DesiredState.REMOVE

    async def _changes(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    def report(self, state: TaskState, message: str = "", err: str | None = None, exit_code: int | None = None) -> None:
        if self.state and state_rank(state) < state_rank(self.state):
            return
        self.state = state
        now = time.time()
        status = {"state": state, "timestamp": now, "message": message, "err": err, "exit_code": exit_code,
                  "container_id": self.task_id}
        if state == TaskState.RUNNING:
            status["started_at"] = now
        self.executor.publish(self.task_id, status)

    # -- the life of one task ------------------------------------------------------------------------
    async def _guarded(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a runtime failure ends the task, never the executor
            log.exception("task %s failed in the executor", self.task_id)
            self.report(TaskState.FAILED, "executor error", err=str(err))
            await self._finish()

    async def _run(self) -> None:
        if self.owned is None:
            if self.phase != PHASE_NEW or self.desired not in ACTIVE_DESIRED_STATES:
                if self.phase == PHASE_ACTIVE:  # the store thinks it runs, but nothing of it is here
                    self.report(TaskState.FAILED, "task vanished from the node", err="no container or process found")
                elif self.phase == PHASE_NEW:
                    self.report(TaskState.SHUTDOWN, "shut down before it started")
                await self._finish()
                return
            if not await self._prepare_and_start():
                return
        elif not await self._adopt():
            return
        await self._supervise()

    async def _prepare_and_start(self) -> bool:
        self.report(TaskState.ACCEPTED)
        self.report(TaskState.PREPARING)
        try:
            config = container_config(self.task_id, self.spec, self.runtime.node_id, self.executor.secrets,
                                      self.executor.configs, self.executor.network_plane)
            await self.runtime.prepare(config)
        except (ImageNotFoundError, TaskRuntimeError, KeyError) as err:
            detail = f"missing secret or config {err}" if isinstance(err, KeyError) else str(err)
            self.report(TaskState.REJECTED, "preparing failed", err=detail)
            await self._finish()
            return False
        self.report(TaskState.READY)
        while self.desired == DesiredState.READY:
            await self._changes()
        if self.desired != DesiredState.RUNNING:
            self.report(TaskState.SHUTDOWN, "shut down before it started")
            await self._finish()
            return False
        self.report(TaskState.STARTING)
        try:
            await self.runtime.start(self.task_id)
        except TaskRuntimeError as err:
            self.report(TaskState.FAILED, "starting failed", err=str(err))
            await self._finish()
            return False
        return True

    async def _adopt(self) -> bool:
        state = await self.runtime.inspect(self.task_id)
        if state is None or state.state is ContainerState.CREATED:
            if self.phase == PHASE_ENDED:
                await self._finish()
                return False
            self.owned = None
            return await self._prepare_and_start()
        if state.state is ContainerState.EXITED and self.exit is None:
            self.exit = RuntimeEvent(self.task_id, EventKind.EXITED, state.error or "", exit_code=state.exit_code)
        if self.phase == PHASE_ENDED and self.exit is not None:
            await self._finish()
            return False
        self.state = TaskState.STARTING
        log.info("adopted task %s, already %s", self.task_id, state.state.value)
        return True

    async def _supervise(self) -> None:
        checked = has_healthcheck(self.spec)
        if not checked and self.exit is None:
            self.report(TaskState.RUNNING)
        while True:
            if self.exit is not None:
                code = self.exit.exit_code
                if code == 0:
                    self.report(TaskState.COMPLETE, "finished", exit_code=0)
                else:
                    self.report(TaskState.FAILED, "task exited", err=self.exit.detail or f"exit code {code}", exit_code=code)
                break
            if self.health and self.health.startswith(UNHEALTHY_PREFIX):
                await self.runtime.shutdown(self.task_id)
                self.report(TaskState.FAILED, "health check failed", err=self.health, exit_code=await self._exit_code())
                break
            if self.health == HealthStatus.HEALTHY and self.state != TaskState.RUNNING:
                self.report(TaskState.RUNNING)
            if self.desired not in ACTIVE_DESIRED_STATES:
                await self._leave_backends()
                await self.runtime.shutdown(self.task_id)
                self.report(TaskState.SHUTDOWN, "shut down", exit_code=await self._exit_code())
                break
            await self._changes()
        await self._finish()

    async def _leave_backends(self) -> None:
        """Wait ``backend_drain`` before stopping a running task the overlay carries
        traffic to (less if it exits by itself meanwhile)."""
        if self.state != TaskState.RUNNING or not self.spec.network_addresses or self.executor.network_plane is None:
            return
        deadline = asyncio.get_running_loop().time() + self.executor.backend_drain
        while self.exit is None and (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                await asyncio.wait_for(self._changes(), remaining)
            except TimeoutError:
                break

    async def _exit_code(self) -> int | None:
        state = await self.runtime.inspect(self.task_id)
        return state.exit_code if state else None

    async def _finish(self) -> None:
        """Keep the stopped task (history) until the leader forgets it, then remove it.
        A task to be removed is not kept as history: it goes as soon as it has stopped,
        without waiting for the leader's round trip (a stack removal's containers go sooner)."""
        removed = False
        while self.assigned:
            if self.desired not in ACTIVE_DESIRED_STATES and not is_terminal(self.state or TaskState.NEW):
                self.report(TaskState.SHUTDOWN, "shut down")
            if self.desired == DesiredState.REMOVE and is_terminal(self.state or TaskState.NEW) and not removed:
                await self.runtime.remove(self.task_id)
                removed = True
                continue  # the assignment may have changed meanwhile
            await self._changes()
        if not removed:
            await self.runtime.remove(self.task_id)
        self.executor.forget(self.task_id)
        await self.executor.tidy_stack(self.spec.stack)


class Executor:
    def __init__(self, runtime: Runtime, sink: StatusSink | None = None, backend_drain: float = BACKEND_DRAIN):
        self.runtime = runtime
        self.backend_drain = backend_drain
        self.sink = sink  # where task statuses go (the agent's session)
        self.runners: dict[str, TaskRunner] = {}
        self.statuses: dict[str, dict] = {}
        self.secrets: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}
        # The node's overlay networks as last applied (the agent sets it before it hands
        # on the assignment set that needs them); None on a node without the data plane.
        self.network_plane: NetworkPlane | None = None
        self._owned: dict[str, OwnedTask] | None = None
        self._leftovers: dict[str, str] = {}  # task ID -> stack: owned, unassigned, being removed
        self._events_task: asyncio.Task | None = None
        self._usage: dict = {}  # task ID -> (time, TaskUsage): the previous reading

    async def start(self) -> None:
        events = self.runtime.events()  # before listing: no exit can fall between the two
        self._events_task = asyncio.ensure_future(self._watch(events))
        self._owned = {o.task_id: o for o in await self.runtime.list_owned()}
        log.info("runtime owns %d task(s) from before", len(self._owned))

    async def _watch(self, events) -> None:
        async for event in events:
            runner = self.runners.get(event.task_id)
            if runner is not None:
                runner.on_event(event)

    async def usage(self, now: float) -> list[dict]:
        """Each running task's usage since the previous call (``TaskUsageSample``s): CPUs
        busy on average, memory held. A task's first reading only sets its baseline. Only
        tasks with a reservation are measured: autoscaling targets a share of it, and a
        node running many tasks should not ask its engine for each one's stats for nothing."""
        samples, readings = [], {}
        for task_id, status in list(self.statuses.items()):
            runner = self.runners.get(task_id)
            if status.get("state") != TaskState.RUNNING or runner is None or not _reserves(runner.spec.raw):
                continue
            reading = await self.runtime.usage(task_id)
            if reading is None:
                continue
            readings[task_id] = (now, reading)
            before = self._usage.get(task_id)
            if before is not None and now > before[0]:
                cpus = max(0.0, (reading.cpu_seconds - before[1].cpu_seconds) / (now - before[0]))
                samples.append({"task_id": task_id, "at": now, "cpus": cpus, "memory": reading.memory})
        self._usage = readings  # tasks that stopped drop out
        return samples

    def publish(self, task_id: str, status: dict) -> None:
        self.statuses[task_id] = status
        if self.sink is not None:
            self.sink(task_id, status)

    def forget(self, task_id: str) -> None:
        self.runners.pop(task_id, None)
        self.statuses.pop(task_id, None)

    def assign(self, assignment: Assignments) -> None:
        """Take a whole assignment set from the leader."""
        self.secrets = assignment.secrets
        self.configs = assignment.configs
        entries = {entry["id"]: entry for entry in assignment.tasks}
        self._take(entries.values())
        for task_id, runner in list(self.runners.items()):
            if task_id not in entries:
                runner.unassign()
        if self._owned:  # owned by this node, unknown to the cluster: left from before, remove
            for task_id, owned in list(self._owned.items()):
                log.info("removing task %s: not assigned to this node any more", task_id)
                self._leftovers[task_id] = owned.stack_namespace
                asyncio.ensure_future(self._remove_quietly(task_id))
            self._owned = {}

    def assign_changes(self, changes: AssignmentChanges, secrets: dict, configs: dict) -> None:
        """Take what changed in the assignment set since the last message (after a whole
        set: the agent applies changes only on top of one), with the secrets and configs
        the set now holds."""
        self.secrets = secrets
        self.configs = configs
        self._take(changes.tasks)
        for task_id in changes.removed:
            runner = self.runners.get(task_id)
            if runner is not None:
                runner.unassign()

    def _take(self, entries) -> None:
        for entry in entries:
            runner = self.runners.get(entry["id"])
            if runner is None:
                owned = (self._owned or {}).pop(entry["id"], None)
                self.runners[entry["id"]] = TaskRunner(self, entry["id"], entry, owned)
            else:
                runner.update(entry)

    async def _remove_quietly(self, task_id: str) -> None:
        try:
            await self.runtime.remove(task_id)
        except TaskRuntimeError as err:
            log.warning("could not remove task %s: %s", task_id, err)
        await self.tidy_stack(self._leftovers.pop(task_id, ""))

    def stacks_in_use(self) -> set[str]:
        return {r.spec.stack for r in self.runners.values()} | set(self._leftovers.values())

    async def tidy_stack(self, stack: str) -> None:
        """Once the last task of a stack has gone from this node, its networks go too
        (the runtime keeps any another node sharing the engine still uses)."""
        if not stack or stack in self.stacks_in_use():
            return
        try:
            removed = await self.runtime.remove_unused_networks(stack)
        except Exception as err:  # tidying up must never fail a task or the executor
            log.warning("could not remove the networks of stack %s: %s", stack, err)
            return
        if removed:
            log.info("removed networks %s: stack %s has no task left here", ", ".join(removed), stack)

    async def close(self) -> None:
        """Stop supervising; tasks keep running, for the next agent to adopt."""
        for runner in list(self.runners.values()):
            runner.task.cancel()
        await asyncio.gather(*(r.task for r in self.runners.values()), return_exceptions=True)
        if self._events_task is not None:
            self._events_task.cancel()
        await self.runtime.close()
