"""The README's quick start, exactly as written, from a clean clone of this commit in a
fresh virtualenv: its first shell block is run with bash (pip installs from PyPI, with
pip's wheel cache), and the stack it deploys must run; `swarmlet local down` then
leaves none of its containers or networks. Also what `local up` does on a first run:
it refuses at once where no engine answers (naming --runtime process), refuses a
non-empty --dir, and makes the examples' image when the engine lacks it.
Needs a Docker engine (skips without one, fails in CI)."""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarmlet.local.engine import busybox_rootfs, ensure_example_image, static_busybox
from swarmlet.runtime.base import LABEL_NETWORK, LABEL_NODE_ID, LABEL_STACK_NAMESPACE, LABEL_TASK_ID

from ..cluster.conftest import _ranges

REPO = Path(__file__).resolve().parents[2]
QUICK_START_TIMEOUT = 900


def first_shell_block(readme: str) -> str:
    """The first ```sh block of the README's quick start."""
    section = readme[readme.index("## Quick start"):]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def swarmlet_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.quickstart
@pytest.mark.docker
def test_the_readme_quick_start_from_a_clean_clone(tmp_path, docker_client):
    clone = tmp_path / "clone"
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-local", str(REPO), str(clone)], check=True, timeout=120)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    block = first_shell_block((clone / "README.md").read_text())
    local_dir = tmp_path / "local"
    local_dir.mkdir()  # an existing empty directory: `local up` takes it
    venv_bin = tmp_path / "venv" / "bin"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "SWARMLET_HOST",
                                                                             "SWARMLET_CONTEXT", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv_bin}:{env['PATH']}", VIRTUAL_ENV=str(tmp_path / "venv"), SWARMLET_LOCAL_DIR=str(local_dir),
               SWARMLET_LOCAL_FIRST_ADDRESS=f"127.0.{next(_ranges) % 250}.2", PIP_DISABLE_PIP_VERSION_CHECK="1")
    down = [str(venv_bin / "swarmlet"), "local", "down"]
    node_ids: set[str] = set()
    try:
        started = time.monotonic()
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=clone, env=env, capture_output=True,
                                text=True, timeout=QUICK_START_TIMEOUT)
        took = time.monotonic() - started
        assert result.returncode == 0, f"the quick start failed after {took:.0f}s:\n{result.stderr[-4000:]}"
        assert "stack hello: converged" in result.stdout, result.stdout[-2000:]
        ps = [line.split() for line in result.stdout.splitlines() if re.match(r"\S+\s+hello_(web|worker)\.\d", line)]
        running = [row for row in ps if "running" in row]
        assert len(running) == 5, result.stdout[-2000:]  # 3 web + 2 worker, as the example says
        assert str(venv_bin) in subprocess.run(["bash", "-c", "command -v swarmlet"], env=env, capture_output=True,
                                               text=True).stdout
        status = subprocess.run([str(venv_bin / "swarmlet"), "local", "status", "--format", "json"], env=env,
                                capture_output=True, text=True, timeout=60, check=True)
        node_ids.update(n["id"] for n in json.loads(status.stdout))
        assert len(node_ids) == 5
        ours = [c for c in docker_client.api.containers(filters={"label": [LABEL_TASK_ID]})
                if c["Labels"].get(LABEL_NODE_ID) in node_ids]
        assert len(ours) == 5  # the check below can see them
    finally:
        subprocess.run(down, env=env, capture_output=True, timeout=180)
    assert not local_dir.exists()
    left = [c for c in docker_client.api.containers(all=True, filters={"label": [LABEL_TASK_ID]})
            if c["Labels"].get(LABEL_NODE_ID) in node_ids]
    assert left == [], [c["Names"] for c in left]
    # Another cluster on this engine may run a stack called hello too: its network has containers.
    networks = [docker_client.api.inspect_network(n["Id"]) for n in docker_client.api.networks(
        filters={"label": [LABEL_NETWORK, f"{LABEL_STACK_NAMESPACE}=hello"]})]
    assert [n["Name"] for n in networks if not n.get("Containers")] == []


def test_local_up_without_an_engine_says_so_at_once_and_names_the_way_out(tmp_path):
    started = time.monotonic()
    result = swarmlet_cli("local", "up", "--dir", str(tmp_path / "c"), env={"DOCKER_HOST": f"unix://{tmp_path}/none"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no Docker engine answers" in result.stderr and "--runtime process" in result.stderr
    assert "compose-examples/hello-process/compose.yml" in result.stderr
    assert not (tmp_path / "c").exists()
    assert time.monotonic() - started < 60  # "at once": no node was started and waited for
    assert (REPO / "compose-examples" / "hello-process" / "compose.yml").exists()


def test_local_up_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = swarmlet_cli("local", "up", "--runtime", "process", "--dir", str(mine))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is not empty and holds no local cluster" in result.stderr
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    result = swarmlet_cli("local", "up", "--runtime", "process", "--dir", str(tmp_path / "file"))
    assert result.returncode == 1 and "exists and is not a directory" in result.stderr


@pytest.mark.docker
def test_the_examples_image_is_made_when_the_engine_lacks_it(docker_client):
    if static_busybox() is None:
        pytest.skip("no static busybox on this machine (CI installs busybox-static)")
    image = f"swsec-test/busybox:{secrets.token_hex(4)}"
    logged = []
    try:
        ensure_example_image(docker_client, logged.append, image)
        assert logged and "making the examples' image" in logged[0]
        output = docker_client.containers.run(image, ["sh", "-c", "id -un; wget --help 2>&1 | head -1; ls /tmp -d"],
                                              remove=True)
        assert output.decode().splitlines()[0] == "root"
        ensure_example_image(docker_client, logged.append, image)
        assert len(logged) == 1  # present now: nothing made again
    finally:
        docker_client.api.remove_image(image, force=True)
    assert b"bin/busybox" in busybox_rootfs(static_busybox())


VOLUME_STACK = """
services:
  app:
    image: swarmlet-test/busybox:1
    command: ["sh", "-c", "echo kept > /data/file; exec sleep 600"]
    volumes: ["data:/data"]
volumes:
  data: {}
"""


@pytest.mark.docker
@pytest.mark.parametrize("asked", [False, True], ids=["down", "down --volumes"])
def test_local_down_keeps_the_named_volumes_of_its_tasks_unless_asked(tmp_path, docker_client, asked):
    """As `docker compose down [--volumes]`: the containers and networks always go, the
    named volumes the tasks mounted only with --volumes."""
    directory, stack = tmp_path / "c", f"swdv{secrets.token_hex(3)}"
    compose = tmp_path / "compose.yml"
    compose.write_text(VOLUME_STACK)
    up = swarmlet_cli("local", "up", "--managers", "1", "--workers", "0", "--dir", str(directory),
                      "--first-address", f"127.0.{next(_ranges) % 250}.2")
    assert up.returncode == 0, up.stderr
    volumes: set[str] = set()
    try:
        from swarmlet.local.cluster import LocalCluster

        deployed = swarmlet_cli("stack", "deploy", "-c", str(compose), stack, env=LocalCluster(directory).env())
        assert deployed.returncode == 0 and f"stack {stack}: converged" in deployed.stdout, deployed.stderr
        (container,) = docker_client.api.containers(filters={"label": [f"{LABEL_STACK_NAMESPACE}={stack}"]})
        volumes = {m["Name"] for m in container["Mounts"] if m["Type"] == "volume"}
        assert len(volumes) == 1, container["Mounts"]
    finally:
        down = swarmlet_cli("local", "down", "--dir", str(directory), *(["--volumes"] if asked else []))
    try:
        assert down.returncode == 0, down.stderr
        assert docker_client.api.containers(all=True, filters={"label": [f"{LABEL_STACK_NAMESPACE}={stack}"]}) == []
        assert docker_client.api.networks(filters={"label": [f"{LABEL_STACK_NAMESPACE}={stack}"]}) == []
        left = {v["Name"] for v in docker_client.api.volumes().get("Volumes") or ()} & volumes
        assert left == (set() if asked else volumes)
        if not asked:  # kept, with what the task wrote
            (volume,) = volumes
            output = docker_client.containers.run("swarmlet-test/busybox:1", ["cat", "/data/file"], remove=True,
                                                  volumes={volume: {"bind": "/data", "mode": "ro"}})
            assert output.decode().strip() == "kept"
    finally:
        for volume in volumes:
            try:
                docker_client.api.remove_volume(volume)
            except Exception:  # removed by `down --volumes`, as it should be
                pass
