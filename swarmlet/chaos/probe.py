"""The HTTP prober of a chaos run, a process of its own so that it can run where the
cluster's clients are (on an isolated cluster: the client namespace, `local exec
--client`): ``python -m swarmlet.chaos.probe URL...``.

Every ``--interval`` seconds it starts one GET, to the next URL in turn (round robin:
with one URL per node, every node's address is asked in turn), each on a new
connection (a new flow, balanced afresh by the routing mesh), without waiting for the
previous one to answer: a node that does not answer costs its own requests their
timeout, not the others' turn. A first line ``{"ready": true}`` says it has begun; then
each answer is one JSON line on stdout:
``{"t": CLOCK_MONOTONIC at the start, "url", "ok", "error"}`` (the monotonic clock is
the machine's, shared with the run). It stops on SIGTERM or when stdin closes.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

DEFAULT_INTERVAL_S = 0.1
DEFAULT_TIMEOUT_S = 1.0


async def _one(session, url: str, timeout: float) -> None:
    import aiohttp

    start = time.monotonic()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            await response.read()
            ok, error = 200 <= response.status < 400, "" if response.status < 400 else f"HTTP {response.status}"
    except asyncio.TimeoutError:
        ok, error = False, f"no answer within {timeout:g}s"
    except (aiohttp.ClientError, OSError) as err:
        ok, error = False, str(err)[:100] or type(err).__name__
    print(json.dumps({"t": start, "url": url, "ok": ok, "error": error}), flush=True)


async def probe(urls: list[str], interval: float, timeout: float) -> None:
    import aiohttp

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
    pending: set[asyncio.Task] = set()
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection (flow) per request
    async with aiohttp.ClientSession(connector=connector) as session:
        print(json.dumps({"ready": True}), flush=True)
        turn = 0
        while not stop.is_set():
            task = asyncio.create_task(_one(session, urls[turn % len(urls)], timeout))
            pending.add(task)
            task.add_done_callback(pending.discard)
            turn += 1
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
        if pending:
            await asyncio.wait(pending, timeout=timeout + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="HTTP GETs round robin over URLs, one JSON line per answer")
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    args = parser.parse_args(argv)
    asyncio.run(probe(args.urls, args.interval, args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
