"""A large deploy on hollow workers: 3 managers + N hollow workers (real joins, real
sessions and heartbeats, tasks that only pretend to run; swarmlet/node/hollow.py),
one service of R replicas placed on the hollow nodes.

Run: python benchmarks/hollow_deploy.py [--hollow 200] [--replicas 10000] [--managers 3]
                                        [--per-host 250] [--start-delay 0.1]
                                        [--first-address 127.0.232.2] [--dir D] [--timeout 600] [--keep]
                                        [--profile OUT.txt] [--profile-follower OUT.txt]

Measured, from `POST /v1/stacks/<name>` (what `swarmlet stack deploy` sends):
- time until every task runs (a follower's count of the service's running tasks, every 1 s; with
  --tasks-progress every task from the leader, as before, and the time until all are assigned);
- `GET /v1/nodes` on the leader every 0.1 s during the deploy: p50, p99, max;
- the leader's RSS (peak, sampled every 0.2 s) and the number of leader changes;
- the hollow hosts' RSS per hollow node and CPU per hollow node, at rest.
- CPU seconds during the deploy of the leader, the followers and the hollow hosts;
- with --profile, py-spy samples the leader (every thread) during the deploy and the
  CPU seconds are split by component (benchmarks/profile_split.py); the raw stacks go
  to the named file.
`swarmlet local up` itself (the N joins) is timed too. The cluster is taken down at
the end unless --keep.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, median, percentile, table  # noqa: E402
from deploy import cpu_seconds, run, swarmlet  # noqa: E402

from swarmlet.api.limits import DEFAULT_REPLICAS_PER_SERVICE, DEFAULT_TASKS_PER_CLUSTER  # noqa: E402
from swarmlet.cli.client import ApiError, Client, ClusterUnreachable  # noqa: E402
from swarmlet.cli.stack import deploy_body  # noqa: E402
from swarmlet.compose import load_stack  # noqa: E402
from swarmlet.local.cluster import LocalCluster  # noqa: E402
from swarmlet.runtime.hollow import DEFAULT_START_DELAY, HOLLOW_ENGINE_LABEL  # noqa: E402

STACK = "hollowbench"
NODES_POLL = 0.1  # seconds between GET /v1/nodes probes
RSS_POLL = 0.2
PROGRESS_POLL = 1.0
REST_SECONDS = 10.0  # how long the at-rest CPU of the hosts is measured
DEFAULT_TIMEOUT = 600.0
PROFILE_RATE = 100  # py-spy samples a second: each sample of a thread is 10 ms of its time


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """User + system CPU of one thread (the main thread's ID is the process's: the event loop)."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compose_file(directory: Path, replicas: int) -> Path:
    path = directory / f"{STACK}.yml"
    path.write_text(f"""services:
  web:
    image: busybox
    command: ["sleep", "600"]
    deploy:
      replicas: {replicas}
      placement:
        constraints: ["engine.labels.{HOLLOW_ENGINE_LABEL} == true"]
""")
    return path


class Probe(threading.Thread):
    """Calls ``sample()`` every ``interval`` until stopped."""

    def __init__(self, interval: float, sample):
        super().__init__(daemon=True)
        self.interval = interval
        self.sample = sample
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)


class Bench:
    def __init__(self, args):
        self.args = args
        self.directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="swarmlet-hollow-bench-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.local = LocalCluster(self.directory / "cluster")

    def up(self) -> float:
        started = time.monotonic()
        # Past the default limits (10,000 replicas a service, 20,000 tasks a cluster) the
        # cluster is made with room for the deploy.
        limits = [] if self.args.replicas <= DEFAULT_REPLICAS_PER_SERVICE else [
            "--limit", f"replicas_per_service={self.args.replicas}",
            "--limit", f"tasks_per_cluster={max(self.args.replicas, DEFAULT_TASKS_PER_CLUSTER)}"]
        swarmlet("local", "up", *limits, "--managers", str(self.args.managers), "--workers", "0",
                 "--hollow-workers", str(self.args.hollow), "--hollow-per-host", str(self.args.per_host),
                 "--hollow-start-delay", str(self.args.start_delay), "--runtime", "process",
                 "--first-address", self.args.first_address, "--dir", str(self.local.directory))
        elapsed = time.monotonic() - started
        env = self.local.env()
        self.hosts = env["SWARMLET_HOST"].split(",")
        self.client = Client(self.hosts, self.local.admin_dir, timeout=60)
        return elapsed

    def leader(self) -> tuple[str, int, Client]:
        """(leader ID, its PID, a client that asks only it)."""
        status = self.client.call("GET", "/v1/cluster/status")
        rows = {r["id"]: r for r in self.local.status()}
        leader = rows[status["leader"]]
        port = self.local.load()[1]
        return status["leader"], leader["pid"], Client([f"{leader['address']}:{port}"], self.local.admin_dir, timeout=60)

    def host_pids(self) -> list[int]:
        return sorted({r["pid"] for r in self.local.status() if r["hollow"] and r["pid"]})

    def at_rest(self) -> tuple[float, float]:
        """(RSS KB per hollow node, CPU % of one core per 1,000 hollow nodes) of the hosts."""
        pids = self.host_pids()
        before = cpu_seconds(pids)
        time.sleep(REST_SECONDS)  # a measurement window, not a synchronisation
        cpu = (cpu_seconds(pids) - before) / REST_SECONDS
        rss = sum(rss_kb(p) for p in pids)
        return rss / self.args.hollow, cpu * 100 * 1000 / self.args.hollow

    def deploy(self) -> dict:
        leader_id, leader_pid, leader_client = self.leader()
        body = deploy_body(load_stack([compose_file(self.directory, self.args.replicas)]).stack)
        latencies: list[float] = []
        failures: list[str] = []
        rss = [rss_kb(leader_pid)]
        leaders = [leader_id]

        def nodes_probe() -> None:
            began = time.monotonic()
            try:
                leader_client.call("GET", "/v1/nodes")
                latencies.append(time.monotonic() - began)
            except (ApiError, ClusterUnreachable) as err:
                failures.append(str(err))

        def rss_probe() -> None:
            rss.append(rss_kb(leader_pid))
            try:
                current = self.client.call("GET", "/v1/cluster/status", timeout=5)["leader"]
            except (ApiError, ClusterUnreachable):
                return
            if current and current != leaders[-1]:
                leaders.append(current)

        probes = [Probe(NODES_POLL, nodes_probe), Probe(RSS_POLL, rss_probe)]
        for probe in probes:
            probe.start()
        rows = self.local.status()
        managers = [r["pid"] for r in rows if r["role"] == "manager" and r["pid"]]
        port = self.local.load()[1]
        follower_client = Client([f"{r['address']}:{port}" for r in rows if r["role"] == "manager" and r["id"] != leader_id],
                                 self.local.admin_dir, timeout=60)
        followers = [pid for pid in managers if pid != leader_pid]
        hosts = self.host_pids()
        cpu_before = {name: cpu_seconds(pids) for name, pids in
                      (("leader", [leader_pid]), ("followers", followers), ("hosts", hosts))}
        loop_before = thread_cpu_seconds(leader_pid, leader_pid)
        profiler = self.profiler(leader_pid, self.args.profile)
        follower_profiler = self.profiler(followers[0], self.args.profile_follower) if followers else None
        started, started_wall = time.monotonic(), time.time()
        self.client.call("POST", f"/v1/stacks/{STACK}", body, timeout=120)
        accepted = time.monotonic() - started
        assigned = running = None
        counts = {}
        while time.monotonic() - started < self.args.timeout:
            try:
                if self.args.tasks_progress:  # every task's JSON each second, from the leader (as before)
                    tasks = self.client.call("GET", f"/v1/stacks/{STACK}/tasks", timeout=60)
                else:  # the service's running count, from a follower
                    (service,) = follower_client.call("GET", f"/v1/stacks/{STACK}/services", timeout=60)
            except (ApiError, ClusterUnreachable):
                continue
            if not self.args.tasks_progress:
                counts = {"running": service["running"]}
                if service["running"] == self.args.replicas:
                    running = time.monotonic() - started
                    break
                time.sleep(PROGRESS_POLL)
                continue
            active = [t for t in tasks if t["desired_state"] in ("ready", "running")]
            counts = {}
            for task in active:
                counts[task["state"]] = counts.get(task["state"], 0) + 1
            if assigned is None and len(active) == self.args.replicas and all(t["node_id"] for t in active):
                assigned = time.monotonic() - started
            if len(active) == self.args.replicas and counts.get("running") == self.args.replicas:
                running = time.monotonic() - started
                break
            time.sleep(PROGRESS_POLL)
        elapsed = time.monotonic() - started
        cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in
               (("leader", [leader_pid]), ("followers", followers), ("hosts", hosts))}
        cpu["leader_loop"] = thread_cpu_seconds(leader_pid, leader_pid) - loop_before
        for each in (profiler, follower_profiler):
            if each is not None:
                each.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                each.wait(timeout=60)
        for probe in probes:
            probe.halt.set()
            probe.join()
        phases = deploy_phases(follower_client.call("GET", f"/v1/stacks/{STACK}/tasks", timeout=120), started_wall)
        return {"phases": phases, "accepted": accepted, "assigned": assigned, "running": running, "elapsed": elapsed,
                "counts": counts, "latencies": latencies, "failures": failures, "rss_before": rss[0],
                "rss_peak": max(rss), "rss_end": rss[-1], "leader_changes": len(leaders) - 1, "cpu": cpu}

    def profiler(self, pid: int, output: str | None) -> subprocess.Popen | None:
        if not output:
            return None
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            sys.exit("--profile needs py-spy (pip install py-spy)")
        return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--threads", "--full-filenames", "--format", "raw",
                                 "--rate", str(PROFILE_RATE), "--output", output],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def down(self) -> None:
        if self.local.state_path.exists():
            run(sys.executable, "-m", "swarmlet.cli.main", "local", "down", "--dir", str(self.local.directory),
                check=False)
        if not self.args.dir:  # the temporary directory this run made
            shutil.rmtree(self.directory, ignore_errors=True)


def deploy_phases(tasks: list[dict], began: float) -> dict[str, float]:
    """When the deploy's tasks were created (the store's clock) and reported running
    (their nodes'; one machine, one clock), from one listing after the measurement."""
    created = sorted(t["created_at"] - began for t in tasks)
    running = sorted(t["timestamp"] - began for t in tasks if t["state"] == "running")
    phases = {}
    for name, moments in (("created", created), ("running", running)):
        if moments:
            phases.update({f"first {name}": moments[0], f"median {name}": median(moments),
                           f"last {name}": moments[-1]})
    return phases


def phase_moments(phases: dict[str, float], name: str) -> str:
    return " / ".join(f"{phases[f'{which} {name}']:.2f}" if f"{which} {name}" in phases else "-"
                      for which in ("first", "median", "last"))


def seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hollow", type=int, default=200, help="hollow workers")
    parser.add_argument("--replicas", type=int, default=10_000)
    parser.add_argument("--managers", type=int, default=3)
    parser.add_argument("--per-host", type=int, default=250, help="hollow workers per host process")
    parser.add_argument("--start-delay", type=float, default=DEFAULT_START_DELAY)
    parser.add_argument("--first-address", default="127.0.232.2")
    parser.add_argument("--dir", help="where the cluster goes (default: a new temporary directory)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="give up on the deploy after this")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--tasks-progress", action="store_true",
                        help="follow the deploy as before: every task from the leader each second (and time 'all "
                             "assigned'); by default the service's running count from a follower, which costs the "
                             "leader nothing (the task listing was half of its loop: docs/performance.md)")
    parser.add_argument("--profile", help="py-spy the leader during the deploy; raw stacks to this file")
    parser.add_argument("--profile-follower", help="py-spy one follower during the deploy; raw stacks to this file")
    args = parser.parse_args()
    # A SIGTERM (`timeout`, CI) still takes the cluster down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    bench = Bench(args)
    try:
        up = bench.up()
        per_node_rss, cpu_per_1000 = bench.at_rest()
        result = bench.deploy()
    finally:
        if not args.keep:
            bench.down()
    latencies = result["latencies"] or [float("nan")]
    rows = [
        ["local up (3 managers + joins)", f"{up:.1f} s"],
        ["hollow host RSS per node, at rest", f"{per_node_rss:.0f} KB"],
        ["hollow host CPU per 1,000 nodes, at rest", f"{cpu_per_1000:.1f} % of a core"],
        ["deploy accepted (POST returned)", f"{result['accepted']:.2f} s"],
        ["all tasks assigned", f"{seconds(result['assigned'])} s"],
        ["all tasks running", f"{seconds(result['running'])} s"],
        ["tasks created: first / median / last (s)", phase_moments(result["phases"], "created")],
        ["tasks reported running: first / median / last (s)", phase_moments(result["phases"], "running")],
        ["task states at the end", ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items()))],
        ["GET /v1/nodes p50 / p99 / max (ms)", f"{median(latencies) * 1000:.0f} / "
                                               f"{percentile(latencies, 99) * 1000:.0f} / {max(latencies) * 1000:.0f}"
                                               f" ({len(result['latencies'])} calls, {len(result['failures'])} failed)"],
        ["leader RSS before / peak / end", f"{result['rss_before'] / 1024:.0f} / {result['rss_peak'] / 1024:.0f}"
                                           f" / {result['rss_end'] / 1024:.0f} MB"],
        ["CPU during the deploy: leader (its event loop) / followers / hollow hosts",
         f"{result['cpu']['leader']:.1f} ({result['cpu']['leader_loop']:.1f}) / {result['cpu']['followers']:.1f}"
         f" / {result['cpu']['hosts']:.1f} s in {result['elapsed']:.1f} s"],
        ["leader changes", result["leader_changes"]],
    ]
    print(table(["measure", "value"], rows,
                title=f"{args.managers} managers + {args.hollow} hollow workers, {args.replicas} replicas "
                      f"(load {load_average()})"))
    for title, path in (("leader", args.profile), ("a follower", args.profile_follower)):
        if path:
            from profile_split import render, split
            print(f"py-spy of {title}:")
            print(render(split(Path(path).read_text(), PROFILE_RATE)))


if __name__ == "__main__":
    main()
