"""DockerBridges takes a network it found as wanted on trust for BRIDGE_RECHECK_S: a
deploy makes a new plane for every node at each task start, and checking each network
again for each (engine calls and iptables runs) cost the engines more than the starts.
Pure: a fake engine counts the calls; the clock is swarmlet.trust's, moved by the test."""
from __future__ import annotations

import pytest

from swarmlet import trust
from swarmlet.api.netplane import OverlayNetwork, docker_network_name
from swarmlet.network import bridges as bridges_module
from swarmlet.network.bridges import BRIDGE_RECHECK_S, LABEL_OVERLAY_VNI, DockerBridges

NETWORK = OverlayNetwork(id="app", name="swc_app", vni=4301, subnet="10.0.9.0/24", gateway="10.0.9.254",
                         internal=False, peers=())


class FakeApi:
    def __init__(self):
        self.networks_by_id: dict[str, dict] = {}
        self.calls: list[str] = []

    def networks(self, names=None, filters=None):
        self.calls.append("networks")
        found = list(self.networks_by_id.values())
        if names:
            found = [n for n in found if any(name in n["Name"] for name in names)]
        if filters and filters.get("label"):
            found = [n for n in found if LABEL_OVERLAY_VNI in n["Labels"]]
        return [dict(n) for n in found]

    def inspect_network(self, network_id):
        self.calls.append("inspect_network")
        return dict(self.networks_by_id[network_id])

    def create_network(self, name, driver, internal, ipam, options, labels):
        self.calls.append("create_network")
        network_id = f"id{len(self.networks_by_id) + 1}"
        pool = ipam["Config"][0]
        self.networks_by_id[network_id] = {
            "Id": network_id, "Name": name, "Driver": driver, "Internal": internal, "Labels": labels,
            "IPAM": {"Config": [{"Subnet": pool["Subnet"], "Gateway": pool["Gateway"]}]}, "Options": options,
            "Containers": {}}
        return {"Id": network_id}

    def remove_network(self, network_id):
        self.calls.append("remove_network")
        del self.networks_by_id[network_id]


class FakeEngine:
    def __init__(self):
        self.api = FakeApi()

    async def call(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


@pytest.fixture
def bridges(monkeypatch):
    async def no_iptables(*args):
        return True

    monkeypatch.setattr(bridges_module.netfilter, "let_mesh_into_docker_bridge", no_iptables)
    monkeypatch.setattr(bridges_module.netfilter, "forget_docker_bridge", no_iptables)
    clock = [1000.0]
    monkeypatch.setattr(trust.time, "monotonic", lambda: clock[0])
    engine = FakeEngine()
    return DockerBridges(engine), engine.api, clock


async def test_a_network_checked_as_wanted_is_not_asked_for_again_until_the_recheck(bridges):
    adapter, api, clock = bridges
    await adapter.ensure(NETWORK)
    assert "create_network" in api.calls
    api.calls.clear()
    clock[0] += BRIDGE_RECHECK_S / 2
    await adapter.ensure(NETWORK)
    assert api.calls == []  # the second plane of a deploy: no engine call
    clock[0] += BRIDGE_RECHECK_S
    await adapter.ensure(NETWORK)
    assert api.calls == ["networks", "inspect_network"]  # checked again, found as wanted


async def test_a_network_removed_behind_its_back_is_made_again_at_the_recheck(bridges):
    adapter, api, clock = bridges
    await adapter.ensure(NETWORK)
    (network_id,) = api.networks_by_id
    del api.networks_by_id[network_id]  # an operator's `docker network rm`
    clock[0] += BRIDGE_RECHECK_S + 0.1
    api.calls.clear()
    await adapter.ensure(NETWORK)
    assert "create_network" in api.calls
    assert [n["Name"] for n in api.networks_by_id.values()] == [docker_network_name(NETWORK)]


async def test_a_changed_network_or_one_this_node_removed_is_checked_at_once(bridges):
    adapter, api, clock = bridges
    await adapter.ensure(NETWORK)
    api.calls.clear()
    moved = OverlayNetwork(id="app", name="swc_app", vni=4301, subnet="10.0.10.0/24", gateway="10.0.10.254",
                           internal=False, peers=())
    await adapter.ensure(moved)  # another subnet: the engine's network is replaced
    assert "remove_network" in api.calls and "create_network" in api.calls
    (info,) = api.networks_by_id.values()
    assert info["IPAM"]["Config"][0]["Subnet"] == "10.0.10.0/24"
    assert await adapter.remove(NETWORK.vni)
    api.calls.clear()
    await adapter.ensure(moved)
    assert "create_network" in api.calls  # not taken on trust after its removal
