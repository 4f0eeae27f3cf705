"""Chaos faults on the isolated cluster (the session's ``isolated_cluster``: 3 managers,
2 docker workers, every node its own network namespace and engine): a latency fault
(the delaying proxy) measured on the API and Raft round trips, a loss fault inside a
node's namespace, and Ctrl-C in the middle of a latency fault. The minute of worker
faults with a service probed through the routing mesh is in test_overlay.py, on that
module's stack (a stack of its own, removed before test_overlay's was deployed, left
the next stack's network unable to start on the workers: see the test there). The
tests leave the cluster as they found it (every fault healed, nothing of theirs left)."""
from __future__ import annotations

import base64
import statistics
import subprocess
import sys
import time

import pytest

from swarmlet.chaos.faults import IsolatedTarget
from swarmlet.chaos.schedule import FaultKind
from swarmlet.chaos.workload import CHAOS_LABEL

from .conftest import interrupt_when, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.docker]

LATENCY_MS = 150.0


def assert_healed(cluster) -> None:
    target = IsolatedTarget(cluster.directory)
    assert target.leftovers() == []
    assert all(target.alive().values()), target.alive()
    wait_until(lambda: len({cluster.client(n, timeout=5).call("GET", "/v1/cluster/status?local=1")["leader"]
                            for n in ("manager-1", "manager-2", "manager-3")}) == 1, 30,
               "one leader every manager names")


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


def test_a_latency_fault_raises_the_nodes_round_trips_and_heals(isolated_cluster):
    cluster = isolated_cluster
    target = IsolatedTarget(cluster.directory, latency_ms=LATENCY_MS)
    leader = next(n for n in target.nodes() if n.id == cluster.cluster_status()["leader"])
    client = target.client([leader.api], timeout=10)
    try:
        status_before, write_before = round_trips(client)
        target.inject(FaultKind.LATENCY, leader)
        try:
            assert any("delaying proxy" in item for item in target.leftovers())
            # Its own answer waits once per exchange. A write through it waits for its
            # answer too, and for its appends to the followers while it leads, or its
            # forward to the leader once it follows (cutting its connections once may
            # cost it the leadership).
            status_during, write_during = wait_until(lambda: round_trips(client), 30, "round trips through the node")
        finally:
            target.undo(FaultKind.LATENCY, leader)
        assert target.leftovers() == []
        status_after, write_after = wait_until(lambda: round_trips(client), 30, "round trips after the heal")
        figures = (status_before, status_during, status_after, write_before, write_during, write_after)
        assert status_during >= status_before + LATENCY_MS * 0.8, figures
        assert write_during >= write_before + LATENCY_MS * 1.6, figures
        assert status_after < status_before + LATENCY_MS * 0.5, figures
        assert write_after < write_before + LATENCY_MS * 0.5, figures
        assert_healed(cluster)
    finally:
        client.call("DELETE", f"/v1/configs?label={CHAOS_LABEL}=latency")


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
    _, record, _ = interrupt_when(process, lambda: any("delaying proxy" in item for item in target.leftovers()), 60,
                                  "a delaying proxy running")
    assert record["interrupted"] and [f["kind"] for f in record["faults"]] == ["latency"]
    assert record["healed_on_exit"] and record["healed_on_exit"][0].startswith("latency:"), record
    assert record["writes"]["lost"] == [] and record["writes"]["checked"]
    assert_healed(cluster)
