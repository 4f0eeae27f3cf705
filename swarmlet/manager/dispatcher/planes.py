"""Each node's ``NetworkPlane``, built from the store (pure): what the node's overlay data
plane should be, sent to it over its session by the dispatcher.

- A node is *on* an overlay network when it holds a live task (not ended) with an
  address on it, and, for a network that carries ingress-published ports, whenever it
  runs the overlay data plane at all (the routing mesh forwards from every node); in
  both cases only once the allocator gave it a gateway there.
- ``peers``: the LAN addresses of the other nodes on the network.
- ``services``: every service attached to the network, by its short name, its stack-scoped
  name and its aliases on that network, with its VIP and its backends.
- backends: the service's tasks in traffic (``swarmlet.api.traffic.in_traffic``: they
  run and are meant to, a task reports running only once healthy, on nodes that are not
  down, and of the set that serves while a blue-green update holds the other out), in
  task-ID order.
- ``ingress``: every ingress-published port of the cluster, with the backends on the
  service's ingress network (``allocator.ingress_network``).

``PlaneIndex`` reads the store's lists once; ``plane(node_id)`` is then cheap per node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from swarmlet.api.ipam import DATA_PLANE_OVERLAY
from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, PublishedPort, ServiceEndpoint
from swarmlet.api.objects import STACK_NAMESPACE_LABEL, TERMINAL_STATES, NodeState
from swarmlet.api.specs import DEFAULT_ENDPOINT_MODE, ENDPOINT_MODE_VIP
from swarmlet.api.traffic import in_traffic
from swarmlet.api.views import Network, Node, Service, Task
from swarmlet.manager.allocator import ingress_network, ingress_ports


def service_names(spec: dict, aliases: Iterable[str]) -> tuple[str, ...]:
    """What a service answers to on a network: its name in the stack, its cluster name
    (``<stack>_<name>``), then its aliases there; each once."""
    full = spec["name"]
    stack = (spec.get("labels") or {}).get(STACK_NAMESPACE_LABEL)
    short = full[len(stack) + 1:] if stack and full.startswith(f"{stack}_") else full
    return tuple(dict.fromkeys([short, full, *aliases]))


@dataclass
class PlaneIndex:
    nodes: dict[str, Node]
    networks: dict[str, Network]  # overlay networks with a subnet, by name
    members: dict[str, set[str]]  # network ID -> IDs of the nodes on it
    endpoints: dict[str, tuple[ServiceEndpoint, ...]]  # network ID -> its services
    ingress: tuple[PublishedPort, ...]
    version: int

    @classmethod
    def build(cls, nodes: Iterable[Node], networks: Iterable[Network], services: Iterable[Service],
              tasks: Iterable[Task], version: int) -> "PlaneIndex":
        nodes = {n.id: n for n in nodes}
        networks = {n.name: n for n in networks if n.is_overlay and n.subnet and n.vni}
        by_id = {n.id: n for n in networks.values()}
        services = sorted(services, key=lambda s: s.name)
        members: dict[str, set[str]] = {n.id: set() for n in networks.values()}
        backends: dict[tuple[str, str], list[Backend]] = {}  # (service, network) -> backends
        live_nodes = {n.id for n in nodes.values() if n.status.state != NodeState.DOWN}
        updates = {s.id: (s.status or {}).get("update") for s in services}  # what decides traffic
        for task in sorted(tasks, key=lambda t: t.raw["id"]):
            # The stored dicts, not the typed views: this runs over every task at every change.
            spec, status = task.raw["spec"], task.raw.get("status") or {}
            addresses, node_id, state = spec.get("network_addresses"), spec.get("node_id"), status.get("state")
            if not addresses or not node_id or state in TERMINAL_STATES or node_id not in nodes:
                continue
            running = in_traffic(spec, status, updates.get(spec["service_id"]), node_live=node_id in live_nodes)
            for network_id, address in addresses.items():
                if network_id not in by_id:
                    continue
                members[network_id].add(node_id)
                if running:
                    backends.setdefault((spec["service_id"], network_id), []).append(
                        Backend(task_id=task.raw["id"], address=address, node_address=nodes[node_id].status.addr))
        mesh_nodes = {n.id for n in nodes.values() if n.data_plane == DATA_PLANE_OVERLAY}
        endpoints: dict[str, list[ServiceEndpoint]] = {n.id: [] for n in networks.values()}
        ingress = []
        for service in services:
            spec = service.raw_spec
            mode = (spec.get("endpoint") or {}).get("mode") or DEFAULT_ENDPOINT_MODE
            for attachment in spec.get("networks") or []:
                network = networks.get(attachment["name"])
                if network is None:
                    continue
                endpoints[network.id].append(ServiceEndpoint(
                    service_id=service.id, names=service_names(spec, attachment.get("aliases") or ()),
                    endpoint_mode=mode, vip=network.vips.get(service.id) if mode == ENDPOINT_MODE_VIP else None,
                    backends=tuple(backends.get((service.id, network.id), ()))))
            mesh = ingress_network(spec, networks) if ingress_ports(spec) else None
            if mesh is not None:
                members[mesh.id] |= mesh_nodes
                ingress += [PublishedPort(service_id=service.id, published=p["published"], target=p["target"],
                                          protocol=p["protocol"], network_id=mesh.id,
                                          backends=tuple(backends.get((service.id, mesh.id), ())))
                            for p in ingress_ports(spec)]
        for network in networks.values():  # a node is on a network only with its gateway there
            members[network.id] = {n for n in members[network.id] if n in network.gateways and n in nodes}
        return cls(nodes, networks, members, {k: tuple(v) for k, v in endpoints.items()},
                   tuple(sorted(ingress, key=lambda p: (p.published, p.protocol))), version)

    def plane(self, node_id: str) -> NetworkPlane | None:
        """The node's plane; None for a node the store does not know."""
        node = self.nodes.get(node_id)
        if node is None:
            return None
        mine = []
        for network in sorted(self.networks.values(), key=lambda n: n.name):
            if node_id not in self.members[network.id]:
                continue
            peers = sorted({self.nodes[n].status.addr for n in self.members[network.id] if n != node_id}
                           - {node.status.addr})
            mine.append(OverlayNetwork(id=network.id, name=network.name, vni=network.vni, subnet=network.subnet,
                                       gateway=network.gateways[node_id], internal=network.internal,
                                       peers=tuple(peers), services=self.endpoints[network.id]))
        on = {n.id for n in mine}
        return NetworkPlane(node_address=node.status.addr, version=self.version, networks=tuple(mine),
                            ingress=tuple(p for p in self.ingress if p.network_id in on))


def node_plane(node_id: str, nodes: Iterable[Node], networks: Iterable[Network], services: Iterable[Service],
               tasks: Iterable[Task], version: int) -> NetworkPlane | None:
    return PlaneIndex.build(nodes, networks, services, tasks, version).plane(node_id)
