"""Typed specs: the shared vocabulary of swarmlet.

The Compose loader produces these, the store keeps them as plain dicts (`to_dict()`,
msgpack-able), and the orchestrators, scheduler and agent read them back with
`from_dict()`. Shapes follow SwarmKit's api/specs.proto, simplified.

Units everywhere: durations are float seconds, memory and sizes int bytes, CPUs float.
Every default lives in the constants below (Docker Swarm's defaults).
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

# --- defaults (Docker Swarm's) -------------------------------------------------------

DEFAULT_SERVICE_MODE = "replicated"
DEFAULT_REPLICAS = 1
DEFAULT_ENDPOINT_MODE = "vip"
DEFAULT_PORT_PROTOCOL = "tcp"
DEFAULT_PUBLISH_MODE = "ingress"

DEFAULT_RESTART_CONDITION = "any"
DEFAULT_RESTART_DELAY = 5.0
DEFAULT_RESTART_MAX_ATTEMPTS = 0  # 0 = unlimited
DEFAULT_RESTART_WINDOW = 0.0

DEFAULT_UPDATE_PARALLELISM = 1
DEFAULT_UPDATE_DELAY = 0.0
DEFAULT_UPDATE_FAILURE_ACTION = "pause"
DEFAULT_UPDATE_MONITOR = 5.0
DEFAULT_UPDATE_MAX_FAILURE_RATIO = 0.0
DEFAULT_UPDATE_ORDER = "stop-first"
DEFAULT_UPDATE_CANARY = 0  # new tasks started beside the old ones before the rollout goes on
DEFAULT_UPDATE_AUTO_PROMOTE = False  # canaries wait for `service promote`
DEFAULT_UPDATE_BLUE_GREEN = False  # a whole new set, out of traffic until the switch
# After a blue-green switch the old set keeps running, out of traffic, this long (for an
# instant switch back), then goes: Argo Rollouts' scaleDownDelaySeconds default.
DEFAULT_UPDATE_HOLD = 30.0

# Autoscaling (Compose `deploy.x-autoscale`), Kubernetes' HPA defaults: a scale-up acts on
# the latest recommendation, a scale-down on the highest of the last 5 minutes.
DEFAULT_AUTOSCALE_MIN_REPLICAS = 1
DEFAULT_AUTOSCALE_SCALE_UP_WINDOW = 0.0
DEFAULT_AUTOSCALE_SCALE_DOWN_WINDOW = 300.0

DEFAULT_MAX_REPLICAS_PER_NODE = 0  # 0 = no limit
DEFAULT_STOP_GRACE_PERIOD = 10.0

DEFAULT_NETWORK_DRIVER = "overlay"
DEFAULT_VOLUME_DRIVER = "local"
DEFAULT_NETWORK_NAME = "default"

DEFAULT_FILE_UID = "0"
DEFAULT_FILE_GID = "0"
DEFAULT_FILE_MODE = 0o444
SECRETS_DIR = "/run/secrets"


def file_target(kind: str, target: str) -> str:
    """Where a secret or config (``kind``) is mounted: a relative target is under
    /run/secrets for a secret, under / for a config (as Swarm)."""
    if target.startswith("/"):
        return target
    return f"{SECRETS_DIR}/{target}" if kind == "secret" else f"/{target}"

DEFAULT_DEPENDENCY_CONDITION = "service_started"

# --- allowed values ------------------------------------------------------------------

SERVICE_MODES = ("replicated", "global", "replicated-job", "global-job")
ENDPOINT_MODES = ("vip", "dnsrr")
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
PUBLISH_MODES = ("ingress", "host")
RESTART_CONDITIONS = ("none", "on-failure", "any")
UPDATE_FAILURE_ACTIONS = ("continue", "pause", "rollback")
ROLLBACK_FAILURE_ACTIONS = ("continue", "pause")
UPDATE_ORDERS = ("stop-first", "start-first")
MOUNT_TYPES = ("bind", "volume", "tmpfs")
DEPENDENCY_CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
# The same values by name, for the code that acts on them.
RESTART_NONE, RESTART_ON_FAILURE, RESTART_ANY = RESTART_CONDITIONS
UPDATE_STOP_FIRST, UPDATE_START_FIRST = UPDATE_ORDERS
ENDPOINT_MODE_VIP, ENDPOINT_MODE_DNSRR = ENDPOINT_MODES
PUBLISH_MODE_INGRESS, PUBLISH_MODE_HOST = PUBLISH_MODES
DEPENDENCY_STARTED, DEPENDENCY_HEALTHY, DEPENDENCY_COMPLETED_SUCCESSFULLY = DEPENDENCY_CONDITIONS


# --- plain-dict conversion -------------------------------------------------------------

T = TypeVar("T")


class SpecBase:
    """Gives every spec `to_dict()` and `from_dict()` driven by its type hints."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        hints = _field_types(cls)
        return cls(**{name: _from_plain(hints[name], value) for name, value in data.items()})


def _to_plain(value: Any) -> Any:
    if isinstance(value, SpecBase):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        # Sorted so that equal specs always serialise to identical bytes.
        return {k: _to_plain(value[k]) for k in sorted(value)}
    return value


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_plain(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _from_plain(inner[0], value)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_from_plain(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: _from_plain(item, v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, SpecBase):
        return hint.from_dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# --- specs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Resources(SpecBase):
    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None


@dataclass(frozen=True)
class ResourceRequirements(SpecBase):
    limits: Resources = field(default_factory=Resources)
    reservations: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class Autoscale(SpecBase):
    """A replicated service's replica count from its tasks' usage (swarmlet/manager/autoscale.py).
    A target is a utilisation of the tasks' reservation, in percent (Kubernetes'
    averageUtilization): 70 = each task uses 70 % of the CPUs (or memory) it reserves."""

    max_replicas: int
    min_replicas: int = DEFAULT_AUTOSCALE_MIN_REPLICAS
    target_cpu_percent: float | None = None
    target_memory_percent: float | None = None
    scale_up_window: float = DEFAULT_AUTOSCALE_SCALE_UP_WINDOW  # seconds
    scale_down_window: float = DEFAULT_AUTOSCALE_SCALE_DOWN_WINDOW  # seconds


@dataclass(frozen=True)
class RestartPolicy(SpecBase):
    condition: str = DEFAULT_RESTART_CONDITION
    delay: float = DEFAULT_RESTART_DELAY
    max_attempts: int = DEFAULT_RESTART_MAX_ATTEMPTS
    window: float = DEFAULT_RESTART_WINDOW


@dataclass(frozen=True)
class UpdateConfig(SpecBase):
    parallelism: int = DEFAULT_UPDATE_PARALLELISM
    delay: float = DEFAULT_UPDATE_DELAY
    failure_action: str = DEFAULT_UPDATE_FAILURE_ACTION
    monitor: float = DEFAULT_UPDATE_MONITOR
    max_failure_ratio: float = DEFAULT_UPDATE_MAX_FAILURE_RATIO
    order: str = DEFAULT_UPDATE_ORDER
    # swarmlet's extensions (Compose `x-canary`, `x-auto-promote`, `x-blue-green`, `x-hold`;
    # update_config only)
    canary: int = DEFAULT_UPDATE_CANARY
    auto_promote: bool = DEFAULT_UPDATE_AUTO_PROMOTE
    blue_green: bool = DEFAULT_UPDATE_BLUE_GREEN
    hold: float = DEFAULT_UPDATE_HOLD  # seconds


@dataclass(frozen=True)
class Platform(SpecBase):
    """A platform the service's image runs on; an empty field matches any."""

    os: str = ""  # "linux"
    architecture: str = ""  # "amd64" or "x86_64": the scheduler knows both names


@dataclass(frozen=True)
class Placement(SpecBase):
    constraints: list[str] = field(default_factory=list)  # "node.role==manager"
    preferences: list[str] = field(default_factory=list)  # spread descriptors, "node.labels.zone"
    max_replicas_per_node: int = DEFAULT_MAX_REPLICAS_PER_NODE
    platforms: list[Platform] = field(default_factory=list)  # empty: any platform


@dataclass(frozen=True)
class PortConfig(SpecBase):
    target: int
    published: int | None = None  # None: the cluster picks one
    protocol: str = DEFAULT_PORT_PROTOCOL
    mode: str = DEFAULT_PUBLISH_MODE


@dataclass(frozen=True)
class EndpointSpec(SpecBase):
    mode: str = DEFAULT_ENDPOINT_MODE
    ports: list[PortConfig] = field(default_factory=list)


@dataclass(frozen=True)
class NetworkAttachment(SpecBase):
    name: str
    aliases: list[str] = field(default_factory=list)
    driver_opts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mount(SpecBase):
    type: str
    target: str
    source: str | None = None  # absolute host path (bind), volume name, or None
    read_only: bool = False
    volume_nocopy: bool = False
    # A stack volume's driver, options and labels, for the engine to create it with
    # (docker/cli puts them on every mount of the volume).
    volume_driver: str | None = None
    volume_driver_opts: dict[str, str] = field(default_factory=dict)
    volume_labels: dict[str, str] = field(default_factory=dict)
    bind_propagation: str | None = None
    tmpfs_size: int | None = None
    tmpfs_mode: int | None = None


@dataclass(frozen=True)
class FileRef(SpecBase):
    """A secret or config made visible inside the container as a file."""
    source: str
    target: str
    uid: str = DEFAULT_FILE_UID
    gid: str = DEFAULT_FILE_GID
    mode: int = DEFAULT_FILE_MODE


@dataclass(frozen=True)
class HealthCheck(SpecBase):
    """Docker's HEALTHCHECK; None anywhere means the image's (as docker stack deploy sends
    an empty test and zero durations): a check that only sets `interval` re-times the
    image's test, and a `test` alone keeps the image's timings."""
    test: list[str] | None = None  # ["CMD", …], ["CMD-SHELL", "…"], ["NONE"] (disabled)
    interval: float | None = None
    timeout: float | None = None
    retries: int | None = None
    start_period: float | None = None
    start_interval: float | None = None


@dataclass(frozen=True)
class Ulimit(SpecBase):
    soft: int
    hard: int


@dataclass(frozen=True)
class LogDriver(SpecBase):
    name: str | None = None  # None: the engine's default driver
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerSpec(SpecBase):
    image: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    hostname: str | None = None
    user: str | None = None
    working_dir: str | None = None
    stop_grace_period: float = DEFAULT_STOP_GRACE_PERIOD
    stop_signal: str | None = None
    init: bool | None = None
    read_only: bool = False
    tty: bool = False
    stdin_open: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    ulimits: dict[str, Ulimit] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    extra_hosts: list[str] = field(default_factory=list)  # "hostname:ip"
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    oom_score_adj: int | None = None
    isolation: str | None = None  # None: the engine's default
    tmpfs: list[str] = field(default_factory=list)
    healthcheck: HealthCheck | None = None
    mounts: list[Mount] = field(default_factory=list)
    secrets: list[FileRef] = field(default_factory=list)
    configs: list[FileRef] = field(default_factory=list)
    logging: LogDriver | None = None


@dataclass(frozen=True)
class ServiceSpec(SpecBase):
    name: str
    container: ContainerSpec
    labels: dict[str, str] = field(default_factory=dict)
    mode: str = DEFAULT_SERVICE_MODE
    replicas: int | None = DEFAULT_REPLICAS  # None for global modes
    resources: ResourceRequirements = field(default_factory=ResourceRequirements)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    placement: Placement = field(default_factory=Placement)
    networks: list[NetworkAttachment] = field(default_factory=list)
    endpoint: EndpointSpec = field(default_factory=EndpointSpec)
    update_config: UpdateConfig = field(default_factory=UpdateConfig)
    rollback_config: UpdateConfig = field(default_factory=UpdateConfig)
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> condition
    force_update: int = 0  # `service update --force` counts it up: a new spec, so every task is replaced
    autoscale: Autoscale | None = None  # Compose `deploy.x-autoscale`: replicas follow usage


@dataclass(frozen=True)
class StoredFileSpec(SpecBase):
    """Common shape of secrets and configs: data from a file or given inline, or already
    in the cluster."""
    name: str
    file: str | None = None  # absolute path
    content: str | None = None  # inline data (Compose `content:`, or `environment:` resolved)
    external: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    cluster_name: str | None = None  # explicit `name:`; otherwise deploy derives one


@dataclass(frozen=True)
class SecretSpec(StoredFileSpec):
    pass


@dataclass(frozen=True)
class ConfigSpec(StoredFileSpec):
    pass


@dataclass(frozen=True)
class IpamConfig(SpecBase):
    """One Compose `ipam.config` entry: the network's subnet instead of one from the
    cluster's pool, and optionally the range its addresses are taken from."""
    subnet: str | None = None
    gateway: str | None = None  # kept out of allocation (each node has its own gateway)
    ip_range: str | None = None


@dataclass(frozen=True)
class NetworkSpec(SpecBase):
    name: str
    driver: str = DEFAULT_NETWORK_DRIVER
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    external: bool = False
    attachable: bool = False
    internal: bool = False
    cluster_name: str | None = None
    ipam: list[IpamConfig] = field(default_factory=list)


@dataclass(frozen=True)
class VolumeSpec(SpecBase):
    name: str
    driver: str = DEFAULT_VOLUME_DRIVER
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    external: bool = False
    cluster_name: str | None = None


@dataclass(frozen=True)
class StackSpec(SpecBase):
    name: str | None = None
    services: dict[str, ServiceSpec] = field(default_factory=dict)
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    volumes: dict[str, VolumeSpec] = field(default_factory=dict)
    secrets: dict[str, SecretSpec] = field(default_factory=dict)
    configs: dict[str, ConfigSpec] = field(default_factory=dict)
