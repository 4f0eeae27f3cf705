"""Normalised, checked Compose document -> typed specs (swarmlet.api.specs)."""
from __future__ import annotations

from typing import Mapping

from swarmlet.api import specs
from swarmlet.compose import units
from swarmlet.compose.service import restart_policy_of


def _seconds(text: str | None, default: float | None) -> float | None:
    return default if text is None else units.seconds(units.parse_duration_ns(text))


def _update_config(section: dict) -> specs.UpdateConfig:
    return specs.UpdateConfig(
        parallelism=section.get("parallelism", specs.DEFAULT_UPDATE_PARALLELISM),
        delay=_seconds(section.get("delay"), specs.DEFAULT_UPDATE_DELAY),
        failure_action=section.get("failure_action", specs.DEFAULT_UPDATE_FAILURE_ACTION),
        monitor=_seconds(section.get("monitor"), specs.DEFAULT_UPDATE_MONITOR),
        max_failure_ratio=section.get("max_failure_ratio", specs.DEFAULT_UPDATE_MAX_FAILURE_RATIO),
        order=section.get("order", specs.DEFAULT_UPDATE_ORDER),
        canary=section.get("x-canary", specs.DEFAULT_UPDATE_CANARY),
        auto_promote=section.get("x-auto-promote", specs.DEFAULT_UPDATE_AUTO_PROMOTE),
        blue_green=section.get("x-blue-green", specs.DEFAULT_UPDATE_BLUE_GREEN),
        hold=_seconds(section.get("x-hold"), specs.DEFAULT_UPDATE_HOLD),
    )


def _percent(value: int | None) -> float | None:
    return None if value is None else float(value)


def _autoscale(section: dict | None) -> specs.Autoscale | None:
    if section is None:
        return None
    return specs.Autoscale(
        min_replicas=section.get("min_replicas", specs.DEFAULT_AUTOSCALE_MIN_REPLICAS),
        max_replicas=section["max_replicas"],
        target_cpu_percent=_percent(section.get("target_cpu_percent")),
        target_memory_percent=_percent(section.get("target_memory_percent")),
        scale_up_window=_seconds(section.get("scale_up_window"), specs.DEFAULT_AUTOSCALE_SCALE_UP_WINDOW),
        scale_down_window=_seconds(section.get("scale_down_window"), specs.DEFAULT_AUTOSCALE_SCALE_DOWN_WINDOW),
    )


def _restart_policy(service: dict, deploy: dict) -> specs.RestartPolicy:
    """deploy.restart_policy, else what `restart:` stands for (docker/cli falls back to it)."""
    section = deploy.get("restart_policy")
    if section is None:
        section = restart_policy_of(service["restart"]) if "restart" in service else None
    section = section or {}
    return specs.RestartPolicy(
        condition=section.get("condition", specs.DEFAULT_RESTART_CONDITION),
        delay=_seconds(section.get("delay"), specs.DEFAULT_RESTART_DELAY),
        max_attempts=section.get("max_attempts", specs.DEFAULT_RESTART_MAX_ATTEMPTS),
        window=_seconds(section.get("window"), specs.DEFAULT_RESTART_WINDOW),
    )


def _resources(section: dict) -> specs.Resources:
    return specs.Resources(cpus=section.get("cpus"), memory=section.get("memory"), pids=section.get("pids"))


def _healthcheck(section: dict | None) -> specs.HealthCheck | None:
    if section is None:
        return None
    return specs.HealthCheck(
        test=section.get("test"),
        interval=_seconds(section.get("interval"), None),
        timeout=_seconds(section.get("timeout"), None),
        retries=section.get("retries"),
        start_period=_seconds(section.get("start_period"), None),
        start_interval=_seconds(section.get("start_interval"), None),
    )


def _mount(mount: dict, stack_volumes: dict) -> specs.Mount:
    # A named stack volume that is not external is created by the engine with the
    # top-level volume's driver, options and labels (docker/cli convert.Volumes).
    volume = stack_volumes.get(mount.get("source")) if mount["type"] == "volume" else None
    created = volume if volume is not None and not volume.get("external") else {}
    return specs.Mount(
        type=mount["type"], target=mount["target"], source=mount.get("source"),
        read_only=mount.get("read_only", False),
        volume_nocopy=mount.get("volume", {}).get("nocopy", False),
        volume_driver=created.get("driver"),
        volume_driver_opts=created.get("driver_opts", {}),
        volume_labels=created.get("labels", {}),
        bind_propagation=mount.get("bind", {}).get("propagation"),
        tmpfs_size=mount.get("tmpfs", {}).get("size"),
        tmpfs_mode=mount.get("tmpfs", {}).get("mode"),
    )


def _file_ref(ref: dict) -> specs.FileRef:
    return specs.FileRef(source=ref["source"], target=ref["target"],
                         uid=ref.get("uid", specs.DEFAULT_FILE_UID), gid=ref.get("gid", specs.DEFAULT_FILE_GID),
                         mode=ref.get("mode", specs.DEFAULT_FILE_MODE))


def _container(service: dict, stack_volumes: dict) -> specs.ContainerSpec:
    logging = service.get("logging")
    return specs.ContainerSpec(
        image=service["image"],
        command=service.get("command"),
        entrypoint=service.get("entrypoint"),
        env=service.get("environment", {}),
        labels=service.get("labels", {}),
        hostname=service.get("hostname"),
        user=service.get("user"),
        working_dir=service.get("working_dir"),
        stop_grace_period=_seconds(service.get("stop_grace_period"), specs.DEFAULT_STOP_GRACE_PERIOD),
        stop_signal=service.get("stop_signal"),
        init=service.get("init"),
        read_only=service.get("read_only", False),
        tty=service.get("tty", False),
        stdin_open=service.get("stdin_open", False),
        cap_add=service.get("cap_add", []),
        cap_drop=service.get("cap_drop", []),
        ulimits={name: specs.Ulimit(**limit) for name, limit in service.get("ulimits", {}).items()},
        sysctls=service.get("sysctls", {}),
        extra_hosts=service.get("extra_hosts", []),
        dns=service.get("dns", []),
        dns_search=service.get("dns_search", []),
        dns_options=service.get("dns_opt", []),
        oom_score_adj=service.get("oom_score_adj"),
        isolation=service.get("isolation"),
        tmpfs=service.get("tmpfs", []),
        healthcheck=_healthcheck(service.get("healthcheck")),
        mounts=[_mount(m, stack_volumes) for m in service.get("volumes", [])],
        secrets=[_file_ref(r) for r in service.get("secrets", [])],
        configs=[_file_ref(r) for r in service.get("configs", [])],
        logging=specs.LogDriver(logging.get("driver"), logging.get("options", {})) if logging is not None else None,
    )


def build_service(name: str, service: dict, services: dict, stack_volumes: dict) -> specs.ServiceSpec:
    """`services`: every service of the stack (a `required: false` dependency may be absent)."""
    deploy = service.get("deploy", {})
    mode = deploy.get("mode", specs.DEFAULT_SERVICE_MODE)
    placement = deploy.get("placement", {})
    resources = deploy.get("resources", {})
    return specs.ServiceSpec(
        name=name,
        container=_container(service, stack_volumes),
        labels=deploy.get("labels", {}),
        mode=mode,
        replicas=None if mode.startswith("global") else deploy.get("replicas", specs.DEFAULT_REPLICAS),
        resources=specs.ResourceRequirements(limits=_resources(resources.get("limits", {})),
                                             reservations=_resources(resources.get("reservations", {}))),
        restart_policy=_restart_policy(service, deploy),
        placement=specs.Placement(
            constraints=placement.get("constraints", []),
            preferences=[p["spread"] for p in placement.get("preferences", []) if "spread" in p],
            max_replicas_per_node=placement.get("max_replicas_per_node", specs.DEFAULT_MAX_REPLICAS_PER_NODE)),
        networks=[specs.NetworkAttachment(net, (options or {}).get("aliases", []), (options or {}).get("driver_opts", {}))
                  for net, options in service.get("networks", {}).items()],
        endpoint=specs.EndpointSpec(mode=deploy.get("endpoint_mode", specs.DEFAULT_ENDPOINT_MODE),
                                    ports=[specs.PortConfig(**port) for port in service.get("ports", [])]),
        update_config=_update_config(deploy.get("update_config", {})),
        autoscale=_autoscale(deploy.get("x-autoscale")),
        rollback_config=_update_config(deploy.get("rollback_config", {})),
        depends_on={dep: options["condition"] for dep, options in service.get("depends_on", {}).items()
                    if dep in services},
    )


def build_stack(document: dict, variables: Mapping[str, str]) -> specs.StackSpec:
    """`variables`: the interpolation variables, where `environment:` secrets and configs
    take their data."""
    def stored(cls, name, entry):
        content = variables[entry["environment"]] if "environment" in entry else entry.get("content")
        return cls(name=name, file=entry.get("file"), content=content, external=entry.get("external", False),
                   labels=entry.get("labels", {}), cluster_name=entry.get("name"))

    return specs.StackSpec(
        name=document.get("name"),
        services={n: build_service(n, s, document.get("services", {}), document.get("volumes", {}))
                  for n, s in document.get("services", {}).items()},
        networks={n: specs.NetworkSpec(
            name=n, driver=e.get("driver", specs.DEFAULT_NETWORK_DRIVER), driver_opts=e.get("driver_opts", {}),
            labels=e.get("labels", {}), external=e.get("external", False), attachable=e.get("attachable", False),
            internal=e.get("internal", False), cluster_name=e.get("name"),
            ipam=[specs.IpamConfig(subnet=c.get("subnet"), gateway=c.get("gateway"), ip_range=c.get("ip_range"))
                  for c in (e.get("ipam") or {}).get("config") or []])
            for n, e in document.get("networks", {}).items()},
        volumes={n: specs.VolumeSpec(
            name=n, driver=e.get("driver", specs.DEFAULT_VOLUME_DRIVER), driver_opts=e.get("driver_opts", {}),
            labels=e.get("labels", {}), external=e.get("external", False), cluster_name=e.get("name"))
            for n, e in document.get("volumes", {}).items()},
        secrets={n: stored(specs.SecretSpec, n, e) for n, e in document.get("secrets", {}).items()},
        configs={n: stored(specs.ConfigSpec, n, e) for n, e in document.get("configs", {}).items()},
    )
