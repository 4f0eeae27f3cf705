"""A secret's whole life on real containers (docker runtime): `swarmlet secret create`,
used by a stack as an external secret, the file in the container on tmpfs with mode
0444, `rm` refused while a service uses it, rotation by `service update --secret-rm
--secret-add`, and the value never shown (CLI, API) nor readable in clear anywhere
under the nodes' data dirs (journal, snapshots, node.json, node logs) nor in a backup
opened with the cluster key (secrets are sealed on top of the journal's sealing).
One manager and one worker; the task is placed on the worker, so the value crosses a
session. Skips without a Docker engine (fails in CI)."""
from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest

from swarmlet.node.config import DataDir
from swarmlet.runtime.base import LABEL_NODE_ID, LABEL_SERVICE_NAME, LABEL_TASK_ID
from swarmlet.store.recovery import unpack_backup
from swarmlet.store.state import thaw

from .conftest import docker_test_cluster, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.docker]


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``root`` whose bytes hold one of ``needles``."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path} holds {needle!r}" for needle in needles if needle in data]
    return found


def forms_of(value: bytes) -> list[bytes]:
    """The value and the encodings it could be written in (JSON's base64 and msgpack's bin)."""
    return [value, base64.b64encode(value), msgpack.packb(value)]


def test_the_leak_checker_finds_a_value_where_it_is(tmp_path):
    value = secrets.token_hex(16).encode()
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "log").write_bytes(b"line\n" + base64.b64encode(value) + b"\n")
    (tmp_path / "clean").write_bytes(b"nothing here")
    assert files_holding(tmp_path, forms_of(value)) == [f"{tmp_path / 'deep' / 'er' / 'log'} holds "
                                                         f"{base64.b64encode(value)!r}"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, docker_client, docker_test_image):
    with docker_test_cluster(tmp_path_factory.mktemp("secrets") / "cluster", docker_client, 1, 1,
                             ["--heartbeat-period", "1"]) as cluster:
        yield cluster


def run_cli(cluster, *args: str, stdin: bytes | None = None, check: bool = True):
    """`swarmlet ARGS` against the cluster, in bytes (the value is looked for in them)."""
    result = subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], input=stdin, capture_output=True,
                            env={**os.environ, **cluster.env}, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"swarmlet {' '.join(args)} failed ({result.returncode}): {result.stderr!r}")
    return result


def container_of(docker_client, cluster, task_id: str):
    (found,) = [c for c in docker_client.api.containers(filters={"label": [f"{LABEL_TASK_ID}={task_id}"]})
                if c["Labels"].get(LABEL_NODE_ID) in cluster.node_ids]
    return docker_client.containers.get(found["Id"])


def running_task(cluster, service: str, secret_value: bytes, docker_client, timeout: float = 60):
    """The one running task of ``service`` whose container reads ``secret_value`` at /run/secrets/token."""
    api = cluster.client(timeout=20)

    def check():
        active = [t for t in api.call("GET", f"/v1/tasks?service={service}")
                  if t["desired_state"] in ("ready", "running")]
        if len(active) != 1 or active[0]["state"] != "running":
            return None
        container = container_of(docker_client, cluster, active[0]["id"])
        code, output = container.exec_run(["cat", "/run/secrets/token"])
        return (active[0], container) if (code, output) == (0, secret_value) else None
    return wait_until(check, timeout, f"a running task of {service} reading its secret")


def test_secret_lifecycle_on_real_containers(cluster, docker_client, docker_test_image, tmp_path):
    first, second = (f"s3cr3t-{secrets.token_hex(12)}".encode() for _ in range(2))
    leaks = forms_of(first) + forms_of(second)

    created = run_cli(cluster, "secret", "create", "--label", "team=web", "app_token", "-", stdin=first)
    assert created.stdout.decode().strip() == "app_token"
    shown = [created]
    shown.append(run_cli(cluster, "secret", "ls"))
    listing = run_cli(cluster, "secret", "ls", "--format", "json")
    shown.append(listing)
    (entry,) = json.loads(listing.stdout)
    assert (entry["name"], entry["labels"]) == ("app_token", {"team": "web"})
    inspected = run_cli(cluster, "secret", "inspect", "app_token")
    shown.append(inspected)
    assert json.loads(inspected.stdout)[0]["name"] == "app_token"
    api = cluster.client(timeout=20)
    assert json.dumps(api.call("GET", "/v1/secrets/app_token")).find("data") == -1

    compose = tmp_path / "compose.yml"
    compose.write_text(textwrap.dedent(f"""
        services:
          web:
            image: {docker_test_image}
            command: ["sleep", "600"]
            init: true
            secrets: [{{source: app_token, target: token}}]
            deploy:
              placement: {{constraints: [node.role == worker]}}
        secrets:
          app_token: {{external: true}}
    """))
    shown.append(run_cli(cluster, "stack", "deploy", "-c", str(compose), "--timeout", "90s", "st"))
    task, container = running_task(cluster, "st_web", first, docker_client)
    worker = next(n for n in cluster.status() if n["name"].startswith("worker"))
    assert task["node_id"] == worker["id"]
    code, mode = container.exec_run(["stat", "-c", "%a %u %g", "/run/secrets/token"])
    assert (code, mode.decode().strip()) == (0, "444 0 0")
    code, mounts = container.exec_run(["cat", "/proc/mounts"])
    (mount,) = [line.split() for line in mounts.decode().splitlines() if line.split()[1] == "/run/secrets/token"]
    assert mount[2] == "tmpfs", mount

    refused = run_cli(cluster, "secret", "rm", "app_token", check=False)
    shown.append(refused)
    assert refused.returncode != 0 and b"st_web" in refused.stderr and b"in use" in refused.stderr, refused.stderr
    assert [s["name"] for s in api.call("GET", "/v1/secrets")] == ["app_token"]

    # Rotation, as in Swarm: a new secret, and the service moved onto it.
    shown.append(run_cli(cluster, "secret", "create", "app_token_v2", "-", stdin=second))
    shown.append(run_cli(cluster, "service", "update", "st_web", "--secret-rm", "app_token",
                         "--secret-add", "source=app_token_v2,target=token", "--timeout", "90s"))
    new_task, _ = running_task(cluster, "st_web", second, docker_client)
    assert new_task["id"] != task["id"]
    shown.append(run_cli(cluster, "secret", "rm", "app_token"))
    assert [s["name"] for s in api.call("GET", "/v1/secrets")] == ["app_token_v2"]
    refused = run_cli(cluster, "service", "update", "st_web", "--secret-add", "nope", check=False)
    assert refused.returncode != 0 and b"no such secret 'nope'" in refused.stderr, refused.stderr

    # Never shown: not by any command above, not by the API's listing.
    for result in shown:
        assert not [leak for leak in leaks if leak in result.stdout or leak in result.stderr], result.args
    listing = json.dumps(api.call("GET", "/v1/secrets")).encode()
    assert not [leak for leak in leaks if leak in listing]

    # Not in clear anywhere in the data dirs (every node's, node logs included) ...
    assert files_holding(cluster.directory, leaks) == []
    # ... nor in the store itself once the journal's sealing is taken off: a backup opened
    # with the cluster key holds the secret, sealed.
    manager_dir = next(n for n in cluster.status() if n["name"].startswith("manager"))["data_dir"]
    blob = api.call("GET", "/v1/backup", raw=True)
    _, state = unpack_backup(blob, DataDir(Path(manager_dir)).read_cluster_key())
    plain = msgpack.packb(thaw(state.snapshot()))
    assert b"app_token_v2" in plain
    assert not [leak for leak in leaks if leak in plain]

    api.call("DELETE", "/v1/stacks/st")
    wait_until(lambda: not [c for c in docker_client.api.containers(
        all=True, filters={"label": [f"{LABEL_SERVICE_NAME}=st_web"]}) if c["Labels"].get(LABEL_NODE_ID) in
        cluster.node_ids], 60, "the stack's containers removed")


def test_the_api_refuses_bad_names_and_stores_nothing(cluster):
    from swarmlet.cli.client import ApiError

    api = cluster.client(timeout=20)
    data = base64.b64encode(b"x").decode()
    for path, body, field in (("/v1/configs", {"name": "../../etc/x", "data": data}, "config name"),
                              ("/v1/secrets", {"name": "../../etc/x", "data": data}, "secret name"),
                              ("/v1/secrets", {"name": "ok", "data": data, "labels": {"a b": "c"}}, "secret labels")):
        with pytest.raises(ApiError) as caught:
            api.call("POST", path, body)
        assert caught.value.status == 400 and str(caught.value).startswith(f"invalid {field}"), str(caught.value)
        assert ("the rule: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters" if field.endswith("name")
                else "moby's rule") in str(caught.value)
    assert [c["name"] for c in api.call("GET", "/v1/configs")] == []
    assert "ok" not in [s["name"] for s in api.call("GET", "/v1/secrets")]
