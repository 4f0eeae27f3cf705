"""The runtime layer the worker agent drives: one narrow interface (`Runtime`), two
implementations (`DockerRuntime`, `ProcessRuntime`) and a simulated one for scale tests
(`HollowRuntime`). See base.py for the contract."""

from swarmlet.runtime.base import (
    ContainerConfig,
    EventKind,
    ExitStatus,
    FileReference,
    HealthCheck,
    HealthStatus,
    ImageNotFoundError,
    LogConfig,
    Mount,
    NetworkAttachment,
    NodeDescription,
    OwnedTask,
    PublishedPort,
    Resources,
    Runtime,
    RuntimeEvent,
    SecretStorageError,
    TaskNotFoundError,
    TaskRuntimeError,
    TaskRuntimeState,
    ContainerState,
    Ulimit,
)
from swarmlet.runtime.docker import DockerRuntime
from swarmlet.runtime.hollow import HollowRuntime
from swarmlet.runtime.process import ProcessRuntime

__all__ = [
    "ContainerConfig",
    "DockerRuntime",
    "EventKind",
    "ExitStatus",
    "FileReference",
    "HealthCheck",
    "HealthStatus",
    "HollowRuntime",
    "ImageNotFoundError",
    "LogConfig",
    "Mount",
    "NetworkAttachment",
    "NodeDescription",
    "OwnedTask",
    "ProcessRuntime",
    "PublishedPort",
    "Resources",
    "Runtime",
    "RuntimeEvent",
    "SecretStorageError",
    "TaskNotFoundError",
    "TaskRuntimeError",
    "TaskRuntimeState",
    "ContainerState",
    "Ulimit",
]
