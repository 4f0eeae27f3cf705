"""`swarmlet chaos run` against the isolated cluster (the session's ``isolated_cluster``:
3 managers, 2 docker workers, every node its own network namespace and engine): a
minute of worker faults with a service probed through the routing mesh from the
client namespace, a latency fault (the delaying proxy) measured on the API and Raft
round trips, and a loss fault inside a node's namespace. The tests leave the cluster
as they found it (stack removed, every fault healed, nothing of theirs left)."""
from __future__ import annotations

import base64
import json
import signal
import statistics
import subprocess
import sys
import time

import pytest

from swarmlet.chaos.faults import IsolatedTarget
from swarmlet.chaos.schedule import FaultKind
from swarmlet.chaos.workload import CHAOS_LABEL

from .conftest import wait_until
from .test_isolated import deploy
from .test_overlay import HTTPD  # httpd serving the task's hostname, stopping at once on SIGTERM

pytestmark = [pytest.mark.cluster, pytest.mark.docker]

STACK = "chaosweb"
SERVICE = f"{STACK}_web"
PORT = 18090  # test_overlay's stack publishes 18080 on the same cluster
REPLICAS = 2
WEB = f"""
    services:
      web:
        image: swarmlet-test/busybox:1
        command: {HTTPD}
        ports: ["{PORT}:8080"]
        deploy:
          replicas: {REPLICAS}
          placement: {{constraints: ["node.role == worker"]}}
"""
LATENCY_MS = 150.0


def running(api) -> int:
    return api.call("GET", f"/v1/services/{SERVICE}")["running"]


@pytest.fixture(scope="module")
def web(isolated_cluster, tmp_path_factory):
    api = isolated_cluster.client(timeout=20)
    deploy(isolated_cluster, STACK, WEB, tmp_path_factory.mktemp("chaosweb"))
    try:
        wait_until(lambda: running(api) == REPLICAS, 90, f"{REPLICAS} web replicas running")
        yield isolated_cluster
    finally:
        api.call("DELETE", f"/v1/stacks/{STACK}")


def answers_everywhere(cluster) -> bool:
    """A connection accepted (by a web task, through the mesh) at every node's address,
    from the client namespace."""
    nodes = cluster.local.load()[0]
    return all(cluster.connect(None, n.address, PORT) == "ok" for n in nodes)


def assert_healed(cluster) -> None:
    target = IsolatedTarget(cluster.directory)
    assert target.leftovers() == []
    assert all(target.alive().values()), target.alive()
    wait_until(lambda: len({cluster.client(n, timeout=5).call("GET", "/v1/cluster/status?local=1")["leader"]
                            for n in ("manager-1", "manager-2", "manager-3")}) == 1, 30,
               "one leader every manager names")


def test_a_minute_of_worker_faults_with_the_service_probed_through_the_mesh(web, tmp_path):
    cluster = web
    report = tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "swarmlet.cli.main", "chaos", "run", "--dir", str(cluster.directory), "--format", "json",
         "--duration", "60s", "--faults", "kill,freeze,partition", "--targets", "worker",
         # 10 s apart: a worker's tasks are rescheduled and started before the next fault, under load too
         "--interval", "10", "--fault-duration", "2.5", "--seed", "12", "--service", SERVICE,
         "--report", str(report)], capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["target"] == "isolated"
    faults = record["faults"]
    assert len(faults) == 6 and all(f["role"] == "worker" for f in faults), faults
    assert {f["kind"] for f in faults} == {"kill", "freeze", "partition"}, faults
    # replicas back to full after every worker fault, and some fault really took replicas away
    assert all(f["time_to_full_s"] is not None for f in faults), faults
    assert record["replicas"]["not_back"] == 0 and max(record["replicas"]["time_to_full_s"]) > 0, faults
    writes = record["writes"]
    assert writes["checked"] and writes["acked"] > 200 and writes["lost"] == [] and writes["stale_reads"] == []
    assert record["duplicates"] == [] and record["passed"]
    # HTTP through the mesh, every node's address in turn, from the client namespace
    http = record["http"]
    nodes = cluster.local.load()[0]
    assert http["urls"] == sorted(f"http://{n.address}:{PORT}/" for n in nodes)
    assert http["requests"] > 200 and http["errors"] < http["requests"], http
    assert [(row["kind"], row["target"]) for row in http["by_fault"]] == [(f["kind"], f["target"]) for f in faults]
    assert all("error_rate" in row for row in http["by_fault"])
    # A partitioned worker's own address cannot answer: the probe saw its fault.
    partitions = [row for row in http["by_fault"] if row["kind"] == "partition"]
    assert partitions and all(row["errors"] > 0 for row in partitions), http["by_fault"]
    html = report.read_text()
    assert "HTTP" in html and "<script src=" not in html
    assert_healed(cluster)
    api = cluster.client(timeout=10)
    wait_until(lambda: running(api) == REPLICAS, 60, "full replicas after the run")
    wait_until(lambda: answers_everywhere(cluster), 30, "the published port answering at every node")
    assert not [c for c in api.call("GET", "/v1/configs") if CHAOS_LABEL in c["labels"]]


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def round_trips(client, rounds: int = 8) -> tuple[float, float]:
    """Median milliseconds of an API call answered by the manager itself (its own view),
    and of a write (committed through Raft), each on a new connection."""
    status, writes = [], []
    for _ in range(rounds):
        start = time.monotonic()
        client.call("GET", "/v1/cluster/status?local=1")
        status.append(time.monotonic() - start)
        start = time.monotonic()
        client.call("POST", "/v1/configs", {"name": f"swch-latency-{time.time_ns()}", "labels": {CHAOS_LABEL: "latency"},
                                            "data": base64.b64encode(b"x").decode()})
        writes.append(time.monotonic() - start)
    return _median_ms(status), _median_ms(writes)


def test_a_latency_fault_raises_the_api_and_raft_round_trips_and_heals(isolated_cluster):
    cluster = isolated_cluster
    target = IsolatedTarget(cluster.directory, latency_ms=LATENCY_MS)
    leader = next(n for n in target.nodes() if n.id == cluster.cluster_status()["leader"])
    client = target.client([leader.api], timeout=10)
    try:
        status_before, write_before = round_trips(client)
        target.inject(FaultKind.LATENCY, leader)
        try:
            assert any("delaying proxy" in item for item in target.leftovers())
            # The leader's own answer waits once per exchange; a write also waits for the
            # followers' acknowledgements of what the leader sent them.
            status_during, write_during = wait_until(lambda: _within_leadership(client, leader), 30,
                                                     "round trips measured with the leader still leading")
        finally:
            target.undo(FaultKind.LATENCY, leader)
        assert target.leftovers() == []
        status_after, write_after = round_trips(client)
        figures = (status_before, status_during, status_after, write_before, write_during, write_after)
        assert status_during >= status_before + LATENCY_MS * 0.8, figures
        assert write_during >= write_before + LATENCY_MS * 1.6, figures
        assert status_after < status_before + LATENCY_MS * 0.5, figures
        assert write_after < write_before + LATENCY_MS * 0.5, figures
        assert_healed(cluster)
    finally:
        client.call("DELETE", f"/v1/configs?label={CHAOS_LABEL}=latency")


def _within_leadership(client, leader):
    """The round trips, if the node led throughout (cutting its connections once may
    cost it the leadership; the figures are then not the leader's)."""
    try:
        before = client.call("GET", "/v1/cluster/status?local=1")
        figures = round_trips(client)
        after = client.call("GET", "/v1/cluster/status?local=1")
    except Exception:  # a write refused by a deposed leader: measure again
        return None
    led = before["leader"] == after["leader"] == leader.id and before["term"] == after["term"]
    return figures if led else None


def test_a_loss_fault_drops_on_the_nodes_own_link_and_heals(isolated_cluster):
    cluster = isolated_cluster
    target = IsolatedTarget(cluster.directory, loss_percent=100)  # all of it: a certain, quick check
    leader_id = cluster.cluster_status()["leader"]
    follower = next(n for n in target.nodes() if n.role == "manager" and n.id != leader_id)
    port = cluster.local.load()[1]
    assert cluster.connect(None, follower.address, port) == "ok"
    target.inject(FaultKind.LOSS, follower)
    try:
        assert cluster.connect(None, follower.address, port, timeout=1.0) != "ok"
        assert target.leftovers() == [f"nft table swarmlet_chaos_loss in {cluster.local.find(follower.name).netns}"]
    finally:
        target.undo(FaultKind.LOSS, follower)
    assert target.leftovers() == []
    assert cluster.connect(None, follower.address, port) == "ok"
    assert_healed(cluster)


def test_ctrl_c_mid_latency_fault_removes_the_rules_and_the_proxy(isolated_cluster):
    cluster = isolated_cluster
    target = IsolatedTarget(cluster.directory)
    process = subprocess.Popen([sys.executable, "-m", "swarmlet.cli.main", "chaos", "run", "--dir",
                                str(cluster.directory), "--format", "json", "--duration", "120s", "--faults", "latency",
                                "--targets", "manager", "--interval", "31", "--fault-duration", "30"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: any("delaying proxy" in item for item in target.leftovers()), 60, "a delaying proxy running")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    record = json.loads(out)
    assert record["interrupted"] and [f["kind"] for f in record["faults"]] == ["latency"]
    assert record["healed_on_exit"] and record["healed_on_exit"][0].startswith("latency:"), record
    assert record["writes"]["lost"] == [] and record["writes"]["checked"]
    assert_healed(cluster)
