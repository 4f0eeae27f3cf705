"""A task, as the dispatcher sends it, mapped to the runtime's ContainerConfig (pure).

Only host-mode published ports are given to the runtime (ingress publishing needs the
routing mesh, which swarmlet does not have yet). Each network attachment gets the
service's short name as an alias, as ``docker stack deploy`` does.
"""
from __future__ import annotations

from swarmlet.api.objects import STACK_NAMESPACE_LABEL
from swarmlet.runtime import (ContainerConfig, FileReference, HealthCheck, LogConfig, Mount, NetworkAttachment,
                              PublishedPort, Resources, Ulimit)


def _file_refs(refs: list[dict], files: dict[str, dict]) -> list[FileReference]:
    return [FileReference(name=ref["source"], data=files[ref["source"]]["data"], target=ref.get("target"),
                          uid=int(ref.get("uid") or 0), gid=int(ref.get("gid") or 0), mode=ref.get("mode", 0o444))
            for ref in refs]


def _healthcheck(check: dict | None) -> HealthCheck | None:
    """None (the image's check, untouched) when the service sets none; ["NONE"] is kept,
    to switch the image's check off."""
    if not check:
        return None
    return HealthCheck(test=list(check["test"]) if check.get("test") else None, interval=check.get("interval"),
                       timeout=check.get("timeout"), retries=check.get("retries"),
                       start_period=check.get("start_period"), start_interval=check.get("start_interval"))


def _mount(mount: dict) -> Mount:
    return Mount(type=mount["type"], target=mount["target"], source=mount.get("source"),
                 read_only=mount.get("read_only", False), propagation=mount.get("bind_propagation"),
                 no_copy=mount.get("volume_nocopy", False), volume_driver=mount.get("volume_driver"),
                 volume_driver_opts=dict(mount.get("volume_driver_opts") or {}),
                 volume_labels=dict(mount.get("volume_labels") or {}),
                 tmpfs_size=mount.get("tmpfs_size"), tmpfs_mode=mount.get("tmpfs_mode"))


def _logging(driver: dict | None) -> LogConfig | None:
    return LogConfig(driver.get("name"), dict(driver.get("options") or {})) if driver is not None else None


def _tmpfs(entries: list[str]) -> dict[str, str]:
    result = {}
    for entry in entries:
        target, _, options = entry.partition(":")
        result[target] = options
    return result


def has_healthcheck(spec: dict) -> bool:
    """Whether the spec itself gives a health check test (an image's is not known here)."""
    check = _healthcheck(spec["container"].get("healthcheck"))
    return check is not None and check.test is not None and check.test[0] != "NONE"


def container_config(task_id: str, spec: dict, node_id: str, secrets: dict[str, dict],
                     configs: dict[str, dict]) -> ContainerConfig:
    """``secrets``/``configs``: name -> {"data": bytes} as in the assignment message.
    Raises KeyError naming a secret or config that did not come with the task."""
    container = spec["container"]
    stack = spec.get("stack", "")
    short_name = spec["service_name"][len(stack) + 1:] if stack else spec["service_name"]
    limits = (spec.get("resources") or {}).get("limits") or {}
    labels = dict(container.get("labels") or {})
    if stack:
        labels[STACK_NAMESPACE_LABEL] = stack
    return ContainerConfig(
        task_id=task_id, service_id=spec["service_id"], service_name=spec["service_name"], node_id=node_id,
        image=container["image"], stack_namespace=stack,
        command=container.get("command"), entrypoint=container.get("entrypoint"),
        env=dict(container.get("env") or {}), labels=labels, hostname=container.get("hostname"),
        user=container.get("user"), working_dir=container.get("working_dir"),
        stop_signal=container.get("stop_signal"), stop_grace_period=container.get("stop_grace_period", 10.0),
        init=bool(container.get("init")), read_only=bool(container.get("read_only")),
        tty=bool(container.get("tty")), stdin_open=bool(container.get("stdin_open")),
        cap_add=list(container.get("cap_add") or []), cap_drop=list(container.get("cap_drop") or []),
        ulimits=[Ulimit(name, limit["soft"], limit["hard"]) for name, limit in (container.get("ulimits") or {}).items()],
        sysctls=dict(container.get("sysctls") or {}),
        extra_hosts=dict(entry.split(":", 1) for entry in container.get("extra_hosts") or [] if ":" in entry),
        dns=list(container.get("dns") or []), dns_search=list(container.get("dns_search") or []),
        dns_options=list(container.get("dns_options") or []), oom_score_adj=container.get("oom_score_adj"),
        isolation=container.get("isolation"), logging=_logging(container.get("logging")),
        tmpfs=_tmpfs(container.get("tmpfs") or []),
        healthcheck=_healthcheck(container.get("healthcheck")),
        mounts=[_mount(m) for m in container.get("mounts") or []],
        ports=[PublishedPort(target=p["target"], published=p.get("published"), protocol=p.get("protocol", "tcp"))
               for p in spec.get("ports") or [] if p.get("mode") == "host"],
        resources=Resources(cpus=limits.get("cpus"), memory=limits.get("memory"), pids=limits.get("pids")),
        networks=[NetworkAttachment(n["name"], sorted({*n.get("aliases", []), short_name}),
                                    dict(n.get("driver_opts") or {}))
                  for n in spec.get("networks") or []],
        secrets=_file_refs(container.get("secrets") or [], secrets),
        configs=_file_refs(container.get("configs") or [], configs),
    )
