"""Failover under `swarmlet chaos run`: kill/freeze/partition of the leader every
--interval seconds on a fresh local cluster of 3 and of 5 managers (process runtime).

Run (the issue's full benchmark, 10 minutes per cluster size):
    python benchmarks/chaos_failover.py --duration 10m --managers 3 5
A shorter run:
    python benchmarks/chaos_failover.py --duration 2m --managers 3 5

For each size it brings up `swarmlet local up --managers N --workers 0` in a temporary
directory, runs `swarmlet chaos run --faults kill,freeze,partition --targets leader
--interval I --format json`, and prints: faults, failover (fault -> another node seen as
leader) median and max, fault -> first acknowledged write median and max, write
unavailability in total and per fault, writes acknowledged, lost, stale reads. The
cluster is removed afterwards, also on error. The JSON records are written with
--out-dir if given.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def swarmlet(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], capture_output=capture, text=True)


def keep_evidence(cluster: Path, record: dict, keep_dir: Path) -> Path:
    """Copy the cluster directory with every node frozen (what is on disk is what their
    Raft threads last wrote), and the record beside it."""
    pids = []
    for pid_file in cluster.glob("*/node.pid"):
        try:
            pids.append(int(pid_file.read_text().strip()))
            os.kill(pids[-1], signal.SIGSTOP)
        except (ValueError, OSError):
            pass
    try:
        keep_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(cluster, keep_dir / "cluster", symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.sock", "runtime"))
        (keep_dir / "record.json").write_text(json.dumps(record, indent=2))
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
    return keep_dir


def one_size(managers: int, duration: str, interval: float, seed: int, first_address: str, out_dir: Path | None,
             keep_failed: Path | None = None, writers: int = 4) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="swc-bench-"))
    try:
        up = swarmlet("local", "up", "--managers", str(managers), "--workers", "0", "--runtime", "process",
                      "--first-address", first_address, "--dir", str(directory / "cluster"))
        if up.returncode != 0:
            raise SystemExit(f"local up failed:\n{up.stderr}")
        run = swarmlet("chaos", "run", "--dir", str(directory / "cluster"), "--duration", duration, "--faults",
                       "kill,freeze,partition", "--targets", "leader", "--interval", str(interval), "--seed", str(seed),
                       "--writers", str(writers), "--format", "json")
        record = json.loads(run.stdout)
        if keep_failed and not record.get("passed"):
            kept = keep_evidence(directory / "cluster", record, keep_failed / f"chaos-{managers}-managers")
            print(f"checks failed: evidence kept in {kept}", file=sys.stderr)
        if out_dir:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"chaos-{managers}-managers.json").write_text(json.dumps(record, indent=2))
        return record
    finally:
        swarmlet("local", "down", "--dir", str(directory / "cluster"))
        subprocess.run(["rm", "-rf", str(directory)])


def figures(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", default="2m")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--managers", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--seed", type=int, default=2)  # 2 min at 10 s: 4 kills, 3 freezes, 5 partitions
    parser.add_argument("--first-address", default="127.0.230.2")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--keep-failed", type=Path, default=None,
                        help="where a failed run leaves its cluster directory and record")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    for managers in args.managers:
        record = one_size(managers, args.duration, args.interval, args.seed, args.first_address, args.out_dir,
                          args.keep_failed, args.writers)
        faults = record["faults"]
        writes = record["writes"]
        gaps = [f["first_write_s"] for f in faults if f["first_write_s"] is not None]
        by_kind = {}
        for fault in faults:
            if fault["failover_s"] is not None:
                by_kind.setdefault(fault["kind"], []).append(fault["failover_s"])
        print(f"== {managers} managers, {record['duration_s']:.0f} s, {len(faults)} faults "
              f"(seed {record['seed']}, passed: {record['passed']})")
        print(f"  failover (fault -> new leader): {figures(record['leader']['failover_s'])} "
              f"({len(record['leader']['failover_s'])} of {len(faults)} faults saw a new leader)")
        for kind, values in sorted(by_kind.items()):
            print(f"    {kind}: {figures(values)} (n={len(values)})")
        print(f"  fault -> first acknowledged write: {figures(gaps)}")
        print(f"  write unavailability: {writes['unavailable_s']:.2f} s in total, "
              f"{writes['unavailable_s'] / max(1, len(faults)):.2f} s per fault; windows (start s, length s): "
              + ", ".join(f"{w['start']:.1f}+{w['s']:.2f}" for w in writes["unavailable_windows"]))
        print("  faults (start, kind, lasted, new leader, first write): "
              + ", ".join(f"{f['start']:.1f} {f['kind']} {f['end'] - f['start']:.1f} {f['failover_s']} {f['first_write_s']}"
                          for f in faults))
        print(f"  writes acknowledged {writes['acked']}, lost {len(writes['lost'])}, indeterminate "
              f"{writes['indeterminate']}, refused {writes['failed']}, stale reads {len(writes['stale_reads'])} "
              f"of {writes['reads']}, duplicates {len(record['duplicates'])}")


if __name__ == "__main__":
    main()
