"""One whole Compose file: top-level keys validated and normalised."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from swarmlet.compose import fields as f
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.errors import Path_
from swarmlet.compose.service import service

STACK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

_NETWORK = {"driver": f.string, "driver_opts": f.string_map(), "labels": f.string_map(),
            "external": f.boolean, "attachable": f.boolean, "internal": f.boolean, "name": f.string}
_VOLUME = {"driver": f.string, "driver_opts": f.string_map(), "labels": f.string_map(),
           "external": f.boolean, "name": f.string}
_STORED_FILE = {"file": f.string, "external": f.boolean, "name": f.string, "labels": f.string_map()}


_stack_name = f.matching(STACK_NAME, "a name of lowercase letters, digits, _ and -")


def _external_alone(ctx: FileContext, path: Path_, entry: dict, allowed: set[str]) -> None:
    if entry.get("external"):
        for key in sorted(set(entry) - allowed):
            ctx.error(path + (key,), f"{key} cannot be combined with external: true")


def _resource(handlers: dict[str, f.Handler]) -> f.Handler:
    def one(ctx: FileContext, path: Path_, value: Any) -> dict | None:
        entry = f.fields(ctx, path, value or {}, handlers)
        if entry is not None:
            _external_alone(ctx, path, entry, {"external", "name"})
        return entry
    return one


def _stored_file(kind: str) -> f.Handler:
    """A top-level secret or config: `file:` (must exist) or `external: true`."""
    def one(ctx: FileContext, path: Path_, value: Any) -> dict | None:
        entry = f.fields(ctx, path, value or {}, _STORED_FILE)
        if entry is None:
            return None
        _external_alone(ctx, path, entry, {"external", "name"})
        if not entry.get("external") and "file" not in entry:
            ctx.error(path, f"a {kind} needs file: or external: true")
        if "file" in entry and not entry.get("external"):
            entry["file"] = ctx.resolve_path(entry["file"])
            if not ctx.sources.is_file(Path(entry["file"])):
                ctx.error(path + ("file",), expected("an existing file", entry["file"]))
        if entry.get("external") is False:
            del entry["external"]
        return entry
    return one


def named(item: f.Handler) -> f.Handler:
    """A mapping of name -> definition, each through `item`."""
    def handler(ctx: FileContext, path: Path_, value: Any) -> dict | None:
        raw = f.mapping(ctx, path, value)
        if raw is None:
            return None
        result = {}
        for name, definition in raw.items():
            converted = item(ctx, path + (name,), definition)
            if converted is not None:
                result[name] = converted
        return result
    return handler


_TOP_LEVEL = {
    "name": _stack_name,
    "version": lambda ctx, path, value: None,  # obsolete; accepted and ignored
    "services": named(service),
    "networks": named(_resource(_NETWORK)),
    "volumes": named(_resource(_VOLUME)),
    "secrets": named(_stored_file("secret")),
    "configs": named(_stored_file("config")),
}


def normalize_file(ctx: FileContext, data: Any) -> dict:
    if data is None:
        ctx.error((), "the file is empty; expected a mapping with services")
        return {}
    return f.fields(ctx, (), data, _TOP_LEVEL) or {}
