"""Scheduler benchmark: 10,000 and 100,000 tasks onto 1,000 nodes.

Run: python benchmarks/scheduler_bench.py [--profile]

The mix: 1,000 nodes (3 managers per 100, most labelled with a zone, a tenth
with tier=db, a few drained or down); services with and without reservations,
constraints, a zone spread preference, max replicas per node, a host-mode
port, and one global service with a task bound to every node. Only the
`schedule` call is timed; building the inputs is not.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

from swarmlet.manager.scheduler import NodeInfo, ResourceAmount, TaskRequest, schedule

GIB = 1 << 30
MIB = 1 << 20
NODE_COUNT = 1_000


def make_nodes(count: int) -> list[NodeInfo]:
    nodes = []
    for i in range(count):
        labels = {} if i % 10 == 9 else {"zone": "abc"[i % 3]}
        if i % 10 == 0:
            labels["tier"] = "db"
        nodes.append(
            NodeInfo(
                node_id=f"node-{i:04d}",
                hostname=f"host-{i:04d}",
                role="manager" if i % 100 < 3 else "worker",
                state="down" if i % 250 == 7 else "ready",
                availability="drain" if i % 200 == 11 else "active",
                labels=labels,
                capacity=ResourceAmount.from_cpus(32, 128 * GIB),
            )
        )
    return nodes


def make_tasks(count: int, nodes: list[NodeInfo]) -> list[TaskRequest]:
    # The global service takes one task per node; the rest is shared by weight.
    tasks = [
        TaskRequest(f"agent-{node.node_id}", "agent", node_id=node.node_id, reservations=ResourceAmount(0, 64 * MIB))
        for node in nodes
    ]
    replicated = count - len(tasks)
    mix = [
        (0.40, dict(service_id="web", reservations=ResourceAmount.from_cpus(0.1, 128 * MIB), preferences=("node.labels.zone",))),
        (0.30, dict(service_id="api", reservations=ResourceAmount.from_cpus(0.25, 256 * MIB), constraints=("node.role==worker",))),
        (0.20, dict(service_id="batch")),
        (0.05, dict(service_id="db", reservations=ResourceAmount(0, 1 * GIB), constraints=("node.labels.tier==db",), max_replicas_per_node=60)),
        (0.05, dict(service_id="edge", host_ports=(("tcp", 8443),), constraints=("node.labels.zone!=c",))),
    ]
    for weight, spec in mix:
        service = spec["service_id"]
        tasks.extend(TaskRequest(f"{service}-{slot:06d}", slot=slot, **spec) for slot in range(int(replicated * weight)))
    return tasks


def run(task_count: int, profile: bool) -> None:
    nodes = make_nodes(NODE_COUNT)
    tasks = make_tasks(task_count, nodes)
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    placements = schedule(nodes, tasks)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - start
    placed = sum(1 for p in placements if p.node_id is not None)
    print(f"{len(tasks):>7,} tasks onto {NODE_COUNT:,} nodes: {elapsed:.3f} s ({placed:,} placed, {len(tasks) - placed:,} pending)")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    profile = "--profile" in sys.argv
    for count in (10_000, 100_000):
        run(count, profile)
