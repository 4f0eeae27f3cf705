"""Who makes a network's bridge on a node: the adapter seam.

On a real node the bridge is the node engine's Docker bridge network
`docker_network_name(network)`, so that the runtime can attach containers to it with
their allocated addresses (`DockerBridges`). Tests without an engine, and nodes whose
tasks are plain processes in namespaces, use a bridge made through netlink
(`PlainBridges`). Either way the bridge is `bridge_device_name(vni)`, holds the node's
gateway address with the subnet's prefix (set by the engine, or by the data plane for a
bridge of its own), and has the network's MTU.
"""
from __future__ import annotations

import contextlib
import ipaddress
from typing import Protocol

from swarmlet.api.netplane import OverlayNetwork, bridge_device_name, docker_network_name
from swarmlet.network import netfilter
from swarmlet.network.links import IFF_UP, Links
from swarmlet.trust import Trusted

LABEL_OVERLAY_ID = "swarmlet.overlay.id"
LABEL_OVERLAY_VNI = "swarmlet.overlay.vni"
_BRIDGE_NAME = "swbr"
# A network found as wanted is taken on trust for this long: while a service starts,
# every task that starts makes a new plane for every node, and checking each network
# again for each (two engine calls and two iptables runs) cost the engines more CPU
# than the containers' starts. Networks this node removes are checked again at once.
BRIDGE_RECHECK_S = 5.0


class NetworkInUse(RuntimeError):
    """A network of ours that must go (it left the plane, or clashes with a new one) still
    has endpoints (the containers of its tasks are not gone yet): the engine refuses to
    remove it. Not a bad plane: it passes once the containers are gone."""


class BridgeNetworks(Protocol):
    # True when the data plane puts the gateway address on the bridge itself (the engine
    # does it for its own networks).
    sets_gateway: bool

    async def ensure(self, network: OverlayNetwork) -> None:
        """The network's bridge exists, right (MTU, internal; subnet and gateway unless the
        data plane sets the gateway), and is up."""

    async def ours(self) -> set[int]:
        """The VNIs of every bridge this adapter made, current or not."""

    async def remove(self, vni: int) -> bool:
        """The bridge of that VNI is gone (nothing when it already is): True; False when it
        still has endpoints and stays (the data plane tries again)."""


class PlainBridges:
    """Bridges made through netlink, for nodes without a Docker engine."""

    sets_gateway = True

    def __init__(self, links: Links):
        self._links = links

    async def ensure(self, network: OverlayNetwork) -> None:
        ipr, name = self._links.ipr, bridge_device_name(network.vni)
        index = await self._links.index(name)
        if index is None:
            await ipr.link("add", ifname=name, kind="bridge")
            index = await self._links.index(name)
        link = await self._links.link(index)
        if link.get("IFLA_MTU") != network.mtu or not link["flags"] & IFF_UP:
            await ipr.link("set", index=index, mtu=network.mtu, state="up")

    async def ours(self) -> set[int]:
        vnis = set()
        async for link in await self._links.ipr.link("dump"):
            name = link.get("IFLA_IFNAME") or ""
            kind = (link.get("IFLA_LINKINFO") or {}).get("IFLA_INFO_KIND") if link.get("IFLA_LINKINFO") else None
            if name.startswith(_BRIDGE_NAME) and name[len(_BRIDGE_NAME):].isdigit() and kind == "bridge":
                vnis.add(int(name[len(_BRIDGE_NAME):]))
        return vnis

    async def remove(self, vni: int) -> bool:
        await self._links.remove_link(bridge_device_name(vni))  # its ports (veths) are let go
        return True


class DockerBridges:
    """The node engine's bridge networks, through the docker SDK (`runtime.docker.client`)."""

    sets_gateway = False

    def __init__(self, engine, lock=None):
        """`engine`: a `swarmlet.runtime.docker.client.Engine` for this node's engine.
        `lock`: the runtime's `NetworkLock` (runtime/docker/networks.py), held exclusively
        while a network is created or removed, so that no container is being created on
        it meanwhile (the engine is not atomic there)."""
        self._engine = engine
        self._lock = lock
        self._checked: Trusted[str, dict] = Trusted(BRIDGE_RECHECK_S)  # engine network name -> as wanted

    def _exclusive(self):
        return self._lock.exclusive() if self._lock is not None else contextlib.nullcontext()

    @staticmethod
    def _wanted(network: OverlayNetwork) -> dict:
        return {
            "Driver": "bridge",
            "Internal": network.internal,
            "Subnet": network.subnet,
            "Gateway": network.gateway,
            "Bridge": bridge_device_name(network.vni),
            "MTU": str(network.mtu),
        }

    @staticmethod
    def _actual(info: dict) -> dict:
        config = (info.get("IPAM") or {}).get("Config") or [{}]
        options = info.get("Options") or {}
        return {
            "Driver": info.get("Driver"),
            "Internal": bool(info.get("Internal")),
            "Subnet": config[0].get("Subnet"),
            "Gateway": config[0].get("Gateway"),
            "Bridge": options.get("com.docker.network.bridge.name"),
            "MTU": options.get("com.docker.network.driver.mtu"),
        }

    async def _find(self, name: str) -> dict | None:
        api = self._engine.api
        found = await self._engine.call(api.networks, names=[name])
        return next((n for n in found if n.get("Name") == name), None)

    async def ensure(self, network: OverlayNetwork) -> None:
        import docker.types

        api, name, wanted = self._engine.api, docker_network_name(network), self._wanted(network)
        if self._checked.holds(name, wanted):
            return
        self._checked.forget(name)
        existing = await self._find(name)
        if existing is not None:
            info = await self._engine.call(api.inspect_network, existing["Id"])
            if self._actual(info) == wanted:
                await self._let_mesh_in(network)
                self._checked.note(name, wanted)
                return
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=network.subnet,
                                                                           gateway=network.gateway)])
        async with self._exclusive():
            await self._remove_clashing(network, name)
            if existing is not None:
                # The engine cannot change a network's subnet or options in place.
                await self._engine.call(api.remove_network, existing["Id"])
            await self._engine.call(
                api.create_network, name, driver="bridge", internal=network.internal, ipam=ipam,
                options={"com.docker.network.bridge.name": bridge_device_name(network.vni),
                         "com.docker.network.driver.mtu": str(network.mtu)},
                labels={LABEL_OVERLAY_ID: network.id, LABEL_OVERLAY_VNI: str(network.vni)})
        await self._let_mesh_in(network)
        self._checked.note(name, wanted)

    @staticmethod
    async def _let_mesh_in(network: OverlayNetwork) -> None:
        bridge = bridge_device_name(network.vni)
        if network.internal:
            await netfilter.forget_docker_bridge(bridge)  # the mesh never enters an internal network
        else:
            await netfilter.let_mesh_into_docker_bridge(bridge)

    async def _remove_clashing(self, network: OverlayNetwork, name: str) -> None:
        """Remove our other engine networks that would keep this one from being created: one
        with its bridge name (its VNI) or a subnet overlapping its own. Such a network is no
        longer in the plane (a plane's VNIs and subnets are unique) but lingers, its
        containers not gone yet when it left. ``NetworkInUse`` while it has endpoints."""
        api, subnet = self._engine.api, ipaddress.ip_network(network.subnet)
        for other in await self._engine.call(api.networks, filters={"label": [LABEL_OVERLAY_VNI]}):
            if other.get("Name") == name:
                continue
            info = await self._engine.call(api.inspect_network, other["Id"])
            actual = self._actual(info)
            overlaps = actual["Subnet"] and ipaddress.ip_network(actual["Subnet"]).overlaps(subnet)
            if actual["Bridge"] == bridge_device_name(network.vni) or overlaps:
                if not await self._remove_one(info):
                    raise NetworkInUse(f"network {network.name}: the engine's network {other.get('Name')} (bridge "
                                       f"{actual['Bridge']}, subnet {actual['Subnet']}), no longer in the plane, still "
                                       f"has endpoints ({', '.join(sorted(info.get('Containers') or {}))}); this "
                                       "network is made once they are gone")
                await netfilter.forget_docker_bridge(actual["Bridge"])

    async def _remove_one(self, info: dict) -> bool:
        """Remove one engine network (inspected); False while it has endpoints."""
        import docker.errors

        self._checked.forget(info.get("Name"))
        if info.get("Containers"):
            return False
        try:
            await self._engine.call(self._engine.api.remove_network, info["Id"])
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as err:  # endpoints that appeared since the inspect
            if "active endpoints" in str(err):
                return False
            raise
        return True

    async def ours(self) -> set[int]:
        found = await self._engine.call(self._engine.api.networks, filters={"label": [LABEL_OVERLAY_VNI]})
        return {int(n["Labels"][LABEL_OVERLAY_VNI]) for n in found}

    async def remove(self, vni: int) -> bool:
        import docker.errors

        api = self._engine.api
        found = await self._engine.call(api.networks, filters={"label": [f"{LABEL_OVERLAY_VNI}={vni}"]})
        gone = True
        async with self._exclusive():
            for network in found:
                try:
                    info = await self._engine.call(api.inspect_network, network["Id"])
                except docker.errors.NotFound:
                    continue
                gone = await self._remove_one(info) and gone
        if gone:
            await netfilter.forget_docker_bridge(bridge_device_name(vni))
        return gone
