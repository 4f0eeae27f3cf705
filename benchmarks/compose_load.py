"""Times load_stack on a generated 200-service stack (median of several runs).

    python benchmarks/compose_load.py [--services 200] [--runs 7] [--profile]

--profile runs load_stack once more under cProfile and prints the top functions.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from swarmlet.compose import load_stack


def service(index: int) -> dict:
    return {
        "image": f"registry.example.com/team/app-{index}:${{TAG:-1.0.{index}}}",
        "command": ["serve", "--port", "8080", "--workers", str(index % 8 + 1)],
        "environment": {"SERVICE_INDEX": str(index), "LOG_LEVEL": "info", "DB_HOST": "db", "CACHE_URL": "redis://cache:6379"},
        "labels": {"com.example.team": f"team-{index % 10}", "com.example.tier": "backend"},
        "ports": [f"{10000 + index}:8080", {"target": 9000, "published": 20000 + index, "mode": "host"}],
        "volumes": [f"data-{index % 20}:/var/lib/app", "./config:/etc/app:ro", {"type": "tmpfs", "target": "/tmp"}],
        "networks": {"front": {"aliases": [f"app{index}"]}, "back": None},
        "secrets": ["api_key"],
        "healthcheck": {"test": ["CMD", "curl", "-f", "http://localhost:8080/health"], "interval": "30s",
                        "timeout": "5s", "retries": 3, "start_period": "1m"},
        "depends_on": [f"svc-{index - 1}"] if index else [],
        "stop_grace_period": "20s",
        "ulimits": {"nofile": {"soft": 20000, "hard": 40000}},
        "deploy": {
            "replicas": index % 5 + 1,
            "placement": {"constraints": ["node.role==worker", f"node.labels.zone!=zone-{index % 3}"],
                          "preferences": [{"spread": "node.labels.rack"}]},
            "resources": {"limits": {"cpus": "0.5", "memory": "512M"}, "reservations": {"memory": "128M"}},
            "restart_policy": {"condition": "on-failure", "delay": "5s", "max_attempts": 3, "window": "2m"},
            "update_config": {"parallelism": 2, "delay": "10s", "order": "start-first", "failure_action": "rollback"},
            "rollback_config": {"parallelism": 1, "order": "stop-first"},
            "labels": {"com.example.service": f"svc-{index}"},
        },
    }


def stack_document(count: int) -> dict:
    return {
        "name": "bench",
        "services": {f"svc-{i}": service(i) for i in range(count)},
        "networks": {"front": {}, "back": {"attachable": True}},
        "volumes": {f"data-{i}": {} for i in range(20)},
        "secrets": {"api_key": {"external": True}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one more load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "compose.yml"
        path.write_text(yaml.safe_dump(stack_document(args.services), sort_keys=False))
        timings, cpu = [], []
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = load_stack([path], environ={})
            timings.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        lines = path.read_text().count("\n")
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(load_stack, [path], environ={})
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    print(f"services: {len(result.stack.services)}  file lines: {lines}  runs: {args.runs}")
    print(f"median: {statistics.median(timings) * 1000:.1f} ms  "
          f"min: {min(timings) * 1000:.1f} ms  max: {max(timings) * 1000:.1f} ms")
    # CPU time of this process: less disturbed than wall time when the machine is busy.
    print(f"cpu median: {statistics.median(cpu) * 1000:.1f} ms  cpu min: {min(cpu) * 1000:.1f} ms  "
          f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
