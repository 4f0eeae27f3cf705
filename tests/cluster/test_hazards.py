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
from swarmlet.node.config import DataDir

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


def write_snapshot_ending_before(raft_dir: Path, cluster_key: str, first_kept: str, members: list[str]) -> int:
    """Leave ``raft_dir`` as a manager killed right after writing a snapshot, before
    compacting its journal, leaves it: a dump file of the state just before the journal
    entry that writes ``first_kept``, beside the whole journal. Returns its last index."""
    from swarmlet.store.raft import AtRestSealers, SnapshotJob
    from swarmlet.store.recovery import journal_transaction, read_journal, read_snapshot_file
    from swarmlet.store.state import StoreState

    sealers = AtRestSealers(cluster_key)
    state, after = StoreState(), 0
    if (raft_dir / "raft.snapshot").exists():
        data = read_snapshot_file(raft_dir / "raft.snapshot", sealers)
        state, after = StoreState.from_snapshot(data["state"]), data["last"][1]
    journal = read_journal(raft_dir / "raft.journal")
    position = next(p for p, (command, _, _) in enumerate(journal)
                    if (txn := journal_transaction(command, sealers)) and any(op.get("id") == first_kept
                                                                             for op in txn["ops"]))
    for command, index, _ in journal[:position]:
        if index > after and command[0] == 0:  # pysyncobj's regular entries: the store's
            state.apply(sealers.open_entry(pickle.loads(command[1:])[1][0]))
    last, previous = journal[position - 1], journal[position - 2]
    job = SnapshotJob()
    job.run({"state": state.picture(), "last": list(last), "previous": list(previous), "cluster": members},
            sealers, str(raft_dir / "raft.snapshot"))
    assert job.error is None
    return last[1]


def test_a_manager_killed_between_its_snapshot_and_its_compaction_keeps_what_it_acknowledged(make_cluster):
    """How a crash around a snapshot lost acknowledged writes (pysyncobj emptied the
    journal at start-up unless it began with the snapshot's entries;
    tests/store/test_snapshot_durability.py): writes committed by the leader and one
    follower while the third manager lags; the follower is killed between writing a
    snapshot from before them and compacting its journal, then the leader is killed.
    The follower and the lagging manager elect a leader: it must still have them."""
    cluster = make_cluster(managers=3)
    leader = cluster.wait_for_leader()
    follower, lagging = [n for n in MANAGERS if n != leader]
    cluster.write_config("before")
    wait_until(lambda: all("before" in cluster.config_names(n) for n in MANAGERS), 15, "every manager to have it")
    cluster.kill(lagging, "STOP")
    try:
        acked = [f"acked-{i}" for i in range(10)]
        for name in acked:
            cluster.write_config(name, via=leader)  # committed by the leader and the follower
        cluster.kill(follower, "KILL")
        directory = DataDir(Path(cluster.node(follower)["data_dir"]))
        config = directory.load()
        write_snapshot_ending_before(directory.raft_dir, directory.read_cluster_key(), acked[0], config.raft_members)
        cluster.kill(leader, "KILL")
    finally:
        cluster.kill(lagging, "CONT")
    cluster.start(follower)
    survivor = cluster.wait_for_leader(timeout=30, among=[follower, lagging], via=lagging)
    cluster.write_config("after", via=survivor)
    assert set(acked) <= cluster.config_names(survivor), "acknowledged writes lost"
    cluster.start(leader)
    wait_until(lambda: set(acked) | {"after"} <= cluster.config_names(leader), 30, "the old leader to catch up")
