"""The resolver's listeners on loopback (no root): answers from the swapped-in names,
forwarding of other names to an upstream resolver, and prompt refusals."""
from __future__ import annotations

import asyncio
import random
import socket
import time

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from swarmlet.network.resolver import NetworkResolver, Resolver, _Upstreams

ADDRESS = "127.0.0.1"


def free_port() -> int:
    """A port free for UDP and TCP both, below the ephemeral range: a busy machine's client
    connections hold ephemeral TCP ports that a UDP probe cannot see."""
    while True:
        port = random.randrange(20000, 32000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                udp.bind((ADDRESS, port))
                tcp.bind((ADDRESS, port))
            return port
        except OSError:
            continue


class Upstream(asyncio.DatagramProtocol):
    """A real upstream resolver on loopback that knows one name."""

    def connection_made(self, transport):
        self.transport, self.asked = transport, []

    def datagram_received(self, data, peer):
        request = DNSRecord.parse(data)
        self.asked.append(str(request.q.qname))
        reply = request.reply()
        if str(request.q.qname) == "example.org.":
            reply.add_answer(RR("example.org.", QTYPE.A, rdata=A("192.0.2.1"), ttl=60))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        self.transport.sendto(reply.pack(), peer)


async def query(port: int, name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
    request = DNSRecord.question(name, qtype)
    return DNSRecord.parse(await asyncio.to_thread(request.send, ADDRESS, port, tcp=tcp, timeout=3))


async def test_names_upstreams_and_refusals():
    loop = asyncio.get_running_loop()
    upstream_port, port = free_port(), free_port()
    transport, upstream = await loop.create_datagram_endpoint(Upstream, local_addr=(ADDRESS, upstream_port))
    names = {"n1": {"web": ("10.0.1.2",)}}
    listener = NetworkResolver("n1", ADDRESS, lambda: names["n1"], _Upstreams([(ADDRESS, upstream_port)]), port)
    await listener.start()
    try:
        assert [str(rr.rdata) for rr in (await query(port, "web")).rr] == ["10.0.1.2"]
        assert [str(rr.rdata) for rr in (await query(port, "web", tcp=True)).rr] == ["10.0.1.2"]
        # the names are read at every query: a swap holds at once
        names["n1"] = {"web": ("10.0.1.3",)}
        assert [str(rr.rdata) for rr in (await query(port, "web")).rr] == ["10.0.1.3"]
        # other names are the upstream's, over UDP and TCP alike
        assert [str(rr.rdata) for rr in (await query(port, "example.org")).rr] == ["192.0.2.1"]
        assert [str(rr.rdata) for rr in (await query(port, "example.org", tcp=True)).rr] == ["192.0.2.1"]
        assert (await query(port, "nope.example")).header.rcode == RCODE.NXDOMAIN
        assert "web." not in upstream.asked
        # an upstream that does not answer: SERVFAIL after its timeout, not a silence
        transport.close()
        started = time.monotonic()
        assert (await query(port, "example.org")).header.rcode == RCODE.SERVFAIL
        assert time.monotonic() - started < 2.5
    finally:
        await listener.close()
        transport.close()


async def test_without_upstreams_unknown_names_are_nxdomain_at_once_and_garbage_is_ignored():
    port = free_port()
    resolver = Resolver(port=port)
    resolver.set_names({"n1": {"db": ()}})
    await resolver.sync({"n1": ADDRESS})
    try:
        started = time.monotonic()
        assert (await query(port, "example.org")).header.rcode == RCODE.NXDOMAIN
        assert time.monotonic() - started < 0.5
        reply = await query(port, "db")
        assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"\x00garbage", (ADDRESS, port))
        assert (await query(port, "db")).header.rcode == RCODE.NOERROR  # still serving
    finally:
        await resolver.close()
    # closed: the port is free again
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ADDRESS, port))
