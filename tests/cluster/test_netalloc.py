"""Network allocation and published ports through the API of a real (one-node, process
runtime) cluster: the address pool is a cluster setting, a node says which data plane it
runs, a stack's tasks get their addresses and its services their VIPs, a published port
is unique in the cluster, and an ingress port on nodes without the overlay data plane
is refused with a message pointing at `--isolated`; every refusal changes nothing."""
from __future__ import annotations

import ipaddress
import json

import pytest

from swarmlet.cli.client import ApiError

from . import conftest
from .conftest import FAST_SETTINGS, swarmlet, wait_until
from .test_services import SLEEPER, Stacks

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def stacks(tmp_path_factory) -> Stacks:
    directory = tmp_path_factory.mktemp("netalloc")
    # Its own loopback range, as make_cluster gives one (module-scoped: the tests share the cluster).
    cluster = conftest.TestCluster(directory / "cluster", f"127.0.{next(conftest._ranges) % 250}.2", "process")
    try:
        yield Stacks(cluster.up(1, 0, FAST_SETTINGS), directory)
    finally:
        cluster.down()


def web(ports: str) -> str:
    return f"""
        services:
          web:
            image: busybox
            command: {SLEEPER}
            ports: {ports}
    """


def test_the_address_pool_is_a_setting_and_the_node_reports_its_data_plane(stacks):
    settings = json.loads(stacks.cluster.cli("cluster", "settings", "--format", "json").stdout)
    assert settings["address_pool"] == {"subnets": ["10.0.0.0/8"], "mask_length": 24}
    assert "Address pool 10.0.0.0/8, a /24 per network" in stacks.cluster.cli("cluster", "settings").stdout
    (node,) = stacks.api.call("GET", "/v1/nodes")
    assert wait_until(lambda: stacks.api.call("GET", f"/v1/nodes/{node['id']}")["status"]["description"].get(
        "data_plane"), 10, "the node's hello") == "none"


def test_services_get_vips_and_published_ports_are_unique(stacks):
    stacks.deploy("hostapp", web('[{target: 80, published: 18080, mode: host}]'))
    (task,) = stacks.running("hostapp_web", 1)
    (service,) = [s for s in stacks.api.call("GET", "/v1/services") if s["name"] == "hostapp_web"]
    (vip,) = service["virtual_ips"]
    subnet = ipaddress.ip_network(vip["subnet"])
    assert vip["network"] == "hostapp_default" and subnet.prefixlen == 24 and subnet.subnet_of(
        ipaddress.ip_network("10.0.0.0/8"))
    # A node without the overlay data plane makes nothing of an address: its tasks take none.
    assert task["network_addresses"] == {}

    before = stacks.api.call("GET", "/v1/services")
    for ports, complaint in [
        ("[{target: 80, published: 18080}]", "service meshapp_web: port 18080/tcp is already published by service "
                                             "hostapp_web; nothing was deployed"),
        ('["18081:80"]', "publishes port 18081/tcp in ingress mode, which needs the routing mesh, but node(s) "
                         "manager-1 do not run the overlay data plane (start nodes with --data-plane overlay, as "
                         "`swarmlet local up --isolated` does), or publish it with mode: host; nothing was deployed"),
    ]:
        with pytest.raises(ApiError) as refused:
            stacks.deploy("meshapp", web(ports))
        assert refused.value.status == 400 and complaint in str(refused.value), str(refused.value)
    assert stacks.api.call("GET", "/v1/services") == before


def test_a_bad_address_pool_is_refused_at_init_and_leaves_nothing(tmp_path):
    data_dir = tmp_path / "node"
    result = swarmlet("init", "--advertise-addr", "127.0.0.1:1", "--data-dir", str(data_dir),
                      "--default-addr-pool", "10.0.0.0/8", "--default-addr-pool-mask-length", "31", check=False)
    assert result.returncode != 0 and "--default-addr-pool-mask-length: 31 is not a prefix length between 1 and 29" \
        in result.stderr, result.stderr
    result = swarmlet("init", "--advertise-addr", "127.0.0.1:1", "--data-dir", str(data_dir),
                      "--default-addr-pool", "10.0.0.0/33", check=False)
    assert result.returncode != 0 and "'10.0.0.0/33' is not an IPv4 network" in result.stderr, result.stderr
    assert not data_dir.exists()
