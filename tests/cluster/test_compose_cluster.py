"""docker-compose.test.yml: five nodes as containers (each its own network namespace),
joined through the real token path, survive a chaos run of kills and pauses through
the Docker engine, and go down leaving nothing behind. Needs Docker, Debian's
docker-compose and the image of .ci/build-compose-image.sh (CI builds it in .ci/run;
elsewhere a missing piece skips the test)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, docker_unavailable

from .conftest import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.docker]
COMPOSE_FILE = REPO_ROOT / "docker-compose.test.yml"
IMAGE = "swarmlet-compose-test:local"
PROJECT = f"swctest{os.getpid() % 100000}"
SUBNET = f"10.231.{100 + os.getpid() % 100}"  # ${SWC_NET}: a /24 of its own per test process


def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "-p", PROJECT, *args], capture_output=True,
                            text=True, timeout=180, env={**os.environ, "SWC_NET": SUBNET})
    if check and result.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)}: {result.stderr}")
    return result


def leftovers() -> list[str]:
    found = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                           capture_output=True, text=True).stdout.split()
    found += [n for n in subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True,
                                        text=True).stdout.split() if n.startswith(f"{PROJECT}_")]
    found += [v for v in subprocess.run(["docker", "volume", "ls", "--format", "{{.Name}}"], capture_output=True,
                                        text=True).stdout.split() if v.startswith(f"{PROJECT}_")]
    return found


@pytest.fixture(scope="module")
def compose_cluster():
    if shutil.which("docker-compose") is None:
        docker_unavailable("docker-compose is not installed (Debian's docker-compose package)")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        docker_unavailable(f"the image {IMAGE} is missing: run .ci/build-compose-image.sh")
    try:
        compose("up", "-d")
        yield
    finally:
        compose("down", "-v", "--timeout", "5", check=False)


def test_the_compose_cluster_forms_survives_kills_and_pauses_and_goes_down_clean(compose_cluster):
    from swarmlet.chaos.compose import ComposeTarget
    from swarmlet.chaos.faults import FaultError

    def target():
        try:
            return ComposeTarget(COMPOSE_FILE, PROJECT)
        except FaultError:
            return None  # the first manager has not written its admin certificate yet
    first = wait_until(target, 60, "the first manager initialised")
    try:
        def five_ready():
            nodes = first.client(timeout=5).call("GET", "/v1/nodes")
            members = sum(1 for n in nodes if (n["manager_status"] or {}).get("member"))
            return len(nodes) == 5 and all(n["status"]["state"] == "ready" for n in nodes) and members == 3 and nodes
        # (a manager is ready as a node a moment before the Raft group has taken it in)
        nodes = wait_until(five_ready, 90, "one cluster of 5 ready nodes, 3 of them Raft members")
        assert {n["status"]["hostname"] for n in nodes} == {"manager-1", "manager-2", "manager-3", "worker-1",
                                                              "worker-2"}
        # each node its own container, network namespace and address
        assert {n["status"]["addr"] for n in nodes} == {f"{SUBNET}.{i}" for i in (11, 12, 13, 21, 22)}
    finally:
        first.close()

    run = subprocess.run([sys.executable, "-m", "swarmlet.cli.main", "chaos", "run", "--compose", str(COMPOSE_FILE),
                          "--project", PROJECT, "--duration", "30s", "--faults", "kill,freeze", "--targets",
                          "leader,random", "--seed", "3", "--format", "json"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["target"] == "compose" and len(record["faults"]) >= 5
    assert {f["kind"] for f in record["faults"]} == {"kill", "freeze"}
    writes = record["writes"]
    assert writes["checked"] and writes["acked"] > 200 and writes["lost"] == [] and writes["stale_reads"] == []
    assert record["duplicates"] == [] and record["passed"]

    compose("down", "-v", "--timeout", "5")
    assert leftovers() == []
