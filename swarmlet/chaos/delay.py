"""The delaying proxy behind a latency fault (this kernel has no netem).

Run inside one node's network namespace (``python -m swarmlet.chaos.delay``), it takes
the TCP connections that nftables redirects to it there (faults.py renders the rules:
the node's connections to and from the other nodes' API and Raft ports), finds where
each was going with ``SO_ORIGINAL_DST``, connects there itself and copies both ways.
What the node *sends* is held ``--delay-ms`` before it goes on, in order; what it
receives passes at once. So the node's round trip to any peer grows by the delay, as
netem's ``delay`` on the node's link would make it (the peers' own sends are not held).

Its own connections carry ``--mark`` (``SO_MARK``): the redirect rules skip marked
packets, so the proxy's connection to the real destination is not taken back to it.
It prints ``ready PORT`` once it listens, and stops on SIGTERM (its connections close:
the node and its peers reconnect, directly once the rules are gone).
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct
import sys

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
SO_MARK = getattr(socket, "SO_MARK", 36)
CHUNK = 65536
CONNECT_TIMEOUT_S = 5.0


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going (``struct sockaddr_in``)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy until EOF; with ``delay``, each chunk is written ``delay`` after it was read
    (reading goes on meanwhile, so a steady stream is shifted, not slowed)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((loop.time() + delay, b""))
        await sender
    finally:
        sender.cancel()


class DelayProxy:
    def __init__(self, node_address: str, delay: float, mark: int):
        self.node_address = node_address
        self.delay = delay
        self.mark = mark
        self.connections: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.connections.add(task)
        upstream_writer = None
        try:
            address, port = original_destination(writer.get_extra_info("socket"))
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setsockopt(socket.SOL_SOCKET, SO_MARK, self.mark)
            upstream.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(upstream, (address, port)),
                                   CONNECT_TIMEOUT_S)
            upstream_reader, upstream_writer = await asyncio.open_connection(sock=upstream)
            # To the node's own address: a peer's connection to the node, whose replies
            # are the node's sends. Anywhere else: the node's own connection out.
            inbound = address == self.node_address
            await asyncio.gather(
                _copy(reader, upstream_writer, 0.0 if inbound else self.delay),
                _copy(upstream_reader, writer, self.delay if inbound else 0.0))
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()
            self.connections.discard(task)


async def serve(node_address: str, delay: float, mark: int) -> None:
    proxy = DelayProxy(node_address, delay, mark)
    server = await asyncio.start_server(proxy.handle, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    for task in list(proxy.connections):
        task.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-address", required=True, help="the node's own address in this namespace")
    parser.add_argument("--delay-ms", type=float, required=True, help="how long the node's sends are held")
    parser.add_argument("--mark", type=lambda v: int(v, 0), required=True, help="SO_MARK of the proxy's connections")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.node_address, args.delay_ms / 1000.0, args.mark))
    return 0


if __name__ == "__main__":
    sys.exit(main())
