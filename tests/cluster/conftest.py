"""Real clusters for the tests: every node its own `swarmlet` process on its own
loopback address, formed with `swarmlet local up` (the real init/join path), torn
down with `swarmlet local down`.

Each cluster gets a fresh address range (127.0.N.2, …) and a fresh directory, so a
test never meets a previous test's processes or ports.
"""
from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from swarmlet.cli.client import ApiError, Client, ClusterUnreachable
from swarmlet.local.cluster import LocalCluster
from swarmlet.local.isolated import NETNS_DIR, IsolationError, Record, cgroup_processes, preflight

from ..conftest import docker_unavailable

_ranges = itertools.count(20 + (os.getpid() % 50) * 4)
FAST_SETTINGS = ["--heartbeat-period", "0.5"]


SECRET_STACK = """
    services:
      app:
        image: swarmlet-test/busybox:1
        command: ["sleep", "600"]
        secrets: [db_password]
    secrets:
      db_password:
        file: ./db_password.txt
"""


def write_secret_stack(work: Path, value: bytes) -> Path:
    """A stack whose one service mounts a secret holding ``value`` (from a file beside it)."""
    work.mkdir()
    (work / "db_password.txt").write_bytes(value)
    (work / "stack.yml").write_text(textwrap.dedent(SECRET_STACK))
    return work / "stack.yml"


def interrupt_when(process: subprocess.Popen, predicate, timeout: float, what: str) -> tuple[int, dict, str]:
    """Once ``predicate`` holds, Ctrl-C a running `swarmlet chaos run --format json`
    (``process``, text pipes) and return (exit code, its record, its stderr); the process
    never outlives the call."""
    try:
        wait_until(predicate, timeout, what)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    return process.returncode, json.loads(out), err


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail with ``what``."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (ApiError, ClusterUnreachable, OSError) as err:
            last_error = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def swarmlet(*args: str, env: dict | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"swarmlet {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


class TestCluster:
    def __init__(self, directory: Path, first_address: str, runtime: str = "process"):
        self.local = LocalCluster(directory)
        self.first_address = first_address
        self.directory = directory
        self.runtime = runtime
        self.args = ["--dir", str(directory)]
        self.env: dict = {}

    def up(self, managers: int, workers: int, extra: list[str], hollow: int = 0) -> "TestCluster":
        swarmlet("local", "up", "--managers", str(managers), "--workers", str(workers), "--hollow-workers", str(hollow),
                 "--first-address", self.first_address, "--runtime", self.runtime, *extra, *self.args)
        self.env = self.local.env()
        return self

    # -- processes -----------------------------------------------------------------------------------
    def status(self) -> list[dict]:
        return json.loads(swarmlet("local", "status", "--format", "json", *self.args).stdout)

    def node(self, name: str) -> dict:
        return next(n for n in self.status() if n["name"] == name)

    def kill(self, name: str, signal: str = "KILL") -> None:
        swarmlet("local", "kill", name, "--signal", signal, *self.args)

    def start(self, name: str) -> None:
        swarmlet("local", "start", name, *self.args)

    def add_worker(self) -> str:
        """Join one more worker (same runtime); returns its name."""
        return self.local.add_node("worker", ["--runtime", self.runtime]).name

    def down(self) -> None:
        if self.local.state_path.exists():
            swarmlet("local", "down", *self.args, check=False)

    # -- the API ---------------------------------------------------------------------------------------
    def client(self, *names: str, timeout: float = 10.0) -> Client:
        """A client for the named managers (all managers when none is named)."""
        nodes = {n["name"]: n for n in self.status()}
        port = self.local.load()[1]
        hosts = [f"{nodes[n]['address']}:{port}" for n in names] if names else self.env["SWARMLET_HOST"].split(",")
        return Client(hosts, self.local.admin_dir, timeout=timeout)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return swarmlet(*args, env=self.env, check=check)

    def cluster_status(self, via: str | None = None) -> dict:
        return (self.client(via) if via else self.client()).call("GET", "/v1/cluster/status")

    def leader_name(self, via: str | None = None) -> str | None:
        status = self.cluster_status(via)
        by_id = {n["id"]: n["name"] for n in self.status()}
        return by_id.get(status["leader"])

    def wait_for_leader(self, timeout: float = 15.0, among: list[str] | None = None, via: str | None = None) -> str:
        def current():
            name = self.leader_name(via)
            return name if name and (among is None or name in among) else None
        return wait_until(current, timeout, "a leader")

    def write_config(self, name: str, data: bytes = b"x", via: str | None = None, timeout: float = 10.0) -> dict:
        client = self.client(via, timeout=timeout) if via else self.client(timeout=timeout)
        return client.call("POST", "/v1/configs", {"name": name, "data": base64.b64encode(data).decode()})

    def config_names(self, via: str) -> set[str]:
        return {c["name"] for c in self.client(via).call("GET", "/v1/configs")}


@contextlib.contextmanager
def docker_test_cluster(directory: Path, docker_client, managers: int, workers: int, extra: list[str]):
    """A cluster whose nodes run tasks as containers on this machine's engine; at the end
    it is torn down and every task container of its nodes removed (also on failure)."""
    from swarmlet.runtime.base import LABEL_NODE_ID, LABEL_TASK_ID

    cluster = TestCluster(directory, f"127.0.{next(_ranges) % 250}.2", runtime="docker")
    node_ids: set[str] = set()
    try:
        cluster.up(managers, workers, extra)
        node_ids.update(n["id"] for n in cluster.status())
        cluster.node_ids = node_ids
        yield cluster
    finally:
        cluster.down()
        for container in docker_client.api.containers(all=True, filters={"label": LABEL_TASK_ID}):
            if container["Labels"].get(LABEL_NODE_ID) in node_ids:
                docker_client.api.remove_container(container["Id"], force=True, v=True)


@pytest.fixture
def make_cluster(tmp_path):
    """``make_cluster(managers=3, workers=2, extra=[...])`` starts a local cluster."""
    started: list[TestCluster] = []

    def make(managers: int = 3, workers: int = 0, extra: list[str] | None = None,
             runtime: str = "process", hollow: int = 0) -> TestCluster:
        """``runtime="docker"``: tasks run as containers (use with the docker fixtures).
        ``hollow``: that many hollow workers besides (swarmlet/node/hollow.py)."""
        third = next(_ranges) % 250
        cluster = TestCluster(tmp_path / f"cluster{len(started)}", f"127.0.{third}.2", runtime)
        started.append(cluster)  # torn down even if `up` fails half-way
        return cluster.up(managers, workers, FAST_SETTINGS + list(extra or []), hollow)

    yield make
    for cluster in started:
        cluster.down()


# -- isolated clusters (`swarmlet local up --isolated`) -------------------------------------------------
# The tests' namespaces, links and exec roots start with this (names also carry a random cluster ID).
ISOLATED_NAME_PREFIX = "swi"
ISOLATED_UP_TIMEOUT = 300.0


def isolated_unavailable() -> str | None:
    """Why an isolated cluster (docker runtime) cannot run here, or None: `up`'s own check."""
    try:
        preflight("docker")
    except IsolationError as err:
        return str(err)
    return None


class IsolatedTestCluster(TestCluster):
    """A cluster of `swarmlet local up --isolated`: every node in its own network
    namespace (and with the docker runtime its own engine); a client namespace plays
    the outside world."""

    def __init__(self, directory: Path, runtime: str = "docker"):
        super().__init__(directory, "", runtime)

    def up(self, managers: int, workers: int, extra: list[str], hollow: int = 0) -> "IsolatedTestCluster":
        swarmlet("local", "up", "--isolated", "--name-prefix", ISOLATED_NAME_PREFIX, "--managers", str(managers),
                 "--workers", str(workers), "--runtime", self.runtime, *extra, *self.args, timeout=ISOLATED_UP_TIMEOUT)
        self.env = self.local.env()
        self.record = self.local.isolation().record
        return self

    def add_worker(self) -> str:
        return self.local.add_node("worker", ["--runtime", self.runtime], runtime=self.runtime).name

    # The API's addresses and the node names read in this process (`status()` still goes
    # through the CLI): polls then cost an API call, not a `swarmlet local status` each.
    def client(self, *names: str, timeout: float = 10.0) -> Client:
        port = self.local.load()[1]
        hosts = [f"{self.local.find(n).address}:{port}" for n in names] if names else self.env["SWARMLET_HOST"].split(",")
        return Client(hosts, self.local.admin_dir, timeout=timeout)

    def leader_name(self, via: str | None = None) -> str | None:
        status = self.cluster_status(via)
        return next((n.name for n in self.local.load()[0] if n.id == status["leader"]), None)

    def partition(self, name: str) -> None:
        swarmlet("local", "partition", name, *self.args)

    def heal(self, name: str | None = None) -> None:
        swarmlet("local", "heal", *([name] if name else []), *self.args)

    def run_in(self, node: str | None, *command: str, check: bool = True,
               timeout: float = 30) -> subprocess.CompletedProcess:
        """``command`` inside a node's namespace (DOCKER_HOST set to its engine), or the
        client namespace's when ``node`` is None."""
        argv, env = self.local.exec_command(node, list(command))
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{command} in {node or 'the client namespace'} failed ({result.returncode}):\n"
                                 f"{result.stderr}{result.stdout}")
        return result

    def connect(self, node: str | None, address: str, port: int, timeout: float = 2.0) -> str:
        """Open a TCP connection from inside a namespace: "ok" or the error's text."""
        probe = ("import socket, sys\n"
                 "try:\n"
                 f"    socket.create_connection(({address!r}, {port}), timeout={timeout}).close(); print('ok')\n"
                 "except OSError as err:\n"
                 "    print(err)\n")
        return self.run_in(node, sys.executable, "-c", probe).stdout.strip()

    def engine(self, node: str):
        """A docker API client for the node's own engine."""
        import docker

        return docker.APIClient(base_url=self.local.find(node).docker_host, version="auto", timeout=30)


def isolated_leftovers(record: Record, directory: Path) -> list[str]:
    """What an isolated cluster left on this machine: namespaces, links, processes,
    mounts, cgroups, directories. Empty once `local down` has done its work."""
    left = [f"namespace {n}" for n in record.netns if (NETNS_DIR / n).exists()]
    left += [f"link {name}" for name in record.links if Path(f"/sys/class/net/{name}").exists()]
    marks = (record.name, str(directory))
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in cmdline for mark in marks) and "pytest" not in cmdline:
            left.append(f"process {entry}: {cmdline.strip()}")
    left += [f"process {pid} in the engines' cgroups" for pid in cgroup_processes([e.cgroup_parent for e in record.engines])]
    with open("/proc/self/mounts") as mounts:
        left += [f"mount {line.split()[1]}" for line in mounts if any(mark in line for mark in marks)]
    left += [f"cgroup {e.cgroup_parent}" for e in record.engines
             if any(Path(c, e.cgroup_parent.lstrip("/")).exists() for c in Path("/sys/fs/cgroup").iterdir())]
    left += [f"directory {d}" for d in (record.run_dir, directory, *map(Path, record.dirs)) if Path(d).exists()]
    return left


@pytest.fixture(scope="session")
def isolated_cluster(tmp_path_factory, docker_client, docker_test_image):
    """3 managers and 2 workers of `swarmlet local up --isolated` (docker runtime, the
    test image in every engine), started once for the whole session and shared by
    every test that asks for it: tests leave the cluster as they found it (stacks
    removed, partitions healed, nodes running)."""
    reason = isolated_unavailable()
    if reason:
        docker_unavailable(reason)
    cluster = IsolatedTestCluster(tmp_path_factory.mktemp("isolated") / "cluster", runtime="docker")
    try:
        yield cluster.up(3, 2, FAST_SETTINGS)
    finally:
        cluster.down()
