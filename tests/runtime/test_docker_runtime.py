"""DockerRuntime against the real engine, with the busybox test image."""

import asyncio
import hashlib
import os
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from swarmlet.runtime.base import (
    LABEL_NETWORK,
    LABEL_NODE_ID,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_STACK_NAMESPACE,
    LABEL_TASK_ID,
    EventKind,
    FileReference,
    HealthCheck,
    HealthStatus,
    ImageNotFoundError,
    Mount,
    PublishedPort,
    Ulimit,
    NetworkAttachment,
    Resources,
    TaskRuntimeError,
    ContainerState,
)
from swarmlet.runtime.taskfiles import filesystem_type

pytestmark = pytest.mark.docker


async def run_to_exit(runtime, config):
    await runtime.prepare(config)
    await runtime.start(config.task_id)
    return await asyncio.wait_for(runtime.wait(config.task_id), 30)


async def test_runs_a_task_and_reports_its_exit_code(docker_runtime, node_id, make_config):
    config = make_config(node_id, command=["sh", "-c", "echo hello; exit 3"])

    status = await run_to_exit(docker_runtime, config)

    assert status.exit_code == 3
    assert not status.oom_killed
    assert status.error == "exit code 3"
    state = await docker_runtime.inspect(config.task_id)
    assert state.state is ContainerState.EXITED
    assert state.exit_code == 3
    # Not finished_at >= started_at: for a task this short the engine may stamp its end a
    # few microseconds before its start.
    assert state.started_at is not None and state.finished_at is not None
    assert abs(state.finished_at - state.started_at) < timedelta(seconds=5)
    assert [line async for line in docker_runtime.logs(config.task_id)] == ["hello"]


async def test_clean_exit_has_no_error(docker_runtime, node_id, make_config):
    status = await run_to_exit(docker_runtime, make_config(node_id, command=["true"]))
    assert (status.exit_code, status.error) == (0, None)


async def test_prepare_applies_the_config_without_starting(docker_runtime, docker_client, node_id, make_config):
    config = make_config(
        node_id,
        entrypoint=["sh", "-c"],
        command=["echo $GREETING"],
        env={"GREETING": "hi there"},
        labels={"swarmlet.test": "1", "team": "blue"},
        hostname="task-host",
        user="nobody",
        working_dir="/tmp",
        stop_signal="SIGUSR1",
        resources=Resources(cpus=0.5, memory=64 * 1024 * 1024, pids=50),
        ports=[PublishedPort(target=8080, published=None)],
        mounts=[Mount(type="tmpfs", target="/scratch")],
        ulimits=[Ulimit(name="nofile", soft=1024, hard=2048)],
        cap_drop=["NET_RAW"],
        extra_hosts={"db.local": "10.1.2.3"},
    )

    await docker_runtime.prepare(config)
    await docker_runtime.prepare(config)  # idempotent: still one container

    containers = docker_client.containers.list(all=True, filters={"label": f"{LABEL_TASK_ID}={config.task_id}"})
    assert len(containers) == 1
    attrs = containers[0].attrs
    assert containers[0].name == f"{config.service_name}.{config.task_id[:12]}"
    assert attrs["State"]["Status"] == "created"
    assert "GREETING=hi there" in attrs["Config"]["Env"]
    assert attrs["Config"]["Entrypoint"] == ["sh", "-c"]
    assert attrs["Config"]["Cmd"] == ["echo $GREETING"]
    assert attrs["Config"]["Hostname"] == "task-host"
    assert attrs["Config"]["User"] == "nobody"
    assert attrs["Config"]["WorkingDir"] == "/tmp"
    assert attrs["Config"]["StopSignal"] == "SIGUSR1"
    labels = attrs["Config"]["Labels"]
    assert labels["team"] == "blue"
    assert labels[LABEL_TASK_ID] == config.task_id
    assert labels[LABEL_SERVICE_ID] == config.service_id
    assert labels[LABEL_SERVICE_NAME] == config.service_name
    assert labels[LABEL_NODE_ID] == node_id
    assert labels[LABEL_STACK_NAMESPACE] == "teststack"
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["PidsLimit"] == 50
    assert host["Init"] is True
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": ""}]}
    assert [(m["Type"], m["Target"]) for m in host["Mounts"]] == [("tmpfs", "/scratch")]
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert host["CapDrop"] == ["NET_RAW"]
    assert host["ExtraHosts"] == ["db.local:10.1.2.3"]
    assert (await docker_runtime.inspect(config.task_id)).state is ContainerState.CREATED

    status = await asyncio.wait_for(_start_and_wait(docker_runtime, config.task_id), 30)
    assert status.exit_code == 0
    assert [line async for line in docker_runtime.logs(config.task_id)] == ["hi there"]


async def _start_and_wait(runtime, task_id):
    await runtime.start(task_id)
    return await runtime.wait(task_id)


async def test_shutdown_is_prompt_when_the_task_obeys_the_stop_signal(docker_runtime, node_id, make_config):
    config = make_config(node_id, command=["sleep", "60"], init=True)
    await docker_runtime.prepare(config)
    await docker_runtime.start(config.task_id)

    started = time.monotonic()
    await docker_runtime.shutdown(config.task_id, grace=10)

    assert time.monotonic() - started < 3
    status = await docker_runtime.wait(config.task_id)
    assert status.exit_code == 143  # 128 + SIGTERM


async def test_shutdown_sends_the_configured_stop_signal(docker_runtime, node_id, make_config):
    # `sleep & wait` so the shell runs its trap at once instead of after sleep ends.
    script = 'trap "echo got USR1; exit 7" USR1; echo ready; sleep 60 & wait'
    config = make_config(node_id, command=["sh", "-c", script], stop_signal="SIGUSR1", init=False)
    await docker_runtime.prepare(config)
    await docker_runtime.start(config.task_id)
    await _wait_for_log_line(docker_runtime, config.task_id, "ready")

    await docker_runtime.shutdown(config.task_id, grace=10)

    assert (await docker_runtime.wait(config.task_id)).exit_code == 7
    assert "got USR1" in [line async for line in docker_runtime.logs(config.task_id)]


async def test_shutdown_kills_after_the_grace_period(docker_runtime, node_id, make_config):
    config = make_config(node_id, command=["sh", "-c", 'trap "" TERM; echo ready; sleep 60 & wait'], init=False)
    await docker_runtime.prepare(config)
    await docker_runtime.start(config.task_id)
    await _wait_for_log_line(docker_runtime, config.task_id, "ready")

    started = time.monotonic()
    await docker_runtime.shutdown(config.task_id, grace=1.0)
    elapsed = time.monotonic() - started

    assert 1.0 <= elapsed < 5
    assert (await docker_runtime.wait(config.task_id)).exit_code == 137  # SIGKILL


async def _wait_for_log_line(runtime, task_id, expected, timeout=10.0):
    async with asyncio.timeout(timeout):
        async for line in runtime.logs(task_id, follow=True):
            if line == expected:
                return


async def test_container_killed_from_outside_produces_an_exited_event(
    docker_runtime, docker_client, node_id, make_config, next_event
):
    config = make_config(node_id, command=["sleep", "60"])
    events = docker_runtime.events()
    await docker_runtime.prepare(config)
    await docker_runtime.start(config.task_id)  # returns once the container runs: no event says it

    docker_client.containers.get(f"{config.service_name}.{config.task_id[:12]}").kill(signal="SIGKILL")

    exited = await next_event(events, lambda e: e.task_id == config.task_id)
    assert exited.kind is EventKind.EXITED
    assert exited.exit_code == 137
    assert exited.detail == "exit code 137"
    assert (await docker_runtime.wait(config.task_id)).exit_code == 137


async def test_oom_kill_is_reported(docker_runtime, node_id, make_config, next_event):
    # dd as PID 1 so the process the kernel kills is the task itself; a 64 MiB buffer
    # against a 16 MiB limit (no swap on the test machines).
    config = make_config(
        node_id,
        entrypoint=["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        init=False,
        resources=Resources(memory=16 * 1024 * 1024),
    )
    events = docker_runtime.events()

    status = await run_to_exit(docker_runtime, config)

    assert status.oom_killed
    assert status.exit_code == 137
    assert status.error == "exit code 137 (OOM killed)"
    # The OOM kill is no event of its own: the exit says it.
    exited = await next_event(events, lambda e: e.task_id == config.task_id)
    assert (exited.kind, exited.detail) == (EventKind.EXITED, "exit code 137 (OOM killed)")


async def test_health_check_turns_healthy(docker_runtime, node_id, make_config, next_event):
    config = make_config(
        node_id,
        command=["sh", "-c", "touch /tmp/ready; exec sleep 60"],
        healthcheck=HealthCheck(test=["CMD-SHELL", "test -f /tmp/ready"], interval=0.2, timeout=2, retries=3),
    )
    events = docker_runtime.events()
    await docker_runtime.prepare(config)
    await docker_runtime.start(config.task_id)
    assert (await docker_runtime.inspect(config.task_id)).health in (HealthStatus.STARTING, HealthStatus.HEALTHY)

    health = await next_event(events, lambda e: e.task_id == config.task_id and e.kind is EventKind.HEALTH)

    assert health.detail == "healthy"
    assert (await docker_runtime.inspect(config.task_id)).health is HealthStatus.HEALTHY


async def test_unhealthy_container_is_reported_with_the_check_output(docker_runtime, node_id, make_config, next_event):
    config = make_config(
        node_id,
        command=["sleep", "60"],
        healthcheck=HealthCheck(test=["CMD-SHELL", "echo database unreachable; exit 1"], interval=0.2, timeout=2, retries=2),
    )
    events = docker_runtime.events()
    await docker_runtime.prepare(config)
    await docker_runtime.start(config.task_id)

    health = await next_event(events, lambda e: e.task_id == config.task_id and e.kind is EventKind.HEALTH)

    assert health.detail == "container unhealthy: database unreachable"
    state = await docker_runtime.inspect(config.task_id)
    assert (state.health, state.error) == (HealthStatus.UNHEALTHY, "container unhealthy: database unreachable")
    # The agent stops an unhealthy task; its exit keeps the reason.
    await docker_runtime.shutdown(config.task_id, grace=5)
    assert (await docker_runtime.wait(config.task_id)).error == "container unhealthy: database unreachable"


async def test_missing_image_is_refused_with_a_clear_error(docker_runtime, docker_client, node_id, make_config):
    config = make_config(node_id, image="swarmlet-test/does-not-exist:1")

    with pytest.raises(ImageNotFoundError) as raised:
        await docker_runtime.prepare(config)

    assert str(raised.value).startswith(
        'image "swarmlet-test/does-not-exist:1" not found on this node and could not be pulled: '
    )
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_TASK_ID}={config.task_id}"}) == []


async def test_tasks_that_arrive_together_ask_the_engine_for_their_image_once(
    docker_runtime, node_id, make_config, monkeypatch
):
    api = docker_runtime.engine.api
    asked = []
    inspect_image = api.inspect_image
    monkeypatch.setattr(api, "inspect_image", lambda image: asked.append(image) or inspect_image(image))
    configs = [make_config(node_id, command=["true"]) for _ in range(5)]

    await asyncio.gather(*(docker_runtime.prepare(config) for config in configs))

    assert asked == [configs[0].image]
    for config in configs:
        assert (await docker_runtime.inspect(config.task_id)).state is ContainerState.CREATED


async def test_an_image_removed_after_it_was_found_is_looked_for_again(
    docker_runtime, docker_client, node_id, make_config
):
    tag = f"swarmlet-test/vanishing:{uuid.uuid4().hex[:12]}"
    base = make_config(node_id, command=["true"]).image
    docker_client.images.get(base).tag(tag)
    try:
        await docker_runtime.prepare(make_config(node_id, image=tag, command=["true"]))  # found, taken on trust
    finally:
        docker_client.images.remove(tag)  # only the tag goes
    config = make_config(node_id, image=tag, command=["true"])

    with pytest.raises(ImageNotFoundError) as raised:
        await docker_runtime.prepare(config)

    assert f'image "{tag}" not found on this node and could not be pulled' in str(raised.value)
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_TASK_ID}={config.task_id}"}) == []


async def test_secrets_and_configs_are_mounted_read_only_from_tmpfs(
    docker_runtime, docker_client, node_id, make_config
):
    secret_value = f"s3cret-{uuid.uuid4().hex}".encode()
    config = make_config(
        node_id,
        command=[
            "sh",
            "-c",
            # A digest, not the secret: the container's log is on the node's disk.
            "sha256sum /run/secrets/db_password | cut -d' ' -f1; cat /etc/app.conf; echo;"
            " stat -c '%a %u %g' /run/secrets/db_password;"
            " { echo x >> /run/secrets/db_password; } 2>/dev/null && echo writable || echo read-only",
        ],
        secrets=[FileReference(name="db_password", data=secret_value, uid=0, gid=0, mode=0o400)],
        configs=[FileReference(name="app", data=b"level=debug", target="/etc/app.conf", mode=0o444)],
    )

    status = await run_to_exit(docker_runtime, config)

    assert status.exit_code == 0
    lines = [line async for line in docker_runtime.logs(config.task_id)]
    assert lines == [hashlib.sha256(secret_value).hexdigest(), "level=debug", "400 0 0", "read-only"]
    container = docker_client.containers.get(f"{config.service_name}.{config.task_id[:12]}")
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    secret_source = Path(mounts["/run/secrets/db_password"]["Source"])
    assert mounts["/run/secrets/db_password"]["RW"] is False
    assert filesystem_type(secret_source) == "tmpfs"
    # Nothing of the secret in what Docker keeps on disk for the container.
    on_disk = [Path(container.attrs["GraphDriver"]["Data"]["UpperDir"]), Path("/var/lib/docker/containers") / container.id]
    assert not _files_containing(on_disk, secret_value)

    await docker_runtime.remove(config.task_id)
    assert not secret_source.exists()
    assert not secret_source.parent.parent.parent.exists()  # the task's whole directory


def _files_containing(roots, needle: bytes) -> list[Path]:
    found = []
    for root in roots:
        for directory, _, names in os.walk(root):
            for name in names:
                path = Path(directory, name)
                if path.is_file() and needle in path.read_bytes():
                    found.append(path)
    return found


# The test image's busybox is statically linked against glibc, whose resolver cannot load
# NSS modules: `wget http://web/` crashes, while `nslookup` (its own DNS client) works. So the
# alias is resolved by the engine's DNS through nslookup, then fetched by address (its
# wget -T crashes the same way).
RESOLVE_AND_FETCH_WEB = """
for attempt in $(seq 50); do
  address=$(nslookup web 2>/dev/null | awk '/^Address/ && !/:53$/ {a=$NF} END {print a}')
  [ -n "$address" ] && wget -q -O - "http://$address:8080/" && exit 0
  sleep 0.1
done
exit 1
"""


async def test_tasks_on_one_network_reach_each_other_by_alias(
    docker_runtimes, docker_client, node_id, make_config, network_name
):
    # Two runtimes (nodes) preparing at once on one engine: the network is created once.
    server_runtime, client_runtime = docker_runtimes(node_id), docker_runtimes(node_id + "-b")
    server = make_config(
        node_id,
        command=["sh", "-c", "mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
        networks=[NetworkAttachment(network_name, aliases=["web"])],
    )
    client = make_config(
        node_id + "-b",
        command=["sh", "-c", RESOLVE_AND_FETCH_WEB],
        networks=[NetworkAttachment(network_name, aliases=["client"])],
    )
    await asyncio.gather(server_runtime.prepare(server), client_runtime.prepare(client))
    networks = [n for n in docker_client.networks.list(names=[network_name]) if n.name == network_name]
    assert len(networks) == 1
    assert networks[0].attrs["Labels"] == {LABEL_NETWORK: network_name, LABEL_STACK_NAMESPACE: "teststack"}

    await server_runtime.start(server.task_id)
    await client_runtime.start(client.task_id)
    status = await asyncio.wait_for(client_runtime.wait(client.task_id), 30)

    assert status.exit_code == 0
    assert [line async for line in client_runtime.logs(client.task_id)] == ["hello-from-web"]


async def test_each_runtime_sees_only_its_own_nodes_containers(docker_runtimes, node_id, make_config):
    mine, theirs = docker_runtimes(node_id), docker_runtimes(node_id + "-other")
    my_task = make_config(node_id, command=["true"])
    their_task = make_config(node_id + "-other", command=["true"])
    await mine.prepare(my_task)
    await theirs.prepare(their_task)

    owned = await mine.list_owned()

    assert [(t.task_id, t.service_id, t.state) for t in owned] == [(my_task.task_id, my_task.service_id, ContainerState.CREATED)]
    assert await mine.inspect(their_task.task_id) is None
    await mine.remove(their_task.task_id)  # not ours: nothing happens
    assert (await theirs.inspect(their_task.task_id)).state is ContainerState.CREATED
    with pytest.raises(Exception, match="not|node"):
        await mine.prepare(make_config(node_id + "-other"))


async def test_logs_tail_and_follow(docker_runtime, docker_client, node_id, make_config, check_logs_tail_and_follow):
    config = make_config(
        node_id,
        command=["sh", "-c", "seq 1 5; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo last"],
    )
    await docker_runtime.prepare(config)
    await docker_runtime.start(config.task_id)
    container = docker_client.containers.get(f"{config.service_name}.{config.task_id[:12]}")

    async def release():
        container.exec_run(["touch", "/tmp/go"])

    await check_logs_tail_and_follow(docker_runtime, config.task_id, release)


async def test_close_stops_the_event_thread_and_ends_subscriptions(docker_runtimes, node_id, eventually):
    runtime = docker_runtimes(node_id)
    events = runtime.events()
    await eventually(lambda: _event_threads(node_id))

    await runtime.close()

    assert [event async for event in events] == []
    await eventually(lambda: not _event_threads(node_id), message="(the docker event thread is still alive)")


def _event_threads(node_id):
    return [t for t in threading.enumerate() if t.name == f"docker-events-{node_id}" and t.is_alive()]


async def test_unused_stack_networks_are_removed_and_used_ones_kept(
    docker_runtimes, docker_client, node_id, make_config, network_name
):
    # Two nodes share the engine: B's last task of the stack goes, A's task (only created,
    # not started) still refers to the network, so it stays until A's goes too.
    stack = f"netstack-{uuid.uuid4().hex[:8]}"
    mine, theirs = docker_runtimes(node_id), docker_runtimes(node_id + "-b")
    attached = [NetworkAttachment(network_name)]
    my_task = make_config(node_id, command=["sleep", "60"], stack_namespace=stack, networks=attached)
    their_task = make_config(node_id + "-b", command=["sleep", "60"], stack_namespace=stack, networks=attached)
    other_stack_net = network_name + "-other"
    other = make_config(node_id, command=["true"], networks=[NetworkAttachment(other_stack_net)])
    try:
        await mine.prepare(my_task)
        await theirs.prepare(their_task)
        await mine.prepare(other)  # another stack's network: never touched
        await theirs.start(their_task.task_id)

        def networks(name):
            return [n for n in docker_client.networks.list(names=[name]) if n.name == name]

        assert await theirs.remove_unused_networks(stack) == []  # a running container uses it
        await theirs.remove(their_task.task_id)
        assert await theirs.remove_unused_networks(stack) == []  # A's created container refers to it
        assert len(networks(network_name)) == 1
        await mine.remove(my_task.task_id)
        assert await theirs.remove_unused_networks(stack) == [network_name]
        assert networks(network_name) == []
        assert len(networks(other_stack_net)) == 1
        assert await theirs.remove_unused_networks(stack) == []  # nothing left: a no-op
        assert await theirs.remove_unused_networks("") == []

        # The stack deployed again on A, which still knows the removed network's ID: made anew.
        again = make_config(node_id, command=["true"], stack_namespace=stack, networks=attached)
        assert (await run_to_exit(mine, again)).exit_code == 0
        assert len(networks(network_name)) == 1
    finally:
        await mine.remove(other.task_id)
        for network in docker_client.networks.list(names=[other_stack_net]):
            if network.name == other_stack_net:
                network.remove()


async def test_prepare_again_after_an_agent_restart_keeps_the_one_container(
    docker_runtimes, docker_client, node_id, make_config
):
    config = make_config(node_id, command=["true"])
    await docker_runtimes(node_id).prepare(config)
    again = docker_runtimes(node_id)  # a new agent: knows nothing of the container yet
    await again.prepare(config)
    await again.start(config.task_id)
    assert (await asyncio.wait_for(again.wait(config.task_id), 30)).exit_code == 0
    containers = docker_client.containers.list(all=True, filters={"label": f"{LABEL_TASK_ID}={config.task_id}"})
    assert len(containers) == 1

    # Another node's task may not take the name: refused, and its container is untouched.
    stranger = make_config(node_id + "-x", command=["true"], task_id=config.task_id, service_name=config.service_name)
    with pytest.raises(TaskRuntimeError, match="not of this node"):
        await docker_runtimes(node_id + "-x").prepare(stranger)
    assert [c.id for c in docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_TASK_ID}={config.task_id}"})] == [containers[0].id]


def _docker_info(template: str):
    import json
    import subprocess

    return json.loads(subprocess.run(["docker", "info", "--format", template], check=True, capture_output=True,
                                     text=True).stdout)


async def test_describe_reports_the_engine_as_docker_info_does(docker_runtime):
    described = await docker_runtime.describe()

    info = _docker_info("{{json .}}")
    # The engine's labels as the CLI shows them ("key=value" strings; none on a plain dockerd).
    cli_labels = _docker_info("{{json .Labels}}") or []
    assert described.engine_labels == dict(label.split("=", 1) for label in cli_labels if "=" in label)
    assert (described.os, described.architecture) == (info["OSType"], info["Architecture"])
    assert described.cpus == info["NCPU"]
    assert described.memory_bytes == info["MemTotal"]
