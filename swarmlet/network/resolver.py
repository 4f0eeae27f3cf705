"""The node's DNS resolver: one UDP and one TCP listener per network, on that network's
gateway address, answering from the names of that network only (`discovery`).

The names are read through a callable at every query, so a new plane's answers hold
from the moment the data plane swaps them in. Names that are not ours go to the upstream
resolvers given at construction, one after the other; with none (an isolated cluster
has no way out) the answer is NXDOMAIN at once, never a silence.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
from collections.abc import Callable, Sequence

from dnslib import DNSRecord

from swarmlet.network import discovery

log = logging.getLogger(__name__)

DNS_PORT = 53
UPSTREAM_TIMEOUT = 1.0  # seconds per upstream resolver before trying the next
_TCP_READ_TIMEOUT = 5.0  # seconds a TCP client may take to send its query
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def _bound_socket(address: str, port: int, kind: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The gateway address may still be on its way to the bridge (Docker adds it).
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Upstreams:
    def __init__(self, servers: Sequence[tuple[str, int]]):
        self.servers = tuple(servers)

    async def ask(self, query: bytes) -> bytes | None:
        loop = asyncio.get_running_loop()
        for server in self.servers:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, server)
                await loop.sock_sendall(sock, query)
                return await asyncio.wait_for(loop.sock_recv(sock, 65535), UPSTREAM_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as err:
                log.debug("upstream resolver %s: %s", server, err)
            finally:
                sock.close()
        return None


class NetworkResolver:
    """The listeners of one network."""

    def __init__(self, network_id: str, address: str, names: Callable[[], discovery.Names],
                 upstreams: _Upstreams, port: int = DNS_PORT):
        self.network_id, self.address, self.port = network_id, address, port
        self._names = names
        self._upstreams = upstreams
        self._rotation = itertools.count()
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_closed: asyncio.Future | None = None
        self._forwarding: set[asyncio.Task] = set()  # queries waiting on an upstream
        self._tcp: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        resolver = self

        closed = self._udp_closed = loop.create_future()

        class Protocol(asyncio.DatagramProtocol):
            def connection_lost(self, exc) -> None:
                if not closed.done():
                    closed.set_result(None)

            def datagram_received(self, data: bytes, peer) -> None:
                reply = resolver._quick_reply(data, udp=True)
                if reply is None:
                    task = loop.create_task(resolver._forward_udp(data, peer))
                    resolver._forwarding.add(task)
                    task.add_done_callback(resolver._forwarding.discard)
                elif reply:
                    resolver._udp.sendto(reply, peer)

        self._udp, _ = await loop.create_datagram_endpoint(
            Protocol, sock=_bound_socket(self.address, self.port, socket.SOCK_DGRAM))
        try:
            self._tcp = await asyncio.start_server(
                self._serve_tcp, sock=_bound_socket(self.address, self.port, socket.SOCK_STREAM))
        except OSError:
            await self.close()
            raise

    async def close(self) -> None:
        for task in list(self._forwarding):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
            await self._udp_closed  # the socket is closed on a later turn of the loop
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    def _quick_reply(self, data: bytes, udp: bool = False) -> bytes | None:
        """The reply when it needs no upstream (b"" for garbage: no reply); None when it does."""
        try:
            request = DNSRecord.parse(data)
        except Exception:  # dnslib raises DNSError and assorted others on garbage
            return b""
        if not request.questions:
            return discovery.refusal(request, discovery.FORMERR).pack()
        reply = discovery.answer(self._names(), request, next(self._rotation))
        if reply is not None:
            return discovery.pack_for_udp(reply, discovery.udp_limit(request)) if udp else reply.pack()
        if not self._upstreams.servers:
            return discovery.refusal(request, discovery.NXDOMAIN).pack()
        return None

    async def _resolve(self, data: bytes) -> bytes:
        reply = self._quick_reply(data)
        if reply is not None:
            return reply
        upstream = await self._upstreams.ask(data)
        if upstream is not None:
            return upstream
        return discovery.refusal(DNSRecord.parse(data), discovery.SERVFAIL).pack()

    async def _forward_udp(self, data: bytes, peer) -> None:
        reply = await self._resolve(data)
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, peer)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), _TCP_READ_TIMEOUT))[0]
                    data = await asyncio.wait_for(reader.readexactly(size), _TCP_READ_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                reply = await self._resolve(data)
                if not reply:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        finally:
            writer.close()


class Resolver:
    """Every network's listeners on this node; `sync` starts and stops them to match."""

    def __init__(self, upstreams: Sequence[tuple[str, int]] = (), port: int = DNS_PORT):
        self._upstreams = _Upstreams(upstreams)
        self._port = port
        self._names: dict[str, discovery.Names] = {}
        self._listeners: dict[str, NetworkResolver] = {}

    def set_names(self, names: dict[str, discovery.Names]) -> None:
        """Swap every network's answers at once."""
        self._names = dict(names)

    def names_of(self, network_id: str) -> discovery.Names:
        return self._names.get(network_id, {})

    async def sync(self, gateways: dict[str, str]) -> None:
        """`gateways`: network ID → the address its listeners should be on."""
        for network_id, listener in list(self._listeners.items()):
            if gateways.get(network_id) != listener.address:
                await listener.close()
                del self._listeners[network_id]
        for network_id, address in gateways.items():
            if network_id not in self._listeners:
                listener = NetworkResolver(network_id, address, lambda n=network_id: self.names_of(n),
                                           self._upstreams, self._port)
                await listener.start()
                self._listeners[network_id] = listener

    async def close(self) -> None:
        await self.sync({})
