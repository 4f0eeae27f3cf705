"""Node operations through the CLI: status, update, promote/demote, certificate
renewal, leaving, and a CLI that keeps working while any manager is up."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from swarmlet.ca import NodeCertStore, identity_of

from .conftest import swarmlet, wait_until

pytestmark = pytest.mark.cluster


def test_local_status_and_cluster_status_json_have_the_documented_keys(make_cluster):
    cluster = make_cluster(managers=3, workers=2)
    rows = cluster.status()
    assert [r["name"] for r in rows] == ["manager-1", "manager-2", "manager-3", "worker-1", "worker-2"]
    for row in rows:
        assert {"name", "id", "role", "address", "pid", "data_dir", "alive"} <= set(row)
        assert row["alive"] is True and row["pid"] > 0 and len(row["id"]) == 25
    assert len({r["address"] for r in rows}) == 5  # one loopback address per node

    status = json.loads(cluster.cli("cluster", "status", "--format", "json").stdout)
    assert {"leader", "term", "commit_index", "managers"} <= set(status)
    manager_ids = {r["id"] for r in rows if r["role"] == "manager"}
    assert {m["id"] for m in status["managers"]} == manager_ids and status["leader"] in manager_ids
    for manager in status["managers"]:
        assert {"id", "address", "leader", "reachable", "lag"} <= set(manager)
        assert manager["reachable"] is True and manager["lag"] == 0

    nodes = json.loads(cluster.cli("node", "ls", "--format", "json").stdout)
    assert {n["id"] for n in nodes} == {r["id"] for r in rows}
    assert all(n["status"]["state"] == "ready" for n in nodes)
    table = cluster.cli("node", "ls").stdout
    assert "Leader" in table and "worker-2" in table


def test_node_update_changes_availability_and_labels_with_clear_errors(make_cluster):
    cluster = make_cluster(managers=1, workers=1)
    cluster.cli("node", "update", "worker-1", "--availability", "drain", "--label-add", "zone=a",
                "--label-add", "disk=ssd")
    node = json.loads(cluster.cli("node", "inspect", "worker-1").stdout)[0]
    assert node["spec"]["availability"] == "drain" and node["spec"]["labels"] == {"zone": "a", "disk": "ssd"}
    cluster.cli("node", "update", "worker-1", "--label-rm", "disk", "--availability", "active")
    node = json.loads(cluster.cli("node", "inspect", "worker-1").stdout)[0]
    assert node["spec"]["availability"] == "active" and node["spec"]["labels"] == {"zone": "a"}
    missing = cluster.cli("node", "update", "worker-1", "--label-rm", "nope", check=False)
    assert missing.returncode != 0 and "has no label 'nope'" in missing.stderr
    unknown = cluster.cli("node", "inspect", "no-such-node", check=False)
    assert unknown.returncode != 0 and "no such node" in unknown.stderr
    busy = cluster.cli("node", "rm", "worker-1", check=False)
    assert busy.returncode != 0 and "not down" in busy.stderr


def test_the_cli_keeps_working_while_any_manager_is_up(make_cluster):
    cluster = make_cluster(managers=3)
    first = cluster.env["SWARMLET_HOST"].split(",")[0]
    name = next(r["name"] for r in cluster.status() if first.startswith(r["address"] + ":"))
    cluster.kill(name, "KILL")
    listed = cluster.cli("node", "ls", "--format", "json")
    assert len(json.loads(listed.stdout)) == 3
    cluster.kill(next(n for n in ("manager-1", "manager-2", "manager-3") if n != name), "STOP")
    # Two of three managers down: reads still answer, from the one left.
    cluster.cli("config", "ls")


def test_promote_and_demote_move_a_node_in_and_out_of_raft(make_cluster):
    cluster = make_cluster(managers=1, workers=2)
    worker = cluster.node("worker-1")
    cluster.cli("node", "promote", worker["id"])
    wait_until(lambda: cluster.node("worker-1")["role"] == "manager" and cluster.node("worker-1")["alive"], 30,
               "worker-1 restarting as a manager")
    def managers_reachable():
        status = cluster.cluster_status("manager-1")
        return len(status["managers"]) == 2 and all(m["reachable"] and m["lag"] == 0 for m in status["managers"])
    wait_until(managers_reachable, 30, "two reachable managers")
    certificate = NodeCertStore(Path(worker["data_dir"]) / "certs").load()[1]
    assert identity_of(certificate).role == "manager"
    assert cluster.node("worker-1")["pid"] == worker["pid"]  # re-exec'd in place

    # The promoted node serves the API and replicates writes.
    cluster.write_config("via-promoted", via="worker-1")
    assert "via-promoted" in cluster.config_names("manager-1")

    cluster.cli("node", "demote", worker["id"])
    wait_until(lambda: cluster.node("worker-1")["role"] == "worker", 30, "worker-1 back to a worker")
    wait_until(lambda: len(cluster.cluster_status("manager-1")["managers"]) == 1, 15, "one manager left")
    wait_until(lambda: cluster.client().call("GET", f"/v1/nodes/{worker['id']}")["status"]["state"] == "ready", 15,
               "the demoted node ready as a worker")
    assert not (Path(worker["data_dir"]) / "raft").exists()
    last = cluster.cli("node", "demote", cluster.node("manager-1")["id"], check=False)
    assert last.returncode != 0 and "last manager" in last.stderr


def test_node_certificates_renew_themselves_before_expiry(make_cluster):
    cluster = make_cluster(managers=1, workers=1, extra=["--cert-expiry", "20s"])
    certs = NodeCertStore(Path(cluster.node("worker-1")["data_dir"]) / "certs")
    first = identity_of(certs.load()[1])
    assert (first.not_after - first.not_before).total_seconds() < 60
    renewed = wait_until(lambda: identity_of(certs.load()[1]).serial != first.serial and identity_of(certs.load()[1]),
                         30, "the worker's certificate to be renewed")
    assert renewed.not_after > first.not_after and renewed.node_id == first.node_id and renewed.role == "worker"
    # Renewed again and again, the node stays in the cluster past its first certificate's expiry.
    wait_until(lambda: identity_of(certs.load()[1]).not_before > first.not_after, 40,
               "a certificate issued after the first one expired")
    node = cluster.client().call("GET", f"/v1/nodes/{first.node_id}")
    assert node["status"]["state"] == "ready"


def test_leave_removes_a_worker_from_service(make_cluster):
    cluster = make_cluster(managers=1, workers=1)
    worker = cluster.node("worker-1")
    swarmlet("leave", "--data-dir", worker["data_dir"])
    assert not Path(worker["data_dir"]).exists()
    node = cluster.client().call("GET", f"/v1/nodes/{worker['id']}")
    assert node["status"]["state"] == "down" and "left" in node["status"]["message"]
    cluster.cli("node", "rm", worker["id"])
    assert worker["id"] not in {n["id"] for n in cluster.client().call("GET", "/v1/nodes")}


def test_a_manager_leaving_with_force_leaves_raft_and_the_rest_carry_on(make_cluster):
    cluster = make_cluster(managers=3)
    leader = cluster.wait_for_leader()
    leaving = cluster.node(leader)  # the hardest case: the leader itself leaves
    refused = swarmlet("leave", "--data-dir", leaving["data_dir"], check=False)
    assert refused.returncode != 0 and "demote it first" in refused.stderr
    swarmlet("leave", "--force", "--data-dir", leaving["data_dir"])
    remaining = [n for n in ("manager-1", "manager-2", "manager-3") if n != leader]
    wait_until(lambda: len(cluster.cluster_status(remaining[0])["managers"]) == 2, 20, "two Raft members left")
    cluster.write_config("after-leave", via=remaining[0])
    assert "after-leave" in cluster.config_names(remaining[1])
