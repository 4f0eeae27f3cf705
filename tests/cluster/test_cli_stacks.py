"""The stack and service commands end to end: `swarmlet stack deploy` of the examples in
compose-examples/ on real local clusters, waiting for convergence through its own exit
code, then the listings, `service scale`, `service logs`, and `stack rm` (which waits
until the tasks are gone)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from swarmlet.runtime.base import LABEL_NODE_ID, LABEL_SERVICE_NAME, LABEL_TASK_ID

from .conftest import wait_until

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "compose-examples"


def deploy(cluster, example: str, name: str, *extra: str, check: bool = True):
    result = cluster.cli("stack", "deploy", "-c", str(EXAMPLES / example / "compose.yml"), "--timeout", "90s",
                         *extra, name, check=check)
    return result


def as_json(cluster, *args: str):
    return json.loads(cluster.cli(*args, "--format", "json").stdout)


def test_examples_deploy_converge_scale_log_and_go_away(make_cluster, tmp_path):
    cluster = make_cluster(managers=1, workers=2)
    for example, name in (("global", "g"), ("job", "job"), ("placement", "pl")):
        result = deploy(cluster, example, name)
        assert f"stack {name}: converged" in result.stdout, result.stdout

    # stack deploy returned only once everything ran (or completed): nothing left to wait for
    services = {s["name"]: s for s in as_json(cluster, "service", "ls")}
    assert {"g_node-agent", "job_migrate", "pl_cache", "pl_reporter"} <= set(services)
    assert (services["g_node-agent"]["running"], services["g_node-agent"]["replicas"]) == (3, 3)
    assert (services["job_migrate"]["completed"], services["job_migrate"]["replicas"]) == (3, 3)
    assert (services["pl_cache"]["running"], services["pl_cache"]["replicas"]) == (2, 2)

    agents = as_json(cluster, "stack", "ps", "g")
    assert sorted(t["node"] for t in agents) == ["manager-1", "worker-1", "worker-2"]
    assert all(t["state"] == "running" for t in agents)
    cache = as_json(cluster, "service", "ps", "pl_cache")
    assert sorted(t["node"] for t in cache) == ["worker-1", "worker-2"]  # workers only, one per node
    pl = as_json(cluster, "stack", "services", "pl")
    assert {s["name"] for s in pl} == {"pl_cache", "pl_reporter"}
    assert "ID" in cluster.cli("stack", "services", "pl").stdout.splitlines()[0]

    result = cluster.cli("service", "scale", "pl_reporter=3")
    assert "pl_reporter scaled to 3" in result.stdout and "service pl_reporter" in result.stdout
    reporter = [t for t in as_json(cluster, "service", "ps", "pl_reporter") if t["desired_state"] == "running"]
    assert Counter((t["node"], t["state"]) for t in reporter) == {("manager-1", "running"): 3}

    lines = cluster.cli("service", "logs", "job_migrate", "--tail", "1").stdout.splitlines()
    assert len(lines) == 3, lines
    assert sorted(line.split(".")[1] for line in lines) == ["1", "2", "3"]
    assert all(line.startswith("job_migrate.") and line.endswith("| done") for line in lines)

    result = cluster.cli("stack", "rm", "g")
    assert "Removed stack g" in result.stdout
    # rm waited for the tasks: the stack is gone at once
    gone = cluster.cli("stack", "ps", "g", check=False)
    assert gone.returncode == 1 and "no such stack: g" in gone.stderr
    assert "g" not in {s["name"] for s in as_json(cluster, "stack", "ls")}


def test_deploy_fails_with_the_reasons(make_cluster, tmp_path):
    cluster = make_cluster(managers=1, workers=1)
    compose = tmp_path / "bad.yml"
    compose.write_text("""
services:
  huge:
    image: swarmlet-test/busybox:1
    command: ["sleep", "600"]
    deploy: {resources: {reservations: {memory: 100000G}}}
  crash:
    image: swarmlet-test/busybox:1
    command: ["sh", "-c", "exit 3"]
    deploy: {restart_policy: {condition: none}}
""")
    result = cluster.cli("stack", "deploy", "-c", str(compose), "--pending-timeout", "3s", "--timeout", "60s", "bad",
                         check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stack bad failed" in result.stderr
    assert "bad_crash: task" in result.stderr and "exit code 3" in result.stderr
    # the pending explanation was shown while waiting, and `service ps` shows it too
    assert "pending: no suitable node" in result.stdout
    (pending,) = as_json(cluster, "service", "ps", "bad_huge")
    assert pending["state"] == "pending" and "insufficient memory" in pending["message"]
    assert "insufficient" in cluster.cli("service", "ps", "bad_huge").stdout

    for args in (["service", "ps", "nope"], ["service", "inspect", "nope"], ["service", "logs", "nope"],
                 ["service", "scale", "nope=2"], ["service", "rm", "nope"]):
        missing = cluster.cli(*args, check=False)
        assert missing.returncode == 1 and "no such service: nope" in missing.stderr, (args, missing.stderr)
    result = cluster.cli("stack", "services", "nope", check=False)
    assert result.returncode == 1 and "no such stack: nope" in result.stderr

    detached = cluster.cli("stack", "rm", "bad", "--detach")
    assert "Removed stack bad" in detached.stdout and "waiting" not in detached.stdout
    wait_until(lambda: cluster.client().call("GET", "/v1/stacks/bad/tasks") == [], 30, "the stack's tasks removed")


@pytest.mark.docker
def test_webapp_example_on_docker_nodes(make_cluster, docker_client, docker_test_image):
    cluster = make_cluster(managers=1, workers=1, runtime="docker")
    node_ids = {n["id"] for n in cluster.status()}

    def containers():
        return [c for c in docker_client.containers.list(all=True, filters={"label": LABEL_TASK_ID})
                if c.labels.get(LABEL_NODE_ID) in node_ids]
    try:
        result = deploy(cluster, "webapp", "webapp")
        assert "stack webapp: converged" in result.stdout
        services = {s["name"]: s for s in as_json(cluster, "stack", "services", "webapp")}
        assert {n: (s["running"], s["replicas"]) for n, s in services.items()} == {
            "webapp_web": (2, 2), "webapp_redis": (1, 1), "webapp_worker": (2, 2)}
        running = [c for c in containers() if c.status == "running"]
        assert len(running) == 5
        assert Counter(c.labels[LABEL_SERVICE_NAME] for c in running) == {
            "webapp_web": 2, "webapp_redis": 1, "webapp_worker": 2}
        web = next(c for c in running if c.labels[LABEL_SERVICE_NAME] == "webapp_web")
        code, output = web.exec_run(["busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/hostname"])
        assert code == 0 and output.strip(), output
        lines = wait_until(lambda: [l for l in cluster.cli("service", "logs", "webapp_worker", "--tail", "1")
                                    .stdout.splitlines() if "job" in l], 30, "worker output")
        assert all(l.startswith("webapp_worker.") and "(default)" in l for l in lines)

        cluster.cli("stack", "rm", "webapp", "--timeout", "60s")
        assert cluster.client().call("GET", "/v1/stacks/webapp/tasks") == []
        wait_until(lambda: containers() == [], 60, "the stack's containers removed")
    finally:
        for network in docker_client.networks.list(filters={"label": "swarmlet.stack.namespace"}):
            if network.name.startswith("webapp_") and not network.containers:
                network.remove()
