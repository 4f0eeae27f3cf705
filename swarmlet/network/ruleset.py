"""The node's nftables rules for a plane, rendered by pure functions, and the read-back
that tells whether the kernel already holds them.

Two tables of our own, replaced whole and atomically by one `nft -f` transaction:

- `ip swarmlet`: VIPs and published ports DNAT'ed round-robin (`numgen inc`) to the
  backends; every DNAT'ed flow that leaves through a network's bridge is SNAT'ed to this
  node's gateway on that network, so replies come back through this node's conntrack
  (a backend on the client's own bridge, or on another node, would otherwise answer the
  client directly and the client would drop a reply from an address it never called);
  traffic from a non-internal network leaving it is masqueraded; an internal network
  gets no way out (forward drop both ways, nothing of the node but its resolver);
- `bridge swarmlet`: every node holds every VIP on its bridge (so that it answers a
  local container's ARP for it), so ARP for a VIP must not cross the VXLAN device, or
  a remote node would answer and take the flow.

Every rule carries its own digest as comment; `nft -j list` returns those comments, so
comparing (chain, digest) lists with the rendered ones tells whether the kernel already
holds this ruleset without parsing nft's own normal form of each expression.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from swarmlet.api.netplane import (BRIDGE_PREFIX, Backend, NetworkPlane, OverlayNetwork, bridge_device_name,
                                   vxlan_device_name)

TABLE = "swarmlet"  # the name of both our tables, `ip swarmlet` and `bridge swarmlet`
BACKENDS_SET = "backends"  # every backend address the rules DNAT to, read back to find removed ones

# Hook priorities as numbers, the way `nft -j list` reports them back.
_DSTNAT, _SRCNAT, _NAT_OUTPUT, _FILTER, _BRIDGE_FILTER = -100, 100, -100, 0, -200


@dataclass(frozen=True)
class Chain:
    family: str  # "ip" or "bridge"
    name: str
    hook: str | None  # None: a regular chain, reached by jumps
    type: str = "filter"
    priority: int = _FILTER
    rules: tuple[str, ...] = ()

    def header(self) -> tuple:
        return (self.family, self.name, self.type if self.hook else None, self.hook, self.priority if self.hook else None)


@dataclass(frozen=True)
class Ruleset:
    chains: tuple[Chain, ...] = ()
    backends: frozenset[str] = field(default_factory=frozenset)

    @property
    def empty(self) -> bool:
        return not self.chains

    def summary(self) -> "RulesetSummary":
        return RulesetSummary(
            chains=frozenset(c.header() for c in self.chains),
            rules=frozenset((c.family, c.name, tuple(rule_comment(r) for r in c.rules)) for c in self.chains),
            backends=self.backends)

    def script(self) -> str:
        """The whole `nft -f` transaction: both tables dropped and written again at once."""
        lines: list[str] = []
        for family in ("ip", "bridge"):
            # `table X` first so that `delete table X` cannot fail on a node without it.
            lines += [f"table {family} {TABLE}", f"delete table {family} {TABLE}"]
            chains = [c for c in self.chains if c.family == family]
            if not chains:
                continue
            lines.append(f"table {family} {TABLE} {{")
            if family == "ip":
                lines.append(f"  set {BACKENDS_SET} {{")
                lines.append("    type ipv4_addr;")
                if self.backends:
                    lines.append(f"    elements = {{ {', '.join(sorted(self.backends, key=_ip_key))} }}")
                lines.append("  }")
            for chain in chains:
                lines.append(f"  chain {chain.name} {{")
                if chain.hook:
                    lines.append(f"    type {chain.type} hook {chain.hook} priority {chain.priority}; policy accept;")
                for rule in chain.rules:
                    lines.append(f'    {rule} comment "{rule_comment(rule)}"')
                lines.append("  }")
            lines.append("}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RulesetSummary:
    """What identifies a ruleset: chain headers, each chain's rule digests in order, the backends set."""

    chains: frozenset[tuple] = frozenset()
    rules: frozenset[tuple[str, str, tuple[str, ...]]] = frozenset()
    backends: frozenset[str] = frozenset()


def rule_comment(rule: str) -> str:
    return "sw:" + hashlib.sha256(rule.encode()).hexdigest()[:16]


def _ip_key(address: str):
    return ipaddress.IPv4Address(address)


def _dnat_map(addresses: list[str]) -> str:
    return "{ " + ", ".join(f"{i} : {a}" for i, a in enumerate(addresses)) + " }"


def _backend_addresses(backends: tuple[Backend, ...]) -> list[str]:
    # A stable order: the plane's own (it is documented as stable), duplicates dropped.
    return list(dict.fromkeys(b.address for b in backends))


def _set(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _service_rules(network: OverlayNetwork) -> list[str]:
    rules = []
    for service in network.services:
        if service.endpoint_mode != "vip" or not service.vip:
            continue
        addresses = _backend_addresses(service.backends)
        if not addresses:
            continue  # the input chain refuses the VIP at once
        target = f"dnat to numgen inc mod {len(addresses)} map {_dnat_map(addresses)}"
        if not service.ports:
            rules.append(f"ip daddr {service.vip} {target}")
        for port, protocol in service.ports:
            rules.append(f"ip daddr {service.vip} {protocol} dport {port} {target}")
    return rules


def vips_of(network: OverlayNetwork) -> list[str]:
    """The network's VIPs, in address order: the services in `vip` mode."""
    return sorted({s.vip for s in network.services if s.endpoint_mode == "vip" and s.vip}, key=_ip_key)


def render_ruleset(plane: NetworkPlane) -> Ruleset:
    """The ruleset this node needs for `plane` (pure)."""
    if not plane.networks and not plane.ingress:
        return Ruleset()
    services: list[str] = []
    postrouting: list[str] = []
    forward: list[str] = []
    inputs: list[str] = []
    bridge_forward: list[str] = []
    bridge_input: list[str] = []
    backends: set[str] = set()

    for network in plane.networks:
        bridge, vxlan = bridge_device_name(network.vni), vxlan_device_name(network.vni)
        services += _service_rules(network)
        backends.update(a for s in network.services if s.endpoint_mode == "vip" and s.vip
                        for a in _backend_addresses(s.backends))  # what _service_rules DNATs to
        # Replies to a DNAT'ed flow must come back through this node, whichever bridge
        # port or node the backend is on.
        postrouting.append(f'oifname "{bridge}" ct status dnat snat ip to {network.gateway}')
        if network.internal:
            forward.append(f'iifname "{bridge}" oifname != "{bridge}" drop')
            forward.append(f'oifname "{bridge}" iifname != "{bridge}" drop')
            # Of the node itself, an internal network reaches only its resolver.
            inputs.append(f'iifname "{bridge}" ip daddr != {network.gateway} drop')
        else:
            postrouting.append(f'ip saddr {network.subnet} oifname != "{bridge}" masquerade')
            # Networks are apart: nothing is routed into this one from another of ours (a
            # task sending to another network's VIP through its gateway would be DNAT'ed).
            # (An internal network drops all that comes from elsewhere.)
            forward.append(f'iifname "{BRIDGE_PREFIX}*" iifname != "{bridge}" oifname "{bridge}" drop')
        vips = vips_of(network)
        if vips:
            bridge_forward.append(f'oifname "{vxlan}" arp daddr ip {_set(vips)} drop')
            bridge_input.append(f'iifname "{vxlan}" arp daddr ip {_set(vips)} drop')
            # A VIP connection that no DNAT rule took (no backend, or a port the VIP does
            # not forward) is refused at once rather than answered by the node itself.
            inputs.append(f"ip daddr {_set(vips)} meta l4proto tcp reject with tcp reset")
            inputs.append(f"ip daddr {_set(vips)} reject")

    for port in plane.ingress:
        network = plane.network(port.network_id)
        addresses = _backend_addresses(port.backends)
        if network is None or network.internal or not addresses:
            # Nothing to reach, or nothing allowed in (an internal network has no way in
            # from the LAN either): refused promptly.
            reject = "reject with tcp reset" if port.protocol == "tcp" else "reject"
            inputs.append(f"ip daddr {plane.node_address} {port.protocol} dport {port.published} {reject}")
            continue
        backends.update(addresses)
        entries = "{ " + ", ".join(f"{i} : {a} . {port.target}" for i, a in enumerate(addresses)) + " }"
        services.append(f"ip daddr {plane.node_address} {port.protocol} dport {port.published} "
                        f"dnat ip addr . port to numgen inc mod {len(addresses)} map {entries}")

    chains = (
        Chain("ip", "services", None, rules=tuple(services)),
        Chain("ip", "prerouting", "prerouting", "nat", _DSTNAT, ("jump services",)),
        Chain("ip", "output", "output", "nat", _NAT_OUTPUT, ("jump services",)),
        Chain("ip", "postrouting", "postrouting", "nat", _SRCNAT, tuple(postrouting)),
        Chain("ip", "forward", "forward", "filter", _FILTER, tuple(forward)),
        Chain("ip", "input", "input", "filter", _FILTER, tuple(inputs)),
        Chain("bridge", "forward", "forward", "filter", _BRIDGE_FILTER, tuple(bridge_forward)),
        Chain("bridge", "input", "input", "filter", _BRIDGE_FILTER, tuple(bridge_input)),
    )
    return Ruleset(chains=chains, backends=frozenset(backends))


def summarize_listing(listing: dict) -> RulesetSummary:
    """The summary of what `nft -j list ruleset` shows of our tables (pure)."""
    chains, backends = set(), set()
    rules: dict[tuple[str, str], list[str]] = {}
    for item in listing.get("nftables", ()):
        if "chain" in item and item["chain"].get("table") == TABLE:
            c = item["chain"]
            hooked = "hook" in c
            chains.add((c["family"], c["name"], c.get("type") if hooked else None, c.get("hook"),
                        c.get("prio") if hooked else None))
        elif "rule" in item and item["rule"].get("table") == TABLE:
            r = item["rule"]
            rules.setdefault((r["family"], r["chain"]), []).append(r.get("comment", ""))
        elif "set" in item and item["set"].get("table") == TABLE and item["set"].get("name") == BACKENDS_SET:
            backends.update(e for e in item["set"].get("elem", ()) if isinstance(e, str))
    for family, name, *_ in chains:
        rules.setdefault((family, name), [])
    return RulesetSummary(chains=frozenset(chains), rules=frozenset((f, c, tuple(d)) for (f, c), d in rules.items()),
                          backends=frozenset(backends))
