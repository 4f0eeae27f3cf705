"""The `deploy:` section of a service."""
from __future__ import annotations

from typing import Any

from swarmlet.api import constraints, specs
from swarmlet.compose import fields as f
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.errors import Path_


def constraint(ctx: FileContext, path: Path_, value: Any) -> str | None:
    """Checked by the scheduler's own parser: what loads can be scheduled."""
    text = f.string(ctx, path, value)
    if text is None:
        return None
    try:
        return constraints.parse_constraint(text).canonical
    except constraints.PlacementSpecError as exc:
        ctx.error(path, str(exc))
        return None


def _spread(ctx: FileContext, path: Path_, value: Any) -> str | None:
    text = f.string(ctx, path, value)
    if text is None:
        return None
    try:
        constraints.parse_preference(text)
    except constraints.PlacementSpecError as exc:
        ctx.error(path, str(exc))
        return None
    if not constraints.spreads(text):
        ctx.warn(path, f"spreading over {text} has no effect: tasks spread only over node.labels.* "
                       "and engine.labels.* (as in SwarmKit)")
    return text.strip()


_preference = f.section({"spread": _spread})

# SwarmKit's controlapi validateResources: 0 (none) or at least these.
_MINIMUM_CPUS = 0.001
_MINIMUM_MEMORY = 4 * 1024 * 1024


def _cpus(ctx: FileContext, path: Path_, value: Any) -> float | None:
    amount = f.cpus(ctx, path, value)
    if amount is not None and 0 < amount < _MINIMUM_CPUS:
        ctx.error(path, expected(f"0 or at least {_MINIMUM_CPUS} CPUs", value))
        return None
    return amount


def _memory(ctx: FileContext, path: Path_, value: Any) -> int | None:
    size = f.byte_size(ctx, path, value)
    if size is not None and 0 < size < _MINIMUM_MEMORY:
        ctx.error(path, expected("0 or at least 4MiB", value))
        return None
    return size


_LIMITS = {"cpus": _cpus, "memory": _memory, "pids": f.integer()}
_RESERVATIONS = {"cpus": _cpus, "memory": _memory}
_RESERVATIONS_IGNORED = {
    "generic_resources": "swarmlet nodes advertise no generic resources, so it is not reserved",
    "devices": "it has no effect on a cluster (docker stack deploy refuses it)",
}

_UPDATE = {
    "parallelism": f.integer(),
    "delay": f.duration,
    "failure_action": f.choice(*specs.UPDATE_FAILURE_ACTIONS),
    "monitor": f.duration,
    "max_failure_ratio": f.ratio,
    "order": f.choice(*specs.UPDATE_ORDERS),
}
# swarmlet's extensions of update_config (Nomad's canary, auto_promote and blue-green), as
# `x-` fields so that the file stays valid Compose (docs/orchestration.md, "Canaries and
# blue-green").
_UPDATE_EXTENSIONS = {
    "x-canary": f.integer(),
    "x-auto-promote": f.boolean,
    "x-blue-green": f.boolean,
    "x-hold": f.duration,
}

# swarmlet's autoscaling (Kubernetes' HPA), an `x-` field of `deploy` (docs/orchestration.md, "Autoscaling").
_AUTOSCALE = {
    "min_replicas": f.integer(minimum=1),
    "max_replicas": f.integer(minimum=1),
    "target_cpu_percent": f.integer(minimum=1),
    "target_memory_percent": f.integer(minimum=1),
    "scale_up_window": f.duration,
    "scale_down_window": f.duration,
}

_DEPLOY = {
    "mode": f.choice(*specs.SERVICE_MODES),
    "replicas": f.integer(),
    "labels": f.string_map(),
    "endpoint_mode": f.choice(*specs.ENDPOINT_MODES),
    "placement": f.section({
        "constraints": f.list_of(constraint),
        "preferences": f.list_of(_preference),
        "max_replicas_per_node": f.integer(),
    }),
    "resources": f.section({"limits": f.section(_LIMITS),
                            "reservations": f.section(_RESERVATIONS, _RESERVATIONS_IGNORED)}),
    "restart_policy": f.section({
        "condition": f.choice(*specs.RESTART_CONDITIONS),
        "delay": f.duration,
        "max_attempts": f.integer(),
        "window": f.duration,
    }),
    "update_config": f.section({**_UPDATE, **_UPDATE_EXTENSIONS}),
    "rollback_config": f.section({**_UPDATE, "failure_action": f.choice(*specs.ROLLBACK_FAILURE_ACTIONS)}),
    "x-autoscale": f.section(_AUTOSCALE),
}


def _warn_what_is_not_done_yet(ctx: FileContext, path: Path_, section: dict) -> None:
    if section.get("endpoint_mode") == "vip":
        ctx.warn(path + ("endpoint_mode",), "vip has no effect yet: swarmlet has no virtual IPs; a service name "
                                            "resolves to its tasks' addresses, as with dnsrr")


def deploy(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    section = f.fields(ctx, path, value, _DEPLOY)
    if not section:
        return section
    if section.get("mode", "").startswith("global"):
        # docker/cli convertDeployMode: "replicas can only be used with replicated or replicated-job mode".
        if "replicas" in section:
            ctx.error(path + ("replicas",), f"replicas cannot be used with mode {section['mode']}")
        if "max_replicas_per_node" in section.get("placement", {}):
            ctx.warn(path + ("placement", "max_replicas_per_node"),
                     f"max_replicas_per_node has no effect with mode {section['mode']}: one task per node")
    _check_blue_green(ctx, path + ("update_config",), section.get("update_config") or {})
    if "x-autoscale" in section:
        _check_autoscale(ctx, path, section)
    _warn_what_is_not_done_yet(ctx, path, section)
    return section


def _check_blue_green(ctx: FileContext, path: Path_, update: dict) -> None:
    if update.get("x-blue-green") and update.get("x-canary"):
        ctx.error(path + ("x-canary",), "x-canary cannot be used with x-blue-green: a blue-green update starts "
                                        "the whole new set beside the old one (drop one of them)")
    if "x-hold" in update and not update.get("x-blue-green"):
        ctx.warn(path + ("x-hold",), "x-hold has no effect without x-blue-green: true")


def _check_autoscale(ctx: FileContext, path: Path_, section: dict) -> None:
    """A replicated service, bounds in order, a target, and the reservation it is a share of."""
    autoscale, where = section["x-autoscale"], path + ("x-autoscale",)
    if section.get("mode", specs.DEFAULT_SERVICE_MODE) != "replicated":
        ctx.error(where, f"x-autoscale applies to replicated services only, not mode {section['mode']}")
    if "max_replicas" not in autoscale:
        ctx.error(where, "x-autoscale needs max_replicas")
    elif autoscale["max_replicas"] < autoscale.get("min_replicas", specs.DEFAULT_AUTOSCALE_MIN_REPLICAS):
        ctx.error(where + ("max_replicas",), f"max_replicas {autoscale['max_replicas']} is below min_replicas "
                                             f"{autoscale.get('min_replicas', specs.DEFAULT_AUTOSCALE_MIN_REPLICAS)}")
    targets = [key for key in ("target_cpu_percent", "target_memory_percent") if key in autoscale]
    if not targets:
        ctx.error(where, "x-autoscale needs target_cpu_percent or target_memory_percent")
    reservations = (section.get("resources") or {}).get("reservations") or {}
    for key, resource in (("target_cpu_percent", "cpus"), ("target_memory_percent", "memory")):
        if key in autoscale and not reservations.get(resource):
            ctx.error(where + (key,), f"{key} is a share of the tasks' reservation: set "
                                      f"deploy.resources.reservations.{resource}")
