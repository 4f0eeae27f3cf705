"""Service discovery's answers, pure."""
from dnslib import DNSRecord

from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, ServiceEndpoint
from swarmlet.network import discovery

B1 = Backend("t1", "10.0.1.7", "10.99.0.2")
B2 = Backend("t2", "10.0.1.8", "10.99.0.3")
NET = OverlayNetwork(id="n1", name="app", vni=4097, subnet="10.0.1.0/24", gateway="10.0.1.254", internal=False,
                     peers=(), services=(
                         ServiceEndpoint("s1", ("web", "demo_web", "www"), "vip", "10.0.1.2", (B1, B2)),
                         ServiceEndpoint("s2", ("db", "demo_db"), "dnsrr", None, (B1, B2)),
                         ServiceEndpoint("s3", ("idle",), "vip", "10.0.1.3", ())))
OTHER = OverlayNetwork(id="n2", name="other", vni=4098, subnet="10.0.2.0/24", gateway="10.0.2.254", internal=False,
                       peers=(), services=(ServiceEndpoint("s9", ("web",), "vip", "10.0.2.2", ()),))


def ask(name, qtype="A", rotation=0, network=NET):
    reply = discovery.answer(discovery.network_names(network), DNSRecord.question(name, qtype), rotation)
    return None if reply is None else [str(rr.rdata) for rr in reply.rr]


def test_service_names_and_aliases_answer_the_vip():
    for name in ("web", "demo_web", "www", "WWW.", "web."):
        assert ask(name) == ["10.0.1.2"], name


def test_tasks_names_and_dnsrr_answer_the_backends_in_turn():
    assert ask("tasks.web") == ["10.0.1.7", "10.0.1.8"]
    assert ask("tasks.demo_db", rotation=1) == ["10.0.1.8", "10.0.1.7"]
    assert ask("db") == ["10.0.1.7", "10.0.1.8"]


def test_a_known_name_without_tasks_or_of_another_type_has_no_records_and_unknown_names_are_forwarded():
    assert ask("idle") == ["10.0.1.3"] and ask("tasks.idle") == []
    assert ask("web", "AAAA") == []
    assert ask("nope") is None
    assert ask("web.example.org") is None


def test_names_are_scoped_by_network():
    names = discovery.plane_names(NetworkPlane(node_address="10.99.0.2", version=1, networks=(NET, OTHER)))
    assert names["n2"]["web"] == ("10.0.2.2",) and names["n1"]["web"] == ("10.0.1.2",)
    assert "db" not in names["n2"]


def test_answers_have_ttl_zero_and_refusals_their_code():
    request = DNSRecord.question("web")
    reply = discovery.answer(discovery.network_names(NET), request)
    assert [rr.ttl for rr in reply.rr] == [0] and reply.header.id == request.header.id
    assert discovery.refusal(request, discovery.NXDOMAIN).header.rcode == discovery.NXDOMAIN


def test_a_long_answer_is_cut_to_the_udp_limit_with_tc_and_whole_with_edns():
    from dataclasses import replace

    from dnslib import EDNS0
    many = tuple(Backend(f"t{i}", f"10.0.1.{i + 10}", "10.99.0.2") for i in range(100))
    names = discovery.network_names(replace(NET, services=(replace(NET.services[0], backends=many),)))
    request = DNSRecord.question("tasks.web")
    reply = discovery.answer(names, request)
    packed = discovery.pack_for_udp(reply, discovery.udp_limit(request))
    cut = DNSRecord.parse(packed)
    assert len(packed) <= 512 and cut.header.tc == 1 and 0 < len(cut.rr) < 100
    assert len(DNSRecord.parse(reply.pack()).rr) == 100  # what TCP sends
    request.add_ar(EDNS0(udp_len=4096))
    whole = DNSRecord.parse(discovery.pack_for_udp(reply, discovery.udp_limit(DNSRecord.parse(request.pack()))))
    assert whole.header.tc == 0 and len(whole.rr) == 100
