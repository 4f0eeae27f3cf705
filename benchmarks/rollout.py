"""Rolling updates and rollbacks of one service on real containers.

Run: python benchmarks/rollout.py [--replicas 20] [--runs 3] [--first-address 127.0.252.2]
                                  [--image swarmlet-test/busybox:1]

A local cluster of 3 managers + 2 workers with the Docker runtime (`swarmlet local up`,
started once), one service of N replicas (`sleep 600`, `init: true`).

- **rolling update**: update_config parallelism 5, start-first, delay 0 (monitor: the
  default 5 s). `swarmlet service update --env-add RUN=k` from the CLI; timed from the
  command's start until the API shows N running tasks of the new spec and no active old
  one (what the issue compares with Swarm's 6.1 s). The CLI's own wall time is printed
  too: it returns once the update *completed*, i.e. after the last batch was watched
  for `monitor`.
- **failed update with rollback**: update_config parallelism 5, stop-first (so that old
  tasks do stop: start-first never stops one while the new ones fail), failure_action
  rollback, rollback_config parallelism 1 (Swarm's default; `--rollback-parallelism`);
  `service update --image` to an image that does not exist (the engine
  rejects the task at once; no registry is reachable). Timed from the first failure
  (the rejected task's status timestamp, the manager's clock, this machine) until N
  tasks of the previous spec run again and no other is active; also the time from the
  command to the update state `rollback_completed` (which waits for rollback_config's
  monitor, 5 s by default).

Prints the median of the runs and each run. Everything lives in a stack named
`swrbench` and the cluster's directory; both are removed at the end, even on error.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, table  # noqa: E402
from deploy import Swarmlet, wait_for  # noqa: E402

import docker  # noqa: E402

from swarmlet.cli.stack import deploy_body  # noqa: E402
from swarmlet.compose import load_stack  # noqa: E402

STACK = "swrbench"
SERVICE = f"{STACK}_web"
MISSING_IMAGE = "swarmlet-test/does-not-exist:404"


def compose(directory: Path, image: str, replicas: int, failure_action: str, order: str,
            rollback_parallelism: int = 1) -> Path:
    path = directory / f"{STACK}-{failure_action}.yml"
    path.write_text(f"""services:
  web:
    image: {image}
    command: ["sleep", "600"]
    init: true
    deploy:
      replicas: {replicas}
      update_config: {{parallelism: 5, delay: 0s, order: {order}, failure_action: {failure_action}}}
      rollback_config: {{parallelism: {rollback_parallelism}}}
""")
    return path


class Bench:
    def __init__(self, cluster: Swarmlet, replicas: int):
        self.cluster = cluster
        self.client = cluster.client
        self.replicas = replicas
        self.env = dict(os.environ, **cluster.local.env())

    def cli(self, *args: str) -> tuple[float, int]:
        import subprocess
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], env=self.env,
                                capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        return time.monotonic() - started, result.returncode

    def service(self) -> dict:
        return self.client.call("GET", f"/v1/services/{SERVICE}")

    def converged_on(self, digest: str) -> bool:
        tasks = self.client.call("GET", f"/v1/tasks?service={SERVICE}")
        active = [t for t in tasks if t["desired_state"] in ("ready", "running")]
        return (len(active) == self.replicas and all(t["state"] == "running" for t in active)
                and {t["spec_digest"] for t in active} == {digest})

    def deploy(self, path: Path) -> None:
        self.client.call("POST", f"/v1/stacks/{STACK}", deploy_body(load_stack([path]).stack))
        wait_for(lambda: self.converged_on(self.service()["spec_digest"]), 300, "the service running")
        wait_for(lambda: (self.service()["status"].get("update") or {}).get("state") in (None, "completed",
                                                                                     "rollback_completed"),
                 60, "no update in progress")

    def rolling_update(self, run: int) -> tuple[float, float]:
        import threading
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(
            cli=self.cli("service", "update", "--env-add", f"RUN={run}", "--timeout", "5m", SERVICE)))
        before = self.service()["spec_digest"]
        started = time.monotonic()
        thread.start()
        digest = wait_for(lambda: (d := self.service()["spec_digest"]) != before and d, 60, "the new spec")
        wait_for(lambda: self.converged_on(digest), 300, "every new task running")
        new_running = time.monotonic() - started
        thread.join()
        wall, code = result["cli"]
        if code != 0:
            raise RuntimeError(f"service update exited {code}")
        return new_running, wall

    def failed_update(self) -> tuple[float, float]:
        before = self.service()["spec_digest"]
        started = time.monotonic()
        wall, code = self.cli("service", "update", "--image", MISSING_IMAGE, "--detach", SERVICE)
        if code != 0:
            raise RuntimeError(f"service update exited {code}")

        def first_failure():
            failed = [t["timestamp"] for t in self.client.call("GET", f"/v1/tasks?service={SERVICE}")
                      if t["state"] == "rejected" and t["image"] == MISSING_IMAGE]
            return min(failed) if failed else None
        wait_for(lambda: first_failure(), 120, "the first failure")
        wait_for(lambda: self.service()["spec_digest"] == before and self.converged_on(before), 300,
                 "the old tasks running again")
        back = time.time() - first_failure()
        wait_for(lambda: (self.service()["status"].get("update") or {}).get("state") == "rollback_completed", 120,
                 "rollback_completed")
        return back, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--first-address", default="127.0.252.2")
    parser.add_argument("--image", default="swarmlet-test/busybox:1")
    parser.add_argument("--rollback-parallelism", type=int, default=1,
                        help="rollback_config.parallelism of the failed update (Swarm's default: 1; 0: all at once)")
    args = parser.parse_args()
    engine = docker.from_env()
    print(f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="swr-bench-") as directory:
        cluster = Swarmlet(engine, Path(directory), args.first_address, args.image)
        try:
            bench = Bench(cluster, args.replicas)
            bench.deploy(compose(Path(directory), args.image, args.replicas, "pause", "start-first"))
            updates = [bench.rolling_update(run) for run in range(args.runs)]
            rollbacks = []
            for _ in range(args.runs):
                bench.deploy(compose(Path(directory), args.image, args.replicas, "rollback", "stop-first",
                                     args.rollback_parallelism))
                rollbacks.append(bench.failed_update())
                # back on the file's spec for the next run (the rollback used up the previous spec)
                cluster.client.call("DELETE", f"/v1/stacks/{STACK}")
                wait_for(lambda: not cluster.client.call("GET", f"/v1/stacks/{STACK}/tasks"), 120, "stack removed")
        finally:
            try:
                cluster.client.call("DELETE", f"/v1/stacks/{STACK}")
            except Exception:  # noqa: BLE001 - the cluster goes anyway
                pass
            cluster.down()
    rows = [
        ["rolling update: all new running", f"{statistics.median(u[0] for u in updates):.2f}",
         " ".join(f"{u[0]:.2f}" for u in updates)],
        ["rolling update: CLI until completed", f"{statistics.median(u[1] for u in updates):.2f}",
         " ".join(f"{u[1]:.2f}" for u in updates)],
        ["failed update: first failure -> old running", f"{statistics.median(r[0] for r in rollbacks):.2f}",
         " ".join(f"{r[0]:.2f}" for r in rollbacks)],
        ["failed update: command -> rollback_completed", f"{statistics.median(r[1] for r in rollbacks):.2f}",
         " ".join(f"{r[1]:.2f}" for r in rollbacks)],
    ]
    print(f"{args.replicas} replicas, parallelism 5, delay 0, monitor 5 s; rolling update start-first, failed update "
          f"stop-first, rollback parallelism {args.rollback_parallelism}; {args.runs} runs")
    print(table(["measure", "median s", "runs s"], rows))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
