"""A task's ContainerConfig as the docker SDK's container-create arguments. Pure: the
engine is not asked anything (its API version is given), so this is tested without one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import docker.types

from swarmlet.runtime.base import ContainerConfig, HealthCheck, NetworkAttachment
from swarmlet.runtime.taskfiles import TaskFile

# Private: remembered on the container so shutdown() knows it even after an agent restart
# (Docker's own StopTimeout only holds whole seconds).
LABEL_STOP_GRACE = "swarmlet.stop.grace-period"


@dataclass(frozen=True)
class ContainerCreate:
    """`APIClient.create_container(**kwargs)`, then `connect_container_to_network(id,
    network_id, aliases=…, driver_opt=…, ipv4_address=…)` for each of `later_networks`:
    the engine takes one network at creation."""

    kwargs: dict[str, Any]
    later_networks: list[tuple[str, list[str] | None, dict[str, str] | None, str | None]] = \
        field(default_factory=list)


def container_name(config: ContainerConfig) -> str:
    return f"{config.service_name}.{config.task_id[:12]}"


def _seconds_to_ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def docker_healthcheck(check: HealthCheck) -> dict:
    """An empty test and zero timings are the image's (the Engine API's "inherit")."""
    healthcheck = docker.types.Healthcheck(
        test=check.test or [],
        interval=_seconds_to_ns(check.interval or 0),
        timeout=_seconds_to_ns(check.timeout or 0),
        retries=check.retries or 0,
        start_period=_seconds_to_ns(check.start_period or 0),
    )
    if check.start_interval:  # API 1.44+; the SDK does not know it, older engines ignore it
        healthcheck["StartInterval"] = _seconds_to_ns(check.start_interval)
    return healthcheck


def docker_mount(mount) -> docker.types.Mount:
    driver = docker.types.DriverConfig(mount.volume_driver, mount.volume_driver_opts or None) \
        if mount.volume_driver or mount.volume_driver_opts else None  # no name: the engine's default driver
    return docker.types.Mount(
        target=mount.target, source=mount.source, type=mount.type, read_only=mount.read_only,
        propagation=mount.propagation, no_copy=mount.no_copy, labels=mount.volume_labels or None,
        driver_config=driver, tmpfs_size=mount.tmpfs_size, tmpfs_mode=mount.tmpfs_mode,
    )


def container_create(
    config: ContainerConfig,
    api_version: str,
    task_files: Sequence[TaskFile] = (),
    network_ids: Sequence[str] = (),
) -> ContainerCreate:
    """`network_ids[i]` is the engine's ID of `config.networks[i]`; `task_files` are the
    task's secrets and configs on the host, bind-mounted read-only at their targets."""
    if len(network_ids) != len(config.networks):
        raise ValueError(f"{len(config.networks)} networks but {len(network_ids)} network IDs")
    mounts = [docker_mount(mount) for mount in config.mounts]
    mounts += [
        docker.types.Mount(target=file.target, source=str(file.host_path), type="bind", read_only=True)
        for file in task_files
    ]
    resources = config.resources
    attachments: list[tuple[str, NetworkAttachment]] = list(zip(network_ids, config.networks))
    host_config = docker.types.HostConfig(
        version=api_version,
        mounts=mounts,
        port_bindings={f"{port.target}/{port.protocol}": port.published for port in config.ports} or None,
        nano_cpus=int(resources.cpus * 1e9) if resources.cpus else None,
        mem_limit=resources.memory,
        pids_limit=resources.pids,
        init=config.init or None,
        read_only=config.read_only or None,
        cap_add=config.cap_add or None,
        cap_drop=config.cap_drop or None,
        ulimits=[docker.types.Ulimit(name=u.name, soft=u.soft, hard=u.hard) for u in config.ulimits] or None,
        sysctls=config.sysctls or None,
        extra_hosts=config.extra_hosts or None,
        dns=config.dns or None,
        dns_search=config.dns_search or None,
        dns_opt=config.dns_options or None,
        oom_score_adj=config.oom_score_adj,
        isolation=config.isolation,
        log_config=docker.types.LogConfig(type=config.logging.driver, config=config.logging.options)
        if config.logging else None,
        tmpfs=config.tmpfs or None,
        network_mode=attachments[0][0] if attachments else None,
    )
    networking_config = None
    if attachments:
        first_id, first = attachments[0]
        networking_config = docker.types.NetworkingConfig(
            {first_id: docker.types.EndpointConfig(api_version, aliases=first.aliases or None,
                                                   driver_opt=first.driver_opts or None,
                                                   ipv4_address=first.ipv4_address)}
        )
    labels = {**config.all_labels(), LABEL_STOP_GRACE: repr(float(config.stop_grace_period))}
    kwargs = dict(
        image=config.image,
        command=config.command,
        entrypoint=config.entrypoint,
        environment=config.env or None,
        labels=labels,
        hostname=config.hostname,
        user=config.user,
        working_dir=config.working_dir,
        tty=config.tty,
        stdin_open=config.stdin_open,
        stop_signal=config.stop_signal,
        stop_timeout=math.ceil(config.stop_grace_period),
        healthcheck=docker_healthcheck(config.healthcheck) if config.healthcheck else None,
        ports=[(port.target, port.protocol) for port in config.ports] or None,
        name=container_name(config),
        host_config=host_config,
        networking_config=networking_config,
    )
    later = [(network_id, attachment.aliases or None, attachment.driver_opts or None, attachment.ipv4_address)
             for network_id, attachment in attachments[1:]]
    return ContainerCreate(kwargs=kwargs, later_networks=later)
