"""Deploying and removing one service of N replicas: swarmlet against the engine's own
limit and against Docker Swarm, side by side on the same machine and image.

Run: python benchmarks/deploy.py [--replicas 10,50,100] [--first-address 127.0.180.2]
                                 [--image swarmlet-test/busybox:1] [--no-swarm]

For each replica count, in this order:

- **swarmlet**: a local cluster of 3 managers + 2 workers with the Docker runtime
  (`swarmlet local up`, started once). Deploy: from `POST /v1/stacks/<name>` (what
  `swarmlet stack deploy` sends) until the API shows all N tasks running. Remove: from
  `DELETE /v1/stacks/<name>` (`swarmlet stack rm`) until the engine lists no container
  of the stack. Docker's events give where the deploy's time went: first container
  created, last created, last started.
- **engine limit**: the same containers (image, command, `init`, a bridge network
  created in the timed part, as the stack's default network is) created and started
  directly through the docker SDK from 8 threads; then stopped (SIGTERM, as swarmlet
  does) and removed from 8 threads.
- **swarm**: `docker swarm init --advertise-addr 127.0.0.1` (once), `docker stack deploy
  --resolve-image never` with the image's ID until `docker service ls` shows N/N;
  `docker stack rm` until no container of the stack is left. `docker swarm leave
  --force` at the end (only if this script made the swarm).

Everything this script creates is labelled `swarmlet.bench=1` or belongs to a stack
named `bench*`; all of it is removed at the end, even on error.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, table  # noqa: E402

import docker  # noqa: E402
import docker.errors  # noqa: E402

from swarmlet.cli.client import Client  # noqa: E402
from swarmlet.cli.stack import deploy_body  # noqa: E402
from swarmlet.compose import load_stack  # noqa: E402
from swarmlet.local.cluster import LocalCluster  # noqa: E402

BENCH_LABEL = "swarmlet.bench"
COMMAND = ["sleep", "600"]
STACK_LABEL = "com.docker.stack.namespace"
POLL = 0.1  # seconds between looks; the measurement's resolution
TARGET_RATIO = 1.15


def run(*args: str, timeout: float = 300, check: bool = True) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result.stdout


def swarmlet(*args: str) -> str:
    return run(sys.executable, "-m", "swarmlet.cli.main", *args)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def compose_file(directory: Path, name: str, image: str, replicas: int, version: str | None = None) -> Path:
    path = directory / f"{name}.yml"
    path.write_text((f'version: "{version}"\n' if version else "") + f"""services:
  web:
    image: {image}
    command: {COMMAND!r}
    init: true
    deploy:
      replicas: {replicas}
""".replace("'", '"'))
    return path


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (children included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def engine_pids() -> list[int]:
    return [int(pid) for name in ("dockerd", "containerd") for pid in run("pidof", name, check=False).split()]


def stack_containers(engine: docker.DockerClient, stack: str, running: bool = False) -> list[dict]:
    return engine.api.containers(all=not running, filters={"label": f"{STACK_LABEL}={stack}"})


class Swarmlet:
    def __init__(self, engine, directory: Path, first_address: str, image: str):
        self.engine = engine
        self.directory = directory
        self.image = image
        self.local = LocalCluster(directory / "cluster")
        swarmlet("local", "up", "--managers", "3", "--workers", "2", "--runtime", "docker",
                 "--first-address", first_address, "--dir", str(self.local.directory))
        env = self.local.env()
        self.client = Client(env["SWARMLET_HOST"].split(","), self.local.admin_dir, timeout=60)
        self.pids = [n["pid"] for n in self.local.status() if n["pid"]]

    def cpu_note(self, before: tuple[float, float], wall: float) -> str:
        nodes, engine = cpu_seconds(self.pids) - before[0], cpu_seconds(engine_pids()) - before[1]
        return f"CPU: swarmlet nodes {nodes:.1f}s, dockerd+containerd {engine:.1f}s in {wall:.1f}s"

    def cpu_now(self) -> tuple[float, float]:
        return cpu_seconds(self.pids), cpu_seconds(engine_pids())

    def all_running(self, stack: str, replicas: int) -> bool:
        tasks = self.client.call("GET", f"/v1/stacks/{stack}/tasks")
        active = [t for t in tasks if t["desired_state"] in ("ready", "running")]
        return len(active) == replicas and all(t["state"] == "running" for t in active)

    def deploy(self, replicas: int) -> tuple[float, str]:
        stack = f"bench{replicas}"
        body = deploy_body(load_stack([compose_file(self.directory, stack, self.image, replicas)]).stack)
        cpu = self.cpu_now()
        since = time.time()
        started = time.monotonic()
        self.client.call("POST", f"/v1/stacks/{stack}", body)
        wait_for(lambda: self.all_running(stack, replicas), 600, f"{replicas} swarmlet tasks running")
        elapsed = time.monotonic() - started
        return elapsed, f"{self._where_the_time_went(stack, since)}; {self.cpu_note(cpu, elapsed)}"

    def _where_the_time_went(self, stack: str, since: float) -> str:
        events = self.engine.events(since=since, until=time.time(), decode=True,
                                    filters={"type": "container", "label": f"{STACK_LABEL}={stack}",
                                             "event": ["create", "start"]})
        times: dict[str, list[float]] = {"create": [], "start": []}
        for event in events:
            times[event["Action"]].append(event["timeNano"] / 1e9 - since)
        if not times["create"] or not times["start"]:
            return "no container events"
        return (f"first create {min(times['create']):.2f}s, last create {max(times['create']):.2f}s, "
                f"first start {min(times['start']):.2f}s, last start {max(times['start']):.2f}s")

    def remove(self, replicas: int) -> tuple[float, str]:
        stack = f"bench{replicas}"
        cpu = self.cpu_now()
        started = time.monotonic()
        self.client.call("DELETE", f"/v1/stacks/{stack}")
        wait_for(lambda: not stack_containers(self.engine, stack), 600, "no swarmlet container left")
        elapsed = time.monotonic() - started
        return elapsed, self.cpu_note(cpu, elapsed)

    def down(self) -> None:
        if self.local.state_path.exists():
            run(sys.executable, "-m", "swarmlet.cli.main", "local", "down", "--dir", str(self.local.directory),
                check=False)


class EngineLimit:
    """The same containers through the SDK, 8 threads: what the engine can do here."""

    THREADS = 8

    def __init__(self, engine, image: str):
        self.engine = engine
        self.image = image
        self.ids: list[str] = []
        self.network = None

    def deploy(self, replicas: int) -> float:
        api = self.engine.api
        labels = {BENCH_LABEL: "1"}
        started = time.monotonic()
        self.network = api.create_network(f"bench-limit-{replicas}-{os.getpid()}", driver="bridge", labels=labels)["Id"]
        lock = threading.Lock()

        def one(index: int) -> None:
            created = api.create_container(
                self.image, command=COMMAND, labels=labels, name=f"bench-limit-{replicas}-{index}",
                host_config=api.create_host_config(init=True, network_mode=self.network))
            api.start(created["Id"])
            with lock:
                self.ids.append(created["Id"])

        with ThreadPoolExecutor(self.THREADS) as pool:
            list(pool.map(one, range(replicas)))
        return time.monotonic() - started

    def remove(self) -> float:
        api = self.engine.api
        started = time.monotonic()

        def one(container_id: str) -> None:
            api.stop(container_id, timeout=10)
            api.remove_container(container_id, v=True)

        with ThreadPoolExecutor(self.THREADS) as pool:
            list(pool.map(one, self.ids))
        elapsed = time.monotonic() - started
        self.ids = []
        self.cleanup()
        return elapsed

    def cleanup(self) -> None:
        for container in self.engine.api.containers(all=True, filters={"label": BENCH_LABEL}):
            self.engine.api.remove_container(container["Id"], force=True, v=True)
        for network in self.engine.api.networks(filters={"label": BENCH_LABEL}):
            try:
                self.engine.api.remove_network(network["Id"])
            except docker.errors.APIError as exc:  # e.g. the engine's stale "active endpoints"
                print(f"cannot remove network {network['Name']}: {exc.explanation or exc}", file=sys.stderr)


class Swarm:
    def __init__(self, engine, directory: Path, image: str):
        self.engine = engine
        self.directory = directory
        self.image_id = engine.images.get(image).id
        state = engine.info()["Swarm"]["LocalNodeState"]
        if state != "inactive":
            raise RuntimeError(f"this engine is already in a swarm ({state}); not touching it")
        run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
        self.made = True

    def service_ready(self, stack: str, replicas: int) -> bool:
        out = run("docker", "service", "ls", "--filter", f"label={STACK_LABEL}={stack}", "--format", "{{.Replicas}}")
        return out.split() == [f"{replicas}/{replicas}"]

    def deploy(self, replicas: int) -> float:
        stack = f"benchswarm{replicas}"
        path = compose_file(self.directory, stack, self.image_id, replicas, version="3.8")
        started = time.monotonic()
        run("docker", "stack", "deploy", "--resolve-image", "never", "-c", str(path), stack)
        wait_for(lambda: self.service_ready(stack, replicas), 600, f"swarm service {replicas}/{replicas}")
        return time.monotonic() - started

    def remove(self, replicas: int) -> float:
        stack = f"benchswarm{replicas}"
        started = time.monotonic()
        run("docker", "stack", "rm", stack)
        wait_for(lambda: not stack_containers(self.engine, stack), 600, "no swarm container left")
        elapsed = time.monotonic() - started
        # The stack's network goes asynchronously; wait so the next round starts clean.
        wait_for(lambda: not self.engine.api.networks(filters={"label": f"{STACK_LABEL}={stack}"}), 60,
                 "the swarm stack's network removed")
        return elapsed

    def leave(self) -> None:
        run("docker", "swarm", "leave", "--force", check=False)


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="10,50,100")
    parser.add_argument("--first-address", default="127.0.180.2")
    parser.add_argument("--image", default="swarmlet-test/busybox:1")
    parser.add_argument("--no-swarm", action="store_true", help="skip Docker Swarm")
    args = parser.parse_args()
    counts = [int(n) for n in args.replicas.split(",")]

    engine = docker.from_env(version="auto", timeout=120)
    engine.images.get(args.image)
    print(f"engine {engine.version()['Version']}, image {args.image}, {os.cpu_count()} CPUs; "
          f"load average before: {load_average()}", flush=True)
    results: dict[int, dict[str, float | None]] = {n: {} for n in counts}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="swarmlet-bench-") as tmp:
        directory = Path(tmp)
        limit = EngineLimit(engine, args.image)
        cluster = swarm = None
        try:
            cluster = Swarmlet(engine, directory, args.first_address, args.image)
            print(f"swarmlet cluster up (3 managers + 2 workers); load average {load_average()}", flush=True)
            for n in counts:
                deploy_s, breakdown = cluster.deploy(n)
                results[n]["swarmlet deploy"] = deploy_s
                results[n]["swarmlet rm"], rm_note = cluster.remove(n)
                notes.append(f"swarmlet {n} deploy: {breakdown}")
                notes.append(f"swarmlet {n} rm: {rm_note}")
                print(f"swarmlet {n}: deploy {deploy_s:.2f}s ({breakdown}), rm {results[n]['swarmlet rm']:.2f}s; "
                      f"load {load_average()}", flush=True)
                engine_cpu = cpu_seconds(engine_pids())
                results[n]["limit deploy"] = limit.deploy(n)
                notes.append(f"engine limit {n} deploy: CPU dockerd+containerd "
                             f"{cpu_seconds(engine_pids()) - engine_cpu:.1f}s in {results[n]['limit deploy']:.1f}s")
                results[n]["limit rm"] = limit.remove()
                print(f"engine limit {n}: deploy {results[n]['limit deploy']:.2f}s, rm {results[n]['limit rm']:.2f}s; "
                      f"load {load_average()}", flush=True)
            cluster.down()
            cluster = None
            if not args.no_swarm:
                swarm = Swarm(engine, directory, args.image)
                for n in counts:
                    results[n]["swarm deploy"] = swarm.deploy(n)
                    results[n]["swarm rm"] = swarm.remove(n)
                    print(f"swarm {n}: deploy {results[n]['swarm deploy']:.2f}s, rm {results[n]['swarm rm']:.2f}s; "
                          f"load {load_average()}", flush=True)
        finally:
            if cluster is not None:
                cluster.down()
            if swarm is not None:
                swarm.leave()
            limit.cleanup()

    rows = []
    for n in counts:
        r = results[n]
        rows.append([n, fmt(r.get("swarmlet deploy")), fmt(r.get("limit deploy")), fmt(r.get("swarm deploy")),
                     ratio(r.get("swarmlet deploy"), r.get("limit deploy")),
                     fmt(r.get("swarmlet rm")), fmt(r.get("limit rm")), fmt(r.get("swarm rm")),
                     ratio(r.get("swarmlet rm"), r.get("limit rm"))])
    print()
    print(table(["replicas", "deploy swarmlet s", "engine limit s", "swarm s", "swarmlet/limit",
                 "rm swarmlet s", "engine limit s", "swarm s", "swarmlet/limit"], rows,
                title=f"One service, N replicas (target: swarmlet within {TARGET_RATIO}x of the engine's limit)"))
    print()
    for note in notes:
        print(note)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
