"""`swarmlet local up --isolated`: nodes that are hosts. Every node in its own network
namespace with its own Docker engine, on a LAN bridge in a namespace of its own, a
client namespace playing the outside world; nothing routes out.

Most tests share the session's 3 managers + 2 workers (``isolated_cluster``, docker
runtime) and leave it as they found it. `local down` and the undoing of a crashed
`up` are checked on small clusters of their own. Needs root and Docker (fails in CI
without them)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from swarmlet.cli.stack import deploy_body
from swarmlet.compose import load_stack
from swarmlet.local.cluster import LocalCluster
from swarmlet.local.isolated import NETNS_DIR, Record, check_name_prefix, IsolationError, preflight
from swarmlet.runtime.base import LABEL_TASK_ID

from ..conftest import docker_unavailable
from .conftest import (FAST_SETTINGS, ISOLATED_NAME_PREFIX, ISOLATED_UP_TIMEOUT, IsolatedTestCluster,
                       isolated_leftovers, isolated_unavailable, swarmlet, wait_until)

pytestmark = [pytest.mark.cluster, pytest.mark.docker]

NODES = ["manager-1", "manager-2", "manager-3", "worker-1", "worker-2"]
OUTSIDE = "203.0.113.1"  # TEST-NET-3: an address no namespace of the cluster may reach
SLEEPER = '["sleep", "600"]'


@pytest.fixture(scope="module")
def cluster(isolated_cluster):
    return isolated_cluster


@pytest.fixture
def isolated_ok(docker_client, docker_test_image):
    reason = isolated_unavailable()
    if reason:
        docker_unavailable(reason)


def netns_inode(pid: int) -> int:
    link = os.readlink(f"/proc/{pid}/ns/net")
    return int(link[link.index("[") + 1:-1])


def deploy(cluster, name: str, compose: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yml"
    path.write_text(textwrap.dedent(compose))
    cluster.client(timeout=20).call("POST", f"/v1/stacks/{name}", deploy_body(load_stack([path]).stack, False))


def running_tasks(api, stack: str, count: int) -> list[dict]:
    def check():
        tasks = [t for t in api.call("GET", "/v1/tasks") if t["service_name"].startswith(f"{stack}_")
                 and t["desired_state"] == "running"]
        return tasks if len(tasks) == count and all(t["state"] == "running" for t in tasks) else None
    return wait_until(check, 60, f"{count} running tasks of stack {stack}")


# -- the shared cluster -------------------------------------------------------------------------------------

def test_every_node_runs_in_its_own_namespace_with_its_own_engine(cluster):
    rows = cluster.status()
    assert [r["name"] for r in rows] == NODES
    lan = cluster.record.lan_network
    sockets = set()
    for row in rows:
        assert row["alive"], row
        assert row["address"] in {str(a) for a in lan.hosts()}, row
        # The node's process lives in the namespace status names, and uses its own engine.
        assert netns_inode(row["pid"]) == os.stat(NETNS_DIR / row["netns"]).st_ino, row
        environ = Path(f"/proc/{row['pid']}/environ").read_bytes().split(b"\0")
        assert f"DOCKER_HOST={row['docker_host']}".encode() in environ
        socket_path = row["docker_host"].removeprefix("unix://")
        assert len(socket_path.encode()) < 108 and Path(socket_path).is_socket()
        sockets.add(socket_path)
        # Its engine runs inside the same namespace, with the LAN address as its DNS.
        engine = cluster.record.engine(row["name"])
        assert netns_inode(engine.pid) == os.stat(NETNS_DIR / row["netns"]).st_ino
        assert engine.dns == row["address"]
    assert len(sockets) == len(rows)
    managers = [f"{r['address']}:2377" for r in rows if r["role"] == "manager"]
    table = swarmlet("local", "status", *cluster.args).stdout
    assert all(row["netns"] in table for row in rows)
    env = swarmlet("local", "env", *cluster.args).stdout
    assert f"export SWARMLET_HOST={','.join(managers)}" in env


def test_a_container_of_one_engine_is_not_seen_by_another(cluster, docker_client):
    one, other = cluster.engine("worker-1"), cluster.engine("worker-2")
    created = one.create_container("swarmlet-test/busybox:1", ["sleep", "60"], labels={"swarmlet.test": "isolated"})
    try:
        one.start(created["Id"])
        assert created["Id"] in {c["Id"] for c in one.containers()}
        assert created["Id"] not in {c["Id"] for c in other.containers(all=True)}
        assert created["Id"] not in {c["Id"] for c in docker_client.api.containers(all=True)}  # nor this machine's
        # `local exec NODE` points the docker CLI at the node's engine.
        listed = swarmlet("local", "exec", "worker-1", *cluster.args, "--", "docker", "ps", "-q", "--no-trunc").stdout
        assert created["Id"] in listed.split()
        listed = swarmlet("local", "exec", "worker-2", *cluster.args, "--", "docker", "ps", "-q", "--no-trunc").stdout
        assert created["Id"] not in listed.split()
        # Its default bridge is the node's own docker0 (198.19.<n>.0/24), inside the node's namespace.
        address = one.inspect_container(created["Id"])["NetworkSettings"]["IPAddress"]
        assert address.startswith("198.19.4."), address
    finally:
        one.remove_container(created["Id"], force=True)
        one.close()
        other.close()


def test_a_stack_puts_its_containers_on_the_engines_of_its_tasks_nodes(cluster, tmp_path):
    (tmp_path / "greeting.txt").write_text("hello from the store\n")
    deploy(cluster, "spread", f"""
        services:
          everywhere:
            image: swarmlet-test/busybox:1
            command: {SLEEPER}
            init: true
            configs: [{{source: greeting, target: /greeting}}]
            networks: [back]
            deploy: {{mode: global}}
        configs:
          greeting: {{file: ./greeting.txt}}
        networks:
          back: {{}}
        """, tmp_path)
    api = cluster.client()
    try:
        tasks = running_tasks(api, "spread", len(NODES))
        names = {n["id"]: n["name"] for n in cluster.status()}
        assert sorted(names[t["node_id"]] for t in tasks) == NODES
        for node in NODES:
            engine = cluster.engine(node)
            try:
                containers = engine.containers(filters={"label": LABEL_TASK_ID})
                on_engine = {c["Labels"][LABEL_TASK_ID] for c in containers}
                # The config reached the container through this node's own engine.
                execution = engine.exec_create(containers[0]["Id"], ["cat", "/greeting"])
                assert engine.exec_start(execution["Id"]) == b"hello from the store\n", node
            finally:
                engine.close()
            assert on_engine == {t["id"] for t in tasks if names[t["node_id"]] == node}, node
    finally:
        api.call("DELETE", "/v1/stacks/spread")
    wait_until(lambda: not [t for t in api.call("GET", "/v1/tasks")
                            if t["service_name"].startswith("spread_") and t["state"] == "running"], 30,
               "the stack's tasks to stop")


def test_nodes_reach_each_other_over_the_lan_and_nothing_outside(cluster):
    rows = {r["name"]: r for r in cluster.status()}
    for node in ("worker-1", "manager-3"):
        for manager in ("manager-1", "manager-2"):
            assert cluster.connect(node, rows[manager]["address"], 2377) == "ok"
        assert "unreachable" in cluster.connect(node, OUTSIDE, 80)
    for netns in cluster.record.netns:
        routes = subprocess.run(["ip", "-n", netns, "route", "show", "default"], capture_output=True, text=True,
                                check=True).stdout
        assert routes.strip() == "", f"{netns} has a default route: {routes}"


def test_the_client_namespace_reaches_the_nodes_and_nothing_outside(cluster):
    rows = cluster.status()
    assert cluster.connect(None, rows[0]["address"], 2377) == "ok"
    assert "unreachable" in cluster.connect(None, OUTSIDE, 80)
    own = cluster.run_in(None, "ip", "-4", "-o", "addr", "show", "lan0").stdout
    assert f"{cluster.record.client_address}/24" in own
    # The CLI's way in: `local exec --client`.
    out = swarmlet("local", "exec", "--client", *cluster.args, "--", "ip", "-4", "-o", "addr", "show", "lan0").stdout
    assert cluster.record.client_address in out


def test_a_partitioned_worker_is_marked_down_and_heal_brings_it_back(cluster):
    worker = cluster.node("worker-2")
    api = cluster.client()
    state = lambda: api.call("GET", f"/v1/nodes/{worker['id']}")["status"]["state"]  # noqa: E731
    wait_until(lambda: state() == "ready", 20, "worker-2 ready before the partition")
    cluster.partition("worker-2")
    try:
        wait_until(lambda: state() == "down", 20, "worker-2 marked down")
        assert cluster.connect("worker-2", cluster.node("manager-1")["address"], 2377, timeout=1) != "ok"
    finally:
        cluster.heal("worker-2")
    wait_until(lambda: state() == "ready", 20, "worker-2 ready again")
    assert cluster.connect("worker-2", cluster.node("manager-1")["address"], 2377) == "ok"


def test_kill_and_start_of_the_leader(cluster):
    leader = cluster.wait_for_leader()
    cluster.kill(leader)
    others = [m for m in ("manager-1", "manager-2", "manager-3") if m != leader]
    cluster.wait_for_leader(timeout=20, among=others, via=others[0])
    cluster.write_config(f"after-kill-{time.monotonic_ns()}", via=others[0])
    cluster.start(leader)
    row = cluster.node(leader)
    assert row["alive"] and netns_inode(row["pid"]) == os.stat(NETNS_DIR / row["netns"]).st_ino

    def all_reachable():
        status = cluster.cluster_status(others[0])
        return all(m["reachable"] for m in status["managers"]) and len(status["managers"]) == 3
    wait_until(all_reachable, 30, f"{leader} back in the Raft group")
    api = cluster.client()
    wait_until(lambda: api.call("GET", f"/v1/nodes/{row['id']}")["status"]["state"] == "ready", 20,
               f"{leader} ready")


# -- clusters of their own ----------------------------------------------------------------------------------

def test_down_removes_everything_even_with_containers_running(isolated_ok, cluster, tmp_path):
    """Beside the session's cluster, which it leaves untouched."""
    shared = cluster
    cluster = IsolatedTestCluster(tmp_path / "cluster", runtime="docker")
    try:
        cluster.up(1, 0, FAST_SETTINGS)
        record = cluster.record
        assert record.lan != shared.record.lan and record.name != shared.record.name
        engine = cluster.engine("manager-1")
        engine.start(engine.create_container("swarmlet-test/busybox:1", ["sleep", "600"])["Id"])
        engine.close()
        left = isolated_leftovers(record, cluster.directory)
        # The checker sees what a running cluster holds (it must, to vouch for `down`).
        for kind in ("namespace", "link", "process", "mount", "directory"):
            assert any(item.startswith(kind) for item in left), (kind, left)
    finally:
        cluster.down()
    assert isolated_leftovers(record, cluster.directory) == []
    again = swarmlet("local", "down", *cluster.args)
    assert "nothing to remove" in again.stdout
    assert all(row["alive"] for row in shared.status()) and isolated_leftovers(shared.record, shared.directory)
    assert shared.connect(None, shared.node("manager-1")["address"], 2377) == "ok"


def test_down_undoes_an_up_killed_half_way(isolated_ok, tmp_path):
    directory = tmp_path / "cluster"
    up = subprocess.Popen([sys.executable, "-m", "swarmlet.cli.main", "local", "up", "--isolated", "--name-prefix",
                           ISOLATED_NAME_PREFIX, "--managers", "1", "--workers", "1", "--dir", str(directory),
                           *FAST_SETTINGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    local = LocalCluster(directory)
    try:
        # Killed once the first manager runs (engines up, images loaded), before the worker joins.
        first = directory / "manager-1" / "ready"
        wait_until(lambda: first.exists() or up.poll() is not None, ISOLATED_UP_TIMEOUT, "the first manager")
        assert up.poll() is None, "`up` ended before it could be killed half way"
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
        record = Record.load(directory / "isolated.json")
        assert len(record.engines) == 2 and len(record.netns) == 4
        assert any(item.startswith("process") for item in isolated_leftovers(record, directory))
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        swarmlet("local", "down", "--dir", str(directory))
    assert isolated_leftovers(record, directory) == []
    assert not local.state_path.exists()


def test_process_runtime_nodes_are_isolated_too(isolated_ok, tmp_path):
    cluster = IsolatedTestCluster(tmp_path / "cluster", runtime="process")
    try:
        cluster.up(1, 1, FAST_SETTINGS)
        rows = cluster.status()
        assert [r["docker_host"] for r in rows] == [None, None] and not cluster.record.engines
        for row in rows:
            assert netns_inode(row["pid"]) == os.stat(NETNS_DIR / row["netns"]).st_ino
        deploy(cluster, "proc", f"""
            services:
              sleeper: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 2}}}}
            """, tmp_path)
        tasks = running_tasks(cluster.client(), "proc", 2)
        netns_of = {r["id"]: r["netns"] for r in rows}
        for task in tasks:
            record = json.loads(next(cluster.directory.glob(f"*/runtime/*/tasks/{task['id']}/task.json")).read_text())
            # The task's process runs inside its node's namespace.
            assert netns_inode(record["pid"]) == os.stat(NETNS_DIR / netns_of[task["node_id"]]).st_ino
        record = cluster.record
    finally:
        cluster.down()
    assert isolated_leftovers(record, cluster.directory) == []


# -- refusals (pure) -------------------------------------------------------------------------------------------

def test_isolated_without_root_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(IsolationError, match="needs root"):
        preflight("docker")


@pytest.mark.parametrize("prefix", ["", "toolong", "Ab", "a-b"])
def test_a_bad_name_prefix_is_refused(prefix):
    with pytest.raises(IsolationError, match="name prefix"):
        check_name_prefix(prefix)


def test_hollow_workers_are_refused_with_isolated(tmp_path):
    result = swarmlet("local", "up", "--isolated", "--hollow-workers", "2", "--dir", str(tmp_path / "c"), check=False)
    assert result.returncode != 0 and "--hollow-workers cannot be combined with --isolated" in result.stderr
    assert not (tmp_path / "c").exists()


def test_names_fit_the_kernels_limits_and_addresses_run_out_clearly():
    record = Record("abcd", "12345", lan="198.18.7.0/24")
    assert len(record.name) <= 15  # the root namespace's veth: IFNAMSIZ - 1
    engine_root = record.run_dir / "worker-50"
    # containerd's socket is the longest path under an exec root.
    assert len(f"{engine_root}/containerd/containerd.sock.ttrpc".encode()) < 108
    assert record.host_address == "198.18.7.1" and record.client_address == "198.18.7.2"
    assert record.node_address(0) == "198.18.7.11"
    assert record.node_address(243) == "198.18.7.254"
    with pytest.raises(IsolationError, match="no address left for node 245"):
        record.node_address(244)
