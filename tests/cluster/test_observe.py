"""Watching a real cluster: `swarmlet events` and the managers' GET /v1/events across a
leader kill, on one shared cluster of node processes (3 managers, 1 worker, process
runtime). Every wait polls a condition with a deadline; nothing sleeps to synchronise."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from swarmlet.cli.stack import deploy_body
from swarmlet.compose import load_stack

from .conftest import FAST_SETTINGS, TestCluster, _ranges, swarmlet, wait_until

pytestmark = pytest.mark.cluster

SLEEPER = '["sleep", "600"]'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("observe") / "cluster"
    cluster = TestCluster(directory, f"127.0.{next(_ranges) % 250}.2")
    try:
        yield cluster.up(3, 1, FAST_SETTINGS)
    finally:
        cluster.down()


def deploy(cluster: TestCluster, directory, name: str, compose: str) -> dict:
    path = directory / f"{name}.yml"
    path.write_text(textwrap.dedent(compose))
    return cluster.client(timeout=20).call("POST", f"/v1/stacks/{name}", deploy_body(load_stack([path]).stack, False))


class Follower:
    """GET /v1/events?follow=1 on one manager, read on a thread: every line kept."""

    def __init__(self, client, since: str):
        self.events: list[dict] = []
        self.ended: BaseException | str | None = None
        self._connection = client.connection(client.hosts[0], timeout=None)
        self._connection.request("GET", "/v1/events?" + urllib.parse.urlencode({"follow": "1", "since": since}))
        self._response = self._connection.getresponse()
        assert self._response.status == 200, self._response.read()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        try:
            for line in self._response:
                self.events.append(json.loads(line))
            self.ended = "the stream ended"
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.ended = err

    def close(self):
        # Shut the socket first: the reader thread holds the response's buffer while it waits.
        if self._connection.sock is not None:
            try:
                self._connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(10)
        self._connection.close()


def find(events: list[dict], **match) -> dict | None:
    for event in events:
        if all(event.get(k) == v or event["attributes"].get(k) == v for k, v in match.items()):
            return event
    return None

def scrape(cluster: TestCluster, name: str) -> dict[str, list]:
    """GET /metrics on one manager, parsed by prometheus_client's own parser: name -> samples."""
    from prometheus_client.parser import text_string_to_metric_families

    text = cluster.client(name).call("GET", "/metrics", raw=True).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, name: str | None = None, **labels) -> float | None:
    found = [s.value for s in samples if (name is None or s.name == name)
             and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None


def test_metrics_parse_and_match_cluster_status_service_ls_and_node_ls(cluster, tmp_path):
    deploy(cluster, tmp_path, "mx", f"""
        services:
          web: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 3}}}}
          pinned: {{image: busybox, command: {SLEEPER}, deploy: {{placement: {{constraints: ["node.role==worker"]}}}}}}
    """)
    wait_until(lambda: [s for s in json.loads(cluster.cli("service", "ls", "--format", "json").stdout)
                        if s["name"] == "mx_web" and s["running"] == 3], 60, "3 running replicas of mx_web")
    leader = cluster.wait_for_leader()
    nodes = len(cluster.status())
    wait_until(lambda: value(scrape(cluster, leader)["swarmlet_dispatcher_sessions"]) == nodes, 30,
               "a session per node on the leader")

    def consistent():  # the same figures before and after the scrape: nothing moved in between
        before = json.loads(cluster.cli("cluster", "status", "--format", "json").stdout)
        metrics = scrape(cluster, leader)
        services = json.loads(cluster.cli("service", "ls", "--format", "json").stdout)
        node_ls = json.loads(cluster.cli("node", "ls", "--format", "json").stdout)
        after = json.loads(cluster.cli("cluster", "status", "--format", "json").stdout)
        return (before, metrics, services, node_ls) if before == after else None
    status, metrics, services, node_ls = wait_until(consistent, 30, "a quiet moment to compare in")

    assert value(metrics["swarmlet_raft_term"]) == status["term"]
    assert value(metrics["swarmlet_raft_commit_index"]) == status["commit_index"]
    assert value(metrics["swarmlet_raft_is_leader"]) == 1
    assert value(metrics["swarmlet_raft_members"]) == len(status["managers"])
    (leader_sample,) = metrics["swarmlet_raft_leader"]
    assert leader_sample.labels == {"node_id": status["leader"], "address": status["leader_address"]}
    for service in services:
        assert value(metrics["swarmlet_service_replicas_running"], service=service["name"]) == service["running"]
        assert value(metrics["swarmlet_service_replicas_desired"], service=service["name"]) == service["replicas"]
    assert value(metrics["swarmlet_tasks"], service="mx_web", state="running") == 3
    ready = sum(1 for n in node_ls if n["status"]["state"] == "ready")
    assert value(metrics["swarmlet_nodes"], state="ready") == ready == nodes
    assert value(metrics["swarmlet_nodes"], role="manager") == len(status["managers"])

    # histograms: counted, and the API's by route template, never by raw path
    assert value(metrics["swarmlet_scheduling_latency_seconds"], "swarmlet_scheduling_latency_seconds_count") >= 3
    assert value(metrics["swarmlet_raft_apply_seconds"], "swarmlet_raft_apply_seconds_count") > 0
    routes = {s.labels["route"] for s in metrics["swarmlet_api_request_seconds"]}
    assert "/v1/stacks/{name}" in routes and "/v1/stacks/mx" not in routes, routes
    # the manager's own node figures are in the same scrape
    assert value(metrics["swarmlet_node_session_connected"]) == 1

    # A follower answers from its own copy: same leader, its own is_leader 0.
    follower = next(n["name"] for n in cluster.status() if n["role"] == "manager" and n["name"] != leader)
    follower_metrics = scrape(cluster, follower)
    assert value(follower_metrics["swarmlet_raft_is_leader"]) == 0
    assert follower_metrics["swarmlet_raft_leader"][0].labels["node_id"] == status["leader"]
    assert value(follower_metrics["swarmlet_dispatcher_sessions"]) == 0

    # A worker serves its node figures on --metrics-addr (plain HTTP), and no cluster figures.
    from swarmlet.node.config import DataDir
    from prometheus_client.parser import text_string_to_metric_families
    worker = cluster.node("worker-1")
    directory = DataDir(worker["data_dir"])
    config = directory.load()
    config.metrics_addr = f"{worker['address']}:9323"
    directory.save(config)
    cluster.kill("worker-1", signal="TERM")
    wait_until(lambda: not cluster.node("worker-1")["alive"], 30, "worker-1 to stop")
    cluster.start("worker-1")

    def worker_metrics():
        text = urllib.request.urlopen(f"http://{config.metrics_addr}/metrics", timeout=5).read().decode()
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    def agree():  # mx_pinned runs on the worker again once it is back; the count is the API's
        families = worker_metrics()
        here = [t for t in cluster.client().call("GET", "/v1/tasks")
                if t["node_id"] == worker["id"] and t["state"] == "running"]
        return families if here and value(families["swarmlet_node_tasks"], state="running") == len(here) else None
    families = wait_until(agree, 90, "the worker's metrics to count the tasks running on it")
    assert value(families["swarmlet_node_session_connected"]) == 1
    assert value(families["swarmlet_node_info"], role="worker", node_id=worker["id"]) == 1
    assert "swarmlet_raft_term" not in families and "swarmlet_tasks" not in families
    wait_until(lambda: (value(worker_metrics()["swarmlet_node_heartbeat_rtt_seconds"],
                              "swarmlet_node_heartbeat_rtt_seconds_count") or 0) > 0, 30, "a heartbeat round trip")
    cluster.client().call("DELETE", "/v1/stacks/mx")


def test_events_see_a_deploy_a_task_failure_and_a_node_down_in_order_and_survive_a_leader_kill(cluster, tmp_path):
    leader = cluster.wait_for_leader()
    managers = [n["name"] for n in cluster.status() if n["role"] == "manager"]
    follower = next(name for name in managers if name != leader)
    start = cluster.client(follower).call("GET", "/v1/events?limit=0")["cursor"]

    stream = Follower(cluster.client(follower), start)
    # The CLI reads from the leader first (it is killed below) and must resume on another manager.
    hosts = [cluster.client(name).hosts[0] for name in [leader, *[m for m in managers if m != leader]]]
    cli = subprocess.Popen([sys.executable, "-m", "swarmlet.cli.main", "events", "--format", "json",
                            "--since", start, "--host", ",".join(hosts)],
                           env={**_env(cluster)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cli_events: list[dict] = []
    cli_reader = threading.Thread(target=lambda: cli_events.extend(json.loads(line) for line in cli.stdout),
                                  daemon=True)
    cli_reader.start()
    try:
        deploy(cluster, tmp_path, "ev", f"""
            services:
              ok: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 1, placement: {{constraints: ["node.role==manager"]}}}}}}
              bad:
                image: busybox
                command: ["sh", "-c", "echo boom >&2; exit 3"]
                deploy: {{replicas: 1, restart_policy: {{condition: none}}, placement: {{constraints: ["node.role==worker"]}}}}
        """)
        failed = wait_until(lambda: find(stream.events, type="task", to="failed", service="ev_bad"), 30,
                            "the failing task's event")
        assert "exit" in failed["attributes"]["error"] or failed["attributes"]["error"], failed
        cluster.kill("worker-1")
        worker_id = next(n["id"] for n in cluster.status() if n["name"] == "worker-1")
        down = wait_until(lambda: find(stream.events, type="node", action="down", id=worker_id), 30,
                          "the worker's down event")

        created = find(stream.events, type="service", action="create", name="ev_bad")
        stack = find(stream.events, type="stack", action="create", name="ev")
        assert created and stack
        order = [e["cursor"] for e in stream.events]
        assert order.index(stack["cursor"]) < order.index(failed["cursor"]) < order.index(down["cursor"])

        # The leader dies; the follower's stream goes on, and the CLI resumes elsewhere.
        cluster.kill(leader)
        new_leader = cluster.wait_for_leader(timeout=30, among=[m for m in managers if m != leader], via=follower)
        cluster.write_config("after-failover", via=follower, timeout=20)
        after = wait_until(lambda: find(stream.events, type="config", action="create", name="after-failover"), 30,
                           "the config's event on the follower's stream")
        wait_until(lambda: find(cli_events, type="config", name="after-failover"), 60,
                   "the config's event from the CLI (resumed on another manager)")
        assert find(stream.events, type="leader", action="leader"), "the new leader's claim is an event"
        assert stream.ended is None, stream.ended

        # Compared with the whole list read afterwards from the new leader: no gap, no duplicate.
        full = cluster.client(new_leader).call("GET", f"/v1/events?since={start}&limit=20000")["events"]
        upto = [e for e in full if _key(e) <= _key(after)]
        seen = [e for e in stream.events if _key(e) <= _key(after)]
        assert [e["cursor"] for e in seen] == [e["cursor"] for e in upto]
        assert seen == upto  # the same events, attribute for attribute, on both managers
        cli_seen = [e for e in cli_events if _key(e) <= _key(after)]
        assert [e["cursor"] for e in cli_seen] == [e["cursor"] for e in upto]
        assert len({e["cursor"] for e in cli_seen}) == len(cli_seen)
    finally:
        stream.close()
        cli.terminate()
        cli.wait(10)
        cluster.start(leader)
        cluster.start("worker-1")
    assert cli.returncode is not None


def _key(event: dict) -> tuple[int, int]:
    index, position = event["cursor"].split(":")
    return int(index), int(position)


def _env(cluster: TestCluster) -> dict:
    return {**os.environ, **cluster.env}


def test_bad_points_filters_and_types_are_refused_clearly(cluster):
    client = cluster.client()
    result = swarmlet("events", "--since", "yesterday", env=cluster.env, check=False)
    assert result.returncode != 0 and "since" in result.stderr and "RFC 3339" in result.stderr
    result = swarmlet("events", "--filter", "kind=service", env=cluster.env, check=False)
    assert result.returncode != 0 and "type=TYPE" in result.stderr
    from swarmlet.cli.client import ApiError, Client
    with pytest.raises(ApiError) as refused:
        client.call("GET", "/v1/events?type=bogus")
    assert refused.value.status == 400 and "bogus" in str(refused.value)
    # Operator routes: a node's own certificate may not read events or scrape the cluster.
    as_worker = Client(client.hosts, Path(cluster.node("worker-1")["data_dir"]) / "certs")
    for path in ("/metrics", "/v1/events"):
        with pytest.raises(ApiError) as refused:
            as_worker.call("GET", path)
        assert refused.value.status == 403 and "admin" in str(refused.value), path
