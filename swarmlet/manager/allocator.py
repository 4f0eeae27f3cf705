"""Network allocation, as pure functions over the store's typed views (the model:
SwarmKit's allocator and its cnmallocator, with the state kept where Raft keeps
everything else).

What is allocated, and where it is written (in the same transaction that creates or
places the object it is for):

- per overlay network: a subnet, from its Compose ``ipam.config[].subnet`` or else the
  cluster's address pool (``AddressPool``, set at ``init``), and a VNI (≥ ``MIN_VNI``,
  unique), both serially from a cursor in the cluster's status (``NetworkCursor``); in
  the network's ``status`` when the stack deploy creates it;
- per service per network: a VIP (none with ``endpoint_mode: dnsrr``), in the network's
  ``status.vips``, by the stack deploy that creates or changes the service;
- per task per network: an address, in the task's ``spec.network_addresses``, by the
  scheduling pass that places the task;
- per (network, node): the address of that node's bridge on the network (its gateway,
  where its resolver answers), in ``status.gateways``, by the scheduling pass that first
  places a task of the network on the node.

Every address comes out of one address space per network, so VIPs, task addresses and
gateways never collide (swarmkit#2871). Addresses are taken lowest first (VIPs, tasks)
and gateways highest first, so that a node's gateway stays apart from the rest.

Releasing is implicit, which keeps it from ever being forgotten: an address is held
only while its holder exists and is live: a task until it ends (a terminal state: its
container no longer holds the address) or is deleted, a VIP while its service exists,
a gateway while its node does; a network's addresses go with the network. Dangling
entries are dropped whenever the network is next written.

Concurrency: every write that allocates on a network also writes that network (its
version named), so two allocations that read the same state cannot both commit: the
second is refused (a conflict) and decided again from a fresh read.
"""
from __future__ import annotations

import ipaddress
import itertools
import socket
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from swarmlet.api.errors import Invalid
from swarmlet.api.ipam import (DYNAMIC_PORT_RANGE, MAX_NETWORK_PREFIX, MAX_VNI, AddressPool, ipv4_network)
from swarmlet.api.netplane import MIN_VNI
from swarmlet.api.objects import TERMINAL_STATES
from swarmlet.api.specs import ENDPOINT_MODE_DNSRR, PUBLISH_MODE_INGRESS
from swarmlet.api.views import Network, Task


class AllocationError(Invalid):
    """Nothing left to allocate, or a requested subnet that cannot be had."""


# -- networks: subnet and VNI ------------------------------------------------------------------------

def _ipam_entry(name: str, spec: Mapping) -> Mapping | None:
    configs = list(spec.get("ipam") or [])
    if len(configs) > 1:
        raise AllocationError(f"network {name}: ipam.config has {len(configs)} entries; swarmlet's networks take "
                              "at most one (IPv4)")
    return configs[0] if configs else None


NETWORK_CURSOR = "network_cursor"  # the cluster status's cursor of network allocation (NetworkCursor)


@dataclass(frozen=True)
class NetworkCursor:
    """Where the next overlay network's VNI and pool subnet are looked for: after the last
    ones taken, wrapping round, as libnetwork and SwarmKit allocate them (serially). A VNI
    or subnet just freed by a ``stack rm`` is then not handed out again at once: on the
    nodes, the removed network's bridge (``swbr<vni>``) and its engine network (holding
    the subnet) may linger until its containers are gone, and a new network with the
    same VNI or subnet could not be created there ("networks have same bridge name",
    "Pool overlaps"). Kept in the cluster object's status (``NETWORK_CURSOR``)."""

    vni: int = 0  # the last VNI taken (0: none yet)
    subnet: str = ""  # the last subnet taken from the address pool ("": none yet)

    @classmethod
    def from_status(cls, status: Mapping | None) -> "NetworkCursor":
        raw = (status or {}).get(NETWORK_CURSOR) or {}
        return cls(int(raw.get("vni") or 0), str(raw.get("subnet") or ""))

    def to_dict(self) -> dict:
        return {"vni": self.vni, "subnet": self.subnet}


def network_allocation(name: str, spec: Mapping, taken: Iterable[tuple[str, str]], vnis: Iterable[int],
                       pool: AddressPool) -> dict:
    """``allocate_network``'s status with no cursor: the lowest free VNI and the first
    free subnet of the pool."""
    return allocate_network(name, spec, taken, vnis, pool, NetworkCursor())[0]


def allocate_network(name: str, spec: Mapping, taken: Iterable[tuple[str, str]], vnis: Iterable[int],
                     pool: AddressPool, cursor: NetworkCursor) -> tuple[dict, NetworkCursor]:
    """The status a new overlay network starts with: its subnet (``spec``'s ipam subnet,
    or the next free one of the pool after ``cursor.subnet``) and the next free VNI after
    ``cursor.vni``, with the cursor moved past what was taken. ``taken``: (name, subnet)
    of the networks that exist; ``vnis``: their VNIs."""
    taken_subnets = [(other, ipaddress.ip_network(subnet)) for other, subnet in taken]
    entry = _ipam_entry(name, spec)
    requested = entry.get("subnet") if entry else None
    if requested:
        subnet = ipv4_network(requested, f"network {name}: ipam.config[0].subnet")
        if subnet.prefixlen > MAX_NETWORK_PREFIX:
            raise AllocationError(f"network {name}: subnet {subnet} is too small; at most /{MAX_NETWORK_PREFIX}")
        for other, existing in taken_subnets:
            if subnet.overlaps(existing):
                raise AllocationError(f"network {name}: subnet {subnet} overlaps network {other}'s {existing}")
        for key in ("gateway", "ip_range"):
            if entry.get(key):
                _check_inside(name, key, entry[key], subnet)
        next_subnet = cursor.subnet  # a requested subnet does not move the pool's cursor
    else:
        if entry and (entry.get("gateway") or entry.get("ip_range")):
            raise AllocationError(f"network {name}: ipam.config[0] gives a gateway or ip_range without a subnet")
        subnet = _free_subnet(name, [s for _, s in taken_subnets], pool, cursor.subnet)
        next_subnet = str(subnet)
    vni = _free_vni(name, set(vnis), cursor.vni)
    return ({"subnet": str(subnet), "vni": vni, "gateways": {}, "vips": {}},
            NetworkCursor(vni=vni, subnet=next_subnet))


def _free_vni(name: str, used: set[int], last: int) -> int:
    start = last + 1 if MIN_VNI <= last < MAX_VNI else MIN_VNI
    for vni in itertools.chain(range(start, MAX_VNI + 1), range(MIN_VNI, start)):
        if vni not in used:
            return vni
    raise AllocationError(f"network {name}: every VNI from {MIN_VNI} to {MAX_VNI} is in use")


def _check_inside(name: str, key: str, value: str, subnet: ipaddress.IPv4Network) -> None:
    what = f"network {name}: ipam.config[0].{key}"
    try:
        inside = (ipaddress.ip_network(value, strict=True).subnet_of(subnet) if key == "ip_range"
                  else ipaddress.ip_address(value) in subnet)
    except (ValueError, TypeError):
        raise AllocationError(f"{what}: {value!r} is not an IPv4 {'network' if key == 'ip_range' else 'address'}") \
            from None
    if not inside:
        raise AllocationError(f"{what}: {value} is not inside the subnet {subnet}")


def _free_subnet(name: str, taken: list[ipaddress.IPv4Network], pool: AddressPool,
                 last: str = "") -> ipaddress.IPv4Network:
    """The first free /mask of the pool after ``last`` (in the pool's order, wrapping round
    to its start; from the start when ``last`` is not one of its subnets)."""
    blocks = pool.networks()
    size = 1 << (32 - pool.mask_length)
    start_block, start_offset = 0, 0
    if last:
        previous = ipaddress.ip_network(last)
        for position, block in enumerate(blocks):
            if previous.prefixlen == pool.mask_length and previous.subnet_of(block):
                start_block = position
                start_offset = (int(previous.network_address) - int(block.network_address)) // size + 1
                break

    def candidates(block: ipaddress.IPv4Network, offsets: range) -> Iterable[ipaddress.IPv4Network]:
        base = int(block.network_address)
        for offset in offsets:
            yield ipaddress.IPv4Network((base + offset * size, pool.mask_length))

    def count(block: ipaddress.IPv4Network) -> int:
        return block.num_addresses // size

    # From just after the cursor to the end of the pool, then from its start up to the cursor.
    walk = [(blocks[start_block], range(start_offset, count(blocks[start_block])))]
    walk += [(block, range(count(block))) for block in blocks[start_block + 1:]]
    walk += [(block, range(count(block))) for block in blocks[:start_block]]
    walk += [(blocks[start_block], range(min(start_offset, count(blocks[start_block]))))]
    for block, offsets in walk:
        clashing = [t for t in taken if t.overlaps(block)]
        for candidate in candidates(block, offsets):
            if not any(candidate.overlaps(t) for t in clashing):
                return candidate
    raise AllocationError(f"network {name}: the address pool {', '.join(pool.subnets)} has no free "
                          f"/{pool.mask_length} left (remove a network, or init the cluster with a larger "
                          "--default-addr-pool)")


# -- addresses within a network ------------------------------------------------------------------------

@dataclass
class AddressSpace:
    """The free addresses of one network. Tasks and VIPs take them serially (``take``: the
    next free one after the last taken, ``cursor``, wrapping round), gateways highest first
    (``take_high``). Serially, because an address just freed must not be handed out again
    at once: other nodes' neighbour (ARP) entries and flows for it may still point at the
    task that had it (a replacement on another node got its partitioned predecessor's
    address and was unreachable from the mesh; libnetwork allocates serially for swarm
    for the same reason). A pass over thousands of tasks still costs one walk."""

    network: str
    subnet: ipaddress.IPv4Network
    used: set[int]
    low: int = 0
    high: int = 0
    cursor: int = 0  # where the next ``take`` starts looking (0: at the bottom)

    @classmethod
    def of(cls, network: Network, held: Iterable[str], cursor: int = 0) -> "AddressSpace":
        subnet = ipaddress.ip_network(network.subnet)
        first, last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
        entry = _ipam_entry(network.name, network.spec)
        if entry and entry.get("ip_range"):
            span = ipaddress.ip_network(entry["ip_range"])
            first, last = max(first, int(span.network_address)), min(last, int(span.broadcast_address))
        used = {_number(a) for a in held}
        if entry and entry.get("gateway"):
            used.add(int(ipaddress.ip_address(entry["gateway"])))
        return cls(network.name, subnet, used, first, last, cursor)

    def take(self) -> str:
        start = self.cursor if self.low <= self.cursor <= self.high else self.low
        address = start
        while address in self.used:
            address = address + 1 if address < self.high else self.low
            if address == start:
                address = self.high + 1  # a full circle: none free
                break
        claimed = self._claim(address)
        self.cursor = address + 1
        return claimed

    def take_high(self) -> str:
        while self.high >= self.low and self.high in self.used:
            self.high -= 1
        return self._claim(self.high)

    def _claim(self, address: int) -> str:
        if not self.low <= address <= self.high:
            raise AllocationError(f"network {self.network}: no free address left in {self.subnet}")
        self.used.add(address)
        return socket.inet_ntoa(address.to_bytes(4, "big"))


NEXT_ADDRESS = "next_address"  # a network status's allocation cursor (an address as a number)


def _number(address: str) -> int:
    """An IPv4 address as a number (the stored addresses are the allocator's own, so the
    C parser is enough; ipaddress's is ten times slower over thousands of tasks)."""
    return int.from_bytes(socket.inet_aton(address), "big")


def held_task_addresses(tasks: Iterable[Task]) -> dict[str, list[str]]:
    """Network ID -> the addresses that live tasks hold on it (a task that ended, whose
    container released its address, holds none)."""
    held: dict[str, list[str]] = {}
    for task in tasks:
        raw = task.raw  # the stored dicts, not the typed view: this runs over every task, every pass
        addresses = raw["spec"].get("network_addresses")
        if addresses and (raw.get("status") or {}).get("state") not in TERMINAL_STATES:
            for network_id, address in addresses.items():
                held.setdefault(network_id, []).append(address)
    return held


def live_status(network: Network, service_ids: set[str], node_ids: set[str]) -> dict:
    """The network's status without the VIPs and gateways of services and nodes that are gone."""
    return dict(network.status,
                vips={s: a for s, a in network.vips.items() if s in service_ids},
                gateways={n: a for n, a in network.gateways.items() if n in node_ids})


@dataclass
class AddressBook:
    """The allocation state of every overlay network, built once per pass from the store:
    which addresses are held, and what this pass has changed (network ID -> new status)."""

    networks: dict[str, Network]  # by name (= ID for stack networks)
    task_addresses: dict[str, list[str]]
    service_ids: set[str]
    node_ids: set[str]
    statuses: dict[str, dict] = field(default_factory=dict)  # changed by this pass
    _spaces: dict[str, AddressSpace] = field(default_factory=dict)

    @classmethod
    def build(cls, networks: Iterable[Network], tasks: Iterable[Task], service_ids: Iterable[str],
              node_ids: Iterable[str]) -> "AddressBook":
        return cls({n.name: n for n in networks if n.is_overlay and n.subnet}, held_task_addresses(tasks),
                   set(service_ids), set(node_ids))

    def status(self, network: Network) -> dict:
        if network.id not in self.statuses:
            self.statuses[network.id] = live_status(network, self.service_ids, self.node_ids)
        return self.statuses[network.id]

    def space(self, network: Network) -> AddressSpace:
        if network.id not in self._spaces:
            status = self.status(network)
            held = [*self.task_addresses.get(network.id, ()), *status["vips"].values(),
                    *status["gateways"].values()]
            self._spaces[network.id] = AddressSpace.of(network, held, status.get(NEXT_ADDRESS) or 0)
        return self._spaces[network.id]

    def take(self, network: Network) -> str:
        """The next address of ``network`` for a task or a VIP; the cursor is kept in the
        network's status, written with the pass's decisions."""
        space = self.space(network)
        address = space.take()
        self.status(network)[NEXT_ADDRESS] = space.cursor
        return address

    def written(self) -> list[Network]:
        """The networks to write with this pass's decisions: those it took addresses from
        (their version then guards the decisions) or whose status it changed."""
        return [n for n in sorted(self.networks.values(), key=lambda n: n.id)
                if n.id in self._spaces or (n.id in self.statuses and self.statuses[n.id] != n.status)]

    def attached(self, attachments: Iterable[Mapping]) -> list[Network]:
        """The overlay networks (with a subnet) among a spec's network attachments."""
        return [self.networks[a["name"]] for a in attachments if a["name"] in self.networks]

    def allocate_task(self, task: Task, node_id: str) -> dict[str, str]:
        """The task's address on each of its overlay networks (those it has already are
        kept), and a gateway for ``node_id`` on each network where the node has none yet.
        On ``AllocationError`` the task gets nothing (the addresses taken for it stay
        unused until the next pass, which starts from the store again)."""
        spec = task.raw["spec"]
        wanted = self.attached(spec.get("networks") or ())
        addresses = dict(spec.get("network_addresses") or {})
        gateways: list[tuple[Network, str]] = []
        for network in wanted:
            if network.id not in addresses:
                addresses[network.id] = self.take(network)
            if node_id not in self.status(network)["gateways"]:
                gateways.append((network, self.space(network).take_high()))
        for network, address in gateways:
            status = self.status(network)
            status["gateways"] = dict(status["gateways"], **{node_id: address})
        return addresses

    def ensure_gateways(self, network: Network, node_ids: Iterable[str]) -> None:
        """A gateway on ``network`` for each of ``node_ids`` that has none (the routing
        mesh: every node forwards a published port onto the service's network)."""
        for node_id in sorted(node_ids):
            if node_id not in self.status(network)["gateways"]:
                address = self.space(network).take_high()
                status = self.status(network)
                status["gateways"] = dict(status["gateways"], **{node_id: address})

    def set_vips(self, service_id: str, spec: Mapping) -> None:
        """Give the service a VIP on each overlay network it is attached to (endpoint mode
        vip), and drop those it no longer has a use for."""
        endpoint_mode = (spec.get("endpoint") or {}).get("mode")
        attached = {n["name"] for n in spec.get("networks") or []}
        for network in self.networks.values():
            has = service_id in self.status(network)["vips"]
            wants = network.name in attached and endpoint_mode != ENDPOINT_MODE_DNSRR
            if wants and not has:
                address = self.take(network)
                status = self.status(network)
                status["vips"] = dict(status["vips"], **{service_id: address})
            elif has and not wants:
                status = self.status(network)
                status["vips"] = {s: a for s, a in status["vips"].items() if s != service_id}


# -- published ports ----------------------------------------------------------------------------------------

def ingress_ports(spec: Mapping) -> list[Mapping]:
    return [p for p in (spec.get("endpoint") or {}).get("ports") or [] if p.get("mode") == PUBLISH_MODE_INGRESS]


def ingress_network(spec: Mapping, networks: Mapping[str, Network]) -> Network | None:
    """The overlay network (of ``networks``, by name) that a service's ingress-published
    ports reach its tasks on: the first it is attached to. Every node running the overlay
    data plane gets a gateway on it, so that any node can forward the port."""
    return next((networks[n["name"]] for n in spec.get("networks") or [] if n["name"] in networks), None)


def mesh_gateways(book: AddressBook, services: Iterable[Mapping], mesh_node_ids: Iterable[str]) -> list[str]:
    """Gateways on every ingress network for the nodes that run the mesh; the problems
    (an exhausted network), to log: the next pass tries again."""
    nodes, problems = list(mesh_node_ids), []
    for spec in services:
        network = ingress_network(spec, book.networks) if ingress_ports(spec) else None
        if network is not None:
            try:
                book.ensure_gateways(network, nodes)
            except AllocationError as err:
                problems.append(f"routing mesh of service {spec['name']}: {err}")
    return problems


def published_ports(spec: Mapping) -> list[Mapping]:
    return [p for p in (spec.get("endpoint") or {}).get("ports") or [] if p.get("published") is not None]


def assign_published_ports(changed: Mapping[str, dict], others: Mapping[str, Mapping],
                           previous: Mapping[str, Mapping]) -> dict[str, dict]:
    """``changed`` (service ID -> new spec) with every ingress port published: a port
    left out gets the one it had before (``previous``: the stored specs) or the lowest free
    one of Swarm's dynamic range. ``AllocationError`` names both services when a port is
    published twice in the cluster (``others``: the specs this change leaves alone): an
    ingress port is open on every node, so it clashes with any other service's port of
    that number, host-mode ones too; two host-mode ports clash only on one node, which
    is the scheduler's business."""
    ingress: dict[tuple[int, str], str] = {}  # (port, protocol) -> service name
    host: dict[tuple[int, str], str] = {}
    for spec, checked in [*((o, False) for o in others.values()), *((c, True) for c in changed.values())]:
        for port in published_ports(spec):
            key = (port["published"], port["protocol"])
            mode = port.get("mode")
            clash = ingress.get(key) if mode != PUBLISH_MODE_INGRESS else ingress.get(key) or host.get(key)
            if checked and clash is not None and clash != spec["name"]:  # what is stored already stays as it is
                raise AllocationError(f"service {spec['name']}: port {key[0]}/{key[1]} is already published by "
                                      f"service {clash}; nothing was deployed")
            (ingress if mode == PUBLISH_MODE_INGRESS else host).setdefault(key, spec["name"])
    result = dict(changed)
    low, high = DYNAMIC_PORT_RANGE
    for service_id, spec in sorted(changed.items(), key=lambda item: item[1]["name"]):
        had = {(p["target"], p["protocol"]): p["published"] for p in ingress_ports(previous.get(service_id) or {})
               if p.get("published") is not None}
        ports = []
        for port in (spec.get("endpoint") or {}).get("ports") or []:
            if port.get("mode") == PUBLISH_MODE_INGRESS and port.get("published") is None:
                published = had.get((port["target"], port["protocol"]))

                def taken(number: int) -> bool:
                    key = (number, port["protocol"])
                    return ingress.get(key, spec["name"]) != spec["name"] or host.get(key, spec["name"]) != spec["name"]
                if published is None or taken(published):
                    published = next((p for p in range(low, high + 1)
                                      if (p, port["protocol"]) not in ingress and (p, port["protocol"]) not in host),
                                     None)
                    if published is None:
                        raise AllocationError(f"service {spec['name']}: no free port left in {low}-{high}")
                ingress[(published, port["protocol"])] = spec["name"]
                port = dict(port, published=published)
            ports.append(port)
        if ports != list((spec.get("endpoint") or {}).get("ports") or []):
            result[service_id] = dict(spec, endpoint=dict(spec["endpoint"], ports=ports))
    return result
