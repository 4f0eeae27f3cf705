"""The runtime layer the worker agent drives: one narrow interface (`Runtime`), two
implementations (`DockerRuntime`, `ProcessRuntime`). See base.py for the contract."""

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
    OwnedTask,
    PublishedPort,
    Resources,
    Runtime,
    RuntimeEvent,
    SecretStorageError,
    TaskNotFoundError,
    TaskRuntimeError,
    TaskRuntimeState,
    TaskState,
    Ulimit,
)
from swarmlet.runtime.dockerapi import DockerRuntime
from swarmlet.runtime.process import ProcessRuntime

__all__ = [
    "ContainerConfig",
    "DockerRuntime",
    "EventKind",
    "ExitStatus",
    "FileReference",
    "HealthCheck",
    "HealthStatus",
    "ImageNotFoundError",
    "LogConfig",
    "Mount",
    "NetworkAttachment",
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
    "TaskState",
    "Ulimit",
]
