"""What a plane must satisfy before the data plane touches the kernel (pure): a bad plane
is refused whole with every problem named, and nothing on the node changes."""
from __future__ import annotations

import ipaddress

from swarmlet.api.netplane import MIN_VNI, NetworkPlane

MAX_VNI = 2**24 - 1  # VXLAN's VNI is 24 bits
PROTOCOLS = ("tcp", "udp")
ENDPOINT_MODES = ("vip", "dnsrr")


class PlaneError(ValueError):
    """A plane the data plane refuses; `problems` names each field and what was expected."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("network plane refused: " + "; ".join(problems))


def _ipv4(value, where: str, problems: list[str]) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        problems.append(f"{where}: {value!r} is not an IPv4 address")
        return None


def _port(value, where: str, problems: list[str]) -> None:
    if not isinstance(value, int) or not 1 <= value <= 65535:
        problems.append(f"{where}: {value!r} is not a port (1-65535)")


def plane_problems(plane: NetworkPlane) -> list[str]:
    problems: list[str] = []
    _ipv4(plane.node_address, "node_address", problems)
    ids, vnis, subnets = set(), set(), []
    for n in plane.networks:
        where = f"network {n.name!r}"
        if n.id in ids:
            problems.append(f"{where}: id {n.id!r} appears twice")
        ids.add(n.id)
        if not isinstance(n.vni, int) or not MIN_VNI <= n.vni <= MAX_VNI:
            problems.append(f"{where}: vni {n.vni!r} is outside {MIN_VNI}-{MAX_VNI}")
        elif n.vni in vnis:
            problems.append(f"{where}: vni {n.vni} is used by another network")
        vnis.add(n.vni)
        if not isinstance(n.mtu, int) or not 576 <= n.mtu <= 9000:
            problems.append(f"{where}: mtu {n.mtu!r} is outside 576-9000")
        try:
            subnet = ipaddress.IPv4Network(n.subnet)
        except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError, TypeError):
            problems.append(f"{where}: subnet {n.subnet!r} is not an IPv4 network like 10.0.1.0/24")
            continue
        for other_name, other in subnets:
            if subnet.overlaps(other):
                problems.append(f"{where}: subnet {subnet} overlaps network {other_name!r}'s {other}")
        subnets.append((n.name, subnet))

        def inside(address, what: str) -> None:
            ip = _ipv4(address, f"{where}: {what}", problems)
            if ip is not None and ip not in subnet:
                problems.append(f"{where}: {what} {address} is outside the subnet {subnet}")

        inside(n.gateway, "gateway")
        for peer in n.peers:
            _ipv4(peer, f"{where}: peer", problems)
        for s in n.services:
            swhere = f"service {s.service_id!r}"
            if s.endpoint_mode not in ENDPOINT_MODES:
                problems.append(f"{where}: {swhere}: endpoint_mode {s.endpoint_mode!r} is not one of {ENDPOINT_MODES}")
            if s.endpoint_mode == "vip":
                if s.vip is None:
                    problems.append(f"{where}: {swhere}: endpoint_mode vip needs a vip")
                else:
                    inside(s.vip, f"{swhere}: vip")
                    if s.vip == n.gateway:
                        problems.append(f"{where}: {swhere}: vip {s.vip} is the node's gateway")
            if not s.names:
                problems.append(f"{where}: {swhere}: has no names")
            for b in s.backends:
                inside(b.address, f"{swhere}: backend {b.task_id!r}")
            for port, protocol in s.ports:
                _port(port, f"{where}: {swhere}: port", problems)
                if protocol not in PROTOCOLS:
                    problems.append(f"{where}: {swhere}: protocol {protocol!r} is not one of {PROTOCOLS}")
    published = set()
    for p in plane.ingress:
        where = f"published port {p.published!r}/{p.protocol}"
        _port(p.published, where, problems)
        _port(p.target, f"{where}: target", problems)
        if p.protocol not in PROTOCOLS:
            problems.append(f"{where}: protocol {p.protocol!r} is not one of {PROTOCOLS}")
        if (p.published, p.protocol) in published:
            problems.append(f"{where}: published twice")
        published.add((p.published, p.protocol))
        network = plane.network(p.network_id)
        if network is None:
            problems.append(f"{where}: network {p.network_id!r} is not in the plane")
        else:
            subnet = dict(subnets).get(network.name)
            for b in p.backends:
                ip = _ipv4(b.address, f"{where}: backend {b.task_id!r}", problems)
                if ip is not None and subnet is not None and ip not in subnet:
                    problems.append(f"{where}: backend {b.task_id!r} {b.address} is outside {network.name!r}'s subnet")
    return problems


def check_plane(plane: NetworkPlane) -> None:
    problems = plane_problems(plane)
    if problems:
        raise PlaneError(problems)
