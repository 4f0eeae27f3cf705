"""What one node's data plane should be: the contract between the manager, which builds
it from the store (dispatcher, per node, over the node's session), and the agent's data
plane (`swarmlet.network`), which makes the node's kernel match it (VXLAN devices and
forwarding entries, the resolver's answers, the VIP and routing-mesh rules).

Desired state only flows this way, manager → agent, from the Raft store: no gossip side
channel (Swarm's stale-DNS and stale-VIP bugs come from keeping service state apart
from Raft). Everything here is a plain value; `to_wire`/`from_wire` give the msgpack
form the session carries.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

VXLAN_PORT = 4789  # IANA's VXLAN port, as Docker's overlay driver uses
MIN_VNI = 4096  # VNIs below this are left to other users of the host, as Docker does
OVERLAY_MTU = 1450  # 1500 less the 50 bytes of VXLAN-in-UDP-in-IPv4 encapsulation


@dataclass(frozen=True)
class Backend:
    """One running task of a service, as traffic should reach it."""

    task_id: str
    address: str  # the task's address on this network, no prefix ("10.0.1.7")
    node_address: str  # the LAN address of the node running it


@dataclass(frozen=True)
class ServiceEndpoint:
    """A service as seen on one network: the names it answers to and where traffic goes."""

    service_id: str
    names: tuple[str, ...]  # "web", "hello_web" and the aliases, on this network
    endpoint_mode: str  # "vip" or "dnsrr"
    vip: str | None  # the service's address on this network ("10.0.1.2"); None with dnsrr
    backends: tuple[Backend, ...]  # running and healthy tasks only, in a stable order
    # (target, protocol) pairs the VIP forwards; empty means every port of the VIP
    ports: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class OverlayNetwork:
    """One overlay network as it should exist on this node."""

    id: str
    name: str  # the cluster-wide name, e.g. "hello_default"
    vni: int  # ≥ MIN_VNI, unique in the cluster
    subnet: str  # "10.0.1.0/24"
    gateway: str  # this node's own address on the network (its bridge's), "10.0.1.254"
    internal: bool  # no way out of the network (no MASQUERADE, no route beyond it)
    peers: tuple[str, ...]  # LAN addresses of the *other* nodes attached to this network
    services: tuple[ServiceEndpoint, ...] = ()
    mtu: int = OVERLAY_MTU


@dataclass(frozen=True)
class PublishedPort:
    """A port published in ingress mode: open on every node, forwarded to any backend."""

    service_id: str
    published: int
    target: int
    protocol: str  # "tcp" or "udp"
    network_id: str  # the overlay the backends are reached on
    backends: tuple[Backend, ...]


@dataclass(frozen=True)
class NetworkPlane:
    """Everything one node's data plane needs; built whole, applied whole (level-triggered)."""

    node_address: str  # this node's LAN address: the VXLAN local end, where published ports listen
    version: int  # the store version it was built at; only moves forward on one session
    networks: tuple[OverlayNetwork, ...] = ()
    ingress: tuple[PublishedPort, ...] = field(default=())

    def network(self, network_id: str) -> OverlayNetwork | None:
        return next((n for n in self.networks if n.id == network_id), None)

    def same_as(self, other: "NetworkPlane | None") -> bool:
        """Whether ``other`` asks the same of the node (the store version aside)."""
        return other is not None and replace(other, version=self.version) == self

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> "NetworkPlane":
        def backends(items) -> tuple[Backend, ...]:
            return tuple(Backend(**b) for b in items)

        networks = tuple(
            OverlayNetwork(**{**n, "peers": tuple(n["peers"]), "services": tuple(
                ServiceEndpoint(**{**s, "names": tuple(s["names"]), "backends": backends(s["backends"]),
                                   "ports": tuple(tuple(p) for p in s.get("ports", ()))})
                for s in n["services"])})
            for n in raw["networks"])
        ingress = tuple(PublishedPort(**{**p, "backends": backends(p["backends"])}) for p in raw["ingress"])
        return cls(node_address=raw["node_address"], version=raw["version"], networks=networks, ingress=ingress)


class DataPlane(Protocol):
    """What the agent drives on a node run with ``--data-plane overlay``
    (``swarmlet.network.OverlayDataPlane``): make the node match ``plane``, whole and
    level-triggered; a bad plane raises and changes nothing."""

    async def apply(self, plane: NetworkPlane) -> Any: ...

    async def close(self) -> None:
        """Stop what runs in this process (the resolver); the kernel state stays."""


# -- names on a node, one rule each ---------------------------------------------------------------

def vxlan_device_name(vni: int) -> str:
    """The node's VXLAN device for a network (Linux device names are at most 15 bytes)."""
    return f"swvx{vni}"


BRIDGE_PREFIX = "swbr"  # every overlay bridge's name starts so (nftables matches them all by it)


def bridge_device_name(vni: int) -> str:
    """The node's bridge for a network, the one the network's containers and VXLAN device share."""
    return f"{BRIDGE_PREFIX}{vni}"


def docker_network_name(network: OverlayNetwork) -> str:
    """The node engine's Docker network that stands for an overlay network on that node."""
    return f"{network.name}-overlay"
