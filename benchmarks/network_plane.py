"""What network allocation and the per-node network planes cost the leader.

Run: python benchmarks/network_plane.py [--nodes 5] [--services 50] [--replicas 20]

Builds the store's views of a cluster (nodes running the overlay data plane, one
overlay network with a VIP per service, every task running with its address: services x
replicas endpoints) and times, on the pure functions the leader runs:

- the scheduling pass's allocation: ``AddressBook.build`` over every task plus
  ``allocate_task`` for as many new tasks (a /16 network, so they fit);
- the dispatcher's rebuild after a store change: ``PlaneIndex.build`` and one
  ``plane(node)`` per node, and the plane's encoded size on the session.

Each figure is the median of 5 runs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import msgpack

from swarmlet.api.views import Network, Node, Service, Task
from swarmlet.manager.allocator import AddressBook
from swarmlet.manager.dispatcher.planes import PlaneIndex
from swarmlet.store.state import freeze

RUNS = 5


def views(nodes: int, services: int, replicas: int):
    node_views = [Node(freeze({"id": f"node-{i}", "spec": {"role": "worker"},
                               "status": {"state": "ready", "addr": f"10.99.0.{i + 1}", "hostname": f"node-{i}",
                                          "description": {"data_plane": "overlay"}}}))
                  for i in range(nodes)]
    service_views, task_views, vips, host = [], [], {}, 1
    for s in range(services):
        service_id = f"svc-{s}"
        vips[service_id] = f"10.0.{host // 256}.{host % 256}"
        host += 1
        service_views.append(Service(freeze({"id": service_id, "spec": {
            "name": f"app_s{s}", "labels": {"com.docker.stack.namespace": "app"},
            "networks": [{"name": "app_default", "aliases": []}], "endpoint": {"mode": "vip", "ports": []}}})))
        for r in range(replicas):
            task_views.append(Task(freeze({"id": f"task-{s}-{r}", "spec": {
                "service_id": service_id, "node_id": f"node-{(s + r) % nodes}", "desired_state": "running",
                "networks": [{"name": "app_default"}],
                "network_addresses": {"app_default": f"10.0.{host // 256}.{host % 256}"}},
                "status": {"state": "running"}})))
            host += 1
    network = Network(freeze({"id": "app_default", "version": 1,
                              "spec": {"name": "app_default", "driver": "overlay"},
                              "status": {"subnet": "10.0.0.0/16", "vni": 4096, "vips": vips,
                                         "gateways": {n.id: f"10.0.255.{254 - i}" for i, n in enumerate(node_views)}}}))
    return node_views, [network], service_views, task_views


def median_time(work) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=20)
    args = parser.parse_args()
    nodes, networks, services, tasks = views(args.nodes, args.services, args.replicas)
    pending = [Task(freeze({"id": f"new-{i}", "spec": {"service_id": "svc-0", "networks": [{"name": "app_default"}]},
                            "status": {"state": "pending"}})) for i in range(len(tasks))]

    def allocate():
        book = AddressBook.build(networks, tasks, (s.id for s in services), (n.id for n in nodes))
        for i, task in enumerate(pending):
            book.allocate_task(task, nodes[i % len(nodes)].id)

    def rebuild():
        index = PlaneIndex.build(nodes, networks, services, tasks, 1)
        return [index.plane(n.id) for n in nodes]

    planes = rebuild()
    size = len(msgpack.packb(planes[0].to_wire(), use_bin_type=True))
    endpoints = sum(len(s.backends) for s in planes[0].networks[0].services)
    print(f"{args.nodes} nodes, {args.services} services x {args.replicas} replicas = {len(tasks)} endpoints")
    print(f"allocation: book over {len(tasks)} tasks + {len(pending)} new addresses: "
          f"{median_time(allocate) * 1000:.1f} ms")
    print(f"planes: index + {args.nodes} planes: {median_time(rebuild) * 1000:.1f} ms; one plane {size} bytes on "
          f"the wire, {endpoints} backends")


if __name__ == "__main__":
    main()
