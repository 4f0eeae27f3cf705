"""Network allocation through the manager's own code over the in-memory store: a stack
deploy allocates subnets, VNIs and VIPs in its one transaction, the scheduling pass
gives placed tasks their addresses (and nodes their gateways) in the assignments'
transactions, a stack rm releases everything, published ports are unique, and ingress
ports are refused on a cluster without the overlay data plane."""
from __future__ import annotations

import ipaddress

import pytest

from swarmlet.api import errors, specs
from swarmlet.api.ipam import AddressPool
from swarmlet.api.objects import CLUSTER_ID, node_object_spec, node_object_status
from swarmlet.api.views import Network, Service, Task
from swarmlet.manager.orchestrator.loop import ALL, Orchestrator
from swarmlet.manager.scheduler.service import SchedulerLoop
from swarmlet.manager.stacks import StackApi


def stack(*, ports=(), ipam=(), replicas: int = 2, db_mode: str = "dnsrr", external: bool = False) -> dict:
    web = specs.ServiceSpec(name="web", container=specs.ContainerSpec(image="busybox"), replicas=replicas,
                            networks=[specs.NetworkAttachment("back", aliases=["www"])],
                            endpoint=specs.EndpointSpec(ports=[specs.PortConfig(**p) for p in ports]))
    db = specs.ServiceSpec(name="db", container=specs.ContainerSpec(image="busybox"), replicas=1,
                           networks=[specs.NetworkAttachment("back")], endpoint=specs.EndpointSpec(mode=db_mode))
    network = specs.NetworkSpec(name="back", ipam=[specs.IpamConfig(**c) for c in ipam], external=external,
                                cluster_name="shared" if external else None)
    return specs.StackSpec(services={"web": web, "db": db}, networks={"back": network}).to_dict()


async def add_node(store, node_id: str, data_plane: str | None = "overlay", addr: str = "127.0.0.1") -> None:
    description = {"hostname": node_id, "resources": {"nano_cpus": 4_000_000_000, "memory_bytes": 8 << 30}}
    if data_plane:
        description["data_plane"] = data_plane
    await store.add("node", node_id, node_object_spec("worker"),
                    node_object_status(addr=addr, hostname=node_id, state="ready", description=description))


@pytest.fixture
async def cluster(store):
    """Two nodes running the overlay data plane, a pool of small networks."""
    spec = dict(store.raw("cluster", CLUSTER_ID)["spec"],
                address_pool=AddressPool(subnets=("10.20.0.0/16",), mask_length=24).to_dict())
    await store.commit([{"op": "update", "kind": "cluster", "id": CLUSTER_ID,
                         "version": store.raw("cluster", CLUSTER_ID)["version"], "spec": spec}])
    await add_node(store, "node-1")
    await add_node(store, "node-2")
    return store


def network(store, name: str) -> Network:
    return store.get(Network, name)


def service(store, name: str) -> Service:
    return next(s for s in store.list(Service) if s.name == name)


async def converge(store) -> list[Task]:
    await Orchestrator(store).reconcile({ALL})
    await SchedulerLoop(store).schedule_pass()
    return store.list(Task)


async def test_a_deploy_allocates_in_its_own_transaction_and_placement_gives_tasks_addresses(cluster):
    store, api = cluster, StackApi(cluster)
    before = len(store.commits)
    await api.deploy("app", stack(), {}, prune=False)
    assert len(store.commits) == before + 1  # networks, services and their allocation: one transaction
    back = network(store, "app_back")
    web, db = service(store, "app_web"), service(store, "app_db")
    assert (back.subnet, back.vni) == ("10.20.0.0/24", 4096)
    assert back.vips == {web.id: "10.20.0.1"}  # db is dnsrr: no VIP

    tasks = await converge(store)
    assert len(tasks) == 3 and all(t.spec.node_id for t in tasks)
    back = network(store, "app_back")
    addresses = [t.spec.network_addresses["app_back"] for t in tasks]
    gateways = back.gateways
    assert set(gateways) == {t.spec.node_id for t in tasks}
    everything = addresses + list(gateways.values()) + list(back.vips.values())
    assert len(set(everything)) == len(everything)  # VIPs, tasks and gateways never collide
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(back.subnet) for a in everything)
    assert sorted(gateways.values())[-1] == "10.20.0.254"

    # Scaled up: the new tasks get the next addresses and no node a second gateway.
    await api.scale("app_web", 4)
    tasks = await converge(store)
    assert len({t.spec.network_addresses["app_back"] for t in tasks}) == 5
    assert network(store, "app_back").gateways == gateways


async def test_a_stack_rm_releases_and_the_next_stack_takes_the_next_not_the_freed(cluster):
    """VNIs and subnets are taken serially (the cursor in the cluster's status, written in
    the deploy's transaction): the ones a ``stack rm`` just freed may still linger on the
    nodes, so the next stack does not get them at once; they come round again later."""
    store, api = cluster, StackApi(cluster)
    await api.deploy("one", stack(), {}, prune=False)
    await converge(store)
    await api.deploy("two", stack(), {}, prune=False)
    assert network(store, "two_back").subnet == "10.20.1.0/24" and network(store, "two_back").vni == 4097
    await api.remove_stack("one")
    assert network(store, "one_back") is None
    await api.deploy("three", stack(), {}, prune=False)
    assert (network(store, "three_back").subnet, network(store, "three_back").vni) == ("10.20.2.0/24", 4098)
    assert store.raw("cluster", CLUSTER_ID)["status"]["network_cursor"] == {"vni": 4098, "subnet": "10.20.2.0/24"}


async def test_a_removed_service_frees_its_vip_and_ended_tasks_their_addresses(cluster):
    store, api = cluster, StackApi(cluster)
    await api.deploy("app", stack(db_mode="vip"), {}, prune=False)
    back = network(store, "app_back")
    db_vip = back.vips[service(store, "app_db").id]
    await api.remove_service("app_db")
    # The next write of the network drops the gone service's VIP. Its address is free again,
    # but handed out only once the allocation has gone round the subnet (serial allocation,
    # tests/manager/test_allocator.py), not to the next task at once.
    await converge(store)
    back = network(store, "app_back")
    assert service(store, "app_web").id in back.vips and len(back.vips) == 1
    assert db_vip not in back.vips.values()
    assert db_vip not in {t.spec.network_addresses["app_back"] for t in store.list(Task)}


async def test_an_exhausted_network_leaves_tasks_pending_with_the_reason(cluster):
    store, api = cluster, StackApi(cluster)
    # A /29: 6 addresses; one VIP and two gateways leave 3 for tasks.
    await api.deploy("app", stack(replicas=5, ipam=[{"subnet": "10.99.0.0/29"}]), {}, prune=False)
    tasks = await converge(store)
    placed = [t for t in tasks if t.spec.node_id and t.status.state == "assigned"]
    pending = [t for t in tasks if t.status.state == "pending"]
    assert len(placed) == 3 and len(pending) == 3
    assert all("no network address: network app_back: no free address left in 10.99.0.0/29" in t.status.message
               for t in pending)


async def test_overlapping_ipam_subnets_and_missing_external_networks_are_refused_and_change_nothing(cluster):
    store, api = cluster, StackApi(cluster)
    await api.deploy("app", stack(ipam=[{"subnet": "10.30.0.0/16"}]), {}, prune=False)
    index = store.index
    with pytest.raises(errors.Invalid, match="network other_back: subnet 10.30.5.0/24 overlaps network app_back's "
                                             "10.30.0.0/16"):
        await api.deploy("other", stack(ipam=[{"subnet": "10.30.5.0/24"}]), {}, prune=False)
    with pytest.raises(errors.Invalid, match="external network 'shared' not found"):
        await api.deploy("ext", stack(external=True), {}, prune=False)
    assert store.index == index
    # Changing an existing network's subnet is refused too.
    with pytest.raises(errors.Invalid, match="network app_back exists with another ipam"):
        await api.deploy("app", stack(ipam=[{"subnet": "10.31.0.0/16"}]), {}, prune=False)
    assert store.index == index


async def test_an_external_network_is_joined_and_gets_the_services_vips(cluster):
    store, api = cluster, StackApi(cluster)
    owner = stack()
    owner["networks"]["back"]["cluster_name"] = "shared"
    await api.deploy("owner", owner, {}, prune=False)
    await api.deploy("guest", stack(external=True), {}, prune=False)
    shared = network(store, "shared")
    assert service(store, "guest_web").id in shared.vips and service(store, "owner_web").id in shared.vips
    assert len(set(shared.vips.values())) == 2
    # The owner cannot take the network away from under its guest; the guest leaves it alone.
    index = store.index
    with pytest.raises(errors.Invalid, match="network shared is used by service guest_db of another stack; network "
                                             "shared is used by service guest_web of another stack: remove those "
                                             "first; nothing was removed"):
        await api.remove_stack("owner")
    assert store.index == index
    await api.remove_stack("guest")
    assert network(store, "shared") is not None
    await api.remove_stack("owner")
    assert network(store, "shared") is None


async def test_published_ports_are_unique_in_the_cluster_and_picked_when_left_out(cluster):
    store, api = cluster, StackApi(cluster)
    await api.deploy("one", stack(ports=[{"target": 80, "published": 8080}, {"target": 81}]), {}, prune=False)
    ports = service(store, "one_web").raw_spec["endpoint"]["ports"]
    assert [(p["published"], p["mode"]) for p in ports] == [(8080, "ingress"), (30000, "ingress")]
    index = store.index
    with pytest.raises(errors.Invalid, match="service two_web: port 8080/tcp is already published by service one_web"):
        await api.deploy("two", stack(ports=[{"target": 80, "published": 8080}]), {}, prune=False)
    assert store.index == index and network(store, "two_back") is None
    # The same file again: the picked port is kept, nothing is written, even once a node
    # without the data plane joined (what is deployed already is not refused again).
    await add_node(store, "plain-node", data_plane=None)
    assert (await api.deploy("one", stack(ports=[{"target": 80, "published": 8080}, {"target": 81}]), {},
                             prune=False))["operations"] == 0


async def test_ingress_ports_are_refused_on_nodes_without_the_data_plane(store):
    api = StackApi(store)
    await add_node(store, "overlay-node")
    await add_node(store, "plain-node", data_plane=None)
    with pytest.raises(errors.Invalid, match=r"service app_web publishes port 8080/tcp in ingress mode, which needs "
                                             r"the routing mesh, but node\(s\) plain-node do not run the overlay data "
                                             r"plane .*swarmlet local up --isolated.*nothing was deployed"):
        await api.deploy("app", stack(ports=[{"target": 80, "published": 8080}]), {}, prune=False)
    assert store.list(Service) == []
    # Host-mode publishing needs no mesh.
    await api.deploy("app", stack(ports=[{"target": 80, "published": 8080, "mode": "host"}]), {}, prune=False)
    assert service(store, "app_web").raw_spec["endpoint"]["ports"][0]["published"] == 8080


async def test_a_deploy_that_raced_another_write_is_decided_again(cluster):
    from swarmlet.store import Conflict
    store, api = cluster, StackApi(cluster)
    store.fail_next = Conflict("network app_back is at version 9, the update expected version 8")
    await api.deploy("app", stack(), {}, prune=False)
    assert network(store, "app_back").vips == {service(store, "app_web").id: "10.20.0.1"}
    refused, committed = store.commits[-2:]  # the same decision, again (the new service's ID is picked anew)
    def decided(ops):  # the stack's objects (the revision record besides them is numbered anew)
        return [(op["op"], op["kind"], op["spec"]["name"] if "spec" in op else op["id"]) for op in ops
                if op["kind"] != "stack_revision"]
    assert decided(refused) == decided(committed) and decided(committed)


async def test_ingress_ports_the_mesh_cannot_carry_are_refused(cluster):
    api = StackApi(cluster)
    with pytest.raises(errors.Invalid, match="port 8080/sctp: the routing mesh forwards tcp and udp only"):
        await api.deploy("app", stack(ports=[{"target": 80, "published": 8080, "protocol": "sctp"}]), {}, prune=False)
    local = stack(ports=[{"target": 80, "published": 8080}])
    local["networks"]["back"]["driver"] = "bridge"
    with pytest.raises(errors.Invalid, match="service app_web: port 8080/tcp is published in ingress mode, but the "
                                             "service is on no overlay network"):
        await api.deploy("app", local, {}, prune=False)
    assert cluster.list(Service) == []


async def test_tasks_on_nodes_without_the_data_plane_take_no_address(store):
    """Their engines' bridge networks give the addresses there: a /24 must not cap a
    service's replicas on the single-engine local cluster."""
    await add_node(store, "plain-1", data_plane=None)
    await add_node(store, "plain-2", data_plane="none")
    api = StackApi(store)
    await api.deploy("app", stack(replicas=300), {}, prune=False)
    tasks = await converge(store)
    assert len(tasks) == 301 and all(t.spec.node_id and t.status.state == "assigned" for t in tasks)
    assert all(t.spec.network_addresses == {} for t in tasks)
    back = network(store, "app_back")
    assert back.gateways == {} and list(back.vips) == [service(store, "app_web").id]


async def test_global_tasks_get_addresses_like_replicated_ones(cluster):
    """A global service's tasks are bound to their node before the scheduler sees them;
    they need an address on the overlay all the same (found end to end: a global client
    was left on its engine's own bridge, reaching nothing)."""
    store, api = cluster, StackApi(cluster)
    spec = stack()
    spec["services"]["client"] = dict(spec["services"]["web"], name="client", mode="global", replicas=None,
                                      endpoint=specs.EndpointSpec().to_dict())
    await api.deploy("app", spec, {}, prune=False)
    tasks = await converge(store)
    clients = [t for t in tasks if t.spec.service_name == "app_client"]
    assert sorted(t.spec.node_id for t in clients) == ["node-1", "node-2"]
    assert all(ipaddress.ip_address(t.spec.network_addresses["app_back"]) in ipaddress.ip_network("10.20.0.0/24")
               for t in clients), [t.spec.network_addresses for t in clients]
    assert len({t.spec.network_addresses["app_back"] for t in tasks}) == len(tasks)
