"""The node side of the overlay: makes the kernel of the node it runs in match a
`NetworkPlane`, level-triggered. Each `apply` reads back what is there (netlink, `nft -j
list ruleset`, the bridges' owner) and changes only the difference, so an agent that
restarts adopts the devices, forwarding entries, bridges and rules it finds: traffic
through VIPs and the routing mesh never stops; only the resolver, which lives in the
process, starts again.

The order of one apply: answers first (an in-memory swap), then the ruleset in one nft
transaction and the tracked flows of backends that left (so no connection goes on to a
dead task), then devices (a new network's bridge, VXLAN device, flood entries and VIPs),
then the resolver's listeners, and last the devices of networks that left.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence, Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from swarmlet.api.netplane import NetworkPlane, OverlayNetwork, vxlan_device_name
from swarmlet.network import discovery, netfilter
from swarmlet.network.bridges import BridgeNetworks, PlainBridges
from swarmlet.network.links import Links
from swarmlet.network.resolver import DNS_PORT, Resolver
from swarmlet.network.ruleset import Ruleset, RulesetSummary, render_ruleset, vips_of
from swarmlet.network.validation import check_plane
from swarmlet.trust import Trusted

log = logging.getLogger(__name__)

# Per network namespace on this kernel; the agent runs inside the node's namespace.
FORWARDING_SYSCTL = Path("/proc/sys/net/ipv4/ip_forward")
# How often a network that left but still has endpoints is tried again. A plane removing a
# network can come before the stop of its containers (a `stack rm`): they are gone a few
# seconds later (BACKEND_DRAIN, the stop grace), and nothing else would come to retry.
LINGER_RETRY = 1.0
# What the kernel was last found to hold (or was given) is taken on trust for this long:
# during a deploy every task that starts anywhere makes a new plane for every node, yet
# only its backends change. Reading everything back each time (netlink dumps of every
# link and forwarding entry, every veth's too, and an `nft -j list ruleset` run) held
# each agent's event loop for most of a second per 50-replica deploy, on engines that
# needed the CPU. So a network's devices (bridge, VXLAN device, flood entries, VIP
# addresses) found as wanted are not read again while planes ask the same of them, nor is
# the ruleset this agent wrote; a change is applied at once, the sweep for networks that
# left runs whenever the set of networks changes, and an agent that starts reads
# everything back.
RECHECK_S = 5.0
_RULESET, _SWEEP = "ruleset", "sweep"  # the keys of the node-wide things trusted


def device_shape(network: OverlayNetwork, node_address: str) -> tuple:
    """What a network's devices are made from; pure. Two planes with the same shape need
    the same devices."""
    return (network.vni, network.subnet, network.gateway, network.mtu, node_address, tuple(network.peers),
            tuple(vips_of(network)))


@dataclass(frozen=True)
class ApplyResult:
    version: int
    ruleset_written: bool  # False when the kernel already held this ruleset
    flows_forgotten: tuple[str, ...]  # backends whose tracked flows were dropped
    networks_removed: tuple[int, ...]  # VNIs
    # VNIs of networks that left but could not be removed yet (their engine network still
    # has endpoints): tried again on the next apply and every LINGER_RETRY meanwhile.
    networks_lingering: tuple[int, ...] = ()


def enable_forwarding(path: Path = FORWARDING_SYSCTL) -> None:
    if path.read_text().strip() != "1":
        path.write_text("1\n")


class OverlayDataPlane:
    def __init__(self, bridges: BridgeNetworks | None = None, *, upstreams: Sequence[tuple[str, int]] = (),
                 dns_port: int = DNS_PORT):
        """`bridges`: who makes each network's bridge (the node engine's Docker networks
        on a real node, `DockerBridges`; netlink bridges by default). `upstreams`: the
        resolvers for names that are not the cluster's ((address, port) pairs)."""
        self._links = Links()
        self._bridges = bridges if bridges is not None else PlainBridges(self._links)
        self._resolver = Resolver(upstreams, dns_port)
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task | None = None  # removes the networks that linger (LINGER_RETRY)
        self.applied: NetworkPlane | None = None
        # What the kernel was found (or made) to hold, trusted for RECHECK_S: per VNI the
        # device_shape its devices were found in; the VNIs of the last sweep that found
        # nothing else of ours; the ruleset's summary as last read or written.
        self._trusted_devices: Trusted[int, tuple] = Trusted(RECHECK_S)
        self._trusted_sweep: Trusted[str, frozenset[int]] = Trusted(RECHECK_S)
        self._trusted_ruleset: Trusted[str, RulesetSummary] = Trusted(RECHECK_S)

    async def apply(self, plane: NetworkPlane) -> ApplyResult:
        """Make this node match `plane`. A bad plane raises `PlaneError` and changes nothing."""
        check_plane(plane)
        self._stop_retrying()  # this apply tries again itself
        try:
            return await self._apply(plane)
        except asyncio.CancelledError:
            # Given up (the agent's PLANE_APPLY_TIMEOUT): a netlink request may be what never
            # answered, so the next apply opens a new socket and reads everything back.
            self._links.close()
            self._distrust()
            raise

    def _distrust(self) -> None:
        """Read everything back at the next apply."""
        for trusted in (self._trusted_devices, self._trusted_sweep, self._trusted_ruleset):
            trusted.forget()

    async def _apply(self, plane: NetworkPlane) -> ApplyResult:
        async with self._lock:
            self._resolver.set_names(discovery.plane_names(plane))
            enable_forwarding()
            # Rules name devices by name only, so they go first: a removed backend stops
            # getting traffic before the (slower, with many VIPs) device pass.
            written, forgotten = await self._sync_ruleset(render_ruleset(plane))
            for network in plane.networks:
                await self._sync_devices(network, plane.node_address)
            await self._resolver.sync({n.id: n.gateway for n in plane.networks})
            removed, lingering = await self._sweep(frozenset(n.vni for n in plane.networks))
            self.applied = plane
            if written or forgotten or removed or lingering:
                log.info("network plane %d applied: ruleset %s, flows of %s dropped, networks %s removed%s",
                         plane.version, "written" if written else "unchanged", list(forgotten) or "none",
                         list(removed) or "none",
                         f", networks {list(lingering)} still in use (removed once their containers are gone)"
                         if lingering else "")
            if lingering:
                self._retry = asyncio.ensure_future(self._remove_lingering())
            return ApplyResult(plane.version, written, forgotten, removed, lingering)

    async def _sync_ruleset(self, desired: Ruleset) -> tuple[bool, tuple[str, ...]]:
        actual = self._trusted_ruleset.get(_RULESET)
        if actual is None:
            actual = await netfilter.read_ruleset()
            self._trusted_ruleset.note(_RULESET, actual)
        summary = desired.summary()
        written = actual != summary
        if written:
            self._trusted_ruleset.forget(_RULESET)  # unknown should the write fail
            await netfilter.apply_ruleset(desired)
            self._trusted_ruleset.note(_RULESET, summary)
        # Read from the kernel's own set, so that backends removed while no agent ran go too.
        gone = tuple(sorted(actual.backends - desired.backends))
        for address in gone:
            await netfilter.forget_flows_to(address)
        return written, gone

    async def _sync_devices(self, network: OverlayNetwork, node_address: str) -> None:
        shape = device_shape(network, node_address)
        if self._trusted_devices.holds(network.vni, shape):
            return
        self._trusted_devices.forget(network.vni)  # half-made until this pass ends
        await self._bridges.ensure(network)
        index = await self._links.ensure_vxlan(network, node_address)
        await self._links.sync_fdb(index, network.peers)
        await self._links.sync_addresses(network, set(vips_of(network)), self._bridges.sets_gateway)
        self._trusted_devices.note(network.vni, shape)

    async def _sweep(self, wanted: frozenset[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """`_remove_networks_except`, unless the last sweep, less than RECHECK_S
        ago, wanted the same networks and found nothing else."""
        if self._trusted_sweep.holds(_SWEEP, wanted):
            return (), ()
        self._trusted_sweep.forget(_SWEEP)
        removed, lingering = await self._remove_networks_except(wanted)
        if not lingering:
            self._trusted_sweep.note(_SWEEP, wanted)
        return removed, lingering

    async def _remove_networks_except(self, wanted: AbstractSet[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(the VNIs removed, those that stay for now: their bridge still has endpoints)."""
        present = await self._links.our_vnis() | await self._bridges.ours()
        removed, lingering = [], []
        for vni in sorted(present - wanted):
            self._trusted_devices.forget(vni)
            await self._links.remove_link(vxlan_device_name(vni))
            (removed if await self._bridges.remove(vni) else lingering).append(vni)
        return tuple(removed), tuple(lingering)

    async def _remove_lingering(self) -> None:
        """Every LINGER_RETRY, the networks that left the applied plane, until none is left."""
        while True:
            await asyncio.sleep(LINGER_RETRY)
            try:
                async with self._lock:
                    if self.applied is None:
                        return
                    removed, lingering = await self._remove_networks_except({n.vni for n in self.applied.networks})
            except Exception:  # the engine failed: try again at the next turn
                log.exception("removing the networks that left failed")
                continue
            if removed:
                log.info("networks %s removed (their containers are gone)", list(removed))
            if not lingering:
                return

    def _stop_retrying(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    async def remove_all(self) -> None:
        """Delete everything of ours on this node (the node leaves the cluster)."""
        self._stop_retrying()
        async with self._lock:
            await self._resolver.close()
            self._distrust()
            await self._sync_ruleset(Ruleset())
            await self._remove_networks_except(set())
            self.applied = None

    async def close(self) -> None:
        """Stop the resolver; the kernel's data plane stays for the next agent to adopt."""
        self._stop_retrying()
        async with self._lock:
            await self._resolver.close()
            self._links.close()



