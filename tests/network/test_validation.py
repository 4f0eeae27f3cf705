"""A bad plane is refused whole, every problem named."""
from dataclasses import replace

import pytest

from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, PublishedPort, ServiceEndpoint
from swarmlet.network import PlaneError
from swarmlet.network.links import FLOOD_MAC, fdb_diff
from swarmlet.network.validation import check_plane, plane_problems

B1 = Backend("t1", "10.0.1.7", "10.99.0.2")
WEB = ServiceEndpoint("s1", ("web",), "vip", "10.0.1.2", (B1,), ((8080, "tcp"),))
APP = OverlayNetwork(id="n1", name="app", vni=4097, subnet="10.0.1.0/24", gateway="10.0.1.254", internal=False,
                     peers=("10.99.0.3",), services=(WEB,))
PLANE = NetworkPlane(node_address="10.99.0.2", version=1, networks=(APP,),
                     ingress=(PublishedPort("s1", 18080, 8080, "tcp", "n1", (B1,)),))


def test_a_good_plane_passes():
    assert plane_problems(PLANE) == []


@pytest.mark.parametrize("plane, problem", [
    (replace(PLANE, node_address="node-1"), "node_address: 'node-1' is not an IPv4 address"),
    (replace(PLANE, networks=(replace(APP, vni=7),)), "vni 7 is outside 4096-16777215"),
    (replace(PLANE, networks=(replace(APP, subnet="10.0.1.0/33"),)), "subnet '10.0.1.0/33' is not an IPv4 network"),
    (replace(PLANE, networks=(replace(APP, gateway="10.0.2.1"),)), "gateway 10.0.2.1 is outside the subnet 10.0.1.0/24"),
    (replace(PLANE, networks=(APP, replace(APP, id="n2", vni=4098))), "overlaps network 'app'"),
    (replace(PLANE, networks=(APP, replace(APP, id="n2", subnet="10.0.2.0/24", gateway="10.0.2.1"))),
     "vni 4097 is used by another network"),
    (replace(PLANE, networks=(replace(APP, services=(replace(WEB, vip=None),)),)), "endpoint_mode vip needs a vip"),
    (replace(PLANE, networks=(replace(APP, services=(replace(WEB, vip="10.0.1.254"),)),)), "is the node's gateway"),
    (replace(PLANE, networks=(replace(APP, services=(replace(WEB, ports=((0, "tcp"),)),)),)), "0 is not a port"),
    (replace(PLANE, networks=(replace(APP, services=(replace(WEB, ports=((80, "sctp"),)),)),)), "protocol 'sctp'"),
    (replace(PLANE, ingress=PLANE.ingress * 2), "published port 18080/tcp: published twice"),
    (replace(PLANE, ingress=(replace(PLANE.ingress[0], network_id="gone"),)), "network 'gone' is not in the plane"),
])
def test_a_bad_plane_names_its_problem(plane, problem):
    with pytest.raises(PlaneError) as refused:
        check_plane(plane)
    assert problem in str(refused.value)


def test_flood_entries_follow_the_peers():
    entries = [(FLOOD_MAC, "10.99.0.3"), (FLOOD_MAC, "10.99.0.4"), ("aa:bb:cc:dd:ee:ff", "10.99.0.4"),
               ("aa:bb:cc:dd:ee:01", "10.99.0.3"), ("aa:bb:cc:dd:ee:02", None)]
    diff = fdb_diff(("10.99.0.3", "10.99.0.5"), entries)
    assert diff.add == {"10.99.0.5"} and diff.remove == {"10.99.0.4"}
    assert diff.forget == (("aa:bb:cc:dd:ee:ff", "10.99.0.4"),)
    assert fdb_diff(("10.99.0.3",), [(FLOOD_MAC, "10.99.0.3")]) == fdb_diff(("10.99.0.3",), [(FLOOD_MAC, "10.99.0.3")])
    assert not fdb_diff(("10.99.0.3",), [(FLOOD_MAC, "10.99.0.3")]).add
