"""Merging normalised Compose documents, later files over earlier ones.

Rules (Compose's): mappings merge key by key; `command`, `entrypoint` and healthcheck
`test` are replaced; `ports` merge by (target, published, protocol) (the spec's unique
key; the host IP is dropped by then), `volumes`, `secrets` and `configs` by target; `environment`, `labels` and the like merge by name (they are
mappings by now); other lists of strings are joined without repeats. A top-level
network, volume, secret or config defined again replaces the earlier definition.
"""
from __future__ import annotations

from typing import Any, Callable

from swarmlet.compose.errors import Path_


def _keyed_by(*keys: str) -> Callable[[list, list], list]:
    def merge(base: list, over: list) -> list:
        merged = {tuple(item.get(k) for k in keys): item for item in base}
        for item in over:
            merged[tuple(item.get(k) for k in keys)] = item
        return list(merged.values())
    return merge


def _replace(base: Any, over: Any) -> Any:
    return over


def _logging(base: dict, over: dict) -> dict:
    # Options of one driver make no sense for another: a new driver starts afresh.
    if over.get("driver", base.get("driver")) != base.get("driver"):
        return over
    return merge_values(base, over, ())


# Rules by key path; "*" stands for any name.
_RULES: dict[Path_, Callable[[Any, Any], Any]] = {
    ("services", "*", "command"): _replace,
    ("services", "*", "entrypoint"): _replace,
    ("services", "*", "healthcheck", "test"): _replace,
    ("services", "*", "ports"): _keyed_by("target", "published", "protocol"),
    ("services", "*", "volumes"): _keyed_by("target"),
    ("services", "*", "secrets"): _keyed_by("target"),
    ("services", "*", "configs"): _keyed_by("target"),
    ("services", "*", "logging"): _logging,
    ("services", "*", "ulimits", "*"): _replace,
    ("services", "*", "networks", "*"): _replace,
    ("services", "*", "depends_on", "*"): _replace,
    ("services", "*", "deploy", "placement", "preferences"): _replace,
    ("networks", "*"): _replace,
    ("volumes", "*"): _replace,
    ("secrets", "*"): _replace,
    ("configs", "*"): _replace,
}


def _rule(path: Path_) -> Callable[[Any, Any], Any] | None:
    for pattern, rule in _RULES.items():
        if len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path)):
            return rule
    return None


def merge_values(base: Any, over: Any, path: Path_) -> Any:
    rule = _rule(path)
    if rule is not None:
        return rule(base, over)
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = merge_values(base[key], value, path + (key,)) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(over, list):
        return base + [item for item in over if item not in base]
    return over


def merge_documents(documents: list[dict]) -> dict:
    merged: dict = {}
    for document in documents:
        merged = merge_values(merged, document, ())
    return merged
