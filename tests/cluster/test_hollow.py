"""Hollow workers end to end: a real manager process, and workers that join through
the real token/CSR path and hold real dispatcher sessions, many to a process, running
tasks on the simulated runtime. Every wait polls a condition with a deadline."""
from __future__ import annotations

from collections import Counter

import pytest

from .conftest import wait_until
from .test_services import Stacks

pytestmark = pytest.mark.cluster

HOLLOW = 20
PER_HOST = 10  # two host processes
REPLICAS = 200


def per_node(tasks: list[dict]) -> Counter:
    return Counter(t["node_id"] for t in tasks)


def test_hollow_workers_join_run_a_stack_evenly_and_their_host_going_down_reschedules_it(make_cluster, tmp_path):
    cluster = make_cluster(managers=1, hollow=HOLLOW, extra=["--hollow-per-host", str(PER_HOST)])
    rows = cluster.status()
    hollow = [r for r in rows if r["hollow"]]
    assert [r["name"] for r in hollow] == [f"hollow-{i + 1}" for i in range(HOLLOW)]
    assert all(r["role"] == "worker" and r["alive"] and r["id"] for r in hollow)
    assert [r["hollow"] for r in rows if r not in hollow] == [False]  # the manager
    assert len({r["pid"] for r in hollow}) == HOLLOW // PER_HOST
    assert len({r["address"] for r in rows}) == len(rows)  # each its own advertise address
    hollow_ids = {r["id"] for r in hollow}

    def ready_nodes():
        nodes = cluster.client().call("GET", "/v1/nodes")
        return {n["id"] for n in nodes if n["status"]["state"] == "ready"}
    wait_until(lambda: hollow_ids <= ready_nodes(), 20, "every hollow node ready")
    listed = {n["status"]["hostname"]: n for n in cluster.client().call("GET", "/v1/nodes")}
    assert listed["hollow-1"]["status"]["description"]["engine_labels"] == {"swarmlet.hollow": "true"}
    assert listed["hollow-1"]["status"]["description"]["runtime"] == "hollow"

    s = Stacks(cluster, tmp_path)
    s.deploy("scale", f"""
        services:
          web:
            image: busybox
            command: ["sleep", "600"]
            deploy:
              replicas: {REPLICAS}
              placement: {{constraints: ["engine.labels.swarmlet.hollow == true"]}}
    """)
    tasks = s.running("scale_web", REPLICAS, timeout=60)
    spread = per_node(tasks)
    assert set(spread) == hollow_ids
    assert max(spread.values()) - min(spread.values()) <= 1, spread

    # One host process stops: its nodes are marked down, its tasks move to the other host's.
    first_host = [r for r in hollow if r["pid"] == hollow[0]["pid"]]
    gone = {r["id"] for r in first_host}
    cluster.kill("hollow-1")
    wait_until(lambda: not (gone & ready_nodes()), 20, "the stopped host's nodes down")
    survivors = hollow_ids - gone
    tasks = s.running("scale_web", REPLICAS, timeout=60)
    spread = per_node(tasks)
    assert set(spread) == survivors
    assert max(spread.values()) - min(spread.values()) <= 1, spread

    # The last host stops: nowhere is left, and the tasks wait, saying why.
    cluster.kill(f"hollow-{HOLLOW}")
    wait_until(lambda: not (hollow_ids & ready_nodes()), 20, "every hollow node down")

    def pending_with_reason():
        active = s.active("scale_web")
        return len(active) == REPLICAS and all(
            t["state"] == "pending" and "node not ready" in f"{t['err']} {t['message']}" for t in active)
    wait_until(pending_with_reason, 30, "every task pending, explained")

    # A host started again rejoins with its nodes (no new join: their certificates are kept).
    cluster.start("hollow-1")
    wait_until(lambda: gone <= ready_nodes(), 20, "the restarted host's nodes ready")
    tasks = s.running("scale_web", REPLICAS, timeout=60)
    assert set(per_node(tasks)) == gone
