"""The `deploy:` section of a service."""
from __future__ import annotations

import re
from typing import Any

from swarmlet.api import specs
from swarmlet.compose import fields as f
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.errors import Path_

_CONSTRAINT = re.compile(r"^\s*([\w.-]+)\s*(==|!=)\s*(\S.*?)\s*$")
_CONSTRAINT_KEY = re.compile(r"^(node\.(id|hostname|role|platform\.os|platform\.arch)|(node|engine)\.labels\.[\w.-]+)$")
_SPREAD = re.compile(r"^(node|engine)\.labels\.[\w.-]+$")


def constraint(ctx: FileContext, path: Path_, value: Any) -> str | None:
    text = f.string(ctx, path, value)
    match = _CONSTRAINT.match(text) if text is not None else None
    if text is not None and not (match and _CONSTRAINT_KEY.match(match[1])):
        ctx.error(path, expected('a constraint "key==value" or "key!=value" on node.id, node.hostname, '
                                 'node.role, node.platform.os, node.platform.arch or node.labels.<name>', value))
        return None
    if match and match[1] == "node.role" and match[3] not in ("manager", "worker"):
        ctx.error(path, expected("node.role manager or worker", match[3]))
        return None
    return f"{match[1]}{match[2]}{match[3]}" if match else None


_spread = f.matching(_SPREAD, "a label descriptor such as node.labels.zone")

_preference = f.section({"spread": _spread})

_RESOURCES = {"cpus": f.cpus, "memory": f.byte_size, "pids": f.integer()}

_UPDATE = {
    "parallelism": f.integer(),
    "delay": f.duration,
    "failure_action": f.choice(*specs.UPDATE_FAILURE_ACTIONS),
    "monitor": f.duration,
    "max_failure_ratio": f.ratio,
    "order": f.choice(*specs.UPDATE_ORDERS),
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
    "resources": f.section({"limits": f.section(_RESOURCES), "reservations": f.section(_RESOURCES)}),
    "restart_policy": f.section({
        "condition": f.choice(*specs.RESTART_CONDITIONS),
        "delay": f.duration,
        "max_attempts": f.integer(),
        "window": f.duration,
    }),
    "update_config": f.section(_UPDATE),
    "rollback_config": f.section({**_UPDATE, "failure_action": f.choice(*specs.ROLLBACK_FAILURE_ACTIONS)}),
}


def deploy(ctx: FileContext, path: Path_, value: Any) -> dict | None:
    section = f.fields(ctx, path, value, _DEPLOY)
    if section and section.get("mode", "").startswith("global"):
        for key in ("replicas", "max_replicas_per_node"):
            holder = section if key == "replicas" else section.get("placement", {})
            if key in holder:
                where = path + (("replicas",) if key == "replicas" else ("placement", key))
                ctx.error(where, f"{key} cannot be used with mode {section['mode']}")
    return section
