"""`volumes:` of a service (short "source:target:mode" and long syntax), and `tmpfs:`."""
from __future__ import annotations

import re
from typing import Any

from swarmlet.api import specs
from swarmlet.compose import fields as f
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.errors import Path_

VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
# Short-syntax modes docker/cli's volumespec accepts and drops: SELinux relabelling and
# Docker Desktop's consistency hints.
_IGNORED_MODES = {"rw", "z", "Z", "cached", "delegated", "consistent"}
_NOT_FOR_STACKS = "it has no effect on a cluster (docker stack deploy refuses it)"
# Mount types of the spec and the v3 schema that swarmlet cannot mount, and why.
_UNSUPPORTED_TYPES = {
    "npipe": "npipe mounts are for Windows nodes; swarmlet runs Linux nodes",
    "cluster": "cluster (CSI) volumes are not supported by swarmlet",
    "image": "image mounts are not supported by swarmlet (docker stack deploy refuses them too)",
}


def _absolute_target(ctx: FileContext, path: Path_, value: Any) -> str | None:
    text = f.string(ctx, path, value)
    if text is not None and not text.startswith("/"):
        ctx.error(path, expected("an absolute container path", value))
        return None
    return text


_BIND = {"propagation": f.choice(*_PROPAGATIONS), "create_host_path": f.boolean}
_BIND_IGNORED = dict.fromkeys(["selinux", "recursive"], _NOT_FOR_STACKS)
_VOLUME_OPTIONS = {"nocopy": f.boolean}
_VOLUME_IGNORED = dict.fromkeys(["subpath", "labels"], _NOT_FOR_STACKS)

_LONG = {
    "type": f.choice(*specs.MOUNT_TYPES, *_UNSUPPORTED_TYPES),
    "source": f.string,
    "target": _absolute_target,
    "read_only": f.boolean,
    "consistency": f.string,
    "bind": f.section(_BIND, _BIND_IGNORED),
    "volume": f.section(_VOLUME_OPTIONS, _VOLUME_IGNORED),
    "tmpfs": f.section({"size": f.byte_size, "mode": f.file_mode}),
    "image": f.section({"subpath": f.string}),
}
_OPTIONS_OF_TYPE = {"bind": "bind", "volume": "volume", "tmpfs": "tmpfs", "image": "image"}


def _is_host_path(source: str) -> bool:
    return source.startswith(("/", ".", "~"))


def _with_source(ctx: FileContext, path: Path_, mount: dict) -> dict | None:
    """The mount with its bind source made absolute and its volume name checked; None
    after reporting a bad source."""
    source = mount.get("source")
    if mount["type"] == "bind":
        if not source:
            ctx.error(path + ("source",), "a bind mount needs a source (a host path)")
            return None
        mount["source"] = ctx.resolve_path(source)
    elif mount["type"] == "tmpfs" and source:
        ctx.error(path + ("source",), expected("no source for a tmpfs mount", source))
        return None
    elif mount["type"] == "volume" and source:
        if not VOLUME_NAME.match(source):
            ctx.error(path + ("source",), expected("a volume name", source))
            return None
        ctx.remember(("volume-ref", path[1], source), path)
    return mount


def _short_mount(ctx: FileContext, path: Path_, text: str) -> dict | None:
    parts = text.split(":")
    if len(parts) > 3 or not all(parts):
        ctx.error(path, expected('"target", "source:target" or "source:target:mode"', text))
        return None
    target = parts[1] if len(parts) > 1 else parts[0]
    if _absolute_target(ctx, path, target) is None:
        return None
    mount: dict[str, Any] = {"type": "volume", "target": target}
    if len(parts) > 1:
        mount["type"] = "bind" if _is_host_path(parts[0]) else "volume"
        mount["source"] = parts[0]
    for option in parts[2].split(",") if len(parts) == 3 else []:
        if option == "ro":
            mount["read_only"] = True
        elif option == "nocopy" and mount["type"] == "volume":
            mount["volume"] = {"nocopy": True}
        elif option in _PROPAGATIONS and mount["type"] == "bind":
            mount["bind"] = {"propagation": option}
        elif option not in _IGNORED_MODES:
            ctx.error(path, expected("mode ro, rw, nocopy or a bind propagation", option))
            return None
    return _with_source(ctx, path, mount)


def _long_mount(ctx: FileContext, path: Path_, value: dict) -> dict | None:
    mount = f.fields(ctx, path, value, _LONG)
    if mount is None or "target" not in mount:
        if mount is not None and "target" not in value:
            ctx.error(path + ("target",), "missing required key target (the container path)")
        return None
    mount.setdefault("type", "volume")
    if mount["type"] in _UNSUPPORTED_TYPES:
        ctx.error(path + ("type",), _UNSUPPORTED_TYPES[mount["type"]])
        return None
    # docker/cli: "bind options are incompatible with type volume", and so on.
    for key, owner in _OPTIONS_OF_TYPE.items():
        if key in mount and mount["type"] != owner:
            ctx.error(path + (key,), f"{key} options are incompatible with type {mount['type']}")
            return None
    mount.pop("consistency", None)  # a Docker Desktop hint; meaningless on Linux hosts
    if mount.get("bind", {}).pop("create_host_path", False):
        ctx.warn(path + ("bind", "create_host_path"), "create_host_path has no effect on a cluster: "
                 "a bind mount's host path must exist on the node")
    for key in _OPTIONS_OF_TYPE:
        if mount.get(key) == {}:
            del mount[key]
    if mount.get("read_only") is False:
        del mount["read_only"]
    return _with_source(ctx, path, mount)


def volumes(ctx: FileContext, path: Path_, value: Any) -> list[dict] | None:
    items = f.sequence(ctx, path, value)
    if items is None:
        return None
    result = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            mount = _long_mount(ctx, path + (i,), item)
        elif isinstance(item, str):
            mount = _short_mount(ctx, path + (i,), item)
        else:
            ctx.error(path + (i,), expected("a volume string or mapping", item))
            mount = None
        if mount is not None:
            result.append(mount)
    return result


tmpfs = f.list_of(_absolute_target, single_string=True)


def check_mount_targets(ctx: FileContext, path: Path_, service: dict) -> None:
    """SwarmKit refuses a service that mounts two things on one path ("duplicate mount
    point"); `tmpfs:` entries count too, since swarmlet mounts them beside the volumes."""
    seen: set[str] = set()
    places = [(("volumes", i), m["target"]) for i, m in enumerate(service.get("volumes", []))]
    places += [(("tmpfs", i), entry.partition(":")[0]) for i, entry in enumerate(service.get("tmpfs", []))]
    for where, target in places:
        if target in seen:
            ctx.error(path + where, f"duplicate mount point {target}: another volume or tmpfs is mounted there")
        seen.add(target)
