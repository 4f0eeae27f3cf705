"""The data plane takes a network's devices it found as wanted on trust for
RECHECK_S while planes ask the same of them: during a deploy every task that
starts makes a new plane for every node, and only the backends change. Reading every
device back at each of them held the agent's event loop for most of a second per
50-replica deploy. The ruleset is written at every plane that changes it, read back only as often.
Pure: fakes count the reads; the clock is swarmlet.trust's, moved by the test."""
from __future__ import annotations

from dataclasses import replace

import pytest

from swarmlet import trust
from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, ServiceEndpoint
from swarmlet.network import dataplane as dataplane_module
from swarmlet.network.dataplane import RECHECK_S, OverlayDataPlane

NODE = "198.18.0.11"
WEB = ServiceEndpoint(service_id="web", names=("web",), endpoint_mode="vip", vip="10.0.9.2", backends=())
NETWORK = OverlayNetwork(id="app", name="swc_app", vni=4301, subnet="10.0.9.0/24", gateway="10.0.9.254",
                         internal=False, peers=("198.18.0.12",), services=(WEB,))


def plane(version: int, *networks: OverlayNetwork) -> NetworkPlane:
    return NetworkPlane(node_address=NODE, version=version, networks=networks)


def with_backends(network: OverlayNetwork, count: int) -> OverlayNetwork:
    backends = tuple(Backend(f"t{i}", f"10.0.9.{10 + i}", NODE) for i in range(count))
    return replace(network, services=(replace(WEB, backends=backends),))


class FakeLinks:
    def __init__(self):
        self.calls: list[str] = []
        self.vnis: set[int] = set()

    async def ensure_vxlan(self, network, local):
        self.calls.append("ensure_vxlan")
        self.vnis.add(network.vni)
        return network.vni

    async def sync_fdb(self, index, peers):
        self.calls.append("sync_fdb")

    async def sync_addresses(self, network, vips, with_gateway):
        self.calls.append("sync_addresses")

    async def our_vnis(self):
        self.calls.append("our_vnis")
        return set(self.vnis)

    async def remove_link(self, name):
        self.calls.append("remove_link")
        self.vnis.discard(int(name.removeprefix("swvx")))

    def close(self):
        self.calls.append("close")


class FakeBridges:
    sets_gateway = True

    def __init__(self, links: FakeLinks):
        self.links = links

    async def ensure(self, network):
        self.links.calls.append("ensure_bridge")

    async def ours(self):
        return set()

    async def remove(self, vni):
        return True


class FakeResolver:
    def set_names(self, names):
        self.names = names

    async def sync(self, gateways):
        pass

    async def close(self):
        pass


@pytest.fixture
def world(monkeypatch):
    written: list[int] = []
    kernel = {"summary": None, "reads": 0}

    async def read_ruleset():
        kernel["reads"] += 1
        return kernel["summary"] or dataplane_module.Ruleset().summary()

    async def apply_ruleset(ruleset):
        written.append(len(ruleset.script()))
        kernel["summary"] = ruleset.summary()

    async def forget_flows_to(address):
        pass

    monkeypatch.setattr(dataplane_module.netfilter, "read_ruleset", read_ruleset)
    monkeypatch.setattr(dataplane_module.netfilter, "apply_ruleset", apply_ruleset)
    monkeypatch.setattr(dataplane_module.netfilter, "forget_flows_to", forget_flows_to)
    monkeypatch.setattr(dataplane_module, "enable_forwarding", lambda: None)
    clock = [1000.0]
    monkeypatch.setattr(trust.time, "monotonic", lambda: clock[0])
    links = FakeLinks()
    data_plane = OverlayDataPlane(FakeBridges(links))
    data_plane._links = links
    data_plane._resolver = FakeResolver()
    return data_plane, links, written, clock, kernel


async def test_planes_that_only_change_backends_write_the_ruleset_but_do_not_read_the_devices_again(world):
    data_plane, links, written, clock, kernel = world
    await data_plane.apply(plane(1, NETWORK))
    assert links.calls == ["ensure_bridge", "ensure_vxlan", "sync_fdb", "sync_addresses", "our_vnis"]
    assert kernel["reads"] == 1
    links.calls.clear()
    for count in (1, 2, 3):  # three tasks start
        clock[0] += RECHECK_S / 10
        result = await data_plane.apply(plane(1 + count, with_backends(NETWORK, count)))
        assert result.ruleset_written
    assert links.calls == [] and kernel["reads"] == 1
    assert len(written) == 4  # every plane's backends reached the kernel
    clock[0] += RECHECK_S
    kernel["summary"] = None  # someone flushed the ruleset behind the agent's back
    result = await data_plane.apply(plane(5, with_backends(NETWORK, 3)))
    assert links.calls == ["ensure_bridge", "ensure_vxlan", "sync_fdb", "sync_addresses", "our_vnis"]
    assert kernel["reads"] == 2 and result.ruleset_written  # read back, found missing, written again


async def test_a_change_of_peers_vips_or_networks_is_applied_to_the_devices_at_once(world):
    data_plane, links, written, clock, kernel = world
    await data_plane.apply(plane(1, NETWORK))
    links.calls.clear()
    await data_plane.apply(plane(2, replace(NETWORK, peers=("198.18.0.12", "198.18.0.13"))))
    assert links.calls == ["ensure_bridge", "ensure_vxlan", "sync_fdb", "sync_addresses"]  # same networks: no sweep
    links.calls.clear()
    api = replace(WEB, service_id="api", names=("api",), vip="10.0.9.3")
    await data_plane.apply(plane(3, replace(NETWORK, peers=("198.18.0.12", "198.18.0.13"), services=(WEB, api))))
    assert "sync_addresses" in links.calls  # a new VIP goes on the bridge
    links.calls.clear()
    other = replace(NETWORK, id="db", name="swc_db", vni=4302, subnet="10.0.10.0/24", gateway="10.0.10.254",
                    services=())
    await data_plane.apply(plane(4, other))
    assert links.calls == ["ensure_bridge", "ensure_vxlan", "sync_fdb", "sync_addresses", "our_vnis", "remove_link"]
    assert links.vnis == {4302}
    links.calls.clear()
    await data_plane.apply(plane(5, NETWORK, other))  # a network removed here is not taken on trust
    assert links.calls[:4] == ["ensure_bridge", "ensure_vxlan", "sync_fdb", "sync_addresses"]
    assert links.vnis == {4301, 4302}


async def test_an_apply_given_up_midway_reads_everything_back_on_a_new_socket(world):
    import asyncio

    data_plane, links, written, clock, kernel = world
    await data_plane.apply(plane(1, NETWORK))
    stuck = asyncio.Event()

    async def never_answers(index, peers):
        stuck.set()
        await asyncio.Event().wait()

    links.sync_fdb = never_answers
    moved = replace(NETWORK, peers=("198.18.0.13",))
    attempt = asyncio.ensure_future(data_plane.apply(plane(2, moved)))
    await asyncio.wait_for(stuck.wait(), 5)
    attempt.cancel()  # the agent's PLANE_APPLY_TIMEOUT
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert links.calls[-1] == "close"  # the netlink socket that never answered is dropped
    del links.sync_fdb
    links.calls.clear()
    reads = kernel["reads"]
    await data_plane.apply(plane(3, with_backends(NETWORK, 1)))  # the same shape as before the give-up
    assert links.calls == ["ensure_bridge", "ensure_vxlan", "sync_fdb", "sync_addresses", "our_vnis"]
    assert kernel["reads"] == reads + 1
