"""The CLI's start-up time: `swarmlet node ls --help` (no cluster needed) and `swarmlet
service ls` / `swarmlet secret ls` against a live one-manager local cluster (process
runtime), each run --runs times as a fresh process, beside a bare `python -c pass`
(the interpreter's own floor on this machine). --tree runs another checkout's CLI
(e.g. the tree before lazy imports) for comparison.

    python benchmarks/cli_startup.py [--runs 20] [--tree PATH] [--first-address 127.0.71.2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def timed(command: list[str], env: dict, runs: int) -> list[float]:
    figures = []
    for _ in range(runs):
        started = time.perf_counter()
        # cwd: `python -m` puts the working directory first on sys.path, before PYTHONPATH.
        subprocess.run(command, env=env, cwd=env["PYTHONPATH"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        figures.append(time.perf_counter() - started)
    return figures


def show(name: str, figures: list[float]) -> None:
    figures = sorted(figures)
    p90 = figures[int(0.9 * (len(figures) - 1))]
    print(f"{name:<28} median {statistics.median(figures) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms   "
          f"min {figures[0] * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tree", default=str(HERE), help="the checkout whose CLI is timed")
    parser.add_argument("--first-address", default="127.0.71.2")
    args = parser.parse_args()
    # Python caches compiled modules (__pycache__) unless told not to; a machine that sets
    # PYTHONDONTWRITEBYTECODE (this one's sandbox does) would time the compiler on every
    # start, which is not what a user runs. One untimed run first fills the cache.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = args.tree
    cli = [sys.executable, "-m", "swarmlet.cli.main"]
    print(f"load average {os.getloadavg()[0]:.1f}; CLI from {args.tree}")
    timed(cli + ["node", "ls", "--help"], env, 1)
    show("python -c pass", timed([sys.executable, "-c", "pass"], env, args.runs))
    show("swarmlet node ls --help", timed(cli + ["node", "ls", "--help"], env, args.runs))
    with tempfile.TemporaryDirectory(prefix="swsec-bench-") as directory:
        cluster = Path(directory) / "cluster"
        own = {**os.environ, "PYTHONPATH": str(HERE)}
        subprocess.run(cli + ["local", "up", "--managers", "1", "--workers", "0", "--runtime", "process",
                              "--first-address", args.first_address, "--dir", str(cluster)], env=own, check=True,
                       stdout=subprocess.DEVNULL)
        try:
            from swarmlet.local.cluster import LocalCluster
            live = {**env, **LocalCluster(cluster).env()}
            timed(cli + ["service", "ls"], live, 1)
            show("swarmlet service ls", timed(cli + ["service", "ls"], live, args.runs))
            if (Path(args.tree) / "swarmlet" / "cli" / "secrets.py").exists():  # older trees have no secrets
                show("swarmlet secret ls", timed(cli + ["secret", "ls"], live, args.runs))
        finally:
            subprocess.run(cli + ["local", "down", "--dir", str(cluster)], env=own, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
