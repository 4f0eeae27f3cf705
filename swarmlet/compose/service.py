"""One service of one Compose file: validated and put into the normalised (long) form."""
from __future__ import annotations

import re
import shlex
from typing import Any

from swarmlet.api import names, specs
from swarmlet.compose import fields as f
from swarmlet.compose import units
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.deploy import deploy
from swarmlet.compose.errors import Path_
from swarmlet.compose.mounts import check_mount_targets, tmpfs, volumes
from swarmlet.compose.ports import ports


_ENGINE_ONLY = "it has no effect on a cluster (docker stack deploy ignores it too)"
_NOT_FOR_STACKS = "it has no effect on a cluster (docker stack deploy refuses it)"


def _use_instead(what: str) -> str:
    return f"it has no effect on a cluster; set {what} instead (docker stack deploy refuses it)"


# Service keys accepted and dropped with a warning: they configure one engine or one
# `docker compose` project, not a cluster. The v3.x keys here are docker/cli's
# UnsupportedProperties and DeprecatedProperties; the rest are Compose-spec keys that
# docker/cli's v3 schema refuses (docker/cli forbids some by name, with the hint kept here).
CLUSTER_IGNORED_KEYS: dict[str, str] = {
    **dict.fromkeys([
        "build", "cgroupns_mode", "cgroup_parent", "devices", "domainname", "external_links", "ipc", "links",
        "mac_address", "network_mode", "pid", "privileged", "security_opt", "shm_size", "userns_mode",
        "container_name", "expose"], _ENGINE_ONLY),
    "credential_spec": "it applies to Windows nodes only (swarmlet runs Linux nodes)",
    **dict.fromkeys([
        "annotations", "attach", "blkio_config", "cgroup", "cpu_count", "cpu_percent", "cpu_period",
        "cpu_rt_period", "cpu_rt_runtime", "develop", "device_cgroup_rules", "gpus", "group_add", "mem_swappiness",
        "models", "oom_kill_disable", "platform", "post_start", "pre_stop", "profiles", "provider", "pull_policy",
        "pull_refresh_after", "runtime", "storage_opt", "use_api_socket", "uts"], _NOT_FOR_STACKS),
    **dict.fromkeys(["cpus", "cpu_quota", "cpu_shares", "cpuset"], _use_instead("deploy.resources.limits.cpus")),
    **dict.fromkeys(["mem_limit", "memswap_limit"], _use_instead("deploy.resources.limits.memory")),
    "mem_reservation": _use_instead("deploy.resources.reservations.memory"),
    "pids_limit": _use_instead("deploy.resources.limits.pids"),
    "scale": _use_instead("deploy.replicas"),
    "volume_driver": _use_instead("driver on the top-level volume"),
    "volumes_from": _use_instead("a top-level volume that each service mounts"),
}


def command_line(ctx: FileContext, path: Path_, value: Any) -> list[str] | None:
    """A string is split the way a shell would; a list is taken as it is."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            ctx.error(path, f"cannot split command line: {exc}")
            return None
    return f.string_list(ctx, path, value)


def env_files(ctx: FileContext, path: Path_, value: Any) -> list[dict] | None:
    """Paths made absolute; the files are read once all compose files are merged."""
    items = f.list_of(_env_file_entry, single_string=True)(ctx, path, value)
    for i, item in enumerate(items or []):
        ctx.remember((path[-1], path[1], item["path"]), path + (i,))
    return items


_ENV_FILE_FORMATS = ("raw",)


def _env_file_entry(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    entry = f.fields(ctx, path, {"path": value} if isinstance(value, str) else value,
                     {"path": f.string, "required": f.boolean, "format": f.choice(*_ENV_FILE_FORMATS)})
    if entry is None or "path" not in entry:
        if entry is not None:
            ctx.error(path + ("path",), "missing required key path")
        return None
    return {"path": ctx.resolve_path(entry["path"]), "required": entry.get("required", True),
            **({"format": entry["format"]} if "format" in entry else {})}


def environment(ctx: FileContext, path: Path_, value: Any) -> dict[str, str] | None:
    """A bare `NAME` takes its value from the interpolation variables, or is dropped."""
    entries = f.string_map(keep_unset=True)(ctx, path, value)
    if entries is None:
        return None
    return {k: v if v is not None else ctx.lookup[k] for k, v in entries.items()
            if v is not None or k in ctx.lookup}


def healthcheck(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    """What is left out (even `test`) is the image's, as with docker stack deploy."""
    check = f.fields(ctx, path, value, _HEALTHCHECK)
    if check is None:
        return None
    if check.pop("disable", False):
        if "test" in check and check["test"] != ["NONE"]:
            ctx.error(path + ("disable",), "disable: true cannot be combined with a test")
        return {"test": ["NONE"]}
    return check


def _health_test(ctx: FileContext, path: Path_, value: Any) -> list[str] | None:
    if isinstance(value, str):
        return ["CMD-SHELL", value]
    test = f.string_list(ctx, path, value)
    if test is None:
        return None
    if not test or test[0] not in ("CMD", "CMD-SHELL", "NONE") \
            or (test[0] == "NONE") != (len(test) == 1) or (test[0] == "CMD-SHELL" and len(test) != 2):
        ctx.error(path, expected('a string, ["CMD", args…], ["CMD-SHELL", "command"] or ["NONE"]', value))
        return None
    return test


_MINIMUM_HEALTH_DURATION_NS = 1_000_000  # SwarmKit: 0 (the image's) or at least 1ms


def _health_duration(ctx: FileContext, path: Path_, value: Any) -> str | None:
    text = f.duration(ctx, path, value)
    ns = units.parse_duration_ns(text) if text is not None else None
    if ns is not None and 0 < ns < _MINIMUM_HEALTH_DURATION_NS:
        ctx.error(path, expected("0 or at least 1ms", value))
        return None
    return text


_HEALTHCHECK = {
    "test": _health_test,
    "interval": _health_duration,
    "timeout": _health_duration,
    "retries": f.integer(),
    "start_period": _health_duration,
    "start_interval": _health_duration,
    "disable": f.boolean,
}


def file_refs(kind: str) -> f.Handler:
    """`secrets:` / `configs:` of a service: "name" or {source, target, uid, gid, mode}."""
    long_form = {"source": f.string, "target": f.string, "uid": f.string, "gid": f.string,
                 "mode": f.file_mode}

    def one(ctx: FileContext, path: Path_, value: Any) -> dict | None:
        ref = f.fields(ctx, path, {"source": value} if isinstance(value, str) else value, long_form)
        if ref is None or "source" not in ref:
            if ref is not None:
                ctx.error(path + ("source",), f"missing required key source (a {kind} name)")
            return None
        ref["target"] = _file_target(kind, ref.get("target") or ref["source"])
        ctx.remember((f"{kind}-ref", path[1], ref["source"]), path)
        return ref

    def handler(ctx: FileContext, path: Path_, value: Any) -> list[dict] | None:
        refs = f.list_of(one)(ctx, path, value)
        # SwarmKit: "secret references 'a' and 'b' have a conflicting target".
        seen: dict[str, str] = {}
        for ref in refs or []:
            if ref["target"] in seen:
                ctx.error(path, f"{kind}s {seen[ref['target']]!r} and {ref['source']!r} have the same target "
                                f"{ref['target']}")
            seen.setdefault(ref["target"], ref["source"])
        return refs
    return handler


_file_target = specs.file_target


_ATTACHMENT = {"aliases": f.string_list, "driver_opts": f.string_map()}
_ATTACHMENT_IGNORED = {
    **dict.fromkeys(["ipv4_address", "ipv6_address"],
                    "the cluster assigns task addresses (docker stack deploy ignores it too)"),
    **dict.fromkeys(["mac_address", "link_local_ips", "priority", "gw_priority", "interface_name"], _NOT_FOR_STACKS),
}


def networks(ctx: FileContext, path: Path_, value: Any) -> dict[str, dict | None] | None:
    """A list of names, or {name: null | {aliases: […], driver_opts: {…}}}."""
    if isinstance(value, list):
        names = f.string_list(ctx, path, value) or []
        entries = {name: None for name in names}
        for i, name in enumerate(names):
            ctx.remember(("network-ref", path[1], name), path + (i,))
        return entries
    raw = f.mapping(ctx, path, value)
    if raw is None:
        return None
    result: dict[str, dict | None] = {}
    for name, options in raw.items():
        ctx.remember(("network-ref", path[1], name), path + (name,))
        attached = f.fields(ctx, path + (name,), options, _ATTACHMENT, _ATTACHMENT_IGNORED) if options else None
        result[name] = attached or None
    return result


def depends_on(ctx: FileContext, path: Path_, value: Any) -> dict[str, dict] | None:
    if isinstance(value, list):
        names = f.string_list(ctx, path, value) or []
        for i, name in enumerate(names):
            ctx.remember(("depends-on", path[1], name), path + (i,))
        return {name: {"condition": specs.DEFAULT_DEPENDENCY_CONDITION} for name in names}
    raw = f.mapping(ctx, path, value)
    if raw is None:
        return None
    result = {}
    for name, options in raw.items():
        ctx.remember(("depends-on", path[1], name), path + (name,))
        dependency = f.fields(ctx, path + (name,), options or {}, _DEPENDENCY, _DEPENDENCY_IGNORED)
        if dependency is not None:
            result[name] = {"condition": dependency.get("condition", specs.DEFAULT_DEPENDENCY_CONDITION)}
            if dependency.get("required") is False:
                result[name]["required"] = False
    return result


_DEPENDENCY = {"condition": f.choice(*specs.DEPENDENCY_CONDITIONS), "required": f.boolean}
_DEPENDENCY_IGNORED = {"restart": "a cluster does not restart a service when its dependency restarts"}


def extra_hosts(ctx: FileContext, path: Path_, value: Any) -> list[str] | None:
    """["host:ip", "host=ip"] or {host: ip} -> ["host:ip", …]."""
    if isinstance(value, dict):
        pairs = [(path + (host,), host, ip) for host, ip in value.items()]
    else:
        pairs = []
        for i, entry in enumerate(f.string_list(ctx, path, value) or []):
            host, sep, ip = entry.partition("=") if "=" in entry else entry.partition(":")
            if not sep:
                ctx.error(path + (i,), expected('"hostname:ip"', entry))
            pairs.append((path + (i,), host, ip) if sep else None)
    result = []
    for pair in filter(None, pairs):
        where, host, ip = pair
        address = ip if ip == "host-gateway" else f.ip_address(ctx, where, ip)
        if address is not None:
            result.append(f"{host}:{address}")
    return result


def ulimits(ctx: FileContext, path: Path_, value: Any) -> dict[str, dict] | None:
    raw = f.mapping(ctx, path, value)
    if raw is None:
        return None
    result = {}
    for name, limit in raw.items():
        if isinstance(limit, dict):
            pair = f.fields(ctx, path + (name,), limit, {"soft": f.integer(), "hard": f.integer()})
            if pair is not None and set(pair) != {"soft", "hard"}:
                ctx.error(path + (name,), "expected both soft and hard limits")
                continue
        else:
            number = f.integer()(ctx, path + (name,), limit)
            pair = None if number is None else {"soft": number, "hard": number}
        if pair and pair["soft"] > pair["hard"]:
            ctx.error(path + (name,), f"soft limit {pair['soft']} is above hard limit {pair['hard']}")
        elif pair:
            result[name] = pair
    return result


_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure)(?::(\d+))?$")


def restart(ctx: FileContext, path: Path_, value: Any) -> str | None:
    """docker/cli falls back to `restart:` when `deploy.restart_policy` is absent."""
    text = f.string(ctx, path, value)
    if text is not None and not _RESTART.match(text):
        ctx.error(path, expected("a restart policy no, always, unless-stopped or on-failure[:max-retries]", value))
        return None
    if text is not None:
        ctx.remember(("restart", path[1]), path)
    return text


def restart_policy_of(restart_text: str) -> dict | None:
    """The deploy.restart_policy that `restart:` stands for (docker/cli convertRestartPolicy):
    always and unless-stopped restart on any exit, on-failure on failures, each at most
    N times when given; `no` is no policy at all, so the cluster's default applies."""
    name, count = _RESTART.match(restart_text).groups()
    if name == "no":
        return None
    policy = {"condition": "on-failure" if name == "on-failure" else "any"}
    if count and int(count) > 0:
        policy["max_attempts"] = int(count)
    return policy


def extends(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    """`extends: name` or {service, file}; applied by the loader once the file is read."""
    entry = f.fields(ctx, path, {"service": value} if isinstance(value, str) else value,
                     {"service": f.string, "file": f.string})
    if entry is None:
        return None
    if "service" not in entry:
        ctx.error(path + ("service",), "missing required key service (the service to extend)")
        return None
    if "file" in entry:
        entry["file"] = ctx.resolve_path(entry["file"])
    return entry


def isolation(ctx: FileContext, path: Path_, value: Any) -> str | None:
    return f.string(ctx, path, value)  # the engine checks it: Linux engines take only "default"


SERVICE_FIELDS: dict[str, f.Handler] = {
    "image": f.string,
    "command": command_line,
    "entrypoint": command_line,
    "environment": environment,
    "env_file": env_files,
    "labels": f.string_map(),
    "label_file": env_files,
    "healthcheck": healthcheck,
    "ports": ports,
    "volumes": volumes,
    "secrets": file_refs("secret"),
    "configs": file_refs("config"),
    "networks": networks,
    "hostname": f.string,
    "user": f.string,
    "working_dir": f.string,
    "stop_grace_period": f.duration,
    "stop_signal": f.string,
    "init": f.boolean,
    "read_only": f.boolean,
    "tty": f.boolean,
    "stdin_open": f.boolean,
    "cap_add": f.string_list,
    "cap_drop": f.string_list,
    "ulimits": ulimits,
    "sysctls": f.string_map(),
    "extra_hosts": extra_hosts,
    "dns": f.list_of(f.ip_address, single_string=True),
    "dns_search": f.list_of(f.string, single_string=True),
    "dns_opt": f.string_list,
    "oom_score_adj": f.integer(-1000, 1000),
    "isolation": isolation,
    "tmpfs": tmpfs,
    "logging": f.section({"driver": f.string, "options": f.string_map()}),
    "restart": restart,
    "extends": extends,
    "deploy": deploy,
    "depends_on": depends_on,
}


def service(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    name = path[-1]
    problem = names.name_problem(name)
    if problem is not None:
        ctx.error(path, f"invalid service name {name!r}: {problem} (the rule: {names.NAME_RULE})")
    ctx.remember(("service", name), path)
    if value is None:
        value = {}
    normalised = f.fields(ctx, path, value, SERVICE_FIELDS, ignored=CLUSTER_IGNORED_KEYS)
    if normalised is not None:
        if "build" in value:
            ctx.remember(("build", name), path + ("build",))
        check_mount_targets(ctx, path, normalised)
    return normalised
