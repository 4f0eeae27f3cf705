"""What the engine reports, in the runtime's vocabulary: a container's inspected State,
its listing entry and `docker info`. Pure: no engine calls here."""

from __future__ import annotations

import re
from datetime import datetime

from swarmlet.runtime.base import (
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_STACK_NAMESPACE,
    LABEL_TASK_ID,
    ExitStatus,
    HealthStatus,
    NodeDescription,
    OwnedTask,
    TaskRuntimeState,
    ContainerState,
    describe_exit,
    describe_unhealthy,
)

CONTAINER_STATES = {
    "created": ContainerState.CREATED,
    "running": ContainerState.RUNNING,
    "paused": ContainerState.RUNNING,
    "restarting": ContainerState.RUNNING,
    "removing": ContainerState.EXITED,
    "exited": ContainerState.EXITED,
    "dead": ContainerState.EXITED,
}
_DOCKER_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def container_state(container_status: str) -> ContainerState:
    return CONTAINER_STATES.get(container_status, ContainerState.EXITED)


def parse_docker_time(value: str | None) -> datetime | None:
    # Docker reports "0001-01-01T00:00:00Z" for "never", and nanoseconds Python can't parse.
    match = _DOCKER_TIME.match(value or "")
    if match is None or value.startswith("0001-"):
        return None
    seconds, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{seconds}.{(fraction or '0')[:6]:0<6}{zone}")


def last_health_output(state: dict) -> str:
    health_log = (state.get("Health") or {}).get("Log") or []
    return health_log[-1].get("Output", "") if health_log else ""


def exit_status_from_state(state: dict) -> ExitStatus:
    """Map a container's State (from inspect) to the task's exit status."""
    exit_code = int(state.get("ExitCode", -1))
    oom_killed = bool(state.get("OOMKilled"))
    unhealthy = (state.get("Health") or {}).get("Status") == "unhealthy"
    error = state.get("Error") or describe_exit(
        exit_code, oom_killed, last_health_output(state) if unhealthy else None
    )
    return ExitStatus(exit_code=exit_code, oom_killed=oom_killed, error=error)


def runtime_state(task_id: str, state: dict) -> TaskRuntimeState:
    """Map a container's State (from inspect) to the task's runtime state."""
    current = container_state(state["Status"])
    health_status = (state.get("Health") or {}).get("Status")
    health = HealthStatus(health_status) if health_status else HealthStatus.NONE
    if current is ContainerState.EXITED:
        error = exit_status_from_state(state).error
    elif health is HealthStatus.UNHEALTHY:
        error = describe_unhealthy(last_health_output(state))
    else:
        error = state.get("Error") or None
    return TaskRuntimeState(
        task_id=task_id,
        state=current,
        health=health,
        exit_code=state.get("ExitCode") if current is ContainerState.EXITED else None,
        started_at=parse_docker_time(state.get("StartedAt")),
        finished_at=parse_docker_time(state.get("FinishedAt")) if current is ContainerState.EXITED else None,
        error=error,
    )


def owned_task(listed: dict) -> OwnedTask | None:
    """A container of the engine's listing as a task of this node; None if it is no task."""
    labels = listed.get("Labels") or {}
    task_id = labels.get(LABEL_TASK_ID)
    if not task_id:
        return None
    return OwnedTask(
        task_id=task_id,
        service_id=labels.get(LABEL_SERVICE_ID, ""),
        service_name=labels.get(LABEL_SERVICE_NAME, ""),
        stack_namespace=labels.get(LABEL_STACK_NAMESPACE, ""),
        state=container_state(listed.get("State", "")),
        labels=labels,
    )


def engine_labels(labels: list[str] | None) -> dict[str, str]:
    """The engine's `--label key=value` list as a mapping, as Docker's Swarm executor reads it:
    a label without a value is skipped, and a later value for the same key wins."""
    found = {}
    for label in labels or []:
        key, sep, value = label.partition("=")
        if sep:
            found[key] = value
    return found


def node_description(info: dict) -> NodeDescription:
    """`docker info` as the node's description. The platform is kept as the engine names it
    (`linux`, `x86_64`); the scheduler normalises architectures when it compares them."""
    return NodeDescription(
        os=info.get("OSType", ""),
        architecture=info.get("Architecture", ""),
        cpus=float(info.get("NCPU", 0)),
        memory_bytes=int(info.get("MemTotal", 0)),
        engine_labels=engine_labels(info.get("Labels")),
    )
