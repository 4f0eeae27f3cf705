"""`ports:`, short syntax ("[ip:][published[-end]:]target[-end][/protocol]") and long."""
from __future__ import annotations

import re
from typing import Any

from swarmlet.api import specs
from swarmlet.compose import fields as f
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.errors import Path_

_SHORT = re.compile(
    r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|\d+\.\d+\.\d+\.\d+):)?"
    r"(?:(?P<published>\d+(?:-\d+)?)?:)?"
    r"(?P<target>\d+(?:-\d+)?)"
    r"(?:/(?P<protocol>[a-z]+))?$")

_port_number = f.integer(1, 65535)

_LONG = {
    "target": _port_number,
    "published": _port_number,
    "protocol": f.choice(*specs.PORT_PROTOCOLS),
    "mode": f.choice(*specs.PUBLISH_MODES),
    "host_ip": f.ip_address,
}


def _span(text: str) -> tuple[int, int]:
    start, _, end = text.partition("-")
    return int(start), int(end or start)


def _short_ports(ctx: FileContext, path: Path_, text: str) -> list[dict]:
    match = _SHORT.match(text)
    if not match:
        ctx.error(path, expected('a port such as "8080:80", "80/udp" or "127.0.0.1:8000-8001:80-81"', text))
        return []
    if match["ip"]:
        if f.ip_address(ctx, path, match["ip"]) is None:
            return []
        ctx.warn(path, f"host IP {match['ip']} is ignored: cluster ports publish on every node")
    protocol = match["protocol"] or specs.DEFAULT_PORT_PROTOCOL
    if protocol not in specs.PORT_PROTOCOLS:
        ctx.error(path, expected("protocol " + ", ".join(specs.PORT_PROTOCOLS), protocol))
        return []
    first, last = _span(match["target"])
    published = _span(match["published"]) if match["published"] else None
    numbers = [first, last] + (list(published) if published else [])
    if first > last or any(not 1 <= n <= 65535 for n in numbers):
        ctx.error(path, expected("ports from 1 to 65535, ranges low-high", text))
        return []
    if published and published[1] - published[0] != last - first:
        ctx.error(path, expected("a published range as long as the target range", text))
        return []
    return [{"target": target,
             **({"published": published[0] + i} if published else {}),
             "protocol": protocol, "mode": specs.DEFAULT_PUBLISH_MODE}
            for i, target in enumerate(range(first, last + 1))]


def _long_port(ctx: FileContext, path: Path_, value: dict) -> list[dict]:
    port = f.fields(ctx, path, value, _LONG)
    if port is None:
        return []
    if "target" not in port:
        if "target" not in value:
            ctx.error(path + ("target",), "missing required key target (the container port)")
        return []
    if port.pop("host_ip", None):
        ctx.warn(path + ("host_ip",), "host_ip is ignored: cluster ports publish on every node")
    port.setdefault("protocol", specs.DEFAULT_PORT_PROTOCOL)
    port.setdefault("mode", specs.DEFAULT_PUBLISH_MODE)
    return [port]


def ports(ctx: FileContext, path: Path_, value: Any) -> list[dict] | None:
    items = f.sequence(ctx, path, value)
    if items is None:
        return None
    result: list[dict] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            result += _long_port(ctx, path + (i,), item)
        elif isinstance(item, (str, int)) and not isinstance(item, bool):
            result += _short_ports(ctx, path + (i,), str(item))
        else:
            ctx.error(path + (i,), expected("a port string or mapping", item))
    return result
