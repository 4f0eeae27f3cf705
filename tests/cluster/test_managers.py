"""The manager cluster as operators use it: election, replication, failover under
load, quorum loss, freezing. Real processes on loopback addresses, real TLS."""
from __future__ import annotations

import threading
import time

import pytest

from swarmlet.cli.client import ApiError, ClusterUnreachable

from .conftest import wait_until

pytestmark = pytest.mark.cluster


def test_three_managers_elect_one_leader_and_a_follower_write_is_visible_everywhere(make_cluster):
    cluster = make_cluster(managers=3)
    leader = cluster.wait_for_leader()
    statuses = [cluster.cluster_status(name) for name in ("manager-1", "manager-2", "manager-3")]
    assert len({s["leader"] for s in statuses}) == 1, statuses
    assert sum(m["leader"] for m in statuses[0]["managers"]) == 1
    assert {m["reachable"] for m in statuses[0]["managers"]} == {True}

    follower = next(n for n in ("manager-1", "manager-2", "manager-3") if n != leader)
    written = cluster.write_config("through-a-follower", b"hello", via=follower)
    assert written["id"] == "through-a-follower"
    for name in ("manager-1", "manager-2", "manager-3"):
        wait_until(lambda: "through-a-follower" in cluster.config_names(name), 5, f"the write on {name}")
        config = cluster.client(name).call("GET", "/v1/configs/through-a-follower")
        assert config["data"] == "aGVsbG8="  # base64 of b"hello"


class SteadyWriter:
    """Writes configs one after another through any manager, recording what was
    acknowledged."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.acked: list[str] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._counter = 0

    def _run(self):
        client = self.cluster.client(timeout=3)
        while not self._stop.is_set():
            name = f"w-{self._counter}"
            self._counter += 1
            try:
                client.call("POST", "/v1/configs", {"name": name, "data": "eA=="})
                self.acked.append(name)
            except (ApiError, ClusterUnreachable):
                self.failures += 1  # unknown outcome: not counted as acknowledged

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(30)


def test_kill_9_of_the_leader_under_writes_loses_nothing_acknowledged(make_cluster):
    cluster = make_cluster(managers=3)
    names = ["manager-1", "manager-2", "manager-3"]
    writer = SteadyWriter(cluster).start()
    try:
        for round_number in range(5):
            leader = cluster.wait_for_leader()
            before = len(writer.acked)
            wait_until(lambda: len(writer.acked) >= before + 50, 30, "50 more acknowledged writes")
            cluster.kill(leader, "KILL")
            acked_at_kill = len(writer.acked)
            survivors = [n for n in names if n != leader]
            new_leader = cluster.wait_for_leader(timeout=10, among=survivors)
            assert new_leader != leader
            wait_until(lambda: len(writer.acked) > acked_at_kill + 5, 15, "writes accepted by the new leader")
            cluster.start(leader)  # `swarmlet agent --data-dir …` on the killed manager
            wait_until(lambda: cluster.node(leader)["alive"], 15, f"{leader} restarted")
    finally:
        writer.stop()

    acked = set(writer.acked)
    assert len(acked) >= 200, f"only {len(acked)} writes were acknowledged"
    for name in names:  # the killed-and-restarted managers caught up and serve the same state
        wait_until(lambda: acked <= cluster.config_names(name), 30, f"every acknowledged write on {name}")
    states = [cluster.config_names(name) for name in names]
    assert states[0] == states[1] == states[2]


def test_quorum_loss_fails_writes_clearly_keeps_reads_and_recovers(make_cluster):
    cluster = make_cluster(managers=3)
    cluster.write_config("before-the-loss")
    cluster.kill("manager-2", "KILL")
    cluster.kill("manager-3", "KILL")

    started = time.monotonic()
    with pytest.raises(ApiError) as refused:
        cluster.client("manager-1", timeout=20).call("POST", "/v1/configs", {"name": "lost", "data": "eA=="})
    elapsed = time.monotonic() - started
    assert refused.value.status in (503, 504)
    assert "no quorum" in str(refused.value), str(refused.value)
    assert elapsed < 10, f"the write took {elapsed:.1f}s to fail (deadline 5 s)"

    # Reads still answer from the surviving manager.
    assert "before-the-loss" in cluster.config_names("manager-1")
    status = cluster.cluster_status("manager-1")
    assert status["leader"] is None
    assert [m["reachable"] for m in status["managers"] if m["id"] != cluster.node("manager-1")["id"]] == [False, False]

    cluster.start("manager-2")
    wait_until(lambda: cluster.write_config("after-recovery", via="manager-1"), 20, "writes to work again")
    assert "after-recovery" in cluster.config_names("manager-2")


def test_a_frozen_leader_is_replaced_and_steps_down_when_thawed(make_cluster):
    cluster = make_cluster(managers=3)
    names = ["manager-1", "manager-2", "manager-3"]
    leader = cluster.wait_for_leader()
    cluster.write_config("before-freeze")
    cluster.kill(leader, "STOP")
    survivors = [n for n in names if n != leader]
    new_leader = cluster.wait_for_leader(timeout=10, among=survivors)
    cluster.write_config("during-freeze", via=survivors[0])
    cluster.kill(leader, "CONT")

    def one_leader_everywhere():
        views = [cluster.cluster_status(n) for n in names]
        leaders = {v["leader"] for v in views}
        # the thawed manager answers from its own view too: it must agree
        local_views = [cluster.client(n).call("GET", "/v1/cluster/status?local=1") for n in names]
        claims = [v["answered_by"] for v in local_views if v["leader"] == v["answered_by"]]
        return len(leaders) == 1 and None not in leaders and len(claims) == 1
    wait_until(one_leader_everywhere, 15, "exactly one leader after SIGCONT")
    assert cluster.leader_name() == new_leader
    wait_until(lambda: len({frozenset(cluster.config_names(n)) for n in names}) == 1, 10, "the same state everywhere")
    assert {"before-freeze", "during-freeze"} <= cluster.config_names(leader)
