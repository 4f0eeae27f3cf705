"""Service discovery's answers, pure: which addresses a name has on one network.

Names are scoped by network, as in Swarm: a task resolves only the services of the
networks it is attached to (each network's resolver listens on that network's gateway).
`<name>` (the service, `<stack>_<service>`, every alias) is the VIP, or with `dnsrr` the
running tasks; `tasks.<name>` is always the running tasks. A name we know with no
address answers NOERROR without records (not NXDOMAIN: the name exists, it has no task
now); a name we do not know is for the upstream resolvers, or NXDOMAIN when there are
none. TTL 0: answers follow the plane the moment it is applied.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from swarmlet.api.netplane import NetworkPlane, OverlayNetwork

ANSWER_TTL = 0  # seconds; a dead task must leave the answers at once
TASKS_PREFIX = "tasks."

Names = Mapping[str, tuple[str, ...]]  # lower-case name without the final dot → IPv4 addresses


def normalize(name: str) -> str:
    return name.rstrip(".").lower()


def network_names(network: OverlayNetwork) -> Names:
    """Every name the network's resolver answers, with its addresses in a stable order."""
    names: dict[str, list[str]] = {}

    def add(name: str, addresses) -> None:
        known = names.setdefault(normalize(name), [])
        known.extend(a for a in addresses if a not in known)

    for service in network.services:
        tasks = [b.address for b in service.backends]
        itself = [service.vip] if service.endpoint_mode == "vip" and service.vip else tasks
        for name in service.names:
            add(name, itself)
            add(TASKS_PREFIX + name, tasks)
    return MappingProxyType({n: tuple(a) for n, a in names.items()})


def plane_names(plane: NetworkPlane) -> dict[str, Names]:
    """network ID → its names."""
    return {network.id: network_names(network) for network in plane.networks}


def answer(names: Names, request: DNSRecord, rotation: int = 0) -> DNSRecord | None:
    """The reply to `request` from `names`, or None when the name is not ours (forward it).

    `rotation` turns the order of several addresses (dnsrr, `tasks.`), so that clients that
    take the first one spread over the tasks."""
    question = request.q
    name = normalize(str(question.qname))
    if name not in names:
        return None
    reply = request.reply(ra=1, aa=1)
    if question.qtype in (QTYPE.A, QTYPE.ANY):
        addresses = names[name]
        if addresses:
            shift = rotation % len(addresses)
            for address in addresses[shift:] + addresses[:shift]:
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=ANSWER_TTL))
    return reply


def refusal(request: DNSRecord, rcode: int) -> DNSRecord:
    """NXDOMAIN when nobody else can know the name, SERVFAIL when the upstreams failed."""
    reply = request.reply(ra=1, aa=0)
    reply.header.rcode = rcode
    return reply


NXDOMAIN, SERVFAIL, FORMERR = RCODE.NXDOMAIN, RCODE.SERVFAIL, RCODE.FORMERR

CLASSIC_UDP_LIMIT = 512  # bytes of a UDP reply without EDNS (RFC 1035)
_OPT = 41  # the EDNS pseudo-record, whose class is the asker's UDP payload size


def udp_limit(request: DNSRecord) -> int:
    sizes = [rr.rclass for rr in request.ar if rr.rtype == _OPT]
    return max(CLASSIC_UDP_LIMIT, min(sizes[0], 65535)) if sizes else CLASSIC_UDP_LIMIT


def pack_for_udp(reply: DNSRecord, limit: int) -> bytes:
    """The reply within `limit` bytes: as many records as fit and the TC flag, so that the
    asker retries over TCP for the whole answer (a service with many tasks)."""
    packed = reply.pack()
    if len(packed) <= limit:
        return packed
    cut = DNSRecord(header=copy.deepcopy(reply.header), q=reply.q)  # the reply itself stays whole
    cut.header.tc = 1
    for rr in reply.rr:
        cut.add_answer(rr)
        if len(cut.pack()) > limit:
            cut.rr.pop()
            break
    return cut.pack()
