"""`ports:`, short syntax ("[[ip:][published[-end]]:]target[-end][/protocol]") and long."""
from __future__ import annotations

import ipaddress
from typing import Any

from swarmlet.api import specs
from swarmlet.compose import fields as f
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.errors import Path_

_SHORT_FORMS = '"8080:80", "80/udp", ":443:443" or "127.0.0.1:8000-8001:80-81"'
_HOST_IP_IGNORED = "is ignored: cluster ports publish on every node"
MAX_PORT = 65535


def _port_or_none(ctx: FileContext, path: Path_, value: Any) -> int | None:
    """A port number, written as a number or as digits (interpolated values are strings)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return f.integer(1, MAX_PORT)(ctx, path, value)


def _published(ctx: FileContext, path: Path_, value: Any) -> int | None:
    if isinstance(value, str) and "-" in value:
        # Compose's "pick a free port in this range" is an engine feature; a cluster
        # publishes fixed ports (the v3 schema's published is an integer).
        ctx.error(path, expected("one published port (a range is for the short syntax)", value))
        return None
    return _port_or_none(ctx, path, value)


_LONG = {
    "target": _port_or_none,
    "published": _published,
    "protocol": f.choice(*specs.PORT_PROTOCOLS),
    "mode": f.choice(*specs.PUBLISH_MODES),
    "host_ip": f.ip_address,
    "name": f.string,
    "app_protocol": f.string,
}


def _split_spec(text: str) -> tuple[str, str, str, str]:
    """(ip, published, target, protocol) as go-connections' nat.ParsePortSpec splits
    them: the last two ":"-parts are the ports, anything before them the host IP."""
    body, _, protocol = text.rpartition("/") if "/" in text else (text, "", "")
    parts = body.split(":")
    target = parts[-1]
    published = parts[-2] if len(parts) > 1 else ""
    ip = ":".join(parts[:-2])
    return ip, published, target, protocol


def _span(text: str) -> tuple[int, int] | None:
    start, sep, end = text.partition("-")
    if not start.isdigit() or (sep and not end.isdigit()):
        return None
    return int(start), int(end if sep else start)


def _host_ip(text: str) -> str | None:
    """The address of a short syntax's host IP (IPv6 in brackets), None if it is none."""
    try:
        return str(ipaddress.ip_address(text[1:-1] if text.startswith("[") and text.endswith("]") else text))
    except ValueError:
        return None


def _short_ports(ctx: FileContext, path: Path_, text: str) -> list[dict]:
    ip, published_text, target_text, protocol = _split_spec(text)
    targets = _span(target_text)
    published = _span(published_text) if published_text else None
    if targets is None or (published_text and published is None):
        ctx.error(path, expected(f"a port such as {_SHORT_FORMS}", text))
        return []
    if ip:
        # The spec: "[IP:]"; an empty IP (":443:443") means every interface.
        address = _host_ip(ip)
        if address is None:
            ctx.error(path, expected("an IP address before the published port", ip))
            return []
        if not ipaddress.ip_address(address).is_unspecified:
            ctx.warn(path, f"host IP {ip} {_HOST_IP_IGNORED}")
    protocol = protocol or specs.DEFAULT_PORT_PROTOCOL
    if protocol not in specs.PORT_PROTOCOLS:
        ctx.error(path, expected("protocol " + ", ".join(specs.PORT_PROTOCOLS), protocol))
        return []
    numbers = list(targets) + (list(published) if published else [])
    if targets[0] > targets[1] or (published and published[0] > published[1]) \
            or any(not 1 <= n <= MAX_PORT for n in numbers):
        ctx.error(path, expected(f"ports from 1 to {MAX_PORT}, ranges low-high", text))
        return []
    target_ports = range(targets[0], targets[1] + 1)
    if published is None:
        return [_port(target, None, protocol) for target in target_ports]
    published_ports = range(published[0], published[1] + 1)
    if len(target_ports) == 1:
        # One target, a published range: Docker publishes the target on each (swarmopts).
        return [_port(target_ports[0], port, protocol) for port in published_ports]
    if len(published_ports) != len(target_ports):
        ctx.error(path, expected("a published range as long as the target range", text))
        return []
    return [_port(target, port, protocol) for target, port in zip(target_ports, published_ports)]


def _port(target: int, published: int | None, protocol: str) -> dict:
    port = {"target": target, "protocol": protocol, "mode": specs.DEFAULT_PUBLISH_MODE}
    if published is not None:
        port["published"] = published
    return port


def _long_port(ctx: FileContext, path: Path_, value: dict) -> list[dict]:
    port = f.fields(ctx, path, value, _LONG)
    if port is None:
        return []
    if "target" not in port:
        if "target" not in value:
            ctx.error(path + ("target",), "missing required key target (the container port)")
        return []
    for key in ("name", "app_protocol"):
        if port.pop(key, None) is not None:
            ctx.warn(path + (key,), f"{key} has no effect on a cluster (docker stack deploy does not take it)")
    address = port.pop("host_ip", None)
    if address and not ipaddress.ip_address(address).is_unspecified:
        ctx.warn(path + ("host_ip",), f"host_ip {_HOST_IP_IGNORED}")
    port.setdefault("protocol", specs.DEFAULT_PORT_PROTOCOL)
    port.setdefault("mode", specs.DEFAULT_PUBLISH_MODE)
    return [port]


def ports(ctx: FileContext, path: Path_, value: Any) -> list[dict] | None:
    items = f.sequence(ctx, path, value)
    if items is None:
        return None
    ctx.remember(("ports", path[1]), path)
    result: list[dict] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            result += _long_port(ctx, path + (i,), item)
        elif isinstance(item, (str, int)) and not isinstance(item, bool):
            result += _short_ports(ctx, path + (i,), str(item))
        else:
            ctx.error(path + (i,), expected("a port string or mapping", item))
    if any(port["mode"] == "ingress" for port in result):
        ctx.warn(path, "ports in ingress mode need the routing mesh: a cluster whose nodes do not all run the "
                       "overlay data plane (--data-plane overlay, as `swarmlet local up --isolated` starts them) "
                       "refuses them; mode: host publishes a port on each node that runs a task")
    return result
