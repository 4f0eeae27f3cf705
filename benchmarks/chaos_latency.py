"""What a `latency` fault does to the round trips, on a running isolated cluster
(`swarmlet local up --isolated`): the leader's own answer (`GET
/v1/cluster/status?local=1`, a new TLS connection each time) and a write committed
through Raft (`POST /v1/configs`), each asked of the leader directly, before, during
and after a latency fault on the leader (swarmlet/chaos/delay.py).

Run:
    python benchmarks/chaos_latency.py --dir DIR --latency-ms 150 --rounds 20

Prints the medians and p90s in milliseconds for each phase. Rounds during the fault
are measured again if the leader lost its leadership meanwhile (the fault cuts its
connections once). The writes are removed afterwards, and the fault is undone also on
error.
"""
from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time

from swarmlet.chaos.faults import IsolatedTarget
from swarmlet.chaos.schedule import FaultKind

LABEL = "swarmlet.bench.latency"


def measure(client, rounds: int) -> tuple[list[float], list[float]]:
    status, writes = [], []
    for _ in range(rounds):
        start = time.monotonic()
        client.call("GET", "/v1/cluster/status?local=1")
        status.append((time.monotonic() - start) * 1000)
        start = time.monotonic()
        client.call("POST", "/v1/configs", {"name": f"bench-latency-{time.time_ns()}", "labels": {LABEL: "1"},
                                            "data": base64.b64encode(b"x").decode()})
        writes.append((time.monotonic() - start) * 1000)
    return status, writes


def figures(values: list[float]) -> str:
    ordered = sorted(values)
    return f"median {statistics.median(ordered):6.1f} ms, p90 {ordered[int(0.9 * (len(ordered) - 1))]:6.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the isolated local cluster")
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    target = IsolatedTarget(args.dir, latency_ms=args.latency_ms)
    status = target.client().call("GET", "/v1/cluster/status")
    leader = next(n for n in target.nodes() if n.id == status["leader"])
    client = target.client([leader.api], timeout=10)
    results = {}
    try:
        results["before"] = measure(client, args.rounds)
        target.inject(FaultKind.LATENCY, leader)
        try:
            for _ in range(5):
                try:
                    term = client.call("GET", "/v1/cluster/status?local=1")["term"]
                    measured = measure(client, args.rounds)
                    after = client.call("GET", "/v1/cluster/status?local=1")
                except Exception as err:  # a deposed leader refusing a write: measure again
                    print(f"(measuring again: {err})", file=sys.stderr)
                    continue
                if after["leader"] == leader.id and after["term"] == term:
                    results["during"] = measured
                    break
        finally:
            target.undo(FaultKind.LATENCY, leader)
        results["after"] = measure(client, args.rounds)
    finally:
        client.call("DELETE", f"/v1/configs?label={LABEL}=1")
    print(f"latency fault of {args.latency_ms:g} ms on the leader {leader.name}, {args.rounds} rounds each")
    for phase in ("before", "during", "after"):
        if phase not in results:
            print(f"{phase:>7}: not measured (the leader kept changing)")
            continue
        own, writes = results[phase]
        print(f"{phase:>7}: its own answer {figures(own)}; a write {figures(writes)}")
    print(f"left behind: {target.leftovers() or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
