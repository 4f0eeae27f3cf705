"""Network allocation, pure (manager/allocator.py): subnets and VNIs, addresses for
VIPs, tasks and gateways from one space per network, release by the holder's end, and
published ports."""
from __future__ import annotations

import pytest

from swarmlet.api.errors import Invalid
from swarmlet.api.ipam import AddressPool
from swarmlet.api.ipam import MAX_VNI
from swarmlet.api.netplane import MIN_VNI
from swarmlet.api.views import Network, Task
from swarmlet.manager.allocator import (AddressBook, AllocationError, NetworkCursor, allocate_network,
                                       assign_published_ports, network_allocation)
from swarmlet.store.state import freeze

POOL = AddressPool()


def network(name: str, subnet: str, *, vni: int = MIN_VNI, gateways=None, vips=None, ipam=None) -> Network:
    return Network(freeze({"id": name, "kind": "network", "version": 3,
                           "spec": {"name": name, "driver": "overlay", "ipam": ipam or []},
                           "status": {"subnet": subnet, "vni": vni, "gateways": gateways or {}, "vips": vips or {}}}))


def task(task_id: str, networks=("n",), addresses=None, state: str = "pending") -> Task:
    return Task(freeze({"id": task_id, "kind": "task", "version": 2,
                        "spec": {"service_id": "s", "networks": [{"name": n} for n in networks],
                                 "network_addresses": addresses or {}},
                        "status": {"state": state}}))


def service_spec(name: str, networks=("n",), mode: str = "vip", ports=()) -> dict:
    return {"name": name, "networks": [{"name": n} for n in networks],
            "endpoint": {"mode": mode, "ports": [dict(p) for p in ports]}}


def port(target: int, published: int | None, mode: str = "ingress", protocol: str = "tcp") -> dict:
    return {"target": target, "published": published, "protocol": protocol, "mode": mode}


# -- subnets and VNIs ---------------------------------------------------------------------------------

def test_networks_take_consecutive_subnets_of_the_pool_and_unique_vnis():
    first = network_allocation("a", {}, [], [], POOL)
    second = network_allocation("b", {}, [("a", first["subnet"])], [first["vni"]], POOL)
    assert (first["subnet"], first["vni"]) == ("10.0.0.0/24", MIN_VNI)
    assert (second["subnet"], second["vni"]) == ("10.0.1.0/24", MIN_VNI + 1)
    # A requested subnet in the middle of the pool is skipped by the next allocation.
    third = network_allocation("c", {}, [("a", "10.0.0.0/24"), ("x", "10.0.2.0/23")], [MIN_VNI, MIN_VNI + 2], POOL)
    assert (third["subnet"], third["vni"]) == ("10.0.1.0/24", MIN_VNI + 1)
    fourth = network_allocation("d", {}, [("a", "10.0.0.0/24"), ("c", "10.0.1.0/24"), ("x", "10.0.2.0/23")], [], POOL)
    assert fourth["subnet"] == "10.0.4.0/24"


def test_vnis_and_subnets_are_taken_serially_so_a_just_freed_one_is_not_reused_at_once():
    """A stack removed and another deployed right after: the removed network's bridge
    (swbr<vni>) and engine network (its subnet) may still linger on the nodes, so the
    new network must not get the VNI or subnet just freed (the bug: "networks have same
    bridge name", "Pool overlaps")."""
    a, cursor = allocate_network("a", {}, [], [], POOL, NetworkCursor())
    assert (a["subnet"], a["vni"]) == ("10.0.0.0/24", MIN_VNI) and cursor == NetworkCursor(MIN_VNI, "10.0.0.0/24")
    b, cursor = allocate_network("b", {}, [], [], POOL, cursor)  # a is removed: nothing is taken any more
    assert (b["subnet"], b["vni"]) == ("10.0.1.0/24", MIN_VNI + 1)
    # what is taken after the cursor is skipped
    c, cursor = allocate_network("c", {}, [("b", b["subnet"]), ("x", "10.0.2.0/23")], [b["vni"], MIN_VNI + 2],
                                 POOL, cursor)
    assert (c["subnet"], c["vni"]) == ("10.0.4.0/24", MIN_VNI + 3)
    # a requested subnet does not move the pool's cursor (the VNI's moves)
    d, cursor = allocate_network("d", {"ipam": [{"subnet": "172.28.0.0/16"}]}, [], [], POOL, cursor)
    assert (d["subnet"], d["vni"], cursor) == ("172.28.0.0/16", MIN_VNI + 4, NetworkCursor(MIN_VNI + 4, "10.0.4.0/24"))
    # without a cursor (the old behaviour, and the check that the cursor is what changes it): lowest free
    assert network_allocation("e", {}, [], [], POOL) == {"subnet": "10.0.0.0/24", "vni": MIN_VNI, "gateways": {},
                                                           "vips": {}}


def test_the_cursors_wrap_round_at_the_end_of_the_pool_and_of_the_vni_range():
    pool = AddressPool(subnets=("10.9.0.0/23", "10.8.0.0/24"), mask_length=24)
    status, cursor = allocate_network("a", {}, [("x", "10.9.0.0/24")], [], pool,
                                      NetworkCursor(MAX_VNI, "10.9.1.0/24"))
    assert (status["subnet"], status["vni"]) == ("10.8.0.0/24", MIN_VNI)  # the next block, the VNI range's start
    status, cursor = allocate_network("b", {}, [("x", "10.9.0.0/24"), ("a", "10.8.0.0/24")], [MIN_VNI], pool, cursor)
    assert (status["subnet"], status["vni"]) == ("10.9.1.0/24", MIN_VNI + 1)  # round to the first block
    with pytest.raises(AllocationError, match="no free /24 left"):
        allocate_network("c", {}, [("x", "10.9.0.0/24"), ("a", "10.8.0.0/24"), ("b", "10.9.1.0/24")], [], pool, cursor)
    # a cursor that is not the pool's (the pool of another cluster, a bad value) starts at the beginning
    assert allocate_network("d", {}, [], [], pool, NetworkCursor(1, "192.168.0.0/24"))[0]["subnet"] == "10.9.0.0/24"
    assert allocate_network("d", {}, [], [], pool, NetworkCursor(1, "192.168.0.0/24"))[0]["vni"] == MIN_VNI


def test_an_ipam_subnet_is_used_and_checked():
    spec = {"ipam": [{"subnet": "172.28.0.0/16", "gateway": "172.28.0.1", "ip_range": "172.28.5.0/24"}]}
    assert network_allocation("a", spec, [("b", "10.0.0.0/24")], [], POOL)["subnet"] == "172.28.0.0/16"
    with pytest.raises(AllocationError, match=r"network a: subnet 10.0.0.0/16 overlaps network b's 10.0.0.0/24"):
        network_allocation("a", {"ipam": [{"subnet": "10.0.0.0/16"}]}, [("b", "10.0.0.0/24")], [], POOL)
    for bad, complaint in [({"subnet": "10.1.0.5/24"}, "not an IPv4 network"),
                           ({"subnet": "fd00::/64"}, "IPv6"),
                           ({"subnet": "10.1.0.0/30"}, "too small"),
                           ({"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}, "gateway: 10.2.0.1 is not inside"),
                           ({"subnet": "10.1.0.0/24", "ip_range": "10.1.0.0/16"}, "ip_range: 10.1.0.0/16 is not inside"),
                           ({"gateway": "10.1.0.1"}, "without a subnet")]:
        with pytest.raises(Invalid, match=complaint):
            network_allocation("a", {"ipam": [bad]}, [], [], POOL)
    with pytest.raises(AllocationError, match="at most one"):
        network_allocation("a", {"ipam": [{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24"}]}, [], [], POOL)


def test_an_exhausted_pool_is_a_clear_error():
    pool = AddressPool(subnets=("10.9.0.0/23",), mask_length=24)
    taken = [("a", "10.9.0.0/24"), ("b", "10.9.1.0/24")]
    with pytest.raises(AllocationError, match=r"network c: the address pool 10.9.0.0/23 has no free /24 left"):
        network_allocation("c", {}, taken, [], pool)


@pytest.mark.parametrize("subnets, mask, complaint", [
    ((), 24, "at least one subnet"), (("10.0.0.0/8",), 30, "mask-length: 30"), (("10.0.0.0/8",), True, "mask-length"),
    (("10.0.0.0/25",), 24, "smaller than one network"), (("10.0.0.0/8", "10.1.0.0/16"), 24, "overlap"),
    (("nonsense",), 24, "not an IPv4 network"),
])
def test_a_bad_address_pool_is_refused(subnets, mask, complaint):
    with pytest.raises(Invalid, match=complaint):
        AddressPool(subnets=subnets, mask_length=mask)


def test_an_address_pool_round_trips_and_defaults_when_absent():
    pool = AddressPool(subnets=("10.20.0.0/16", "10.30.0.0/16"), mask_length=26)
    assert AddressPool.from_spec(pool.to_dict()) == pool
    assert AddressPool.from_spec(None) == AddressPool() == AddressPool.from_spec({})


# -- addresses ----------------------------------------------------------------------------------------------

def book_of(networks, tasks=(), services=(), nodes=("node-1", "node-2")) -> AddressBook:
    return AddressBook.build(networks, tasks, services, nodes)


def test_tasks_vips_and_gateways_share_one_space_and_never_collide():
    net = network("n", "10.0.1.0/24", vips={"s": "10.0.1.2"})
    running = task("t0", addresses={"n": "10.0.1.1"}, state="running")
    book = book_of([net], [running], services=["s", "s2"])
    first = book.allocate_task(task("t1"), "node-1")
    second = book.allocate_task(task("t2"), "node-2")
    book.set_vips("s2", service_spec("s2"))
    assert first == {"n": "10.0.1.3"} and second == {"n": "10.0.1.4"}
    status = book.statuses["n"]
    assert status["gateways"] == {"node-1": "10.0.1.254", "node-2": "10.0.1.253"}
    assert status["vips"] == {"s": "10.0.1.2", "s2": "10.0.1.5"}
    # A third task on node-1 needs no new gateway; a task that has its address keeps it.
    assert book.allocate_task(task("t3"), "node-1") == {"n": "10.0.1.6"}
    assert book.allocate_task(running, "node-1") == {"n": "10.0.1.1"}
    assert set(book.statuses["n"]["gateways"]) == {"node-1", "node-2"}


def test_addresses_are_released_when_their_holder_ends_or_goes():
    net = network("n", "10.0.1.0/24", vips={"gone-service": "10.0.1.1", "s": "10.0.1.2"},
                  gateways={"gone-node": "10.0.1.254", "node-1": "10.0.1.253"})
    ended = task("t0", addresses={"n": "10.0.1.3"}, state="shutdown")
    book = book_of([net], [ended], services=["s"], nodes=["node-1"])
    # The VIP of a removed service, the ended task's address, a removed node's gateway: free again.
    assert book.allocate_task(task("t1"), "node-1") == {"n": "10.0.1.1"}
    assert book.allocate_task(task("t2"), "node-1") == {"n": "10.0.1.3"}
    book.set_vips("s", service_spec("s", networks=()))  # s left the network: its VIP goes
    assert book.statuses["n"]["vips"] == {} and book.statuses["n"]["gateways"] == {"node-1": "10.0.1.253"}
    # The cursor moves on, within a pass and from one pass to the next (it is stored with the
    # network): the VIP's address just freed is not handed out again at once.
    assert book.allocate_task(task("t3"), "node-1") == {"n": "10.0.1.4"}
    after = network("n", "10.0.1.0/24", **{k: book.statuses["n"][k] for k in ("vips", "gateways")})
    after = Network(freeze({**after.raw, "status": {**after.raw["status"], "next_address": book.statuses["n"]["next_address"]}}))
    held = [task("t1", addresses={"n": "10.0.1.1"}), task("t2", addresses={"n": "10.0.1.3"}),
            task("t3", addresses={"n": "10.0.1.4"})]
    assert book_of([after], held, services=["s"], nodes=["node-1"]).allocate_task(task("t4"), "node-1") == {
        "n": "10.0.1.5"}


def test_task_addresses_go_round_the_subnet_before_one_is_used_again():
    net = network("n", "10.0.1.0/29")  # .1-.6; the node's gateway takes .6
    book = book_of([net], nodes=["node-1"])
    assert [book.allocate_task(task(f"t{i}"), "node-1")["n"] for i in range(3)] == ["10.0.1.1", "10.0.1.2", "10.0.1.3"]
    # t0 and t1 end; the next pass does not give their addresses back before the top is used
    status = book.statuses["n"]
    later = Network(freeze({**net.raw, "status": {**net.raw["status"], **status}}))
    book = book_of([later], [task("t2", addresses={"n": "10.0.1.3"})], nodes=["node-1"])
    got = [book.allocate_task(task(f"u{i}"), "node-1")["n"] for i in range(4)]
    assert got == ["10.0.1.4", "10.0.1.5", "10.0.1.1", "10.0.1.2"]
    with pytest.raises(AllocationError, match="no free address left"):
        book.allocate_task(task("u4"), "node-1")


def test_dnsrr_services_get_no_vip_and_non_overlay_networks_nothing():
    local = Network(freeze({"id": "l", "spec": {"name": "l", "driver": "bridge"}, "status": {}}))
    book = book_of([network("n", "10.0.1.0/24"), local], services=["s"])
    book.set_vips("s", service_spec("s", networks=("n", "l"), mode="dnsrr"))
    assert book.allocate_task(task("t", networks=("n", "l")), "node-1") == {"n": "10.0.1.1"}
    assert book.statuses["n"]["vips"] == {} and "l" not in book.statuses


def test_an_exhausted_network_is_an_allocation_error_and_ip_range_bounds_it():
    net = network("n", "10.0.1.0/29")  # 6 hosts: .1-.6
    book = book_of([net], nodes=["node-1"])
    got = [book.allocate_task(task(f"t{i}"), "node-1")["n"] for i in range(5)]
    assert got == [f"10.0.1.{i}" for i in range(1, 6)] and book.statuses["n"]["gateways"] == {"node-1": "10.0.1.6"}
    with pytest.raises(AllocationError, match=r"network n: no free address left in 10.0.1.0/29"):
        book.allocate_task(task("t5"), "node-1")
    ranged = network("r", "10.0.2.0/24", ipam=[{"subnet": "10.0.2.0/24", "gateway": "10.0.2.10",
                                                 "ip_range": "10.0.2.8/30"}])
    book = book_of([ranged], nodes=["node-1"])
    assert book.allocate_task(task("a", networks=("r",)), "node-1") == {"r": "10.0.2.8"}
    assert book.statuses["r"]["gateways"] == {"node-1": "10.0.2.11"}  # .10 is the ipam gateway, kept out
    assert book.allocate_task(task("b", networks=("r",)), "node-1") == {"r": "10.0.2.9"}
    with pytest.raises(AllocationError):
        book.allocate_task(task("c", networks=("r",)), "node-2")


# -- published ports ------------------------------------------------------------------------------------------

def test_published_ports_are_unique_and_left_out_ones_picked_from_the_dynamic_range():
    others = {"o": service_spec("other_api", ports=[port(80, 8080), port(81, 30000)])}
    changed = {"w": service_spec("app_web", ports=[port(80, None), port(443, None), port(9, 9, mode="host")])}
    result = assign_published_ports(changed, others, {})
    assert [p["published"] for p in result["w"]["endpoint"]["ports"]] == [30001, 30002, 9]
    # Deployed again with the port still left out: the one it had is kept.
    again = assign_published_ports(changed, others, {"w": result["w"]})
    assert again["w"] == result["w"]
    # The same port and protocol twice in the cluster: refused, naming both; udp is another port.
    with pytest.raises(AllocationError, match="service app_web: port 8080/tcp is already published by service "
                                              "other_api; nothing was deployed"):
        assign_published_ports({"w": service_spec("app_web", ports=[port(80, 8080)])}, others, {})
    assert assign_published_ports({"w": service_spec("app_web", ports=[port(80, 8080, protocol="udp")])},
                                  others, {})["w"]["endpoint"]["ports"][0]["published"] == 8080
    # An ingress port is open on every node: a host-mode port of that number clashes with it, either way round...
    with pytest.raises(AllocationError, match="service app_web: port 8080/tcp is already published by service "
                                              "other_api"):
        assign_published_ports({"w": service_spec("app_web", ports=[port(80, 8080, mode="host")])}, others, {})
    hosted = {"h": service_spec("other_db", ports=[port(5432, 5432, mode="host")])}
    with pytest.raises(AllocationError, match="service app_web: port 5432/tcp is already published by service "
                                              "other_db"):
        assign_published_ports({"w": service_spec("app_web", ports=[port(80, 5432)])}, hosted, {})
    # ...while two host-mode ports clash only on one node: the scheduler's business, not the cluster's.
    assert assign_published_ports({"w": service_spec("app_web", ports=[port(80, 5432, mode="host")])},
                                  hosted, {})["w"]["endpoint"]["ports"][0]["published"] == 5432
