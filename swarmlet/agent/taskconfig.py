"""A task, as the dispatcher sends it, mapped to the runtime's ContainerConfig (pure).

The task's spec arrives as a dict on the session; it is read here through the typed
``TaskSpec`` view (``swarmlet.api.views``), so every default is the vocabulary's.
Only host-mode published ports are given to the runtime (ingress ports are the routing
mesh's: the node's data plane forwards them). Each network attachment gets the
service's short name as an alias, as ``docker stack deploy`` does.

On a node that runs the overlay data plane (``plane`` given: the node's network plane as
last applied), each overlay network of the task is attached as the data plane's Docker
network for it (``docker_network_name``), with the task's allocated address, and the
container resolves through the node's resolver on its first network's gateway. On a node
without one, a network is the engine's own bridge network of that name, as before.
"""
from __future__ import annotations

from swarmlet.api import specs
from swarmlet.api.netplane import NetworkPlane, docker_network_name
from swarmlet.api.objects import STACK_NAMESPACE_LABEL
from swarmlet.api.views import TaskSpec
from swarmlet.runtime import (ContainerConfig, FileReference, HealthCheck, LogConfig, Mount, NetworkAttachment,
                              PublishedPort, TaskRuntimeError, Ulimit)

PUBLISH_MODE_HOST = "host"
DISABLED_HEALTHCHECK = "NONE"


def _file_refs(refs: list[specs.FileRef], files: dict[str, dict]) -> list[FileReference]:
    return [FileReference(name=ref.source, data=files[ref.source]["data"], target=ref.target,
                          uid=int(ref.uid or 0), gid=int(ref.gid or 0), mode=ref.mode)
            for ref in refs]


def _healthcheck(check: specs.HealthCheck | None) -> HealthCheck | None:
    """None (the image's check, untouched) when the service sets none; ["NONE"] is kept,
    to switch the image's check off."""
    if check is None:
        return None
    return HealthCheck(test=list(check.test) if check.test else None, interval=check.interval,
                       timeout=check.timeout, retries=check.retries, start_period=check.start_period,
                       start_interval=check.start_interval)


def _mount(mount: specs.Mount) -> Mount:
    return Mount(type=mount.type, target=mount.target, source=mount.source, read_only=mount.read_only,
                 propagation=mount.bind_propagation, no_copy=mount.volume_nocopy, volume_driver=mount.volume_driver,
                 volume_driver_opts=dict(mount.volume_driver_opts), volume_labels=dict(mount.volume_labels),
                 tmpfs_size=mount.tmpfs_size, tmpfs_mode=mount.tmpfs_mode)


def _logging(driver: specs.LogDriver | None) -> LogConfig | None:
    return LogConfig(driver.name, dict(driver.options)) if driver is not None else None


def _tmpfs(entries: list[str]) -> dict[str, str]:
    result = {}
    for entry in entries:
        target, _, options = entry.partition(":")
        result[target] = options
    return result


def has_healthcheck(spec: TaskSpec) -> bool:
    """Whether the spec itself gives a health check test (an image's is not known here)."""
    check = spec.container.healthcheck
    return check is not None and bool(check.test) and check.test[0] != DISABLED_HEALTHCHECK


def network_attachments(spec: TaskSpec, short_name: str,
                        plane: NetworkPlane | None) -> tuple[list[NetworkAttachment], list[str]]:
    """The task's attachments, and the resolvers the overlay gives it (empty without one)."""
    attachments, dns = [], []
    for network in spec.networks:
        aliases = sorted({*network.aliases, short_name})
        address = spec.network_addresses.get(network.name)
        if plane is None or address is None:
            attachments.append(NetworkAttachment(network.name, aliases, dict(network.driver_opts)))
            continue
        overlay = plane.network(network.name)  # a stack network's ID is its cluster name
        if overlay is None:
            raise TaskRuntimeError(f"network {network.name} is not in this node's network plane (yet)")
        # No aliases: the data plane's resolver answers the service's names and aliases
        # (with the VIP); as Docker aliases the engine's embedded resolver would answer
        # them itself, with the local task's address, and bypass the VIP.
        attachments.append(NetworkAttachment(docker_network_name(overlay), [], dict(network.driver_opts),
                                             ipv4_address=address, overlay=True))
        dns = dns or [overlay.gateway]
    return attachments, dns


def container_config(task_id: str, spec: TaskSpec, node_id: str, secrets: dict[str, dict],
                     configs: dict[str, dict], plane: NetworkPlane | None = None) -> ContainerConfig:
    """``secrets``/``configs``: name -> {"data": bytes} as in the assignment message.
    Raises KeyError naming a secret or config that did not come with the task, and
    TaskRuntimeError for an overlay network the node's ``plane`` does not have."""
    container = spec.container
    stack = spec.stack
    short_name = spec.service_name[len(stack) + 1:] if stack else spec.service_name
    networks, overlay_dns = network_attachments(spec, short_name, plane)
    labels = dict(container.labels)
    if stack:
        labels[STACK_NAMESPACE_LABEL] = stack
    return ContainerConfig(
        task_id=task_id, service_id=spec.service_id, service_name=spec.service_name, node_id=node_id,
        image=container.image, stack_namespace=stack, command=container.command, entrypoint=container.entrypoint,
        env=dict(container.env), labels=labels, hostname=container.hostname, user=container.user,
        working_dir=container.working_dir, stop_signal=container.stop_signal,
        stop_grace_period=container.stop_grace_period, init=bool(container.init), read_only=container.read_only,
        tty=container.tty, stdin_open=container.stdin_open, cap_add=list(container.cap_add),
        cap_drop=list(container.cap_drop),
        ulimits=[Ulimit(name, limit.soft, limit.hard) for name, limit in container.ulimits.items()],
        sysctls=dict(container.sysctls),
        extra_hosts=dict(entry.split(":", 1) for entry in container.extra_hosts if ":" in entry),
        dns=[*overlay_dns, *container.dns], dns_search=list(container.dns_search), dns_options=list(container.dns_options),
        oom_score_adj=container.oom_score_adj, isolation=container.isolation, logging=_logging(container.logging),
        tmpfs=_tmpfs(container.tmpfs), healthcheck=_healthcheck(container.healthcheck),
        mounts=[_mount(m) for m in container.mounts],
        ports=[PublishedPort(target=p.target, published=p.published, protocol=p.protocol)
               for p in spec.ports if p.mode == PUBLISH_MODE_HOST],
        resources=spec.resources.limits,
        networks=networks,
        secrets=_file_refs(container.secrets, secrets),
        configs=_file_refs(container.configs, configs),
    )
