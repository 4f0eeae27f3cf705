"""What the dispatcher pays for one node's assignment message when one of its tasks
changed: the whole set rebuilt and digested (what every node got before session
protocol 2, and what an older agent still gets) against the changes built from the
touched task alone (`task_changes`). Pure, in-process: the dispatcher's own functions
over frozen task views, as the store hands them out.

Run: python benchmarks/assignments_bench.py [--per-node 10,100,1000] [--rounds 2000]

For each number of tasks per node, the median time per message over ``--rounds``
messages, each after one task of the node moved forward (assigned → accepted: a new
phase, so both ways have something to send), and the bytes on the wire.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, median, table  # noqa: E402

from swarmlet.api.objects import task_object_spec  # noqa: E402
from swarmlet.api.session import AssignmentSet, pack  # noqa: E402
from swarmlet.api.specs import ContainerSpec, ServiceSpec  # noqa: E402
from swarmlet.api.views import Task  # noqa: E402
from swarmlet.manager.dispatcher.assignments import assignment_digest, node_assignment, task_changes  # noqa: E402
from swarmlet.store.state import freeze  # noqa: E402

NODE = "node-1"


def tasks_on_node(count: int) -> list[Task]:
    spec = ServiceSpec(name="bench_web", replicas=count, container=ContainerSpec(
        image="busybox", command=["sleep", "600"], env={"MODE": "bench"})).to_dict()
    service = {"id": "svc-web", "spec": spec}
    return [Task(freeze({"id": f"task-{slot:06d}", "kind": "task", "version": slot, "created_at": 0.0,
                         "updated_at": 0.0, "spec": task_object_spec(service, slot=slot, node_id=NODE),
                         "status": {"state": "assigned", "message": "", "timestamp": 0.0}}))
            for slot in range(1, count + 1)]


def accepted(task: Task) -> Task:
    raw = task.raw
    return Task(freeze({**raw, "version": raw["version"] + 1, "status": {**raw["status"], "state": "accepted"}}))


def measure(per_node: int, rounds: int) -> list:
    tasks = tasks_on_node(per_node)
    by_id = {t.id: t for t in tasks}
    whole_times, change_times = [], []
    whole_bytes = change_bytes = 0
    held = AssignmentSet.of(node_assignment(NODE, tasks, [], [], sequence=1))
    for i in range(rounds):
        changed = accepted(tasks[i % per_node]) if by_id[tasks[i % per_node].id].status.state == "assigned" \
            else tasks[i % per_node]  # back and forth: every round changes one entry's phase
        by_id[changed.id] = changed
        current = list(by_id.values())
        began = time.perf_counter()
        message = node_assignment(NODE, current, [], [])
        assignment_digest(message)
        whole_times.append(time.perf_counter() - began)
        whole_bytes = len(pack(message))
        began = time.perf_counter()
        changes = task_changes(NODE, held, {changed.id: changed}, lambda entries: ([], []))
        wire = pack(changes)
        change_times.append(time.perf_counter() - began)
        change_bytes = len(wire)
        held.apply(changes)
    return [f"{per_node:,}", f"{median(whole_times) * 1e6:,.0f} µs", f"{median(change_times) * 1e6:,.0f} µs",
            f"{median(whole_times) / median(change_times):,.0f}×", f"{whole_bytes:,}", f"{change_bytes:,}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-node", default="10,100,1000", help="tasks per node, comma-separated")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    rows = [measure(int(n), args.rounds) for n in args.per_node.split(",")]
    print(table(["tasks on the node", "whole set + digest", "changes (task_changes + pack)", "ratio",
                 "whole set bytes", "change bytes"], rows,
                title=f"one node's assignment message after one task changed (load {load_average()})"))


if __name__ == "__main__":
    main()
