"""What events cost a manager's loop: deriving the events of a transaction
(manager/events.py, events_of, done when first read) and adding a transaction to the
ring (done as it is applied), for the largest
transactions the leader writes (2,000 task creates, then their assignment), and the
ring's memory when full, and one scrape of the metrics' exposition beside them.

    python benchmarks/events_cost.py [--tasks 2000] [--rounds 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _common import load_average, median, percentile, table  # noqa: E402

from swarmlet.api.objects import task_object_spec, task_status  # noqa: E402
from swarmlet.manager.events import EVENT_RING_SIZE, EventRing, events_of  # noqa: E402
from swarmlet.store.state import StoreState, encode_transaction  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000, help="task creates in one transaction (the store's bound)")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    state = StoreState()
    service = {"id": "svc-bench", "spec": {
        "name": "bench_web", "mode": "replicated", "labels": {"com.docker.stack.namespace": "bench"},
        "container": {"image": "busybox", "command": ["sleep", "600"]}, "resources": {"limits": {}, "reservations": {}},
        "restart_policy": {"condition": "any"}, "placement": {}, "networks": [], "endpoint": {"ports": []}}}
    creates, assigns, ring_add = [], [], []
    ring = EventRing()
    for round_ in range(args.rounds):
        ops = [{"op": "create", "kind": "task", "id": f"t{round_}-{slot}",
                "spec": task_object_spec(service, slot=slot + 1, node_id=None, digest="d"),
                "status": task_status("pending", time.time())} for slot in range(args.tasks)]
        applied = state.apply(encode_transaction("", time.time(), ops))
        started = time.perf_counter()
        events_of(applied.index, applied.timestamp, applied.changes)
        creates.append(time.perf_counter() - started)
        started = time.perf_counter()
        ring.add(applied.index, applied.timestamp, applied.changes)  # what applying costs the loop: events wait
        ring_add.append(time.perf_counter() - started)
        ops = [{"op": "update", "kind": "task", "id": change.id, "version": change.object["version"],
                "spec": dict(change.object["spec"], node_id="n1"), "status": task_status("assigned", time.time())}
               for change in applied.changes]
        applied = state.apply(encode_transaction("", time.time(), ops))
        started = time.perf_counter()
        events_of(applied.index, applied.timestamp, applied.changes)
        assigns.append(time.perf_counter() - started)
        ring.add(applied.index, applied.timestamp, applied.changes)

    tracemalloc.start()
    full = EventRing()
    index = 1
    while full.held_changes + len(applied.changes) <= EVENT_RING_SIZE:
        full.add(index, time.time(), applied.changes)
        index += 1
    derived = full.events  # every held transaction's events derived (and kept, as a follower leaves them)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()

    ms = lambda xs, p: f"{percentile(xs, p) * 1000:.1f}"  # noqa: E731
    print(table(["transaction", "events", "derive p50 ms", "derive p99 ms"], [
        [f"{args.tasks} task creates", args.tasks, ms(creates, 50), ms(creates, 99)],
        [f"{args.tasks} assignments", args.tasks, ms(assigns, 50), ms(assigns, 99)],
        [f"ring add of {args.tasks} (no derivation)", args.tasks, f"{median(ring_add) * 1000:.1f}", ms(ring_add, 99)],
    ], title=f"events_of over {args.rounds} rounds (load average {load_average()})"))
    print(f"a full ring, derived ({len(derived)} task events): {held / 1e6:.1f} MB "
          f"({held / len(derived):.0f} B an event)")


if __name__ == "__main__":
    main()
