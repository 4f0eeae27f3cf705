"""The container options Compose files set (and `docker stack deploy` applies) reach a
real container: DockerRuntime against the engine, with the busybox test image."""

import io
import uuid

import docker.errors
import pytest

from swarmlet.runtime.base import (
    EventKind,
    HealthCheck,
    HealthStatus,
    LogConfig,
    Mount,
    NetworkAttachment,
    ContainerState,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def volume_name(docker_client):
    """A unique volume name; the volume the engine makes for it is removed afterwards."""
    name = f"swarmlet-test-vol-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        docker_client.volumes.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


@pytest.fixture
def image_with_healthcheck(docker_client, docker_test_image, docker_test_labels):
    """The test image plus a HEALTHCHECK (built locally from it: no registry needed)."""
    tag = f"swarmlet-test/healthy:{uuid.uuid4().hex[:10]}"
    dockerfile = (f"FROM {docker_test_image}\n"
                  'HEALTHCHECK --interval=30s --timeout=7s --retries=4 CMD ["sh", "-c", "test -f /tmp/ready"]\n')
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, labels=docker_test_labels, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


def _attrs(docker_client, config):
    (container,) = docker_client.containers.list(all=True, filters={"label": f"swarmlet.task.id={config.task_id}"})
    return container.attrs


async def test_prepare_applies_the_options_docker_stack_deploy_sets(
    docker_runtime, docker_client, node_id, make_config, volume_name, network_name, tmp_path
):
    config = make_config(
        node_id,
        tty=True,
        stdin_open=True,
        dns_search=["example.com"],
        dns_options=["ndots:2"],
        oom_score_adj=-100,
        isolation="default",
        logging=LogConfig(None, {"max-size": "1m", "max-file": "2"}),
        mounts=[
            Mount("volume", "/data", volume_name, no_copy=True, volume_driver_opts={"type": "tmpfs", "device": "tmpfs"},
                  volume_labels={"com.example.team": "blue"}),
            Mount("bind", "/host", str(tmp_path), propagation="rslave"),
            Mount("tmpfs", "/scratch", tmpfs_size=1 << 20, tmpfs_mode=0o1770),
        ],
        networks=[NetworkAttachment(network_name, aliases=["web"], driver_opts={"com.example.endpoint": "on"})],
    )

    await docker_runtime.prepare(config)

    attrs = _attrs(docker_client, config)
    assert (attrs["Config"]["Tty"], attrs["Config"]["OpenStdin"]) == (True, True)
    host = attrs["HostConfig"]
    assert (host["DnsSearch"], host["DnsOptions"], host["OomScoreAdj"]) == (["example.com"], ["ndots:2"], -100)
    assert host["Isolation"] == "default"
    # No driver named: the engine's default, with the given options.
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
    volume, bind, scratch = host["Mounts"]
    assert volume["VolumeOptions"]["NoCopy"] is True
    assert volume["VolumeOptions"]["DriverConfig"]["Options"] == {"type": "tmpfs", "device": "tmpfs"}
    assert bind["BindOptions"] == {"Propagation": "rslave"}
    assert scratch["TmpfsOptions"] == {"SizeBytes": 1 << 20, "Mode": 0o1770}
    # The engine made the stack volume with the top-level volume's options and labels.
    made = docker_client.volumes.get(volume_name).attrs
    assert made["Options"] == {"type": "tmpfs", "device": "tmpfs"}
    assert made["Labels"] == {"com.example.team": "blue"}
    endpoint = attrs["NetworkSettings"]["Networks"][network_name]
    assert endpoint["DriverOpts"] == {"com.example.endpoint": "on"}
    await docker_runtime.remove(config.task_id)


async def test_a_health_check_without_test_re_times_the_images_check(
    docker_runtime, docker_client, node_id, make_config, next_event, image_with_healthcheck
):
    # Compose `healthcheck: {interval: …}` with no test: Docker keeps the image's test.
    config = make_config(
        node_id,
        image=image_with_healthcheck,
        command=["sh", "-c", "touch /tmp/ready; exec sleep 60"],
        healthcheck=HealthCheck(interval=0.2, retries=2),
    )
    events = docker_runtime.events()
    await docker_runtime.prepare(config)

    check = _attrs(docker_client, config)["Config"]["Healthcheck"]
    assert check["Test"] == ["CMD", "sh", "-c", "test -f /tmp/ready"]  # the image's
    assert (check["Interval"], check["Retries"]) == (200_000_000, 2)  # the service's
    assert check["Timeout"] == 7_000_000_000  # left out: the image's

    await docker_runtime.start(config.task_id)
    health = await next_event(events, lambda e: e.task_id == config.task_id and e.kind is EventKind.HEALTH)
    assert health.detail == "healthy"


async def test_disable_switches_the_images_health_check_off(
    docker_runtime, docker_client, node_id, make_config, image_with_healthcheck
):
    config = make_config(node_id, image=image_with_healthcheck, command=["sleep", "60"],
                         healthcheck=HealthCheck(["NONE"]))
    await docker_runtime.prepare(config)
    assert _attrs(docker_client, config)["Config"]["Healthcheck"]["Test"] == ["NONE"]
    await docker_runtime.start(config.task_id)
    state = await docker_runtime.inspect(config.task_id)
    assert (state.state, state.health) == (ContainerState.RUNNING, HealthStatus.NONE)

