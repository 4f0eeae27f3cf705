"""Each node's NetworkPlane, built from the store (dispatcher/planes.py, pure), over a
store that the manager's own deploy, orchestrator and scheduler filled."""
from __future__ import annotations

import time

import pytest

from swarmlet.api import errors

from swarmlet.api.netplane import Backend
from swarmlet.api.views import Network, Node, Service, Task
from swarmlet.manager.dispatcher.planes import PlaneIndex, node_plane
from swarmlet.manager.stacks import StackApi

from .test_netalloc import add_node, converge, service, stack


def index_of(store) -> PlaneIndex:
    return PlaneIndex.build(store.list(Node), store.list(Network), store.list(Service), store.list(Task),
                            store.index)


async def set_state(store, task: Task, state: str) -> None:
    current = store.get(Task, task.id)
    await store.commit([{"op": "update", "kind": "task", "id": task.id, "version": current.version,
                         "status": current.status.replace(state=state)}])


async def set_node_state(store, node_id: str, state: str) -> None:
    node = store.get(Node, node_id)
    await store.commit([{"op": "update", "kind": "node", "id": node_id, "version": node.version,
                         "status": node.status.replace(state=state)}])


async def deployed(store, **stack_options) -> tuple[StackApi, list[Task]]:
    await add_node(store, "node-1", addr="10.99.0.1")
    await add_node(store, "node-2", addr="10.99.0.2")
    await add_node(store, "node-3", addr="10.99.0.3")
    api = StackApi(store)
    await api.deploy("app", stack(**stack_options), {}, prune=False)
    tasks = await converge(store)
    for task in tasks:
        await set_state(store, task, "running")
    return api, [store.get(Task, t.id) for t in tasks]


async def test_a_plane_has_the_nodes_networks_peers_names_vips_and_running_backends(store):
    _, tasks = await deployed(store, replicas=2)
    web, db = service(store, "app_web"), service(store, "app_db")
    back = store.get(Network, "app_back")
    index = index_of(store)
    holders = {t.spec.node_id for t in tasks}
    for node_id in holders:
        plane = index.plane(node_id)
        node = store.get(Node, node_id)
        assert plane.node_address == node.status.addr and plane.version == store.index
        (network,) = plane.networks
        assert (network.id, network.name, network.vni, network.subnet) == ("app_back", "app_back", back.vni,
                                                                           back.subnet)
        assert network.gateway == back.gateways[node_id] and not network.internal
        assert network.peers == tuple(sorted(store.get(Node, n).status.addr for n in holders - {node_id}))
        by_name = {s.names[0]: s for s in network.services}
        assert by_name["web"].names == ("web", "app_web", "www") and by_name["web"].vip == back.vips[web.id]
        assert (by_name["db"].endpoint_mode, by_name["db"].vip) == ("dnsrr", None)
        expected = tuple(Backend(t.id, t.spec.network_addresses["app_back"],
                                 store.get(Node, t.spec.node_id).status.addr)
                         for t in sorted(tasks, key=lambda t: t.id) if t.spec.service_id == web.id)
        assert by_name["web"].backends == expected and len(expected) == 2
        assert [b.task_id for b in by_name["db"].backends] == [t.id for t in tasks if t.spec.service_id == db.id]
        assert plane.ingress == ()
    # A node with no task on the network has none of it (and no ingress port asks for it).
    for node_id in {"node-1", "node-2", "node-3"} - holders:
        assert index.plane(node_id).networks == ()
    assert index.plane("no-such-node") is None


async def test_a_task_that_stops_or_whose_node_is_down_leaves_the_backends(store):
    _, tasks = await deployed(store, replicas=2)
    web_id = service(store, "app_web").id
    first, second = sorted((t for t in tasks if t.spec.service_id == web_id), key=lambda t: t.id)

    def backends():
        """The web service's backends as every node on the network sees them (the same everywhere)."""
        index = index_of(store)
        seen = {tuple(b.task_id for s in n.services if s.service_id == web_id for b in s.backends)
                for node_id in ("node-1", "node-2", "node-3") for n in index.plane(node_id).networks}
        assert len(seen) == 1
        return list(seen.pop())

    assert backends() == [first.id, second.id]
    await set_state(store, first, "failed")
    assert backends() == [second.id]
    await set_node_state(store, second.spec.node_id, "down")
    assert backends() == []


async def test_ingress_ports_reach_every_overlay_node_with_the_backends(store):
    _, tasks = await deployed(store, replicas=1, ports=[{"target": 80, "published": 8080}])
    web = service(store, "app_web")
    back = store.get(Network, "app_back")
    # The scheduling pass gave every node a gateway on the service's network: the mesh forwards from any node.
    assert set(back.gateways) == {"node-1", "node-2", "node-3"}
    (web_task,) = [t for t in tasks if t.spec.service_id == web.id]
    index = index_of(store)
    for node_id in ("node-1", "node-2", "node-3"):
        plane = index.plane(node_id)
        (port,) = plane.ingress
        assert (port.published, port.target, port.protocol, port.network_id) == (8080, 80, "tcp", "app_back")
        assert [b.task_id for b in port.backends] == [web_task.id]
        assert [n.id for n in plane.networks] == ["app_back"]
        assert plane.networks[0].peers == tuple(sorted({"10.99.0.1", "10.99.0.2", "10.99.0.3"}
                                                       - {store.get(Node, node_id).status.addr}))


async def test_the_plane_survives_the_wire_and_equal_planes_are_the_same(store):
    await deployed(store, replicas=2, ports=[{"target": 80, "published": 8080}])
    plane = node_plane("node-1", store.list(Node), store.list(Network), store.list(Service), store.list(Task),
                       store.index)
    from swarmlet.api.netplane import NetworkPlane
    assert NetworkPlane.from_wire(plane.to_wire()) == plane
    later = index_of(store).plane("node-1")
    assert later.same_as(plane)
    await store.commit([{"op": "update", "kind": "node", "id": "node-2", "version": store.get(Node, "node-2").version,
                         "status": store.get(Node, "node-2").status.replace(addr="10.99.0.22")}])
    assert not index_of(store).plane("node-1").same_as(plane)


async def test_a_blue_green_update_keeps_its_new_set_out_of_traffic_until_promoted_and_switches_in_one_write(store):
    """VIP backends, DNS answers (the same backends) and the mesh's follow the one traffic
    rule through the real stack API, orchestrator and scheduler: only the old set before
    the switch, only the new set after `service promote` (one transaction), only the old
    set again at once after `service rollback` during the hold."""
    api, tasks = await deployed(store, replicas=2, ports=[{"target": 80, "published": 8080}])
    web = service(store, "app_web")
    old = {t.id for t in tasks if t.spec.service_id == web.id}

    def traffic() -> set[str]:
        index = index_of(store)
        seen = set()
        for node_id in ("node-1", "node-2", "node-3"):
            plane = index.plane(node_id)
            seen.add(frozenset(b.task_id for n in plane.networks for s in n.services if s.service_id == web.id
                               for b in s.backends))
            seen.add(frozenset(b.task_id for p in plane.ingress for b in p.backends))
        assert len(seen) == 1, seen  # every node, the VIP and the mesh agree
        return set(seen.pop())

    await api.update_service("app_web", {"env_add": {"V": "2"},
                                         "update_config": {"blue_green": True, "hold": 600, "monitor": 0}})
    new_tasks = [t for t in await converge(store) if t.spec.service_id == web.id and t.id not in old]
    assert len(new_tasks) == 2
    with pytest.raises(errors.Invalid, match="not ready to take traffic yet"):
        await api.promote_service("app_web")  # the new set does not run yet
    for task in new_tasks:
        await set_state(store, task, "running")
    assert traffic() == old
    await converge(store)
    assert service(store, "app_web").status["update"]["state"] == "awaiting_promotion"
    assert traffic() == old
    before = len(store.commits)
    await api.promote_service("app_web")
    assert len(store.commits) == before + 1
    new = {t.id for t in new_tasks}
    assert traffic() == new
    await converge(store)  # the hold: the old set keeps running, out of traffic
    assert {t.id for t in store.list(Task) if t.spec.desired_state == "running" and t.spec.service_id == web.id} \
        == old | new
    assert service(store, "app_web").status["update"]["state"] == "switched"
    before = len(store.commits)
    await api.rollback_service("app_web", time.time())
    assert len(store.commits) == before + 1 and traffic() == old
    await converge(store)
    assert not [t for t in store.list(Task) if t.id in new and t.spec.desired_state == "running"]
    assert {t.id for t in store.list(Task) if t.spec.desired_state == "running" and t.spec.service_id == web.id} == old
    # the views say the same
    assert {t["id"] for t in api.tasks("app_web") if t["in_traffic"]} == old
