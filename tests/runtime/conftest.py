"""Fixtures for the runtime tests: unique node IDs, task configs, runtimes that clean up."""

import asyncio
import shutil
import time
import uuid

import pytest

from swarmlet.runtime.base import LABEL_NETWORK, LABEL_NODE_ID, ContainerConfig, RuntimeEvent, ContainerState
from swarmlet.runtime.docker import DockerRuntime, MachineNetworkLock
from swarmlet.runtime.taskfiles import DEFAULT_TASK_FILES_ROOT


async def _eventually(condition, timeout: float = 10.0, interval: float = 0.05, message: str = ""):
    """Poll `condition` (sync or async) until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s {message}".strip())
        await asyncio.sleep(interval)


async def _next_event(subscription, predicate, timeout: float = 15.0) -> RuntimeEvent:
    """The first event from `subscription` matching `predicate`, within a deadline."""
    async with asyncio.timeout(timeout):
        async for event in subscription:
            if predicate(event):
                return event
    pytest.fail("event stream ended before the expected event")


async def _check_logs_tail_and_follow(runtime, task_id: str, release) -> None:
    """The logs contract both runtimes share. The started task prints 1..5, waits until
    `release()` lets it go on, prints "last" and exits."""
    followed = []
    follower = runtime.logs(task_id, follow=True)
    async with asyncio.timeout(10):
        async for line in follower:
            followed.append(line)
            if line == "5":
                break
        # The task still runs: whatever comes next can only come from following.
        assert (await runtime.inspect(task_id)).state is ContainerState.RUNNING
        await release()
        followed += [line async for line in follower]  # ends when the task exits

    assert followed == ["1", "2", "3", "4", "5", "last"]
    assert [line async for line in runtime.logs(task_id, tail=2)] == ["5", "last"]
    assert [line async for line in runtime.logs(task_id, tail=0)] == []


@pytest.fixture
def check_logs_tail_and_follow():
    return _check_logs_tail_and_follow


@pytest.fixture
def eventually():
    return _eventually


@pytest.fixture
def next_event():
    return _next_event


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def node_id() -> str:
    return _unique("test-node")


@pytest.fixture
def make_config(docker_test_labels):
    """Build a ContainerConfig for a fresh task; keyword arguments override fields."""

    def make(node_id: str, image: str = "swarmlet-test/busybox:1", **overrides) -> ContainerConfig:
        task_id = uuid.uuid4().hex
        fields = dict(
            task_id=task_id,
            service_id=_unique("svc"),
            service_name=_unique("web"),
            node_id=node_id,
            image=image,
            stack_namespace="teststack",
            labels=dict(docker_test_labels),
            init=True,  # busybox sh as PID 1 ignores SIGTERM; keep stops fast
            stop_grace_period=5.0,
        )
        fields.update(overrides)
        return ContainerConfig(**fields)

    return make


DOCKER_TEST_LABEL = "swarmlet.test"  # as in tests/conftest.py (not importable in importlib mode)


@pytest.fixture
def network_name(docker_client):
    """A unique network name; the network the runtime makes for it is removed afterwards."""
    name = _unique("swarmlet-test-net")
    yield name
    for network in docker_client.networks.list(names=[name]):
        if network.name == name and LABEL_NETWORK in (network.attrs.get("Labels") or {}):
            network.reload()  # the listing leaves out attached containers
            for container in network.containers:
                if DOCKER_TEST_LABEL in container.labels:
                    container.remove(force=True, v=True)
            network.remove()


@pytest.fixture
async def docker_runtimes(docker_client, docker_test_image, tmp_path):
    """Factory of DockerRuntimes; closes them and removes every container of their nodes.
    They share the engine, so they share a network lock, as `swarmlet local`'s nodes do."""
    created: list[DockerRuntime] = []
    network_lock = MachineNetworkLock(tmp_path / "docker-networks.lock")

    def make(node_id: str) -> DockerRuntime:
        runtime = DockerRuntime(node_id, network_lock=network_lock)
        created.append(runtime)
        return runtime

    yield make
    for runtime in created:
        try:
            await runtime.close()
        finally:  # a failing close() must not leave containers behind
            for container in docker_client.containers.list(
                all=True, filters={"label": f"{LABEL_NODE_ID}={runtime.node_id}"}
            ):
                container.remove(force=True, v=True)
            shutil.rmtree(DEFAULT_TASK_FILES_ROOT / runtime.node_id, ignore_errors=True)


@pytest.fixture
def docker_runtime(docker_runtimes, node_id) -> DockerRuntime:
    return docker_runtimes(node_id)
