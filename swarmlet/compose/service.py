"""One service of one Compose file: validated and put into the normalised (long) form."""
from __future__ import annotations

import re
import shlex
from typing import Any

from swarmlet.api import specs
from swarmlet.compose import fields as f
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.deploy import deploy
from swarmlet.compose.errors import Path_
from swarmlet.compose.mounts import tmpfs, volumes
from swarmlet.compose.ports import ports

SERVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

# Keys `docker stack deploy` ignores: they configure a single engine, not a cluster.
CLUSTER_IGNORED_KEYS = frozenset({
    "build", "container_name", "links", "network_mode", "devices", "privileged", "restart",
    "external_links", "cgroup_parent", "userns_mode", "security_opt", "cpu_shares", "cpu_quota",
    "cpu_period", "cpu_count", "cpu_percent", "cpu_rt_period", "cpu_rt_runtime", "cpuset", "cpus",
    "mem_limit", "memswap_limit", "mem_reservation", "mem_swappiness", "oom_kill_disable",
    "oom_score_adj", "pids_limit", "shm_size", "ipc", "pid", "uts", "volumes_from", "blkio_config",
    "device_cgroup_rules", "domainname", "mac_address", "platform", "pull_policy", "profiles",
    "runtime", "scale", "storage_opt", "tty", "stdin_open", "expose", "isolation", "group_add",
    "dns_search", "dns_opt", "cgroup", "gpus", "volume_driver", "credential_spec",
})


def command_line(ctx: FileContext, path: Path_, value: Any) -> list[str] | None:
    """A string is split the way a shell would; a list is taken as it is."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            ctx.error(path, f"cannot split command line: {exc}")
            return None
    return f.string_list(ctx, path, value)


def env_files(ctx: FileContext, path: Path_, value: Any) -> list[str] | None:
    """Paths made absolute; the files are read once all compose files are merged."""
    items = f.list_of(_env_file_entry, single_string=True)(ctx, path, value)
    for i, item in enumerate(items or []):
        ctx.remember(("env-file", path[1], item["path"]), path + (i,))
    return items


def _env_file_entry(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    entry = f.fields(ctx, path, {"path": value} if isinstance(value, str) else value,
                     {"path": f.string, "required": f.boolean})
    if entry is None or "path" not in entry:
        if entry is not None:
            ctx.error(path + ("path",), "missing required key path")
        return None
    return {"path": ctx.resolve_path(entry["path"]), "required": entry.get("required", True)}


def environment(ctx: FileContext, path: Path_, value: Any) -> dict[str, str] | None:
    """A bare `NAME` takes its value from the interpolation variables, or is dropped."""
    entries = f.string_map(keep_unset=True)(ctx, path, value)
    if entries is None:
        return None
    return {k: v if v is not None else ctx.lookup[k] for k, v in entries.items()
            if v is not None or k in ctx.lookup}


def healthcheck(ctx: FileContext, path: Path_, value: Any) -> dict | None:
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


_HEALTHCHECK = {
    "test": _health_test,
    "interval": f.duration,
    "timeout": f.duration,
    "retries": f.integer(),
    "start_period": f.duration,
    "disable": f.boolean,
}


def file_refs(kind: str) -> f.Handler:
    """`secrets:` / `configs:` of a service: "name" or {source, target, uid, gid, mode}."""
    long_form = {"source": f.string, "target": f.string, "uid": f.string, "gid": f.string,
                 "mode": _file_mode}

    def one(ctx: FileContext, path: Path_, value: Any) -> dict | None:
        ref = f.fields(ctx, path, {"source": value} if isinstance(value, str) else value, long_form)
        if ref is None or "source" not in ref:
            if ref is not None:
                ctx.error(path + ("source",), f"missing required key source (a {kind} name)")
            return None
        ref["target"] = _file_target(kind, ref.get("target") or ref["source"])
        ctx.remember((f"{kind}-ref", path[1], ref["source"]), path)
        return ref
    return f.list_of(one)


def _file_target(kind: str, target: str) -> str:
    if target.startswith("/"):
        return target
    return f"{specs.SECRETS_DIR}/{target}" if kind == "secret" else f"/{target}"


_OCTAL_MODE = re.compile(r"0?[0-7]{1,4}")


def _file_mode(ctx: FileContext, path: Path_, value: Any) -> int | None:
    # An octal string ("0440") or a number (YAML 1.1 reads an unquoted 0440 as octal too).
    if isinstance(value, str) and _OCTAL_MODE.fullmatch(value):
        return int(value, 8)
    return f.integer(0, 0o7777)(ctx, path, value)


def networks(ctx: FileContext, path: Path_, value: Any) -> dict[str, dict | None] | None:
    """A list of names, or {name: null | {aliases: […]}}."""
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
        attached = f.fields(ctx, path + (name,), options, {"aliases": f.string_list}) if options else None
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
        dependency = f.fields(ctx, path + (name,), options or {}, _DEPENDENCY)
        if dependency is not None:
            result[name] = {"condition": dependency.get("condition", specs.DEFAULT_DEPENDENCY_CONDITION)}
    return result


_DEPENDENCY = {"condition": f.choice(*specs.DEPENDENCY_CONDITIONS), "restart": f.boolean, "required": f.boolean}


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


SERVICE_FIELDS: dict[str, f.Handler] = {
    "image": f.string,
    "command": command_line,
    "entrypoint": command_line,
    "environment": environment,
    "env_file": env_files,
    "labels": f.string_map(),
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
    "cap_add": f.string_list,
    "cap_drop": f.string_list,
    "ulimits": ulimits,
    "sysctls": f.string_map(),
    "extra_hosts": extra_hosts,
    "dns": f.list_of(f.ip_address, single_string=True),
    "tmpfs": tmpfs,
    "logging": f.section({"driver": f.string, "options": f.string_map()}),
    "deploy": deploy,
    "depends_on": depends_on,
}


def service(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    name = path[-1]
    if not SERVICE_NAME.match(name):
        ctx.error(path, expected("a service name of letters, digits, _ . -", name))
    ctx.remember(("service", name), path)
    if value is None:
        value = {}
    return f.fields(ctx, path, value, SERVICE_FIELDS, ignored=CLUSTER_IGNORED_KEYS)
