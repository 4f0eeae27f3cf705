"""Issue 9 end to end on an isolated cluster (3 managers + 2 workers, one Docker engine
per node): how fast the overlay follows task state, and what a stack deploy costs
against the engines' own limit. Needs root and Docker.

Run: python benchmarks/overlay_e2e.py [--kills 20] [--replicas 50] [--name-prefix swe] [--dir D]

Measured, on the two-tier stack of tests/cluster/test_overlay.py (web x2 on the workers,
serving its hostname, exiting at once on SIGTERM; client global; port 18080 published):
- per `docker kill` of a web task (through its node's engine), from a probe inside the
  client container on manager-1 (tests/cluster/overlay_probe.py: a lookup of tasks.web
  through Docker's embedded resolver and an HTTP request through the VIP, in turn,
  every ~10 ms): the time from the kill to the first lookup without the task's address
  ("DNS") and to the end of the last request that failed ("VIP": after it, no request
  went to the dead task); then the time from the replacement's container start
  (the engine's StartedAt) to the first answer from it through the VIP;
- `stack deploy` of a service of N replicas (sleepers, on the stack's overlay network)
  until all run, against N `docker run -d` of the same image and command spread over
  the same five engines (one thread per engine), in the same run.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, median, percentile, table  # noqa: E402

from swarmlet.cli.stack import deploy_body  # noqa: E402
from swarmlet.compose import load_stack  # noqa: E402
from swarmlet.local.cluster import LocalCluster  # noqa: E402
from swarmlet.network.bridges import LABEL_OVERLAY_ID  # noqa: E402
from swarmlet.runtime.base import LABEL_TASK_ID  # noqa: E402
from tests.cluster.test_overlay import APP, EMBEDDED_RESOLVER, PROBE  # noqa: E402

IMAGE = "swarmlet-test/busybox:1"
SLEEPERS = """
    services:
      sleeper:
        image: swarmlet-test/busybox:1
        command: ["sleep", "100000"]
        deploy:
          replicas: {replicas}
"""


def swarmlet(*args: str, timeout: float = 600) -> str:
    result = subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise SystemExit(f"swarmlet {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result.stdout


class Bench:
    def __init__(self, directory: Path):
        self.directory = directory / "cluster"
        self.local = LocalCluster(self.directory)

    def up(self, prefix: str) -> None:
        swarmlet("local", "up", "--isolated", "--name-prefix", prefix, "--managers", "3", "--workers", "2",
                 "--runtime", "docker", "--heartbeat-period", "0.5", "--dir", str(self.directory))
        env = self.local.env()
        from swarmlet.cli.client import Client
        self.api = Client(env["SWARMLET_HOST"].split(","), self.local.admin_dir, timeout=30)
        self.nodes = {n.id: n for n in self.local.load()[0]}

    def engine(self, name: str):
        import docker
        return docker.APIClient(base_url=self.local.find(name).docker_host, version="auto", timeout=60)

    def deploy(self, name: str, compose: str) -> None:
        path = self.directory.parent / f"{name}.yml"
        path.write_text(textwrap.dedent(compose))
        self.api.call("POST", f"/v1/stacks/{name}", deploy_body(load_stack([path]).stack, False))

    def running(self, service: str) -> list[dict]:
        return [t for t in self.api.call("GET", "/v1/tasks") if t["service_name"] == service
                and t["desired_state"] == "running" and t["state"] == "running"]

    def wait(self, predicate, timeout: float, what: str, poll: float = 0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(poll)
        raise SystemExit(f"timed out waiting for {what}")

    def engines_clear(self) -> bool:
        """No engine holds a task container or a network of swarmlet's (a stack's
        removal has finished on every node, not only in the store)."""
        for node in self.nodes.values():
            engine = self.engine(node.name)
            if engine.containers(all=True, filters={"label": LABEL_TASK_ID}):
                return False
            if engine.networks(filters={"label": LABEL_OVERLAY_ID}):
                return False
        return True

    def container(self, task: dict) -> dict:
        engine = self.engine(self.nodes[task["node_id"]].name)
        (found,) = engine.containers(filters={"label": f"{LABEL_TASK_ID}={task['id']}"})
        return engine.inspect_container(found["Id"])

    def profile_nodes(self, directory: Path) -> list[subprocess.Popen]:
        directory.mkdir(parents=True, exist_ok=True)
        recorders = []
        for row in self.local.status():
            if row.get("pid"):
                recorders.append(subprocess.Popen(
                    ["py-spy", "record", "--threads", "--full-filenames", "--format", "raw", "--rate", "100",
                     "--nonblocking", "--pid", str(row["pid"]), "--output", str(directory / f"{row['name']}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # py-spy attaches before the deploy begins (not a synchronisation of the system measured)
        return recorders

    def keep_evidence(self, service: str) -> None:
        """A deploy that did not converge: its tasks' states and every node's log, kept."""
        kept = Path(tempfile.mkdtemp(prefix="swe-bench-failed-"))
        tasks = [t for t in self.api.call("GET", "/v1/tasks") if t["service_name"] == service]
        (kept / "tasks.json").write_text(json.dumps(tasks, indent=1))
        for row in self.local.status():
            log = Path(row["data_dir"]) / "node.log"
            if log.exists():
                (kept / f"{row['name']}.log").write_bytes(log.read_bytes())
        print(f"the deploy did not converge; tasks by state: {task_reasons(tasks)}; tasks and node logs kept in {kept}")

    def down(self) -> None:
        if self.local.state_path.exists():
            swarmlet("local", "down", "--dir", str(self.directory))


def task_reasons(tasks: list[dict]) -> dict[str, int]:
    """How many tasks are in each state (desired state), and why."""
    return dict(collections.Counter(f"{t['state']} (desired {t['desired_state']}): {t.get('err') or t.get('message') or ''}"
                                    for t in tasks))


def started_at(inspected: dict) -> float:
    stamp = inspected["State"]["StartedAt"]  # RFC 3339 with nanoseconds
    head, _, rest = stamp.partition(".")
    fraction = rest.rstrip("Z")[:6]
    moment = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp() + float(f"0.{fraction or 0}")


def kills(bench: Bench, count: int) -> list[tuple[float, float, float]]:
    (client,) = [t for t in bench.running("app_client") if bench.nodes[t["node_id"]].name == "manager-1"]
    pid = bench.container(client)["State"]["Pid"]
    (vip,) = next(s for s in bench.api.call("GET", "/v1/services") if s["name"] == "app_web")["virtual_ips"]
    stop = bench.directory.parent / "probe.stop"
    config = {"duration": 3600, "timeout": 0.5, "stop_file": str(stop), "dns": [[EMBEDDED_RESOLVER, "tasks.web"]],
              "http": [[vip["addr"], 8080]]}
    probe = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, str(PROBE), json.dumps(config)],
                             stdout=subprocess.PIPE, text=True)
    lines: list[dict] = []
    reader = threading.Thread(target=lambda: [lines.append(json.loads(x)) for x in probe.stdout if x.strip()],
                              daemon=True)
    reader.start()
    results = []
    try:
        for _ in range(count):
            webs = bench.wait(lambda: (lambda w: w if len(w) == 2 else None)(bench.running("app_web")), 60, "2 webs")
            victim = webs[0]
            address = victim["network_addresses"]["app_front"]
            inspected = bench.container(victim)
            killed_at = time.time()
            bench.engine(bench.nodes[victim["node_id"]].name).kill(inspected["Id"])
            (new,) = bench.wait(lambda: (lambda n: n if len(n) == 1 else None)(
                [t for t in bench.running("app_web") if t["id"] not in {w["id"] for w in webs}]), 60, "a replacement")
            new_container = bench.container(new)
            hostname = new_container["Config"]["Hostname"]
            bench.wait(lambda: any(x.get("body") == hostname for x in list(lines)), 30, "the new task reached")
            seen = [x for x in list(lines) if x["t0"] >= killed_at]
            dns = next(x["t"] for x in seen if "dns" in x and address not in x.get("answers", [address]))
            failed = [x["t"] for x in seen if "http" in x and "error" in x]
            vip_gone = (max(failed) if failed else killed_at)
            reached = next(x["t"] for x in seen if x.get("body") == hostname)
            results.append((dns - killed_at, vip_gone - killed_at, reached - started_at(new_container)))
    finally:
        stop.touch()
        probe.wait(timeout=30)
    return results


# The deploy's phases, in the order a task goes through them (task state events).
PHASES = ("pending", "assigned", "accepted", "preparing", "ready", "starting", "running")
# Polled this rarely while a deploy runs: the figure comes from the tasks' own
# timestamps, and polling GET /v1/tasks every 20 ms (as before) took CPU from the very
# leader and agents being measured, on 2 cores.
DEPLOY_POLL_S = 0.5


def task_timeline(bench: Bench, since: str) -> dict[str, dict[str, float]]:
    """Task ID -> state -> when the store first recorded it (the event's time)."""
    timeline: dict[str, dict[str, float]] = {}
    answer = bench.api.call("GET", f"/v1/events?since={since}&type=task&limit=100000")
    for event in answer["events"]:
        if event["action"] == "state":
            timeline.setdefault(event["id"], {}).setdefault(event["attributes"]["to"], event["time"])
    return timeline


def phase_rows(timeline: dict[str, dict[str, float]], began: float) -> list[list]:
    """When the first and the last task reached each phase, from the deploy's start."""
    rows = []
    for phase in PHASES:
        moments = sorted(t[phase] - began for t in timeline.values() if phase in t)
        if moments:
            rows.append([phase, len(moments), f"{moments[0]:.2f}", f"{median(moments):.2f}", f"{moments[-1]:.2f}"])
    return rows


def run_containers(bench: Bench, replicas: int, network: bool, threads_per_engine: int = 1) -> float:
    """The engines' own figure: ``replicas`` containers of the same image and command
    spread over the five engines, ``threads_per_engine`` threads per engine, each
    container created and started as `docker run -d` does; with ``network``, each on a
    bridge network of its engine at a fixed address, as swarmlet attaches a task to its
    overlay, the networks made first (one thread per engine) and timed with the rest."""
    names = [n.name for n in bench.nodes.values()]
    per_engine = {name: replicas // len(names) + (1 if i < replicas % len(names) else 0) for i, name in enumerate(names)}
    made: dict[str, list[str]] = {name: [] for name in names}
    nets: dict[str, str] = {}

    def make_network(name: str) -> None:
        import docker.types

        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.251.0.0/24")])
        nets[name] = bench.engine(name).create_network("swe-bench-net", driver="bridge", ipam=ipam,
                                                         labels={"swe.bench": "1"})["Id"]

    def run_on(name: str, share: range) -> None:
        engine = bench.engine(name)
        for i in share:
            extra = {}
            if network:
                extra["networking_config"] = engine.create_networking_config(
                    {"swe-bench-net": engine.create_endpoint_config(ipv4_address=f"10.251.0.{10 + i}")})
                extra["host_config"] = engine.create_host_config(network_mode="swe-bench-net")
            container = engine.create_container(IMAGE, ["sleep", "100000"], labels={"swe.bench": "1"}, **extra)
            engine.start(container["Id"])
            made[name].append(container["Id"])

    started = time.monotonic()
    if network:  # timed too: swarmlet's figure includes making the stack's network on every node
        makers = [threading.Thread(target=make_network, args=(name,)) for name in names]
        for thread in makers:
            thread.start()
        for thread in makers:
            thread.join()
    threads = [threading.Thread(target=run_on, args=(name, range(k, per_engine[name], threads_per_engine)))
               for name in names for k in range(threads_per_engine)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    for name, ids in made.items():
        engine = bench.engine(name)
        for container_id in ids:
            engine.remove_container(container_id, force=True)
        if name in nets:
            engine.remove_network(nets[name])
    return took


def cpu_seconds_by_kind() -> dict[str, float]:
    """CPU time (user + system, with that of reaped children: nft, runc, ...) of every
    process on the machine, by kind."""
    ticks = os.sysconf("SC_CLK_TCK")
    kinds: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        used = sum(int(v) for v in fields[11:15]) / ticks  # utime stime cutime cstime
        if "swarmlet" in command and " agent" in command:
            kind = "swarmlet managers" if "manager" in command else "swarmlet workers"
        elif "containerd-shim" in command:
            kind = "containerd-shim"
        elif command.startswith(("dockerd", "/usr/sbin/dockerd", "/usr/bin/dockerd")):
            kind = "dockerd"
        elif "containerd" in command:
            kind = "containerd"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0.0) + used
    return kinds


def cpu_used(before: dict[str, float]) -> dict[str, float]:
    after = cpu_seconds_by_kind()
    return {kind: after.get(kind, 0.0) - before.get(kind, 0.0) for kind in after}


def deploy_vs_engines(bench: Bench, replicas: int, profile: Path | None = None
                      ) -> tuple[dict[str, float], dict[str, dict], list[list]]:
    """(seconds, CPU seconds by process kind, the deploy's phases) of swarmlet's deploy
    and of the engines' own runs of the same containers. With ``profile``, py-spy records
    every node process during swarmlet's deploy, one raw stack file per node there
    (split them with benchmarks/profile_split.py)."""
    # Each figure starts from engines with nothing of the last one left: a stack's
    # removal ends in the store before it ends on the nodes (containers stopped out of
    # their grace period, removed; networks removed), and the engines' own runs below
    # remove theirs before they return.
    bench.wait(bench.engines_clear, 120, "the engines cleared of the last stack", poll=DEPLOY_POLL_S)
    head = bench.api.call("GET", "/v1/events?limit=0")["cursor"]
    cpu = {}
    recorders = bench.profile_nodes(profile) if profile else []
    before = cpu_seconds_by_kind()
    began = time.time()
    bench.deploy("fifty", SLEEPERS.format(replicas=replicas))
    try:
        running = bench.wait(lambda: (lambda r: r if len(r) == replicas else None)(bench.running("fifty_sleeper")),
                             300, f"{replicas} running", poll=DEPLOY_POLL_S)
    except SystemExit:
        bench.keep_evidence("fifty_sleeper")
        raise
    for recorder in recorders:  # py-spy writes its stacks on SIGINT
        recorder.send_signal(signal.SIGINT)
    for recorder in recorders:
        recorder.wait(60)
    timeline = task_timeline(bench, head)
    others = [t for t in bench.api.call("GET", "/v1/tasks") if t["service_name"] == "fifty_sleeper"
              and t["state"] != "running"]
    if others:  # tasks replaced during the deploy: the figure is not the deploy's alone
        print(f"{len(others)} task(s) of the deploy did not run:", task_reasons(others))
    # the last task's own "running" report (the agent's clock; one machine, one clock)
    times = {"swarmlet": max(t["timestamp"] for t in running) - began}
    cpu["swarmlet"] = cpu_used(before)
    bench.api.call("DELETE", "/v1/stacks/fifty")
    bench.wait(lambda: not [t for t in bench.api.call("GET", "/v1/tasks") if t["service_name"] == "fifty_sleeper"],
               300, "the stack gone", poll=DEPLOY_POLL_S)
    bench.wait(bench.engines_clear, 120, "the engines cleared of the stack", poll=DEPLOY_POLL_S)
    for name, network, threads in (("plain", False, 1), ("networked", True, 1), ("networked, 10 threads", True, 10)):
        before = cpu_seconds_by_kind()
        times[name] = run_containers(bench, replicas, network=network, threads_per_engine=threads)
        cpu[name] = cpu_used(before)
    return times, cpu, phase_rows(timeline, began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--deploys", type=int, default=1, help="deploy runs (each against both engine figures)")
    parser.add_argument("--name-prefix", default="swe")
    parser.add_argument("--dir")
    parser.add_argument("--profile", type=Path, help="py-spy every node during swarmlet's deploy; stacks go here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swe-bench-", dir=args.dir) as directory:
        bench = Bench(Path(directory))
        try:
            print(f"load average before: {load_average()}")
            bench.up(args.name_prefix)
            bench.deploy("app", APP)
            bench.wait(lambda: len(bench.running("app_web")) == 2 and len(bench.running("app_client")) == 5, 120,
                       "the app")
            results = kills(bench, args.kills) if args.kills else []
            rows = []
            for label, column in (("kill -> out of DNS (tasks.web)", 0), ("kill -> last failed request via VIP", 1),
                                  ("new task started -> first answer via VIP", 2)):
                samples = [r[column] for r in results]
                if not samples:
                    continue
                rows.append([label, len(samples), f"{median(samples) * 1000:.0f}",
                             f"{percentile(samples, 99) * 1000:.0f}", f"{max(samples) * 1000:.0f}"])
            print(table(["", "n", "p50 ms", "p99 ms", "max ms"], rows, title="Following task state"))
            bench.api.call("DELETE", "/v1/stacks/app")
            bench.wait(lambda: not bench.running("app_web") and not bench.running("app_client"), 120, "app gone")
            for run in range(args.deploys):
                times, cpu, phases = deploy_vs_engines(bench, args.replicas, args.profile)
                mine = times["swarmlet"]
                kinds = sorted({kind for used in cpu.values() for kind in used})
                rows = [[label, f"{times[key]:.2f}", f"{mine / times[key]:.2f}x" if key != "swarmlet" else "",
                         *[f"{cpu[key].get(kind, 0.0):.1f}" for kind in kinds]]
                        for key, label in (("swarmlet", f"stack deploy, {args.replicas} replicas, until the last runs"),
                                           ("plain", f"{args.replicas} docker run -d over the 5 engines"),
                                           ("networked", "the same, each on a bridge network at a fixed address"),
                                           ("networked, 10 threads", "the same, 10 threads per engine"))]
                print(table(["", "seconds", "swarmlet / this", *[f"CPU s: {k}" for k in kinds]], rows,
                            title=f"Deploy against the engines (run {run + 1}, load average {load_average()})"))
                print(table(["phase", "tasks", "first s", "median s", "last s"], phases,
                            title="When the tasks reached each phase (store events, from the deploy's start)"))
            print(f"load average after: {load_average()}")
        finally:
            bench.down()


if __name__ == "__main__":
    main()
