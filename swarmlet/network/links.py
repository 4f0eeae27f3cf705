"""The node's overlay devices through netlink (pyroute2): per network a VXLAN device
enslaved to the network's bridge, its flood entries (one per peer node), and the VIPs as
/32 addresses on the bridge. Every call reads the kernel's state back and changes only
the difference, so it adopts what an earlier agent left in place.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from swarmlet.api.netplane import VXLAN_PORT, OverlayNetwork, bridge_device_name, vxlan_device_name

FLOOD_MAC = "00:00:00:00:00:00"  # the FDB entry a VXLAN device sends broadcast and unknown frames to
VIP_PREFIX = 32
_VXLAN_NAME = re.compile(r"^swvx(\d+)$")
IFF_UP = 1
# errnos of a delete that found nothing to delete: ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL
_ALREADY_GONE = (2, 3, 19, 99)


@dataclass(frozen=True)
class FdbDiff:
    add: frozenset[str]  # peers to flood to
    remove: frozenset[str]  # stale flood destinations
    forget: tuple[tuple[str, str], ...]  # (mac, dst) learned through a node that is no longer a peer


def fdb_diff(peers: tuple[str, ...], entries: list[tuple[str, str | None]]) -> FdbDiff:
    """`entries`: (mac, dst) of the VXLAN device's FDB; pure."""
    flood = {dst for mac, dst in entries if mac == FLOOD_MAC and dst}
    wanted = set(peers)
    forget = tuple((mac, dst) for mac, dst in entries if mac != FLOOD_MAC and dst and dst not in wanted)
    return FdbDiff(add=frozenset(wanted - flood), remove=frozenset(flood - wanted), forget=forget)


class Links:
    def __init__(self) -> None:
        self._ipr: AsyncIPRoute | None = None

    @property
    def ipr(self) -> AsyncIPRoute:
        if self._ipr is None:
            self._ipr = AsyncIPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def index(self, name: str) -> int | None:
        """The device's index, from ``if_nametoindex`` (libc, this process's namespace as
        pyroute2's socket is): pyroute2's ``link_lookup`` dumps every device and parses
        each in Python (each container's veth too), three times a network at every
        plane; that was most of an agent's CPU during a 50-replica deploy."""
        try:
            return socket.if_nametoindex(name)
        except OSError:  # no such device
            return None

    async def link(self, index: int):
        return (await self.ipr.link("get", index=index))[0]

    async def our_vnis(self) -> set[int]:
        """The VNIs of our VXLAN devices, by name, from ``if_nameindex`` (names only; see
        ``index``)."""
        return {int(match.group(1)) for _, name in socket.if_nameindex() if (match := _VXLAN_NAME.match(name))}

    async def ensure_vxlan(self, network: OverlayNetwork, local: str) -> int:
        """The network's VXLAN device, right, enslaved to its bridge and up; its index."""
        name = vxlan_device_name(network.vni)
        bridge = await self.index(bridge_device_name(network.vni))
        if bridge is None:
            raise LookupError(f"bridge {bridge_device_name(network.vni)} of network {network.name!r} is missing")
        index = await self.index(name)
        if index is not None:
            data = (await self.link(index)).get("IFLA_LINKINFO").get("IFLA_INFO_DATA")
            if (data.get("IFLA_VXLAN_ID"), data.get("IFLA_VXLAN_LOCAL"), data.get("IFLA_VXLAN_PORT")) != (
                    network.vni, local, VXLAN_PORT):
                # A different local address or VNI cannot be changed in place.
                await self.ipr.link("del", index=index)
                index = None
        if index is None:
            await self.ipr.link("add", ifname=name, kind="vxlan", vxlan_id=network.vni, vxlan_local=local,
                                vxlan_port=VXLAN_PORT, vxlan_learning=1)
            index = await self.index(name)
        link = await self.link(index)
        if (link.get("IFLA_MASTER"), link.get("IFLA_MTU")) != (bridge, network.mtu) or not link["flags"] & IFF_UP:
            await self.ipr.link("set", index=index, master=bridge, mtu=network.mtu, state="up")
        return index

    async def fdb_entries(self, index: int) -> list[tuple[str, str | None]]:
        entries = []
        async for entry in await self.ipr.fdb("dump", ifindex=index):
            if entry.get("ifindex") == index:
                entries.append((entry.get("NDA_LLADDR"), entry.get("NDA_DST")))
        return entries

    async def sync_fdb(self, index: int, peers: tuple[str, ...]) -> FdbDiff:
        diff = fdb_diff(peers, await self.fdb_entries(index))
        for peer in sorted(diff.add):
            await self.ipr.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=peer)
        for peer in sorted(diff.remove):
            await self._quietly(self.ipr.fdb("del", ifindex=index, lladdr=FLOOD_MAC, dst=peer))
        for mac, dst in diff.forget:
            await self._quietly(self.ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst))
        return diff

    async def sync_addresses(self, network: OverlayNetwork, vips: set[str], with_gateway: bool) -> None:
        """The bridge holds the VIPs as /32 addresses and, `with_gateway` (a bridge of our
        own, not an engine's), the gateway with the subnet's prefix and nothing else. One
        read of the bridge's addresses for both (with many VIPs, decoding it is most of an
        unchanged apply)."""
        bridge = await self.index(bridge_device_name(network.vni))
        held = set()
        async for addr in await self.ipr.addr("dump", index=bridge, family=socket.AF_INET):
            held.add((addr.get("IFA_ADDRESS"), addr["prefixlen"]))
        wanted = {(vip, VIP_PREFIX) for vip in vips}
        gateway = (network.gateway, ipaddress.ip_network(network.subnet).prefixlen)
        if with_gateway:
            wanted.add(gateway)
            stale = held - wanted
        else:  # only our VIPs are ours to remove
            stale = {(a, p) for a, p in held if p == VIP_PREFIX and a != network.gateway} - wanted
        for address, prefix in sorted(wanted - held):
            await self.ipr.addr("add", index=bridge, address=address, prefixlen=prefix)
        for address, prefix in sorted(stale):
            await self._quietly(self.ipr.addr("del", index=bridge, address=address, prefixlen=prefix))

    async def remove_link(self, name: str) -> None:
        index = await self.index(name)
        if index is not None:
            await self._quietly(self.ipr.link("del", index=index))

    @staticmethod
    async def _quietly(call) -> None:
        """A delete that someone else already did is done."""
        try:
            await call
        except NetlinkError as err:
            if err.code not in _ALREADY_GONE:
                raise
