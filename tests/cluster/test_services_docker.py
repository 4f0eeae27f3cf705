"""Services on a cluster whose nodes run tasks as Docker containers (the default runtime).
Skips without a Docker engine (fails in CI)."""
from __future__ import annotations

import pytest

from swarmlet.runtime.base import LABEL_NODE_ID, LABEL_TASK_ID

from .conftest import wait_until
from .test_services import Stacks

pytestmark = [pytest.mark.cluster, pytest.mark.docker]


@pytest.fixture
def docker_stacks(make_cluster, tmp_path, docker_client, docker_test_image):
    cluster = make_cluster(managers=1, workers=1, runtime="docker")
    node_ids = {n["id"] for n in cluster.status()}

    def containers():
        return [c for c in docker_client.containers.list(all=True, filters={"label": LABEL_TASK_ID})
                if c.labels.get(LABEL_NODE_ID) in node_ids]

    stacks = Stacks(cluster, tmp_path)
    stacks.containers = containers
    stacks.image = docker_test_image
    yield stacks
    cluster.down()
    # Nodes do not remove the local networks of removed stacks yet (see docs/orchestration.md).
    for network in docker_client.networks.list(filters={"label": "swarmlet.stack.namespace"}):
        if network.name.startswith(STACK_PREFIXES) and not network.containers:
            network.remove()


STACK_PREFIXES = ("dk_", "img_")


def test_stack_runs_as_containers_with_network_and_secret_then_goes_away(docker_stacks, docker_client):
    s = docker_stacks
    s.deploy("dk", f"""
        services:
          web:
            image: {s.image}
            command: ["sleep", "600"]
            secrets: [token]
            networks: [front]
            deploy: {{replicas: 3}}
        networks:
          front: {{}}
        secrets:
          token: {{file: ./token.txt}}
    """, files={"token.txt": b"from-the-cluster"})
    tasks = s.running("dk_web", 3, timeout=60)
    by_task = {c.labels[LABEL_TASK_ID]: c for c in s.containers()}
    assert set(by_task) == {t["id"] for t in tasks}
    container = by_task[tasks[0]["id"]]
    assert container.status == "running"
    assert container.labels["com.docker.stack.namespace"] == "dk"
    exit_code, output = container.exec_run(["cat", "/run/secrets/token"])
    assert (exit_code, output) == (0, b"from-the-cluster")
    container.reload()
    assert any("dk_front" in name for name in container.attrs["NetworkSettings"]["Networks"])

    s.api.call("DELETE", "/v1/stacks/dk")
    wait_until(lambda: s.tasks() == [], 60, "the stack's tasks deleted")
    wait_until(lambda: s.containers() == [], 60, "the stack's containers removed")


def test_missing_image_is_rejected_with_the_reason(docker_stacks):
    s = docker_stacks
    s.deploy("img", """
        services:
          broken:
            image: swarmlet-test/does-not-exist:404
            command: ["true"]
            deploy: {restart_policy: {condition: none}}
    """)
    (task,) = wait_until(lambda: [t for t in s.tasks("img_broken") if t["state"] == "rejected"], 60,
                         "the task rejected")
    assert "does-not-exist" in (task["err"] or "")
