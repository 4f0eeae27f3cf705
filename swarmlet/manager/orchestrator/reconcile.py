"""The orchestrators' decisions, as pure functions over plain store dicts.

``reconcile_service(service, tasks, nodes, now)`` answers "given this service, its tasks
and the nodes, which tasks to create, which to change and which to delete", for every
mode (replicated, global, replicated-job, global-job). It can be rerun from scratch at
any time and reaches the same answer, so a new leader simply reconciles everything.

Tasks are grouped by *slot*: a number for replicated modes, the node for global ones.
Within a slot the *active* tasks are those whose desired state is ready or running;
the others are history (at most ``TASK_HISTORY_LIMIT`` tasks per slot in all).

- Restart supervisor: an active task that ended is replaced per the restart policy
  (condition, max_attempts within window); the replacement is created at once with
  desired state ``ready`` (placed and prepared) and turned ``running`` after the delay.
  A task whose node is down, drained or gone is replaced whatever the condition (a job
  that completed excepted). A task not to be restarted keeps its slot.
- Scale: missing slots are created; extra slots are removed with
  ``choose_tasks_to_remove`` (nodes holding most tasks first, not running first).
- Global: one task per eligible node (ready or unknown, active, constraints met); tasks
  on drained or no longer matching nodes are shut down, on removed nodes deleted.
- Jobs: a completed task is never restarted; nothing is created after completion.
- Rolling update: slots whose tasks were made from another spec are replaced,
  ``parallelism`` at a time, ``delay`` apart, stop-first (new task ``ready`` until the old
  one stopped) or start-first (old one shut down once the new one runs). New tasks are
  watched for ``monitor``; past ``max_failure_ratio`` failures, ``failure_action``
  pauses, continues or asks for a rollback (``Decision.rollback``: the loop puts the
  previous spec back); a rollback follows ``rollback_config``; canaries (``x-canary``)
  start beside the old tasks and hold until promoted; a blue-green update (``x-blue-green``)
  starts a whole new set out of traffic, switches traffic to it when promoted and keeps
  the old set for ``x-hold`` (``swarmlet.api.traffic``). The state is the service's
  ``status.update`` (docs/orchestration.md, "Rolling updates and rollback").
- Removal: tasks marked ``remove`` are deleted once stopped (or never placed, or their
  node is gone or down).

``budget`` bounds how many tasks one decision touches (creates, updates and deletes):
past it the decision stops early and says so (``truncated``); reconciling again, with
the store as the first part left it, goes on from there. The loop commits each part as
one transaction and lets the event loop run between them, so that a service scaled to
thousands of replicas never holds the leader for long (issue 8: a 100,000,000-replica
scale built every task at once, at ~40 MB/s, while no API call was answered).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from swarmlet.api.objects import (ACTIVE_DESIRED_STATES, FAILED_STATES, GLOBAL_MODES, HALTED_UPDATE_STATES,
                                  JOB_MODES, ROLLBACK_STATES, STACK_NAMESPACE_LABEL, TASK_HISTORY_LIMIT, Availability,
                                  DesiredState, NodeState, TaskState, UpdateState, is_terminal, spec_digest,
                                  state_rank, task_object_spec, task_status)
from swarmlet.api.specs import (DEFAULT_RESTART_CONDITION, DEFAULT_UPDATE_FAILURE_ACTION,
                                DEPENDENCY_COMPLETED_SUCCESSFULLY, RESTART_NONE, RESTART_ON_FAILURE,
                                UPDATE_FAILURE_ACTIONS, UPDATE_START_FIRST, RestartPolicy)
from swarmlet.api.traffic import TRAFFIC_OLD, rollback_update, switched
from swarmlet.api.views import Node, Service, Task
from swarmlet.manager.scheduler import choose_tasks_to_remove
from swarmlet.manager.scheduler.storemap import constraints_match

ACTIVE = ACTIVE_DESIRED_STATES
Nodes = dict[str, Node]


@dataclass(frozen=True)
class Rollback:
    """An automatic rollback a decision asks for: the service's spec goes back to its
    previous spec, which is used up (as in SwarmKit), and its update state says why."""

    spec: Mapping
    status: dict  # the service's new status.update


@dataclass
class Decision:
    creates: list[dict] = field(default_factory=list)  # {"spec", "status"}; the caller picks IDs
    updates: list[tuple[Task, dict]] = field(default_factory=list)  # (task as read, new spec)
    deletes: list[Task] = field(default_factory=list)  # tasks as read
    wake_at: float | None = None  # reconcile again at this time (a restart delay, an update delay)
    service_status: dict | None = None  # a new service status, when it changes
    budget: int | None = None  # at most this many task changes (None: no bound)
    truncated: bool = False  # the budget ran out: reconcile again for the rest
    rollback: Rollback | None = None  # the service goes back to its previous spec

    def full(self) -> bool:
        """Whether the decision holds its budget of task changes (then it is truncated)."""
        if self.budget is None or len(self.creates) + len(self.updates) + len(self.deletes) < self.budget:
            return False
        self.truncated = True
        return True

    def wake(self, when: float) -> None:
        self.wake_at = when if self.wake_at is None else min(self.wake_at, when)

    def set_desired(self, task: Task, desired: DesiredState, **extra) -> None:
        self.updates.append((task, task.spec.replace(desired_state=desired, **extra)))

    @property
    def empty(self) -> bool:
        return not (self.creates or self.updates or self.deletes or self.service_status is not None
                    or self.rollback is not None)


# -- small predicates ---------------------------------------------------------------------------

def desired(task: Task) -> DesiredState:
    return task.spec.desired_state


def state(task: Task) -> TaskState:
    return task.status.state


def node_of(task: Task, nodes: Nodes) -> Node | None:
    node_id = task.spec.node_id
    return nodes.get(node_id) if node_id else None


def node_gone(task: Task, nodes: Nodes) -> bool:
    node_id = task.spec.node_id
    return bool(node_id) and node_id not in nodes


def node_down(task: Task, nodes: Nodes) -> bool:
    node = node_of(task, nodes)
    return node is not None and node.status.state == NodeState.DOWN


def node_lost(task: Task, nodes: Nodes) -> bool:
    """Its node is gone, down or drained: the task cannot (keep) run(ning) there."""
    node = node_of(task, nodes)
    return node_gone(task, nodes) or (node is not None and (node.status.state == NodeState.DOWN
                                                            or node.spec.availability == Availability.DRAIN))


def stopped(task: Task, nodes: Nodes) -> bool:
    """Nothing runs for this task any more (or nothing can tell us otherwise)."""
    return (is_terminal(state(task)) or not task.spec.node_id
            or node_gone(task, nodes) or node_down(task, nodes))


def should_restart(task: Task, policy: RestartPolicy, mode: str, now: float, lost: bool = False) -> bool:
    """The restart supervisor's verdict on an active task that ended (or whose node was lost)."""
    if mode in JOB_MODES and state(task) == TaskState.COMPLETE:
        return False  # a job that succeeded is done
    if not lost:
        condition = policy.condition or DEFAULT_RESTART_CONDITION
        if condition == RESTART_NONE:
            return False
        if (condition == RESTART_ON_FAILURE or mode in JOB_MODES) and state(task) == TaskState.COMPLETE:
            return False
    if policy.max_attempts > 0:
        window = policy.window
        recent = [t for t in task.spec.restarts if window <= 0 or t >= now - window]
        if len(recent) >= policy.max_attempts:
            return False
    return True


def dependencies_waiting(service: Service, services: list[Service], tasks_by_service: dict[str, list[Task]]) -> str | None:
    """None when every ``depends_on`` condition holds, else what the service waits for.
    A running task is a healthy one when the service has a health check (the agent
    reports running only once healthy)."""
    spec = service.spec
    stack = spec.labels.get(STACK_NAMESPACE_LABEL)
    by_name = {s.name: s for s in services}
    for dependency, condition in sorted(spec.depends_on.items()):
        other = by_name.get(f"{stack}_{dependency}" if stack else dependency)
        if other is None:
            return f"waiting for {dependency}: not deployed"
        active = [t for t in tasks_by_service.get(other.id, []) if desired(t) in ACTIVE]
        if condition == DEPENDENCY_COMPLETED_SUCCESSFULLY:
            met = bool(active) and all(state(t) == TaskState.COMPLETE for t in active)
        else:
            met = any(state(t) == TaskState.RUNNING for t in active)
        if not met:
            return f"waiting for {dependency} ({condition})"
    return None


# -- the reconciler ----------------------------------------------------------------------------------

@dataclass
class _Service:
    """What one reconcile reads of a service: its view, its spec (converted once) and
    the stored spec dict (what tasks are made from)."""

    view: Service

    def __post_init__(self) -> None:
        self.spec = self.view.spec
        self.raw = self.view.raw
        self.is_job = self.spec.mode in JOB_MODES
        # Once per reconcile, not per task: a service of 20,000 replicas is 20,000 tasks.
        self.digest = spec_digest(self.raw["spec"])


def reconcile_service(service: Service | None, tasks: list[Task], nodes: Nodes, now: float,
                      waiting_for: str | None = None, budget: int | None = None) -> Decision:
    """``tasks``: all tasks of the service; ``nodes`` by ID; ``waiting_for``: what
    ``dependencies_waiting`` said (tasks are first created only once it is None);
    ``budget``: at most that many task changes (see the module's docstring)."""
    decision = Decision(budget=budget)
    live = _reap_removed(tasks, nodes, decision)
    if service is None:
        for task in live:
            if decision.full():
                break
            decision.set_desired(task, DesiredState.REMOVE)
        return decision
    current = _Service(service)
    global_mode = current.spec.mode in GLOBAL_MODES
    slots: dict = {}
    for task in live:
        key = task.spec.node_id if global_mode else task.spec.slot
        slots.setdefault(key, []).append(task)
    for group in slots.values():
        group.sort(key=lambda t: (t.created_at, t.id))

    can_create = waiting_for is None or bool(tasks)
    if global_mode:
        _reconcile_global(current, slots, nodes, now, can_create, decision)
    else:
        _reconcile_replicated(current, slots, nodes, now, can_create, decision)
    for key, group in slots.items():
        _restart_and_promote(current, key if global_mode else None, group, nodes, now, decision)
        _trim_history(group, nodes, decision)
    if not current.is_job:
        _rolling_update(current, slots, nodes, now, decision)
    _service_status(service, waiting_for if not tasks else None, decision)
    return decision


def _reap_removed(tasks: list[Task], nodes: Nodes, decision: Decision) -> list[Task]:
    live = []
    for task in tasks:
        if desired(task) == DesiredState.REMOVE:
            if stopped(task, nodes) and not decision.full():
                decision.deletes.append(task)
        else:
            live.append(task)
    return live


def _new_task(service: _Service, decision: Decision, now: float, *, slot: int | None, node_id: str | None,
              desired_state: DesiredState = DesiredState.RUNNING, not_before: float = 0.0,
              restarts: list | None = None) -> None:
    decision.creates.append({"spec": task_object_spec(service.raw, slot=slot, node_id=node_id,
                                                       desired_state=desired_state, not_before=not_before,
                                                       restarts=restarts, digest=service.digest),
                             "status": task_status(TaskState.PENDING, now)})


def _reconcile_replicated(service: _Service, slots, nodes, now, can_create, decision) -> None:
    wanted = service.spec.replicas or 0
    occupied = {slot: [t for t in group if desired(t) in ACTIVE] for slot, group in slots.items()}
    occupied = {slot: active for slot, active in occupied.items() if active}
    if len(occupied) < wanted and can_create:
        free = (n for n in range(1, wanted + len(occupied) + 1) if n not in occupied)
        for _ in range(wanted - len(occupied)):
            if decision.full():
                break
            _new_task(service, decision, now, slot=next(free), node_id=None)
    elif len(occupied) > wanted:
        by_node: dict[str, list[tuple[str, bool]]] = {}
        newest = {}
        for slot, active in occupied.items():
            current = active[-1]
            newest[current.id] = slot
            by_node.setdefault(current.spec.node_id or "", []).append(
                (current.id, state(current) == TaskState.RUNNING))
        for task_id in choose_tasks_to_remove(by_node, len(occupied) - wanted):
            if decision.full():
                break
            for task in slots.pop(newest[task_id]):
                if desired(task) in ACTIVE:
                    decision.set_desired(task, DesiredState.REMOVE)
                elif stopped(task, nodes):
                    decision.deletes.append(task)


def _eligible_for_global(node: Node, service: _Service) -> bool:
    return (node.status.state != NodeState.DOWN and node.spec.availability == Availability.ACTIVE
            and constraints_match(node, service.spec.placement.constraints))


def _reconcile_global(service: _Service, slots, nodes: Nodes, now, can_create, decision) -> None:
    for node_id in list(slots):
        node = nodes.get(node_id)
        group = slots[node_id]
        if node is None:  # removed from the cluster: nothing will ever run there
            for task in slots.pop(node_id):
                decision.deletes.append(task)  # stopped: its node is gone
            continue
        unwanted = (node.spec.availability == Availability.DRAIN
                    or not constraints_match(node, service.spec.placement.constraints))
        if unwanted:
            for task in group:
                if desired(task) in ACTIVE:
                    decision.set_desired(task, DesiredState.SHUTDOWN)
            slots[node_id] = [t for t in group if desired(t) not in ACTIVE]  # only history is left there
    for node_id, node in sorted(nodes.items()):
        has_active = any(desired(t) in ACTIVE for t in slots.get(node_id, []))
        history = slots.get(node_id, [])
        if has_active or not can_create or not _eligible_for_global(node, service):
            continue
        if service.is_job and any(state(t) == TaskState.COMPLETE for t in history):
            continue  # this node ran the job already
        _new_task(service, decision, now, slot=None, node_id=node_id)


def _restart_and_promote(service: _Service, node_id, group, nodes, now, decision) -> None:
    policy = service.spec.restart_policy
    active = [t for t in group if desired(t) in ACTIVE]
    updated = {t.id for t, _ in decision.updates}
    stopping = [t for t in group if desired(t) not in ACTIVE and not stopped(t, nodes)]
    for task in active:
        if task.id in updated:
            continue
        if decision.full():
            return
        # A global task's node is its slot: a down node keeps its task until it returns.
        lost = node_id is None and node_lost(task, nodes)
        ended = is_terminal(state(task))
        if not (ended or lost):
            if desired(task) == DesiredState.READY and not stopping:
                if task.spec.not_before <= now:
                    decision.set_desired(task, DesiredState.RUNNING)
                else:
                    decision.wake(task.spec.not_before)
            continue
        if service.is_job and state(task) == TaskState.COMPLETE:
            continue
        if task.spec.spec_digest != service.digest and any(
                t is not task and t.spec.spec_digest == service.digest and not is_terminal(state(t)) for t in active):
            # An old task that ended beside its slot's current one (a canary's, a blue-green
            # new set's, a rollback's): the slot is taken; replacing it would run two.
            decision.set_desired(task, DesiredState.SHUTDOWN)
            continue
        if not should_restart(task, policy, service.spec.mode, now, lost):
            continue
        decision.set_desired(task, DesiredState.SHUTDOWN)
        base = task.status.timestamp if ended else now
        not_before = max(base + policy.delay, now)
        restarts = [*task.spec.restarts, now]
        if policy.max_attempts and policy.window <= 0:
            restarts = restarts[-policy.max_attempts:]
        _new_task(service, decision, now, slot=task.spec.slot, node_id=node_id,
                  desired_state=DesiredState.RUNNING if not_before <= now else DesiredState.READY,
                  not_before=not_before, restarts=restarts)
        if not_before > now:
            decision.wake(not_before)


def _trim_history(group, nodes, decision) -> None:
    deleting = {t.id for t in decision.deletes}
    history = [t for t in group if desired(t) not in ACTIVE and t.id not in deleting]
    active = len(group) - len(history)
    excess = len(history) + active - TASK_HISTORY_LIMIT
    for task in history:  # oldest first
        if excess <= 0 or decision.full():
            break
        if stopped(task, nodes):
            decision.deletes.append(task)
            excess -= 1


def _failed_while_monitored(task: Task, monitor: float) -> bool:
    """An updated task that failed, was rejected or exited before it ran for ``monitor``
    seconds (a health check that fails makes the agent report it failed): what an
    update counts against its ``max_failure_ratio``, as SwarmKit's updater does."""
    if state(task) not in FAILED_STATES and state(task) != TaskState.COMPLETE:
        return False
    started = task.status.started_at
    return started is None or task.status.timestamp - started <= monitor


def _failure_reason(task: Task) -> str:
    detail = task.status.err or (f"exit code {task.status.exit_code}" if task.status.exit_code else "")
    return f"failure or early termination of task {task.id}" + (f": {detail}" if detail else "")


def _rolling_update(service: _Service, slots, nodes, now, decision) -> None:
    """The update state machine (docs/orchestration.md, "Rolling updates and rollback"):
    replace the slots made from another spec per update_config (rollback_config while
    rolling back), watch each new task for ``monitor`` seconds, and apply
    ``failure_action`` once the failures exceed ``max_failure_ratio``."""
    digest = service.digest
    stored = dict(service.view.status.get("update") or {})
    status = dict(stored) if stored.get("digest") == digest else {}
    rolling_back = status.get("state") in ROLLBACK_STATES
    config = service.spec.rollback_config if rolling_back else service.spec.update_config
    since = status.get("started_at", now)
    # Blue-green is decided when the update starts (a later change of update_config alone
    # starts no new update): the whole new set is its canaries, held out of traffic.
    blue_green = not rolling_back and bool(status.get("blue_green") if status else config.blue_green)
    holding_canaries = not rolling_back and (config.canary > 0 or blue_green) and not status.get("promoted")
    # After a blue-green switch the old set keeps running, out of traffic, until hold_until.
    holding_old = blue_green and bool(status.get("promoted")) and now < status.get("hold_until", 0.0)
    decided = {t.id: spec["desired_state"] for t, spec in decision.updates}
    dirty, in_progress, not_running, updated_slots, started = [], 0, 0, 0, []
    watched_until: list[float] = []  # when the running new tasks leave their monitoring window
    failures: list[Task] = []
    for key, group in sorted(slots.items(), key=lambda item: str(item[0])):
        active = [t for t in group if decided.get(t.id, desired(t)) in ACTIVE]
        new = [t for t in active if t.spec.spec_digest == digest]
        old = [t for t in active if t.spec.spec_digest != digest]
        failed = [t for t in group if t.spec.spec_digest == digest and t.created_at >= since
                  and _failed_while_monitored(t, config.monitor)]
        failures += failed
        running_new = [t for t in new if state(t) == TaskState.RUNNING]
        started += [t.status.started_at for t in new if t.status.started_at]
        watched_until += [t.status.started_at + config.monitor for t in running_new
                          if t.status.started_at and t.created_at >= since and t.status.started_at + config.monitor > now]
        if new and old:
            updated_slots += 1
        if old and not new:
            dirty.append((key, old))
        elif new and (any(state_rank(state(t)) < state_rank(TaskState.RUNNING) for t in new) or old):
            if not failed:  # a slot whose new task failed is done with: counted as a failure
                in_progress += 1
            not_running += not running_new
            if running_new and old and not holding_canaries and not holding_old \
                    and not any(t.id in decided for t in old):
                # start-first (or a promoted canary): the new task runs, retire the old one
                for task in old:
                    decision.set_desired(task, DesiredState.SHUTDOWN)

    def finish() -> None:
        if status != stored:
            decision.service_status = {"update": status}

    if not status:
        if not dirty:
            return  # nothing to update (a new service, a scale)
        status = {"digest": digest, "state": UpdateState.UPDATING, "started_at": now, "message": "update in progress"}
        if blue_green:
            status.update(blue_green=True, traffic=TRAFFIC_OLD,
                          message="blue-green: the new set starts beside the old one, out of traffic")
    current = status.get("state")
    if current in HALTED_UPDATE_STATES or current in (UpdateState.COMPLETED, UpdateState.ROLLBACK_COMPLETED):
        return finish()
    if failures:
        known = sorted(set(status.get("failed_tasks") or ()) | {t.id for t in failures})
        status["failed_tasks"] = known
        total = max(1, sum(1 for group in slots.values() if any(desired(t) in ACTIVE for t in group)))
        if len(known) / total > config.max_failure_ratio:
            latest = max(failures, key=lambda t: (t.status.timestamp, t.id))
            reason = _failure_reason(latest)
            action = config.failure_action or DEFAULT_UPDATE_FAILURE_ACTION
            previous = service.view.previous_spec
            if action == FAILURE_ROLLBACK and not rolling_back and previous:
                decision.rollback = Rollback(spec=previous, status=rollback_update(
                    status, spec_digest(previous), now, f"update rolled back due to {reason}", reason=reason))
                decision.service_status = {"update": decision.rollback.status}
                return
            if action != FAILURE_CONTINUE:  # pause; a rollback never rolls back (SwarmKit)
                what = "rollback" if rolling_back else "update"
                status.update(state=UpdateState.ROLLBACK_PAUSED if rolling_back else UpdateState.PAUSED,
                              message=f"{what} paused due to {reason}" + (
                                  "; no previous spec to roll back to"
                                  if action == FAILURE_ROLLBACK and not rolling_back else ""),
                              reason=reason, paused_at=now)
                return finish()
    if holding_old:
        decision.wake(status["hold_until"])  # then the old set goes, all at once
        return finish()
    if blue_green and current == UpdateState.SWITCHED and in_progress and "removing" not in status:
        status.update(removing=now, message="hold time over: the old set is being removed")
    if not dirty and not in_progress:
        if watched_until:
            decision.wake(min(watched_until))  # completed once the last new tasks were watched long enough
        elif current in (UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED, UpdateState.AWAITING_PROMOTION,
                         UpdateState.SWITCHED):
            status.update(state=UpdateState.ROLLBACK_COMPLETED if rolling_back else UpdateState.COMPLETED,
                          message="rollback completed" if rolling_back else "update completed", completed_at=now)
            status.pop("traffic", None)  # one set is left: every running task serves
        return finish()
    if holding_canaries:
        # blue-green: every slot gets its new task at once, whatever parallelism says
        room = len(dirty) if blue_green else config.canary - updated_slots
        if room <= 0 or not dirty:
            name = service.spec.name
            if not_running or watched_until:
                if watched_until:
                    decision.wake(min(watched_until))
            elif config.auto_promote and blue_green:
                status.update(switched(status, config.hold, now, "promoted automatically"))
                decision.wake(now)
            elif config.auto_promote:
                status.update(promoted=True, state=UpdateState.UPDATING, message="canaries promoted automatically")
                decision.wake(now)  # the rollout goes on at once, with the old tasks of the canary slots retired
            elif blue_green:
                status.update(state=UpdateState.AWAITING_PROMOTION,
                              message=f"blue-green: the new set ({updated_slots} task(s)) runs beside the old one, "
                                      f"out of traffic: `swarmlet service promote {name}` switches traffic to it, "
                                      f"`swarmlet service rollback {name}` drops it")
            else:
                status.update(state=UpdateState.AWAITING_PROMOTION,
                              message=f"{updated_slots} canary task(s) running beside the old ones: "
                                      f"`swarmlet service promote {name}` goes on, "
                                      f"`swarmlet service rollback {name}` drops them")
            return finish()
        for key, old in dirty[:room]:  # canaries: new tasks beside the old ones, whatever the order
            if decision.full():
                break
            node_id = key if service.spec.mode in GLOBAL_MODES else None
            _new_task(service, decision, now, slot=None if node_id else key, node_id=node_id)
        return finish()
    parallelism = config.parallelism or len(dirty)
    room = parallelism - in_progress
    if room <= 0 or not dirty:
        return finish()
    if config.delay > 0 and started and in_progress == 0 and max(started) + config.delay > now:
        decision.wake(max(started) + config.delay)
        return finish()
    start_first = config.order == UPDATE_START_FIRST
    for key, old in dirty[:room]:
        if decision.full():
            break
        node_id = key if service.spec.mode in GLOBAL_MODES else None
        slot = None if node_id else key
        running_old = [t for t in old if state(t) == TaskState.RUNNING]
        if start_first and running_old:
            _new_task(service, decision, now, slot=slot, node_id=node_id)
        else:
            for task in old:
                decision.set_desired(task, DesiredState.SHUTDOWN)
            _new_task(service, decision, now, slot=slot, node_id=node_id,
                      desired_state=DesiredState.READY if running_old else DesiredState.RUNNING)
    finish()


FAILURE_CONTINUE, FAILURE_PAUSE, FAILURE_ROLLBACK = UPDATE_FAILURE_ACTIONS


def _service_status(service: Service, waiting_for: str | None, decision: Decision) -> None:
    current = service.status
    wanted = dict(current, **(decision.service_status or {}))
    if waiting_for or current.get("message"):
        wanted["message"] = waiting_for or ""
    decision.service_status = wanted if wanted != current else None
