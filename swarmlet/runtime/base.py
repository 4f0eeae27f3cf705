"""The narrow interface between the worker agent and whatever runs its tasks.

Shaped like SwarmKit's `agent/exec.Controller`: the agent maps a task's service spec to a
`ContainerConfig`, then drives one task through prepare -> start -> wait -> shutdown -> remove
and never learns which runtime it talks to. A runtime instance belongs to exactly one node:
it only ever sees and touches containers/processes labelled with that node's ID, because
several nodes may share one Docker daemon (or one machine) in development and tests.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import os
import platform
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

# The task's resource limits are the service's (one Resources class, in the vocabulary);
# defaults are the vocabulary's too.
from swarmlet.api.specs import DEFAULT_FILE_MODE, DEFAULT_PORT_PROTOCOL, DEFAULT_STOP_GRACE_PERIOD, Resources

# Label keys every runtime writes on what it creates; `list_owned` reads them back.
LABEL_TASK_ID = "swarmlet.task.id"
LABEL_SERVICE_ID = "swarmlet.service.id"
LABEL_SERVICE_NAME = "swarmlet.service.name"
LABEL_NODE_ID = "swarmlet.node.id"
LABEL_STACK_NAMESPACE = "swarmlet.stack.namespace"
LABEL_NETWORK = "swarmlet.network"

DEFAULT_STOP_SIGNAL = "SIGTERM"


class TaskRuntimeError(Exception):
    """Base of every error a runtime raises on purpose."""


class ImageNotFoundError(TaskRuntimeError):
    """The task's image is neither present on the node nor pullable."""


class TaskNotFoundError(TaskRuntimeError):
    """No container/process for this task exists on this node."""


class SecretStorageError(TaskRuntimeError):
    """Secrets could not be kept off the node's disk (no tmpfs where they would go)."""


@dataclass(frozen=True)
class Mount:
    type: str  # "bind" | "volume" | "tmpfs"
    target: str
    source: str | None = None  # host path (bind), volume name (volume), unused for tmpfs
    read_only: bool = False
    propagation: str | None = None  # bind: "rprivate", "rshared", …; None: the engine's default
    no_copy: bool = False  # volume: do not copy the image's files into a new volume
    # volume: what the engine creates a missing named volume with
    volume_driver: str | None = None
    volume_driver_opts: dict[str, str] = field(default_factory=dict)
    volume_labels: dict[str, str] = field(default_factory=dict)
    tmpfs_size: int | None = None  # bytes
    tmpfs_mode: int | None = None  # permission bits, e.g. 0o1777


@dataclass(frozen=True)
class PublishedPort:
    """A host-mode port: `published` on the node forwards to `target` in the task."""

    target: int
    published: int | None = None  # None: the engine picks a free host port
    protocol: str = DEFAULT_PORT_PROTOCOL  # "tcp" | "udp" | "sctp"


@dataclass(frozen=True)
class HealthCheck:
    """Docker's HEALTHCHECK: `test` is ["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]
    (disabled). None anywhere is the image's: no test re-times the image's check."""

    test: list[str] | None = None
    interval: float | None = None  # seconds
    timeout: float | None = None
    retries: int | None = None
    start_period: float | None = None
    start_interval: float | None = None  # engine API 1.44+; older engines ignore it

    def with_defaults(self) -> HealthCheck:
        """The check with the engine's timings wherever neither it nor an image sets one."""
        unset = {f.name: getattr(ENGINE_HEALTH_DEFAULTS, f.name) for f in dataclasses.fields(self)
                 if getattr(self, f.name) is None and f.name != "test"}
        return dataclasses.replace(self, **unset)


# What the engine uses when neither the service nor the image sets a health check timing.
ENGINE_HEALTH_DEFAULTS = HealthCheck(interval=30.0, timeout=30.0, retries=3, start_period=0.0, start_interval=5.0)


@dataclass(frozen=True)
class NetworkAttachment:
    name: str
    aliases: list[str] = field(default_factory=list)
    driver_opts: dict[str, str] = field(default_factory=dict)  # of the endpoint, for the network driver
    # On a node running the overlay data plane: the task's address, allocated by the
    # manager, and the network is the data plane's (found by name, never created here).
    ipv4_address: str | None = None
    overlay: bool = False


@dataclass(frozen=True)
class LogConfig:
    driver: str | None = None  # None: the engine's default driver
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileReference:
    """A secret or config as the task sees it: bytes placed read-only at `target`."""

    name: str
    data: bytes
    target: str | None = None  # secrets: default /run/secrets/<name>; configs: /<name>
    uid: int = 0
    gid: int = 0
    mode: int = DEFAULT_FILE_MODE


@dataclass(frozen=True)
class Ulimit:
    name: str  # "nofile", "nproc", …
    soft: int
    hard: int


@dataclass
class ContainerConfig:
    """Everything one task needs at run time, already resolved by the agent."""

    # Identity: written as labels, read back by list_owned() for adoption.
    task_id: str
    service_id: str
    service_name: str
    node_id: str
    image: str
    stack_namespace: str = ""

    command: list[str] | None = None  # None: the image's CMD
    entrypoint: list[str] | None = None  # None: the image's ENTRYPOINT
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # user labels, besides identity
    hostname: str | None = None
    user: str | None = None
    working_dir: str | None = None
    stop_signal: str | None = None  # None: the image's, else SIGTERM
    stop_grace_period: float = DEFAULT_STOP_GRACE_PERIOD
    init: bool = False
    read_only: bool = False
    tty: bool = False
    stdin_open: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    ulimits: list[Ulimit] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    extra_hosts: dict[str, str] = field(default_factory=dict)  # hostname -> address
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    oom_score_adj: int | None = None
    isolation: str | None = None  # None: the engine's default
    logging: LogConfig | None = None  # None: the engine's default driver and options
    tmpfs: dict[str, str] = field(default_factory=dict)  # target -> mount options ("size=64m")
    healthcheck: HealthCheck | None = None  # None: the image's
    mounts: list[Mount] = field(default_factory=list)
    ports: list[PublishedPort] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    networks: list[NetworkAttachment] = field(default_factory=list)
    secrets: list[FileReference] = field(default_factory=list)
    configs: list[FileReference] = field(default_factory=list)

    def identity_labels(self) -> dict[str, str]:
        return {
            LABEL_TASK_ID: self.task_id,
            LABEL_SERVICE_ID: self.service_id,
            LABEL_SERVICE_NAME: self.service_name,
            LABEL_NODE_ID: self.node_id,
            LABEL_STACK_NAMESPACE: self.stack_namespace,
        }

    def all_labels(self) -> dict[str, str]:
        # Identity last, so a user label can never impersonate another task or node.
        return {**self.labels, **self.identity_labels()}


class ContainerState(str, enum.Enum):
    """Where a task's container (or process) is, as its runtime sees it; the task's own
    state (``api.objects.TaskState``) is the agent's to report from this."""

    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


class HealthStatus(str, enum.Enum):
    NONE = "none"  # no health check configured
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    oom_killed: bool = False
    error: str | None = None  # None when the task exited cleanly (code 0, not OOM-killed)


@dataclass(frozen=True)
class TaskRuntimeState:
    task_id: str
    state: ContainerState
    health: HealthStatus = HealthStatus.NONE
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class OwnedTask:
    """A task this node's runtime finds on the machine, e.g. after an agent restart."""

    task_id: str
    service_id: str
    service_name: str
    stack_namespace: str
    state: ContainerState
    labels: dict[str, str] = field(default_factory=dict)


class EventKind(str, enum.Enum):
    """What the agent hears of its tasks. A start is not an event (`start()` returning says
    it), nor is an OOM kill on its own: the exit that follows says it (see `describe_exit`)."""

    EXITED = "exited"
    HEALTH = "health"


@dataclass(frozen=True)
class RuntimeEvent:
    task_id: str
    kind: EventKind
    # exited: the exit message ("exit code 1", "exit code 137 (OOM killed)"); health:
    # "healthy", "starting" or "container unhealthy: <last check output>".
    detail: str = ""
    exit_code: int | None = None  # set on exited events


def describe_exit(exit_code: int, oom_killed: bool = False, unhealthy_output: str | None = None) -> str | None:
    """The one wording of a task's end that users see, shared by every runtime."""
    if oom_killed:
        return f"exit code {exit_code} (OOM killed)"
    if unhealthy_output is not None:
        return describe_unhealthy(unhealthy_output)
    if exit_code != 0:
        return f"exit code {exit_code}"
    return None


def describe_unhealthy(last_output: str) -> str:
    return f"container unhealthy: {last_output.strip()}"


@dataclass(frozen=True)
class NodeDescription:
    """What a runtime tells the managers about its node (part of SwarmKit's NodeDescription):
    the platform as the engine names it (`linux`, `x86_64`), capacity, and engine labels
    (Docker's `--label`s, for `engine.labels.*` constraints)."""

    os: str
    architecture: str
    cpus: float
    memory_bytes: int
    engine_labels: dict[str, str] = field(default_factory=dict)


def host_description() -> NodeDescription:
    """This machine, as the kernel reports it: for runtimes that run tasks on the host."""
    return NodeDescription(
        os=platform.system().lower(),
        architecture=platform.machine(),
        cpus=float(os.cpu_count() or 1),
        memory_bytes=_host_memory(),
    )


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class TaskUsage:
    """A running task's usage as its runtime measures it: CPU time is cumulative (the
    executor turns two readings into a rate), memory is what it holds now."""

    cpu_seconds: float
    memory: int  # bytes


class Runtime(abc.ABC):
    """What the agent drives; one instance per node. Tasks are addressed by task ID."""

    node_id: str

    @abc.abstractmethod
    async def prepare(self, config: ContainerConfig) -> None:
        """Check the image, set up networks/secrets, create the task without starting it.
        Idempotent: a task already prepared on this node is left as it is."""

    @abc.abstractmethod
    async def start(self, task_id: str) -> None: ...

    @abc.abstractmethod
    async def wait(self, task_id: str) -> ExitStatus:
        """Return once the task has exited (at once if it already has)."""

    @abc.abstractmethod
    async def shutdown(self, task_id: str, grace: float | None = None) -> None:
        """Send the stop signal, then kill after `grace` seconds (None: the task's own
        stop_grace_period). Returns once the task has exited; no-op if it is not running."""

    @abc.abstractmethod
    async def remove(self, task_id: str) -> None:
        """Remove the task and everything made for it (secrets included). No-op if gone."""

    @abc.abstractmethod
    async def inspect(self, task_id: str) -> TaskRuntimeState | None: ...

    @abc.abstractmethod
    def logs(self, task_id: str, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        """The task's output, one line at a time (no trailing newline); stdout and stderr
        interleaved. With `follow`, keeps going until the task exits."""

    @abc.abstractmethod
    async def list_owned(self) -> list[OwnedTask]: ...

    @abc.abstractmethod
    async def describe(self) -> NodeDescription:
        """The node as this runtime sees it, for the scheduler (sent at every session)."""

    async def remove_unused_networks(self, stack_namespace: str) -> list[str]:
        """Remove the networks this runtime made for `stack_namespace` that no task uses
        any more, on any node sharing the engine (created and stopped containers count as
        users). Returns the names removed. Runtimes without networks have nothing to do."""
        return []

    async def named_volumes(self) -> set[str]:
        """The named volumes this node's tasks mount (what `local down --volumes` removes
        once the tasks are gone). Runtimes without volumes have none."""
        return set()

    async def remove_volumes(self, names: set[str]) -> list[str]:
        """Remove these named volumes where no container uses them; returns the names removed."""
        return []

    async def usage(self, task_id: str) -> TaskUsage | None:
        """What the running task has used so far (for autoscaling); None when this runtime
        cannot tell or the task does not run."""
        return None

    @abc.abstractmethod
    def events(self) -> AsyncIterator[RuntimeEvent]:
        """Every event of this node's tasks from now on, until close()."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
