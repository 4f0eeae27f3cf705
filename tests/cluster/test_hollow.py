"""Hollow workers end to end: a real manager process, and workers that join through
the real token/CSR path and hold real dispatcher sessions, many to a process, running
tasks on the simulated runtime. Every wait polls a condition with a deadline."""
from __future__ import annotations

from collections import Counter

import pytest

from swarmlet.api.objects import suggested_heartbeat_period

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


BIG_HOLLOW = 200
BIG_REPLICAS = 10_000


def test_10000_replicas_on_200_hollow_workers_and_a_leader_killed_mid_deploy_leave_no_slot_twice(make_cluster, tmp_path):
    """Issue 8's scale test: the leader dies while it is creating and placing 10,000
    tasks; the next leader finishes the deploy, and no slot ever gets a second task
    (the deposed leader's writes still in flight are fenced off)."""
    # The heartbeat period `local up` picks for this many nodes (suggested_heartbeat_period), not
    # the tests' fast 0.5 s: 200 sessions reconnecting to a new leader at once need it.
    period = suggested_heartbeat_period(3 + BIG_HOLLOW)
    cluster = make_cluster(managers=3, hollow=BIG_HOLLOW,
                           extra=["--hollow-per-host", str(BIG_HOLLOW), "--heartbeat-period", str(period)])
    hollow_ids = {r["id"] for r in cluster.status() if r["hollow"]}

    def ready_nodes():
        return {n["id"] for n in cluster.client().call("GET", "/v1/nodes") if n["status"]["state"] == "ready"}
    wait_until(lambda: hollow_ids <= ready_nodes(), 60, "every hollow node ready", interval=0.5)

    s = Stacks(cluster, tmp_path)
    s.api.timeout = 60
    s.deploy("big", f"""
        services:
          web:
            image: busybox
            command: ["sleep", "600"]
            deploy:
              replicas: {BIG_REPLICAS}
              placement: {{constraints: ["engine.labels.swarmlet.hollow == true"]}}
    """)
    leader = cluster.wait_for_leader()
    followers = [n for n in ("manager-1", "manager-2", "manager-3") if n != leader]

    def created_some():  # read through a follower, the leader being busy
        service = cluster.client(followers[0], timeout=30).call("GET", "/v1/services/big_web")
        return len(cluster.client(followers[0], timeout=30).call("GET", f"/v1/tasks?service={service['id']}")) >= 1000
    wait_until(created_some, 60, "the deploy under way (1,000 tasks created)", interval=0.2)
    cluster.kill(leader)
    new_leader = cluster.wait_for_leader(timeout=30, among=followers, via=followers[0])

    survivor = cluster.client(*followers, timeout=60)
    service_id = survivor.call("GET", "/v1/services/big_web")["id"]
    seen: list[dict] = []

    def all_running():
        seen[:] = survivor.call("GET", f"/v1/tasks?service={service_id}")
        active = [t for t in seen if t["desired_state"] in ("ready", "running")]
        return active if len(active) == BIG_REPLICAS and all(t["state"] == "running" for t in active) else None
    try:
        tasks = wait_until(all_running, 240, f"{BIG_REPLICAS} running tasks", interval=1.0)
    except AssertionError as err:  # say how far it got, not every task
        raise AssertionError(f"{err}; tasks by (desired, state): "
                             f"{Counter((t['desired_state'], t['state']) for t in seen).most_common(8)}") from None
    slots = Counter(t["slot"] for t in tasks)
    assert len(slots) == BIG_REPLICAS and max(slots.values()) == 1, "a slot with two active tasks"
    spread = per_node(tasks)
    # Even over the nodes that hold tasks. A node marked down during the failover under load
    # (seen once in CI: 2 of 200) has its tasks moved and gets none back when it returns:
    # there is no rebalancing, as in Swarm. Nearly every node must still hold its share.
    assert set(spread) <= hollow_ids and len(spread) >= 0.95 * len(hollow_ids), (len(spread), len(hollow_ids))
    assert max(spread.values()) - min(spread.values()) <= 1, spread
    assert new_leader in followers
