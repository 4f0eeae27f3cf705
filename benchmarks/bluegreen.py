"""Blue-green switch times on an isolated cluster (3 managers + 2 workers, one Docker
engine per node, the overlay data plane). Needs root and Docker.

Run: python benchmarks/bluegreen.py [--runs 5] [--name-prefix swbg] [--dir D]

The blue-green stack of tests/cluster/test_overlay.py (web x2 on the workers, serving its
hostname, port 18090 published, `x-blue-green: true`, `x-hold: 60s`, monitor 1 s). A probe
in the client namespace (tests/cluster/overlay_probe.py) asks every node's address at the
published port in turn, one new connection a request, without pause. Each run deploys a
new generation, waits until the new set is ready (`awaiting_promotion`), then:

- **switch**: from just before `POST /v1/services/bg_web/promote` until the last answer
  from the old set (to a request asked after the promote began) and the first from the
  new set: after the first figure only the new set answers, on every node;
- **switch back**: the same for `POST /v1/services/bg_web/rollback` during the hold (the
  old set, still running, takes the traffic again; no container is started).

Failed requests are counted (there should be none: the old set runs through the
switch, and the new set is out of traffic before the rollback stops it). Prints the
median and max of each and every run. Everything is removed at the end, even on error.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, median, table  # noqa: E402
from overlay_e2e import Bench  # noqa: E402

from tests.cluster.test_overlay import BLUE_GREEN_PORT, PROBE, blue_green_stack  # noqa: E402

SERVICE = "bg_web"


def update(bench: Bench) -> dict:
    return next(s for s in bench.api.call("GET", "/v1/services") if s["name"] == SERVICE)["status"].get("update") or {}


def hostnames(bench: Bench, tasks: list[dict]) -> set[str]:
    return {bench.container(t)["Config"]["Hostname"] for t in tasks}


def moved(lines: list[dict], since: float, old: set[str], new: set[str]) -> tuple[float, float]:
    """(last answer from ``old``, first from ``new``), as seconds after ``since``, among the
    requests asked from ``since`` on."""
    asked = [x for x in lines if x["t0"] >= since and "body" in x]
    last_old = max((x["t"] for x in asked if x["body"] in old), default=since)
    first_new = min(x["t"] for x in asked if x["body"] in new)
    return last_old - since, first_new - since


def run(bench: Bench, generation: int, lines: list[dict]) -> tuple[float, float, float, float]:
    old = bench.wait(lambda: (lambda r: r if len(r) == 2 else None)(bench.running(SERVICE)), 60, "the old set")
    old_ids, old_names = {t["id"] for t in old}, hostnames(bench, old)
    bench.deploy("bg", blue_green_stack(generation))
    bench.wait(lambda: update(bench).get("state") == "awaiting_promotion", 120, "the new set ready")
    new = [t for t in bench.running(SERVICE) if t["id"] not in old_ids]
    new_names = hostnames(bench, new)
    promoted = time.time()
    bench.api.call("POST", f"/v1/services/{SERVICE}/promote", {})
    bench.wait(lambda: [x for x in list(lines) if x["t0"] >= promoted + 2 and "body" in x], 30, "answers after the switch")
    switch = moved(list(lines), promoted, old_names, new_names)
    back_at = time.time()
    bench.api.call("POST", f"/v1/services/{SERVICE}/rollback", {})
    bench.wait(lambda: [x for x in list(lines) if x["t0"] >= back_at + 2 and "body" in x], 30, "answers after the rollback")
    back = moved(list(lines), back_at, new_names, old_names)
    bench.wait(lambda: update(bench).get("state") == "rollback_completed", 60, "the rollback completed")
    return (*switch, *back)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--name-prefix", default="swbg")
    parser.add_argument("--dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swbg-bench-", dir=args.dir) as directory:
        bench = Bench(Path(directory))
        probe = None
        try:
            print(f"load average before: {load_average()}")
            bench.up(args.name_prefix)
            bench.deploy("bg", blue_green_stack(1))
            stop = Path(directory) / "probe.stop"
            config = {"duration": 3600, "timeout": 0.5, "stop_file": str(stop), "interval": 0,
                      "http": [[n.address, BLUE_GREEN_PORT] for n in bench.nodes.values()]}
            argv, env = bench.local.exec_command(None, [sys.executable, str(PROBE), json.dumps(config)])
            probe = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
            lines: list[dict] = []
            threading.Thread(target=lambda: [lines.append(json.loads(x)) for x in probe.stdout if x.strip()],
                             daemon=True).start()
            bench.wait(lambda: len(bench.running(SERVICE)) == 2 and len([x for x in lines if "body" in x]) > 10,
                       120, "the first generation answering")
            measured = time.time()  # before it, the probe also asked while the first generation started
            results = [run(bench, generation, lines) for generation in range(2, args.runs + 2)]
            failed = [x for x in lines if "error" in x and x["t0"] >= measured]
            rows = []
            for label, column in (("promote -> last answer from the old set", 0),
                                  ("promote -> first answer from the new set", 1),
                                  ("rollback -> last answer from the new set", 2),
                                  ("rollback -> first answer from the old set", 3)):
                samples = [r[column] for r in results]
                rows.append([label, len(samples), f"{median(samples) * 1000:.0f}", f"{max(samples) * 1000:.0f}",
                             " ".join(f"{s * 1000:.0f}" for s in samples)])
            print(table(["", "runs", "median ms", "max ms", "each run, ms"], rows,
                        title="Blue-green switch through the routing mesh (every node's address)"))
            answered = [x for x in lines if "body" in x and x["t0"] >= measured]
            print(f"requests during the runs: {len(answered)} answered, {len(failed)} failed")
            if failed:
                print("failures:", sorted({x["error"] for x in failed})[:5])
            print(f"load average after: {load_average()}")
        finally:
            if probe is not None:
                (Path(directory) / "probe.stop").touch()
                probe.wait(timeout=30)
            bench.down()


if __name__ == "__main__":
    main()
