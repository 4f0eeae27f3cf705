import msgpack

from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, PublishedPort, ServiceEndpoint


def test_a_plane_survives_the_wire_unchanged():
    backend = Backend(task_id="t1", address="10.0.1.7", node_address="10.99.0.3")
    plane = NetworkPlane(
        node_address="10.99.0.2", version=42,
        networks=(OverlayNetwork(id="n1", name="hello_default", vni=4097, subnet="10.0.1.0/24", gateway="10.0.1.254",
                                 internal=False, peers=("10.99.0.3",),
                                 services=(ServiceEndpoint(service_id="s1", names=("web", "hello_web"), endpoint_mode="vip",
                                                           vip="10.0.1.2", backends=(backend,), ports=((8080, "tcp"),)),)),),
        ingress=(PublishedPort(service_id="s1", published=18080, target=8080, protocol="tcp", network_id="n1",
                               backends=(backend,)),))
    wire = msgpack.unpackb(msgpack.packb(plane.to_wire()))
    assert NetworkPlane.from_wire(wire) == plane
    assert NetworkPlane.from_wire(wire).network("n1").services[0].backends[0].address == "10.0.1.7"
    assert plane.network("nope") is None
