"""The data plane on real namespaces: three nodes on a LAN, tasks on each node's bridge,
each node's agent applying its plane from inside the node's namespace (conftest.py)."""
from __future__ import annotations

import json
import threading
import time

import pytest
from dnslib import QTYPE, RCODE


def test_tasks_reach_each_other_across_nodes(world, topo):
    c1 = world.namespaces["c1"]
    assert c1.http_get(topo.WEB2.address, topo.PORT) == "web2"
    payload = bytes(range(256)) * 5 + b"x" * 120  # 1,400 bytes: one segment, one datagram under the MTU
    assert c1.http_post(topo.WEB2.address, topo.PORT, payload) == payload
    assert c1.udp_echo(topo.WEB2.address, topo.PORT, payload) == payload
    # and the check can fail: more than the overlay's MTU does not pass unfragmented
    with pytest.raises(OSError):
        c1.udp_echo(topo.WEB2.address, topo.PORT, b"x" * 1450)


def addresses(reply) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def test_names_resolve_on_the_network_they_belong_to(world, topo):
    c1, i1 = world.namespaces["c1"], world.namespaces["i1"]
    resolver = topo.APP.gateway("n1")
    for name in ("web", "demo_web", "www", "WEB.", "web"):
        assert addresses(c1.dns(resolver, name)) == [topo.WEB_VIP], name
    assert sorted(addresses(c1.dns(resolver, "tasks.web"))) == [topo.WEB1.address, topo.WEB2.address]
    assert sorted(addresses(c1.dns(resolver, "pool"))) == [topo.WEB1.address, topo.WEB2.address]
    assert sorted(addresses(c1.dns(resolver, "tasks.web", tcp=True))) == [topo.WEB1.address, topo.WEB2.address]
    assert all(rr.ttl == 0 for rr in c1.dns(resolver, "web").rr)
    # scoped: the internal network's resolver knows its own services only, and vice versa
    assert addresses(i1.dns(topo.BACK.gateway("n1"), "store")) == [topo.STORE_VIP]
    assert i1.dns(topo.BACK.gateway("n1"), "web").header.rcode == RCODE.NXDOMAIN
    assert c1.dns(resolver, "store").header.rcode == RCODE.NXDOMAIN
    # a name nobody knows answers at once (no upstream in this world), never a silence
    started = time.monotonic()
    assert c1.dns(resolver, "example.org").header.rcode == RCODE.NXDOMAIN
    assert time.monotonic() - started < 0.5
    # a known name of another type: the name exists, no records
    reply = c1.dns(resolver, "web", "AAAA")
    assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [])


def test_the_vip_balances_over_backends_on_both_nodes(world, topo):
    c1 = world.namespaces["c1"]
    c1.ip("neigh", "flush", "to", topo.WEB_VIP)  # so that it asks again
    answers = [c1.http_get(topo.WEB_VIP, topo.PORT) for _ in range(8)]
    assert set(answers) == {"web1", "web2"}, answers  # web1 is on the client's own bridge
    # the client's own node answered its ARP for the VIP; the others never heard it (a node
    # answering an ARP request learns the asker)
    bridge_mac = json.loads(world.namespaces["n1"].ip("-j", "link", "show", "swbr4097"))[0]["address"]
    assert [n["lladdr"] for n in json.loads(c1.ip("-j", "neigh", "show", topo.WEB_VIP))] == [bridge_mac]
    for node in ("n2", "n3"):
        assert json.loads(world.namespaces[node].ip("-j", "neigh", "show", topo.C1.address)) == [], node
    # a port the VIP does not forward is refused at once
    with pytest.raises(ConnectionRefusedError):
        c1.http_get(topo.WEB_VIP, 9999)
    # every port and protocol of a VIP without `ports`, across nodes, on the internal network too
    assert world.namespaces["i1"].http_get(topo.STORE_VIP, topo.PORT) == "i2"
    assert world.namespaces["i1"].udp_echo(topo.STORE_VIP, topo.PORT, b"ping") == b"ping"


def test_the_mesh_answers_on_every_node_address(world, topo):
    client = world.namespaces["client"]
    for node, address in topo.NODES.items():
        answers = {client.http_get(address, topo.PUBLISHED) for _ in range(6)}
        assert answers == {"web1", "web2"}, (node, answers)  # n3 runs no task of web


def test_an_internal_network_has_no_way_out(world, topo):
    outside = topo.CLIENT
    assert world.namespaces["c1"].http_get(outside, topo.PORT) == "outside"  # the check can pass
    i1 = world.namespaces["i1"]
    for address in (outside, topo.NODES["n2"], topo.NODES["n1"]):
        with pytest.raises(OSError):
            i1.http_get(address, topo.PORT, timeout=0.5)


def test_reapplying_the_same_plane_changes_nothing(world, topo):
    before = {node: world.state(node) for node in topo.NODES}
    results = world.apply_all()
    assert all(not r["ruleset_written"] and not r["flows_forgotten"] and not r["networks_removed"]
               for r in results.values()), results
    assert {node: world.state(node) for node in topo.NODES} == before


def test_flood_entries_follow_the_peers(world, topo):
    from dataclasses import replace
    plane = topo.plane_for("n1")
    app = plane.networks[0]
    flood = lambda: [l for l in world.state("n1")["fdb"] if "swvx4097" in l]  # noqa: E731
    assert [l.split()[4] for l in flood()] == [topo.NODES["n2"], topo.NODES["n3"]]
    try:
        world.agents["n1"].apply(replace(plane, networks=(replace(app, peers=(topo.NODES["n2"],)),) + plane.networks[1:]))
        assert [l.split()[4] for l in flood()] == [topo.NODES["n2"]]
    finally:
        world.agents["n1"].apply(plane)
    assert [l.split()[4] for l in flood()] == [topo.NODES["n2"], topo.NODES["n3"]]


def test_a_bad_plane_is_refused_and_changes_nothing(world, topo):
    from dataclasses import replace
    before = world.state("n1")
    good = topo.plane_for("n1")
    bad = replace(good, networks=(replace(good.networks[0], vni=12, gateway="10.9.9.9"),) + good.networks[1:])
    with pytest.raises(RuntimeError, match="vni 12 is outside 4096-16777215.*gateway 10.9.9.9 is outside the subnet"):
        world.agents["n1"].apply(bad)
    assert world.state("n1") == before


def connection_to(ns, address, port, backend, topo):
    """A keep-alive connection through `address:port` that the balancer sent to `backend`."""
    for _ in range(10):
        connection = ns.keepalive(address, port)
        if topo.keepalive_get(connection) == backend:
            return connection
        connection.close()
    raise AssertionError(f"no connection through {address}:{port} reached {backend}")


def test_a_removed_backend_gets_no_more_traffic_at_once(world, topo):
    c1, client = world.namespaces["c1"], world.namespaces["client"]
    through_vip = connection_to(c1, topo.WEB_VIP, topo.PORT, "web2", topo)
    through_mesh = connection_to(client, topo.NODES["n3"], topo.PUBLISHED, "web2", topo)
    try:
        results = world.apply_all(web=(topo.WEB1,), version=2)
        assert results["n1"]["flows_forgotten"] == [topo.WEB2.address]
        # the established flows to the removed backend go no further...
        for connection in (through_vip, through_mesh):
            with pytest.raises(OSError):
                topo.keepalive_get(connection)
        # ...new ones go to the remaining backend only, and the names no longer have it
        assert {c1.http_get(topo.WEB_VIP, topo.PORT) for _ in range(6)} == {"web1"}
        assert {client.http_get(topo.NODES["n3"], topo.PUBLISHED) for _ in range(6)} == {"web1"}
        assert addresses(c1.dns(topo.APP.gateway("n1"), "tasks.web")) == [topo.WEB1.address]
        assert addresses(c1.dns(topo.APP.gateway("n1"), "pool")) == [topo.WEB1.address]
    finally:
        through_vip.close()
        through_mesh.close()
        world.apply_all(version=3)
    assert {c1.http_get(topo.WEB_VIP, topo.PORT) for _ in range(6)} == {"web1", "web2"}


def test_a_restarted_agent_adopts_the_data_plane_without_a_gap(world, topo):
    c1, client = world.namespaces["c1"], world.namespaces["client"]
    through_vip = connection_to(c1, topo.WEB_VIP, topo.PORT, "web2", topo)
    through_mesh = connection_to(client, topo.NODES["n3"], topo.PUBLISHED, "web1", topo)
    before = {node: world.state(node) for node in topo.NODES}
    # new connections through the mesh all along the restart: none may fail
    stop, outcomes = threading.Event(), []

    def keep_asking():
        while not stop.is_set():
            try:
                outcomes.append(client.http_get(topo.NODES["n3"], topo.PUBLISHED, timeout=1))
            except OSError as err:
                outcomes.append(err)
    asking = threading.Thread(target=keep_asking)
    asking.start()
    try:
        for node in topo.NODES:
            world.agents[node].kill()  # a crash: nothing is cleaned up
        # the kernel's data plane outlives the agents
        assert topo.keepalive_get(through_vip) == "web2"
        assert client.http_get(topo.NODES["n2"], topo.PUBLISHED) in {"web1", "web2"}
        for node in topo.NODES:
            world.start_agent(node)
        results = world.apply_all(version=4)
        assert all(not r["ruleset_written"] and not r["networks_removed"] for r in results.values()), results
        assert {node: world.state(node) for node in topo.NODES} == before  # same devices (indexes), rules
        assert topo.keepalive_get(through_vip) == "web2"
        assert topo.keepalive_get(through_mesh) == "web1"
        assert addresses(c1.dns(topo.APP.gateway("n1"), "web")) == [topo.WEB_VIP]  # the resolver is back
        topo.wait_until(lambda: len(outcomes) >= 20, 10, "requests through the mesh")
    finally:
        stop.set()
        asking.join()
        through_vip.close()
        through_mesh.close()
    failures = [o for o in outcomes if not isinstance(o, str)]
    assert not failures and set(outcomes) == {"web1", "web2"}, failures[:3]


def test_networks_that_leave_the_plane_are_removed_and_remove_all_leaves_nothing(world, topo):
    n2 = world.agents["n2"]
    try:
        result = n2.apply(topo.plane_for("n2", back=False, version=5))
        assert result["networks_removed"] == [topo.BACK.vni]
        state = world.state("n2")
        assert not any(f"{topo.BACK.vni}" in link[1] for link in state["links"])
        assert "swbr4097" in {link[1] for link in state["links"]}
        n2.command({"op": "remove_all"})
        state = world.state("n2")
        assert (state["links"], state["ruleset"].strip()) == ([], "")
    finally:
        n2.apply(topo.plane_for("n2", version=6))
        # the bridge is new: plug web2 and i2 back in
        for task in (topo.WEB2, topo.I2):
            world.namespaces["n2"].ip("link", "set", f"v{task.name}", "master", f"swbr{task.net.vni}", check=False)
    assert world.namespaces["c1"].http_get(topo.WEB2.address, topo.PORT) == "web2"
