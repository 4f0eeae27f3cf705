"""The Raft library's hazards (../shared/notes/pysyncobj.md), each provoked for real."""
from __future__ import annotations

import pickle
import socket
import ssl
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from swarmlet.ca import NodeCertStore, client_context
from swarmlet.cli.client import ApiError, ClusterUnreachable

from .conftest import wait_until
from .test_security import CreatesFile

pytestmark = pytest.mark.cluster
MANAGERS = ["manager-1", "manager-2", "manager-3"]


def local_status(cluster, name: str) -> dict:
    """What ``name`` itself believes, without asking the leader."""
    return cluster.client(name, timeout=5).call("GET", "/v1/cluster/status?local=1")


def test_a_partitioned_leader_fences_itself_and_the_majority_carries_on(make_cluster):
    cluster = make_cluster(managers=3)
    leader = cluster.wait_for_leader()
    leader_id = cluster.node(leader)["id"]
    cluster.write_config("before-partition")
    cluster.local.partition(leader)
    try:
        # The deposed leader stops acting as leader once it cannot reach a majority.
        wait_until(lambda: local_status(cluster, leader)["leader"] != leader_id, 5,
                   "the partitioned leader to step down")
        with pytest.raises(ApiError) as refused:
            cluster.client(leader, timeout=15).call("POST", "/v1/configs", {"name": "minority", "data": "eA=="})
        assert "no quorum" in str(refused.value) or "timed out" in str(refused.value)
        majority = [n for n in MANAGERS if n != leader]
        new_leader = cluster.wait_for_leader(timeout=10, among=majority, via=majority[0])
        cluster.write_config("majority-side", via=new_leader)
    finally:
        cluster.local.heal()
    wait_until(lambda: "majority-side" in cluster.config_names(leader), 15, "the old leader to catch up after healing")
    assert "minority" not in cluster.config_names(leader)
    statuses = [local_status(cluster, n) for n in MANAGERS]
    assert sum(s["leader"] == s["answered_by"] for s in statuses) == 1


def test_a_manager_restarted_right_after_a_crash_binds_its_ports_and_keeps_its_state(make_cluster):
    # Snapshot every 20 entries, so crashes land around snapshot writes.
    cluster = make_cluster(managers=3, extra=["--snapshot-interval", "20"])
    for round_number in range(3):
        victim = MANAGERS[round_number]
        for i in range(30):
            cluster.write_config(f"r{round_number}-{i}")
        pid = cluster.node(victim)["pid"]
        assert not list(Path(f"/proc/{pid}/task").glob("*/children")) or all(
            not p.read_text().strip() for p in Path(f"/proc/{pid}/task").glob("*/children")), "a forked child"
        cluster.kill(victim, "KILL")
        cluster.start(victim)  # at once: no waiting for sockets to be released
        wait_until(lambda: cluster.node(victim)["alive"], 10, f"{victim} running again")
        expected = {f"r{r}-{i}" for r in range(round_number + 1) for i in range(30)}
        wait_until(lambda: expected <= cluster.config_names(victim), 20, f"{victim} serving its state")
    snapshots = [Path(cluster.node(n)["data_dir"]) / "raft" / "raft.snapshot" for n in MANAGERS]
    assert any(p.exists() for p in snapshots), "no snapshot was ever written"


def test_an_ex_leader_with_a_divergent_tail_catches_up(make_cluster):
    """The livelock scenario: the leader appends entries nobody else has, dies, a
    later leader overwrites those indices, and the ex-leader restarts behind it."""
    cluster = make_cluster(managers=3)
    leader = cluster.wait_for_leader()
    followers = [n for n in MANAGERS if n != leader]
    cluster.write_config("common")
    for follower in followers:
        cluster.kill(follower, "STOP")
    # Writes the frozen followers never see: they stay uncommitted in the leader's log.
    stranded = [threading.Thread(target=try_write, args=(cluster, leader, f"stranded-{i}"), daemon=True)
                for i in range(40)]
    for thread in stranded:
        thread.start()
    for thread in stranded:
        thread.join(30)
    cluster.kill(leader, "KILL")
    for follower in followers:
        cluster.kill(follower, "CONT")
    new_leader = cluster.wait_for_leader(timeout=15, among=followers)
    for i in range(60):
        cluster.write_config(f"later-{i}", via=new_leader)
    cluster.start(leader)
    expected = {"common"} | {f"later-{i}" for i in range(60)}
    wait_until(lambda: expected <= cluster.config_names(leader), 30, "the ex-leader to catch up")
    wait_until(lambda: all(m["lag"] == 0 for m in cluster.cluster_status()["managers"]), 15, "no lag anywhere")
    states = {frozenset(cluster.config_names(n)) for n in MANAGERS}
    assert len(states) == 1
    assert not any(name.startswith("stranded-") for name in next(iter(states)))


def try_write(cluster, via: str, name: str) -> None:
    try:
        cluster.client(via, timeout=3).call("POST", "/v1/configs", {"name": name, "data": "eA=="})
    except (ApiError, ClusterUnreachable):
        pass


def test_a_worker_certificate_cannot_speak_raft(make_cluster, tmp_path):
    cluster = make_cluster(managers=1, workers=1)
    marker = tmp_path / "pwned"
    ca, cert, key = NodeCertStore(Path(cluster.node("worker-1")["data_dir"]) / "certs").load()
    manager = cluster.node("manager-1")
    raft_port = cluster.local.load()[1] + 1
    payload = zlib.compress(pickle.dumps(CreatesFile(str(marker))))
    context = client_context(ca, cert, key)  # a valid certificate of this cluster, but a worker's
    with context.wrap_socket(socket.create_connection((manager["address"], raft_port), timeout=5)) as tls:
        try:
            tls.sendall(struct.pack("!I", len(payload)) + payload)
            tls.recv(100)
        except (ssl.SSLError, OSError):
            pass
    assert not marker.exists()
    log = (Path(manager["data_dir"]) / "node.log").read_text()
    assert "a worker certificate cannot join Raft" in log
    cluster.write_config("manager-still-fine")


def test_a_silent_worker_is_marked_down_within_seconds(make_cluster):
    cluster = make_cluster(managers=1, workers=1, extra=["--heartbeat-period", "1.0"])
    worker_id = cluster.node("worker-1")["id"]
    node = lambda: cluster.client().call("GET", f"/v1/nodes/{worker_id}")  # noqa: E731
    assert node()["status"]["state"] == "ready"
    cluster.kill("worker-1", "STOP")
    frozen_at = time.monotonic()
    wait_until(lambda: node()["status"]["state"] == "down", 10, "the worker to be marked down")
    detected_after = time.monotonic() - frozen_at
    assert detected_after < 6.0, f"detection took {detected_after:.1f}s"
    assert "heartbeat" in node()["status"]["message"]
    cluster.kill("worker-1", "CONT")
    wait_until(lambda: node()["status"]["state"] == "ready", 10, "the worker back to ready")
