"""The cluster's network addressing vocabulary: the address pool overlay networks take
their subnets from (Swarm's ``--default-addr-pool`` and
``--default-addr-pool-mask-length``, set at ``swarmlet init``, kept in the cluster
object), the dynamic range of published ports, and the node's data-plane choice.

Every default is named here once; validation gives an error naming the setting, the
value and what was expected. The allocation itself is ``swarmlet.manager.allocator``.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Mapping

from swarmlet.api.errors import Invalid

DEFAULT_ADDR_POOL = ("10.0.0.0/8",)  # Swarm's default pool
DEFAULT_ADDR_POOL_MASK_LENGTH = 24  # each network a /24, as in Swarm
# A network needs room for a VIP, a gateway per node and its tasks: /29 leaves 6 hosts.
MAX_NETWORK_PREFIX = 29
# Swarm's range for published ports the cluster picks (`published` left out).
DYNAMIC_PORT_RANGE = (30000, 32767)
MAX_VNI = (1 << 24) - 1  # VNIs are 24 bits

# What a node runs to carry overlay networks: nothing (each engine's own bridge networks,
# one machine's worth) or the overlay data plane (swarmlet.network: VXLAN, DNS, VIPs, mesh).
DATA_PLANE_NONE = "none"
DATA_PLANE_OVERLAY = "overlay"
DATA_PLANES = (DATA_PLANE_NONE, DATA_PLANE_OVERLAY)
DEFAULT_DATA_PLANE = DATA_PLANE_NONE

OVERLAY_DRIVER = "overlay"  # the only driver whose networks get cluster-allocated addresses


def ipv4_network(text: str, what: str) -> ipaddress.IPv4Network:
    """``text`` as an IPv4 network ("10.0.1.0/24"); ``Invalid`` naming ``what`` otherwise."""
    try:
        network = ipaddress.ip_network(str(text), strict=True)
    except ValueError as err:
        raise Invalid(f"{what}: {text!r} is not an IPv4 network in CIDR form such as 10.0.1.0/24 ({err})") from None
    if network.version != 4:
        raise Invalid(f"{what}: {text!r} is IPv6; swarmlet's networks are IPv4 only")
    return network


@dataclass(frozen=True)
class AddressPool:
    """Where overlay networks without an ``ipam`` subnet take theirs from."""

    subnets: tuple[str, ...] = DEFAULT_ADDR_POOL
    mask_length: int = DEFAULT_ADDR_POOL_MASK_LENGTH

    def __post_init__(self) -> None:
        if not self.subnets:
            raise Invalid("--default-addr-pool: at least one subnet is needed")
        if isinstance(self.mask_length, bool) or not isinstance(self.mask_length, int) \
                or not 1 <= self.mask_length <= MAX_NETWORK_PREFIX:
            raise Invalid(f"--default-addr-pool-mask-length: {self.mask_length!r} is not a prefix length "
                          f"between 1 and {MAX_NETWORK_PREFIX}")
        pools = [ipv4_network(s, "--default-addr-pool") for s in self.subnets]
        for pool in pools:
            if pool.prefixlen > self.mask_length:
                raise Invalid(f"--default-addr-pool {pool} is smaller than one network of "
                              f"--default-addr-pool-mask-length {self.mask_length}")
        for i, a in enumerate(pools):
            for b in pools[i + 1:]:
                if a.overlaps(b):
                    raise Invalid(f"--default-addr-pool: {a} and {b} overlap")

    def networks(self) -> list[ipaddress.IPv4Network]:
        return [ipaddress.ip_network(s) for s in self.subnets]

    def to_dict(self) -> dict:
        return {"subnets": list(self.subnets), "mask_length": self.mask_length}

    @classmethod
    def from_spec(cls, raw: Mapping | None) -> "AddressPool":
        """The cluster object's ``address_pool``; the defaults when absent (an older cluster)."""
        if not raw:
            return cls()
        return cls(subnets=tuple(raw.get("subnets") or DEFAULT_ADDR_POOL),
                   mask_length=raw.get("mask_length", DEFAULT_ADDR_POOL_MASK_LENGTH))


def check_data_plane(value: str) -> str:
    if value not in DATA_PLANES:
        raise Invalid(f"--data-plane: {value!r} is not one of {', '.join(DATA_PLANES)}")
    return value
