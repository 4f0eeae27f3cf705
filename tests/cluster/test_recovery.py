"""Quorum loss and its remedies on a real cluster: 2 of 3 managers killed for good,
`init --force-new-cluster` on the third, new managers joining; a backup taken online
and restored onto a fresh data dir."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from swarmlet.cli.client import ApiError
from swarmlet.cli.stack import deploy_body
from swarmlet.compose import load_stack
from swarmlet.node.config import DataDir

from .conftest import swarmlet, wait_until

pytestmark = pytest.mark.cluster
IDENTITY_FILES = ["node.json", "node.kek", "cluster.key", "certs"]


def services(client) -> dict[str, int]:
    return {s["name"]: s["replicas"] for s in client.call("GET", "/v1/services")}


def test_force_new_cluster_after_losing_two_of_three_managers_then_restore_a_backup(make_cluster, tmp_path):
    cluster = make_cluster(managers=3, workers=1)
    api = cluster.client(timeout=20)
    compose = tmp_path / "stack.yml"
    compose.write_text(textwrap.dedent("""
        services:
          sleeper:
            image: busybox
            command: ["sleep", "600"]
            deploy:
              replicas: 2
              placement:
                constraints: ["node.role == worker"]
    """))
    api.call("POST", "/v1/stacks/keep", deploy_body(load_stack([compose]).stack, False))
    wait_until(lambda: api.call("GET", "/v1/services/keep_sleeper")["running"] == 2, 30, "2 replicas running")
    cluster.write_config("before-backup")
    backup = tmp_path / "cluster.backup"
    cluster.cli("backup", str(backup))
    assert backup.stat().st_mode & 0o077 == 0
    assert b"before-backup" not in backup.read_bytes()  # sealed under the cluster key
    cluster.write_config("after-backup")
    tasks_before = {t["id"] for t in api.call("GET", "/v1/tasks?service=keep_sleeper")
                    if t["desired_state"] == "running"}

    # A copy of manager-1's identity, without its store: the "fresh data dir".
    manager_1 = Path(cluster.node("manager-1")["data_dir"])
    fresh = cluster.directory / "restored-manager"
    fresh.mkdir(mode=0o700)
    for name in IDENTITY_FILES:
        (shutil.copytree if (manager_1 / name).is_dir() else shutil.copy2)(manager_1 / name, fresh / name)

    cluster.kill("manager-2", "KILL")
    cluster.kill("manager-3", "KILL")
    with pytest.raises(ApiError, match="no quorum"):
        cluster.client("manager-1", timeout=20).call("POST", "/v1/configs", {"name": "lost", "data": "eA=="})

    out = swarmlet("init", "--force-new-cluster", "--data-dir", str(manager_1), "--detach").stdout
    assert "New cluster from this manager's state" in out
    survivor = cluster.client("manager-1", timeout=20)
    wait_until(lambda: survivor.call("POST", "/v1/configs", {"name": "after-recovery", "data": "eA=="}), 20,
               "writes back on the survivor")
    status = survivor.call("GET", "/v1/cluster/status")
    assert [m["address"] for m in status["managers"]] == [DataDir(manager_1).load().raft_address]
    assert services(survivor) == {"keep_sleeper": 2}
    assert {"before-backup", "after-backup", "after-recovery"} <= {c["name"] for c in survivor.call("GET", "/v1/configs")}
    wait_until(lambda: {t["id"] for t in survivor.call("GET", "/v1/tasks?service=keep_sleeper")
                        if t["desired_state"] == "running" and t["state"] == "running"} == tasks_before, 20,
               "the same two tasks running")

    # Two new managers join the new cluster and receive its whole state.
    new_managers = [cluster.local.add_node("manager", ["--runtime", "process"]).name for _ in range(2)]
    wait_until(lambda: len(survivor.call("GET", "/v1/cluster/status")["managers"]) == 3
               and all(m["reachable"] for m in survivor.call("GET", "/v1/cluster/status")["managers"]), 30,
               "three reachable managers")
    for name in new_managers:
        wait_until(lambda: "after-recovery" in cluster.config_names(name), 20, f"the state on {name}")
        assert services(cluster.client(name)) == {"keep_sleeper": 2}
    cluster.write_config("with-new-managers", via=new_managers[0])

    # Restore the backup onto the fresh data dir (manager-1's address: stop it first).
    refused = swarmlet("restore", str(backup), "--data-dir", str(manager_1), check=False)
    assert refused.returncode != 0 and "is running" in refused.stderr
    cluster.kill("manager-1", "KILL")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x93not a backup")
    refused = swarmlet("restore", str(garbage), "--data-dir", str(fresh), check=False)
    assert refused.returncode != 0 and "not a backup of this cluster" in refused.stderr
    assert not (fresh / "raft").exists()  # nothing changed
    for name in new_managers:
        cluster.kill(name, "KILL")
    out = swarmlet("restore", str(backup), "--data-dir", str(fresh)).stdout
    assert "Restored the backup" in out
    swarmlet("agent", "--data-dir", str(fresh), "--detach")
    restored = cluster.client("manager-1", timeout=20)
    wait_until(lambda: restored.call("POST", "/v1/configs", {"name": "on-restored", "data": "eA=="}), 20,
               "writes on the restored manager")
    assert services(restored) == {"keep_sleeper": 2}
    names = {c["name"] for c in restored.call("GET", "/v1/configs")}
    assert "before-backup" in names and "after-backup" not in names
