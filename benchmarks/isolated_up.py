"""The isolated local cluster (`swarmlet local up --isolated`, swarmlet/local/isolated.py):
how long `up` takes and what each node costs in memory. Needs root and Docker.

Run: python benchmarks/isolated_up.py [--managers 3] [--workers 2] [--runs 3] [--runtime docker]
                                      [--name-prefix swb] [--dir D]

Measured per run: the wall time of `local up --isolated` (and of its phases, from the
moment each line of its progress appears: LAN made, engines answering with the test
image loaded, every node joined), then at rest the RSS of each node's process, its
dockerd and that dockerd's containerd; then the wall time of `local down`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, median, table  # noqa: E402

from swarmlet.local.cluster import LocalCluster  # noqa: E402

PHASES = (("LAN ", "LAN made"), ("loaded ", "engines ready, image loaded"), ("Local cluster up", "all nodes ready"))


def rss_mb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (a thread's children are listed under it alone)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:
            pass
    return found


def containerd_of(dockerd: int) -> int | None:
    for child in children(dockerd):
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "containerd":
                return child
        except OSError:
            pass
    return None


def one_run(args, directory: Path) -> tuple[dict, list[list]]:
    command = [sys.executable, "-m", "swarmlet.cli.main", "local", "up", "--isolated", "--managers",
               str(args.managers), "--workers", str(args.workers), "--runtime", args.runtime, "--name-prefix",
               args.name_prefix, "--dir", str(directory)]
    started = time.monotonic()
    marks = {}
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output = []
    for line in process.stdout:
        output.append(line)
        for prefix, phase in PHASES:
            if line.startswith(prefix) and phase not in marks:
                marks[phase] = time.monotonic() - started
    if process.wait() != 0:
        raise RuntimeError("local up --isolated failed:\n" + "".join(output))
    cluster = LocalCluster(directory)
    record = cluster.isolation().record
    rows = []
    for node in cluster.status():
        engine = record.engine(node["name"])
        node_rss = rss_mb(node["pid"])
        dockerd = rss_mb(engine.pid) if engine else 0.0
        containerd = rss_mb(containerd_of(engine.pid)) if engine else 0.0
        rows.append([node["name"], round(node_rss), round(dockerd), round(containerd),
                     round(node_rss + dockerd + containerd)])
    down_started = time.monotonic()
    subprocess.run([sys.executable, "-m", "swarmlet.cli.main", "local", "down", "--dir", str(directory)], check=True,
                   capture_output=True)
    marks["local down"] = time.monotonic() - down_started
    return marks, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--managers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runtime", choices=["docker", "process"], default="docker")
    parser.add_argument("--name-prefix", default="swb")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="swb-isolated-"))
    print(f"local up --isolated: {args.managers} managers + {args.workers} workers, runtime {args.runtime}, "
          f"{args.runs} runs; load before: {load_average()}")
    timings: dict[str, list[float]] = {}
    last_rows = []
    for run in range(args.runs):
        marks, last_rows = one_run(args, base / f"run{run}")
        for phase, seconds in marks.items():
            timings.setdefault(phase, []).append(seconds)
    print(table(["phase (s from start of up)", "median", "min", "max"],
                [[phase, round(median(v), 2), round(min(v), 2), round(max(v), 2)] for phase, v in timings.items()]))
    print()
    print(table(["node", "node RSS MB", "dockerd MB", "containerd MB", "total MB"], last_rows,
                title="RSS at rest, last run"))
    print(f"\nload after: {load_average()}")


if __name__ == "__main__":
    main()
