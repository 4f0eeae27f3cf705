"""One whole Compose file: top-level keys validated and normalised."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from swarmlet.api import names, specs
from swarmlet.compose import fields as f
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.errors import Path_
from swarmlet.compose.service import service

STACK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

_IPAM_POOL = {"subnet": f.string, "ip_range": f.string, "gateway": f.string, "aux_addresses": f.string_map()}
_IPAM = {"driver": f.string, "config": f.list_of(f.section(_IPAM_POOL)), "options": f.string_map()}

# Network keys not applied: swarmlet's overlay networks are IPv4 only and take no driver
# options. `ipam` (the subnet) and `internal` apply (docs/networking.md, "Allocation").
_NETWORK_NOT_APPLIED = {
    "driver_opts": lambda value: bool(value),
    "enable_ipv6": lambda value: value is True,
    "enable_ipv4": lambda value: value is False,
    "driver": lambda value: value != specs.DEFAULT_NETWORK_DRIVER,
}


def _external(ctx: FileContext, path: Path_, value: Any) -> bool | dict | None:
    """`true`/`false` (or their words), or the v3 form `{name: …}` (deprecated from 3.5)."""
    if isinstance(value, dict):
        return f.fields(ctx, path, value, {"name": f.string}) or {}
    return f.boolean(ctx, path, value)


_NETWORK = {"driver": f.string, "driver_opts": f.string_map(), "labels": f.string_map(),
            "external": _external, "attachable": f.boolean, "internal": f.boolean, "name": f.string,
            "ipam": f.section(_IPAM), "enable_ipv6": f.boolean, "enable_ipv4": f.boolean}
_VOLUME = {"driver": f.string, "driver_opts": f.string_map(), "labels": f.string_map(),
           "external": _external, "name": f.string}
_SECRET = {"file": f.string, "environment": f.string, "external": _external, "name": f.string,
           "labels": f.string_map(), "driver": f.string, "driver_opts": f.string_map(), "template_driver": f.string}
_CONFIG = {"file": f.string, "environment": f.string, "content": f.string, "external": _external, "name": f.string,
           "labels": f.string_map(), "template_driver": f.string}
# Where the data of a secret or config comes from: one of these, unless it is external.
_SECRET_SOURCES = ("file", "environment")
_CONFIG_SOURCES = ("file", "environment", "content")

_stack_name = f.matching(STACK_NAME, "a name of lowercase letters, digits, _ and -")


def _fold_external(ctx: FileContext, path: Path_, entry: dict, kind: str) -> None:
    """`external: {name: x}` -> `external: true, name: x`, as docker/cli's loader does;
    `external: false` is the same as no `external`."""
    external = entry.get("external")
    if isinstance(external, dict):
        entry["external"] = True
        if "name" in external:
            if "name" in entry:
                ctx.error(path + ("external", "name"),
                          f"{kind}.external.name and {kind}.name conflict; only use {kind}.name")
            else:
                entry["name"] = external["name"]
                ctx.warn(path + ("external", "name"),
                         f"{kind}.external.name is deprecated in favor of {kind}.name")
    if entry.get("external") is False:
        del entry["external"]


def _ignored_beside_external(ctx: FileContext, path: Path_, entry: dict, kind: str, refused: set[str]) -> None:
    """Keys beside `external: true`: an error where Docker refuses them, else ignored."""
    if not entry.get("external"):
        return
    for key in sorted(set(entry) - {"external", "name"}):
        if key in refused:
            ctx.error(path + (key,), f"{key} cannot be combined with external: true")
        else:
            ctx.warn(path + (key,), f"{key} is ignored: the {kind} is external")
            del entry[key]


def _network(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    entry = f.fields(ctx, path, value or {}, _NETWORK)
    if entry is None:
        return None
    _fold_external(ctx, path, entry, "network")
    _ignored_beside_external(ctx, path, entry, "network", refused=set())
    if not entry.get("external"):
        for key, not_applied in _NETWORK_NOT_APPLIED.items():
            if key in entry and not_applied(entry[key]):
                ctx.warn(path + (key,), f"{key} is not applied: swarmlet's stack networks are IPv4 overlays "
                                        "without driver options (docs/networking.md)")
    return entry


def _volume(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    entry = f.fields(ctx, path, value or {}, _VOLUME)
    if entry is None:
        return None
    _fold_external(ctx, path, entry, "volume")
    # docker/cli LoadVolumes: "conflicting parameters "external" and "driver" specified".
    _ignored_beside_external(ctx, path, entry, "volume", refused={"driver", "driver_opts", "labels"})
    return entry


def _stored_file(kind: str, handlers: dict[str, f.Handler], data_sources: tuple[str, ...]) -> f.Handler:
    """A top-level secret or config: its data from one of `data_sources`, or external."""
    def one(ctx: FileContext, path: Path_, value: Any) -> dict | None:
        entry = f.fields(ctx, path, value or {}, handlers)
        if entry is None:
            return None
        _fold_external(ctx, path, entry, kind)
        _ignored_beside_external(ctx, path, entry, kind, refused=set())
        if entry.get("external"):
            return entry
        if "template_driver" in entry:
            ctx.warn(path + ("template_driver",), f"template_driver is not applied: swarmlet does not template "
                                                  f"{kind}s; the data is used as it is")
            del entry["template_driver"]
        if "driver" in entry:
            ctx.error(path + ("driver",), f"a {kind} driver cannot be used: swarmlet keeps {kind} data itself; "
                                          f"use {' or '.join(data_sources)}, or external: true")
            return None
        given = [key for key in data_sources if key in entry]
        if len(given) > 1:
            ctx.error(path + (given[1],), f"{' and '.join(given)} cannot be combined: a {kind} has one source")
        elif not given:
            ctx.error(path, f"a {kind} needs {' or '.join(key + ':' for key in data_sources)}, or external: true")
        if "file" in entry:
            entry["file"] = ctx.resolve_path(entry["file"])
            if not ctx.sources.is_file(Path(entry["file"])):
                ctx.error(path + ("file",), expected("an existing file", entry["file"]))
        if "environment" in entry and entry["environment"] not in ctx.lookup:
            ctx.error(path + ("environment",), f'variable "{entry["environment"]}" is not set; '
                                               f"the {kind} takes its data from it")
        return entry
    return one


def _include_entry(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    """A path (or its long form {path, project_directory, env_file}), paths made
    absolute; the loader loads and brings in what it names."""
    entry = f.fields(ctx, path, {"path": value} if isinstance(value, str) else value, _INCLUDE)
    if entry is None:
        return None
    if not entry.get("path"):
        ctx.error(path + ("path",), "missing required key path (the compose file to include)")
        return None
    entry = {key: [ctx.resolve_path(p) for p in paths] if isinstance(paths, list) else ctx.resolve_path(paths)
             for key, paths in entry.items()}
    return {**entry, "index": path[-1]}


_INCLUDE = {"path": f.list_of(f.string, single_string=True), "project_directory": f.string,
            "env_file": f.list_of(f.string, single_string=True)}


def _check_names(ctx: FileContext, path: Path_, what: str, name: str, definition: Any) -> None:
    """A top-level object's name, its explicit `name:` and its label keys, against the
    cluster's rules (``swarmlet.api.names``)."""
    explicit = definition.get("name") if isinstance(definition, dict) else None
    for where, value in ((path, name), (path + ("name",), explicit)):
        problem = names.name_problem(value) if value is not None else None
        if problem is not None:
            ctx.error(where, f"invalid {what} name {value!r}: {problem} (the rule: {names.NAME_RULE})")
    labels = definition.get("labels") if isinstance(definition, dict) else None
    for key in labels if isinstance(labels, dict) else ():
        problem = names.label_key_problem(key)
        if problem is not None:
            ctx.error(path + ("labels",), f"invalid label key {key!r}: {problem}")


def named(item: f.Handler, what: str | None = None) -> f.Handler:
    """A mapping of name -> definition, each through `item`; ``what``: the names are
    checked against the cluster's name rule (services check their own)."""
    def handler(ctx: FileContext, path: Path_, value: Any) -> dict | None:
        raw = f.mapping(ctx, path, value)
        if raw is None:
            return None
        result = {}
        for name, definition in raw.items():
            if what:
                _check_names(ctx, path + (name,), what, name, definition)
            converted = item(ctx, path + (name,), definition)
            if converted is not None:
                result[name] = converted
        return result
    return handler


_TOP_LEVEL = {
    "name": _stack_name,
    "version": lambda ctx, path, value: None,  # obsolete; accepted and ignored
    "services": named(service),
    "networks": named(_network, "network"),
    "volumes": named(_volume, "volume"),
    "secrets": named(_stored_file("secret", _SECRET, _SECRET_SOURCES), "secret"),
    "configs": named(_stored_file("config", _CONFIG, _CONFIG_SOURCES), "config"),
    "include": f.list_of(_include_entry),
}


_TOP_LEVEL_IGNORED = {"models": "AI models are served by Docker Model Runner, not by a cluster "
                                "(docker stack deploy refuses it)"}


def normalize_file(ctx: FileContext, data: Any) -> dict:
    if data is None:
        ctx.error((), "the file is empty; expected a mapping with services")
        return {}
    return f.fields(ctx, (), data, _TOP_LEVEL, _TOP_LEVEL_IGNORED) or {}
