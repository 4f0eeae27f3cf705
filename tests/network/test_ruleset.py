"""The nftables ruleset as a pure function of the plane, and its read-back summary."""
from dataclasses import replace

from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, PublishedPort, ServiceEndpoint
from swarmlet.network.ruleset import Ruleset, render_ruleset, rule_comment, summarize_listing

B1 = Backend("t1", "10.0.1.7", "10.99.0.2")
B2 = Backend("t2", "10.0.1.8", "10.99.0.3")
WEB = ServiceEndpoint("s1", ("web",), "vip", "10.0.1.2", (B1, B2), ((8080, "tcp"), (53, "udp")))
APP = OverlayNetwork(id="n1", name="app", vni=4097, subnet="10.0.1.0/24", gateway="10.0.1.254", internal=False,
                     peers=("10.99.0.3",), services=(WEB,))
PLANE = NetworkPlane(node_address="10.99.0.2", version=1, networks=(APP,),
                     ingress=(PublishedPort("s1", 18080, 8080, "tcp", "n1", (B1, B2)),))


def rules(ruleset: Ruleset, family: str, chain: str) -> tuple[str, ...]:
    return next(c.rules for c in ruleset.chains if (c.family, c.name) == (family, chain))


def test_a_vip_dnats_round_robin_per_port_to_its_backends():
    services = rules(render_ruleset(PLANE), "ip", "services")
    assert "ip daddr 10.0.1.2 tcp dport 8080 dnat to numgen inc mod 2 map { 0 : 10.0.1.7, 1 : 10.0.1.8 }" in services
    assert "ip daddr 10.0.1.2 udp dport 53 dnat to numgen inc mod 2 map { 0 : 10.0.1.7, 1 : 10.0.1.8 }" in services


def test_a_vip_without_ports_forwards_every_port_and_one_without_backends_is_refused():
    plane = replace(PLANE, networks=(replace(APP, services=(
        replace(WEB, ports=()), replace(WEB, service_id="s2", vip="10.0.1.3", backends=())),),))
    ruleset = render_ruleset(plane)
    assert "ip daddr 10.0.1.2 dnat to numgen inc mod 2 map { 0 : 10.0.1.7, 1 : 10.0.1.8 }" in rules(ruleset, "ip", "services")
    assert not any("10.0.1.3" in r for r in rules(ruleset, "ip", "services"))
    assert "ip daddr { 10.0.1.2, 10.0.1.3 } meta l4proto tcp reject with tcp reset" in rules(ruleset, "ip", "input")


def test_published_ports_dnat_to_address_and_target_with_replies_brought_back():
    ruleset = render_ruleset(PLANE)
    assert ("ip daddr 10.99.0.2 tcp dport 18080 dnat ip addr . port to numgen inc mod 2 "
            "map { 0 : 10.0.1.7 . 8080, 1 : 10.0.1.8 . 8080 }") in rules(ruleset, "ip", "services")
    assert 'oifname "swbr4097" ct status dnat snat ip to 10.0.1.254' in rules(ruleset, "ip", "postrouting")
    assert rules(ruleset, "ip", "prerouting") == rules(ruleset, "ip", "output") == ("jump services",)
    assert ruleset.backends == {"10.0.1.7", "10.0.1.8"}


def test_arp_for_vips_does_not_cross_the_vxlan_device():
    ruleset = render_ruleset(PLANE)
    assert rules(ruleset, "bridge", "forward") == ('oifname "swvx4097" arp daddr ip 10.0.1.2 drop',)
    assert rules(ruleset, "bridge", "input") == ('iifname "swvx4097" arp daddr ip 10.0.1.2 drop',)


def test_an_internal_network_gets_no_way_out_and_no_way_in_from_the_mesh():
    internal = replace(APP, internal=True)
    ruleset = render_ruleset(replace(PLANE, networks=(internal,)))
    assert not any("masquerade" in r for r in rules(ruleset, "ip", "postrouting"))
    assert set(rules(ruleset, "ip", "forward")) == {'iifname "swbr4097" oifname != "swbr4097" drop',
                                                    'oifname "swbr4097" iifname != "swbr4097" drop'}
    assert 'iifname "swbr4097" ip daddr != 10.0.1.254 drop' in rules(ruleset, "ip", "input")
    assert not any("18080" in r for r in rules(ruleset, "ip", "services"))
    assert "ip daddr 10.99.0.2 tcp dport 18080 reject with tcp reset" in rules(ruleset, "ip", "input")
    # the same network not internal masquerades what leaves it
    assert 'ip saddr 10.0.1.0/24 oifname != "swbr4097" masquerade' in rules(render_ruleset(PLANE), "ip", "postrouting")


def test_an_empty_plane_has_no_ruleset_and_the_script_drops_both_tables():
    empty = render_ruleset(NetworkPlane(node_address="10.99.0.2", version=1))
    assert empty.empty
    assert empty.script().split("\n")[:4] == ["table ip swarmlet", "delete table ip swarmlet",
                                              "table bridge swarmlet", "delete table bridge swarmlet"]


def test_every_rule_carries_its_digest_and_the_script_replaces_the_tables_whole():
    script = render_ruleset(PLANE).script()
    rule = "ip daddr 10.0.1.2 tcp dport 8080 dnat to numgen inc mod 2 map { 0 : 10.0.1.7, 1 : 10.0.1.8 }"
    assert f'{rule} comment "{rule_comment(rule)}"' in script
    assert script.index("delete table ip swarmlet") < script.index("table ip swarmlet {")
    assert "elements = { 10.0.1.7, 10.0.1.8 }" in script


def listing_of(ruleset: Ruleset, drop_rule: str | None = None, backends=None) -> dict:
    """What `nft -j list ruleset` would show after applying `ruleset` (the parts we read)."""
    items = [{"metainfo": {}}, {"table": {"family": "ip", "name": "filter"}},
             {"rule": {"family": "ip", "table": "filter", "chain": "x", "comment": "someone else's"}}]
    for chain in ruleset.chains:
        c = {"family": chain.family, "table": "swarmlet", "name": chain.name}
        if chain.hook:
            c.update(type=chain.type, hook=chain.hook, prio=chain.priority, policy="accept")
        items.append({"chain": c})
        items += [{"rule": {"family": chain.family, "table": "swarmlet", "chain": chain.name, "comment": rule_comment(r),
                            "expr": []}} for r in chain.rules if r != drop_rule]
    items.append({"set": {"family": "ip", "table": "swarmlet", "name": "backends", "type": "ipv4_addr",
                          "elem": sorted(ruleset.backends if backends is None else backends)}})
    return {"nftables": items}


def test_the_read_back_matches_only_the_same_ruleset():
    ruleset = render_ruleset(PLANE)
    assert summarize_listing(listing_of(ruleset)) == ruleset.summary()
    # and it flags what differs: a missing rule, another backend set, another plane
    a_rule = rules(ruleset, "ip", "services")[0]
    assert summarize_listing(listing_of(ruleset, drop_rule=a_rule)) != ruleset.summary()
    assert summarize_listing(listing_of(ruleset, backends={"10.0.1.7"})) != ruleset.summary()
    other = render_ruleset(replace(PLANE, ingress=()))
    assert summarize_listing(listing_of(other)) != ruleset.summary()
    assert summarize_listing({"nftables": []}) == Ruleset().summary()


def test_no_flow_is_routed_from_one_overlay_network_into_another():
    """Two stacks' networks on one node: a task of one sent to the other's VIP through
    its gateway was DNAT'ed and forwarded (found end to end; Docker's isolation chains
    do not see our bridges' DNAT'ed flows). Networks are apart, as in Swarm."""
    other = replace(APP, id="n2", name="other", vni=4098, subnet="10.0.2.0/24", gateway="10.0.2.254", services=())
    forward = rules(render_ruleset(replace(PLANE, networks=(APP, other))), "ip", "forward")
    assert 'iifname "swbr*" iifname != "swbr4097" oifname "swbr4097" drop' in forward
    assert 'iifname "swbr*" iifname != "swbr4098" oifname "swbr4098" drop' in forward
