"""On a node running the overlay data plane, the Docker runtime attaches a task to the
Docker network the data plane made for its overlay (found by name, never created), with
the task's allocated address, and the node's gateway as its resolver."""
from __future__ import annotations

import asyncio
import random
import uuid

import docker.errors
import pytest

from swarmlet.runtime.base import LABEL_TASK_ID, NetworkAttachment, TaskRuntimeError

pytestmark = pytest.mark.docker


@pytest.fixture
def overlay_network(docker_client):
    """A bridge network standing for the data plane's (prefix swn), on a free /24."""
    name = f"swn-{uuid.uuid4().hex[:8]}-overlay"
    for _attempt in range(20):  # other users of the engine hold subnets too
        third = random.randrange(0, 256)
        subnet = f"10.251.{third}.0/24"
        try:
            network = docker_client.networks.create(
                name, driver="bridge",
                ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet,
                                                                                  gateway=f"10.251.{third}.254")]))
            break
        except docker.errors.APIError as err:
            if "overlap" not in str(err).lower():
                raise
    else:
        pytest.fail("no free /24 in 10.251.0.0/16 on this engine")
    yield name, f"10.251.{third}"
    network.reload()
    for container in network.containers:
        container.remove(force=True, v=True)
    network.remove()


async def test_a_task_gets_its_address_and_resolver_on_the_data_planes_network(docker_runtime, node_id, make_config,
                                                                              overlay_network, docker_client):
    name, prefix = overlay_network
    config = make_config(node_id, command=["sh", "-c", "ip -4 -o addr show eth0; grep nameserver /etc/resolv.conf"],
                         networks=[NetworkAttachment(name, aliases=["web"], ipv4_address=f"{prefix}.7", overlay=True)],
                         dns=[f"{prefix}.254"])
    await docker_runtime.prepare(config)
    await docker_runtime.start(config.task_id)
    status = await asyncio.wait_for(docker_runtime.wait(config.task_id), 30)
    lines = [line async for line in docker_runtime.logs(config.task_id)]
    assert status.exit_code == 0, lines
    assert f"inet {prefix}.7/24" in lines[0]
    # The engine's embedded resolver answers in the container and forwards to the node's resolver.
    assert lines[1:] == ["nameserver 127.0.0.11"]
    (container,) = docker_client.containers.list(all=True, filters={"label": f"{LABEL_TASK_ID}={config.task_id}"})
    assert container.attrs["HostConfig"]["Dns"] == [f"{prefix}.254"]
    assert container.attrs["NetworkSettings"]["Networks"][name]["Aliases"][:1] == ["web"]
    # The runtime made no network of its own for it.
    assert [n.name for n in docker_client.networks.list(names=[name]) if n.name.startswith(name)] == [name]


async def test_a_missing_overlay_network_is_a_clear_error_not_a_new_network(docker_runtime, node_id, make_config,
                                                                             docker_client):
    name = f"swn-{uuid.uuid4().hex[:8]}-overlay"
    config = make_config(node_id, command=["true"],
                         networks=[NetworkAttachment(name, ipv4_address="10.251.0.7", overlay=True)])
    with pytest.raises(TaskRuntimeError, match=f"network {name} is not on this node's engine"):
        await docker_runtime.prepare(config)
    assert not [n for n in docker_client.networks.list(names=[name]) if n.name == name]
