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
_IGNORED_MODES = {"rw", "z", "Z", "cached", "delegated", "consistent"}


def _absolute_target(ctx: FileContext, path: Path_, value: Any) -> str | None:
    text = f.string(ctx, path, value)
    if text is not None and not text.startswith("/"):
        ctx.error(path, expected("an absolute container path", value))
        return None
    return text


_LONG = {
    "type": f.choice(*specs.MOUNT_TYPES),
    "source": f.string,
    "target": _absolute_target,
    "read_only": f.boolean,
    "consistency": f.string,
    "bind": f.section({"propagation": f.choice(*_PROPAGATIONS), "create_host_path": f.boolean}),
    "volume": f.section({"nocopy": f.boolean}),
    "tmpfs": f.section({"size": f.byte_size, "mode": f.integer()}),
}


def _is_host_path(source: str) -> bool:
    return source.startswith(("/", ".", "~"))


def _source(ctx: FileContext, path: Path_, mount: dict) -> None:
    """Resolves bind sources to absolute paths and checks volume names, in place."""
    source = mount.get("source")
    if mount["type"] == "bind":
        if not source:
            ctx.error(path + ("source",), "a bind mount needs a source (a host path)")
        else:
            mount["source"] = ctx.resolve_path(source)
    elif mount["type"] == "tmpfs" and source:
        ctx.error(path + ("source",), expected("no source for a tmpfs mount", source))
    elif mount["type"] == "volume" and source:
        if not VOLUME_NAME.match(source):
            ctx.error(path + ("source",), expected("a volume name", source))
        else:
            ctx.remember(("volume-ref", path[1], source), path)


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
    _source(ctx, path, mount)
    return mount


def _long_mount(ctx: FileContext, path: Path_, value: dict) -> dict | None:
    mount = f.fields(ctx, path, value, _LONG)
    if mount is None or "target" not in mount:
        if mount is not None and "target" not in value:
            ctx.error(path + ("target",), "missing required key target (the container path)")
        return None
    mount.setdefault("type", "volume")
    mount.pop("consistency", None)  # a Docker Desktop hint; meaningless on Linux hosts
    if mount.get("read_only") is False:
        del mount["read_only"]
    _source(ctx, path, mount)
    return mount


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
