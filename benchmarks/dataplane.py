"""The overlay data plane on real namespaces: how long a plane change takes to apply,
HTTP through a VIP and through the routing mesh against a direct connection to the same
task in the same run, and the data plane's memory with many endpoints.

Run (root): python benchmarks/dataplane.py [--seconds 2] [--rounds 6] [--changes 20] [--endpoints 1000]

The world is tests/network's (networld.py): a LAN namespace, three node namespaces each
with its data-plane agent (tests/network/nodeagent.py, an OverlayDataPlane in a process
inside the node's namespace), plain-netns tasks serving HTTP (Python's
ThreadingHTTPServer), a client namespace on the LAN. For the HTTP figures web has one
backend, web2 on node n2, so every path ends at the same server:

- direct:  task c1 (node n1) → 10.0.1.12:8080 over the VXLAN overlay;
- vip:     c1 → the VIP 10.0.1.2:8080, DNAT'ed on n1, then the same overlay (vs direct);
- routed:  the LAN client → 10.0.1.12:8080 through a plain route via n2, no NAT;
- mesh-n2: the LAN client → n2's address:18080, DNAT'ed on n2 (vs routed: the same hops);
- mesh-n1: the LAN client → n1's address:18080, DNAT'ed on n1, then the overlay to n2
           (vs routed: that plus the overlay crossing).

Per path, interleaved over --rounds rounds of --seconds each: requests/s and latency
with a new connection per request (what NAT and conntrack cost), requests/s on one
keep-alive connection, and MB/s of a 32 MiB download. The client is one Python thread. Each ratio is the
median over rounds of the path's figure over direct's in the same round.
"""
from __future__ import annotations

import argparse
import os
import http.client
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "network"))
import networld  # noqa: E402
from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, ServiceEndpoint  # noqa: E402

BULK_BYTES = 32 * 2**20


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def new_connection_requests(address, port, seconds):
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        connection = http.client.HTTPConnection(address, port, timeout=5)
        connection.request("GET", "/")
        connection.getresponse().read()
        connection.close()
        latencies.append(time.perf_counter() - started)
    return latencies


def keepalive_requests(address, port, seconds):
    connection = http.client.HTTPConnection(address, port, timeout=5)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        connection.request("GET", "/")
        connection.getresponse().read()
        count += 1
    connection.close()
    return count / seconds


def bulk(address, port):
    started = time.perf_counter()
    connection = http.client.HTTPConnection(address, port, timeout=30)
    connection.request("GET", f"/bytes/{BULK_BYTES}")
    response = connection.getresponse()
    received = 0
    while chunk := response.read(1 << 20):
        received += len(chunk)
    connection.close()
    assert received == BULK_BYTES, received
    return received / (time.perf_counter() - started) / 1e6


def measure_apply(world, changes):
    """Apply a change (web loses or regains a backend) on every node; per-node seconds."""
    per_node, overall = [], []
    for i in range(changes):
        web = (networld.WEB1,) if i % 2 == 0 else (networld.WEB1, networld.WEB2)
        started = time.perf_counter()
        for node, agent in world.agents.items():
            answer = agent.command({"op": "apply", "plane": networld.plane_for(node, web=web, version=10 + i).to_wire()})
            assert answer["ok"], answer
            per_node.append(answer["seconds"])
        overall.append(time.perf_counter() - started)
    unchanged = []
    for _ in range(changes):
        answer = world.agents["n1"].command({"op": "apply", "plane": networld.plane_for("n1", version=99).to_wire()})
        unchanged.append(answer["seconds"])
    return per_node, overall, unchanged


def measure_http(world, seconds, rounds):
    c1, client = world.namespaces["c1"], world.namespaces["client"]
    # The LAN client reaches web2 without NAT through a route via web2's node: the same
    # hops as the mesh on that node, so the two differ by the DNAT and SNAT alone.
    client.ip("route", "replace", f"{networld.WEB2.address}/32", "via", networld.NODES["n2"])
    paths = {
        "direct": (c1, networld.WEB2.address, networld.PORT),
        "vip": (c1, networld.WEB_VIP, networld.PORT),
        "routed": (client, networld.WEB2.address, networld.PORT),
        "mesh-n2": (client, networld.NODES["n2"], networld.PUBLISHED),
        "mesh-n1": (client, networld.NODES["n1"], networld.PUBLISHED),
    }
    results = {name: {"latencies": [], "rps_new": [], "rps_keepalive": [], "mbps": []} for name in paths}
    names = list(paths)
    for round_ in range(rounds):
        # The machine is shared: each figure interleaved with the others, the order turning.
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            ns, address, port = paths[name]
            latencies = ns.call(new_connection_requests, address, port, seconds)
            results[name]["latencies"] += latencies
            results[name]["rps_new"].append(len(latencies) / seconds)
        for name in order:
            ns, address, port = paths[name]
            results[name]["rps_keepalive"].append(ns.call(keepalive_requests, address, port, seconds))
        for name in order:
            ns, address, port = paths[name]
            results[name]["mbps"].append(ns.call(bulk, address, port))
    return results


# Each path against the direct path of the same kind: a task's own (c1) for the VIP, the
# LAN client's routed one for the mesh.
BASELINE = {"direct": "direct", "vip": "direct", "routed": "routed", "mesh-n2": "routed", "mesh-n1": "routed"}


def ratio(results, name, key):
    """The median over rounds of this path's figure over its baseline's in the same round."""
    return statistics.median(a / b for a, b in zip(results[name][key], results[BASELINE[name]][key]))


def endpoints_plane(node_address, count):
    """One /16 network with `count` VIP services of two backends each."""
    services = []
    for i in range(count):
        high, low = divmod(i, 250)
        backends = tuple(Backend(f"t{i}-{k}", f"10.50.{100 + high}.{low + 1 + k * 0}", "10.99.0.12") for k in range(1))
        backends += (Backend(f"t{i}-b", f"10.50.{200 + high % 50}.{low + 1}", "10.99.0.13"),)
        services.append(ServiceEndpoint(f"s{i}", (f"svc{i}", f"stack_svc{i}"), "vip", f"10.50.{high}.{low + 1}",
                                        backends, ((8080, "tcp"),)))
    network = OverlayNetwork(id="big", name="big", vni=5000, subnet="10.50.0.0/16", gateway="10.50.255.254",
                             internal=False, peers=("10.99.0.12", "10.99.0.13"), services=tuple(services))
    return NetworkPlane(node_address=node_address, version=1, networks=(network,))


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure_memory(world, count):
    world.on_lan("mem", "10.99.0.50")
    agent = world.start_agent("mem")
    idle_plane = NetworkPlane(node_address="10.99.0.50", version=0)
    agent.apply(idle_plane)
    before = rss_mb(agent.process.pid)
    plane = endpoints_plane("10.99.0.50", count)
    answer = agent.command({"op": "apply", "plane": plane.to_wire()})
    assert answer["ok"], answer
    after = rss_mb(agent.process.pid)
    again = agent.command({"op": "apply", "plane": replace(plane, version=2).to_wire()})
    rules = world.namespaces["mem"].sh("nft", "list", "ruleset").count("comment \"sw:")
    agent.command({"op": "remove_all"})
    return before, after, answer["seconds"], again["seconds"], rules


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--endpoints", type=int, default=1000)
    args = parser.parse_args()
    reason = networld.world_unavailable()
    if reason:
        sys.exit(reason)
    world = networld.World()
    try:
        world.build()
        per_node, overall, unchanged = measure_apply(world, args.changes)
        print(f"load average {os.getloadavg()[0]:.1f}")
        print(f"apply a change (one backend leaves or returns), {args.changes} changes x 3 nodes:")
        print(f"  per node p50 {statistics.median(per_node) * 1e3:.1f} ms, p95 {percentile(per_node, 0.95) * 1e3:.1f} ms,"
              f" max {max(per_node) * 1e3:.1f} ms")
        print(f"  all three nodes one after the other p50 {statistics.median(overall) * 1e3:.1f} ms")
        print(f"  re-apply of an unchanged plane p50 {statistics.median(unchanged) * 1e3:.1f} ms")
        world.apply_all(web=(networld.WEB2,), version=200)
        results = measure_http(world, args.seconds, args.rounds)
        print(f"HTTP to web2 (node n2), {args.rounds} rounds x {args.seconds:g} s per request figure, interleaved"
              f" (load average before: {os.getloadavg()[0]:.1f}):")
        for name, r in results.items():
            lat = r["latencies"]
            print(f"  {name:7s} (vs {BASELINE[name]:6s}) new connection: {statistics.median(r['rps_new']):6.0f} req/s"
                  f" ({ratio(results, name, 'rps_new'):.2f}x),"
                  f" p50 {statistics.median(lat) * 1e3:.2f} ms, p99 {percentile(lat, 0.99) * 1e3:.2f} ms;"
                  f" keep-alive {statistics.median(r['rps_keepalive']):5.0f} req/s ({ratio(results, name, 'rps_keepalive'):.2f}x);"
                  f" 32 MiB download {statistics.median(r['mbps']):5.0f} MB/s ({ratio(results, name, 'mbps'):.2f}x)")
        before, after, seconds, again, rules = measure_memory(world, args.endpoints)
        print(f"{args.endpoints} VIP endpoints (2 backends each, 2 names each) on one /16 network:")
        print(f"  agent RSS {before:.1f} MB idle -> {after:.1f} MB ({after - before:+.1f} MB);"
              f" first apply {seconds:.2f} s, re-apply unchanged {again * 1e3:.0f} ms; {rules} nft rules")
    finally:
        world.destroy()


if __name__ == "__main__":
    main()
