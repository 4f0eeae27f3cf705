"""A probe run inside a namespace of an isolated cluster (a node's or the client's) by
tests/cluster/test_overlay.py: it asks, over and over until a stop file appears (or its
time is up), DNS names of a node's resolver and HTTP targets (one new connection per
request, as busybox httpd closes each), and prints one JSON line per answer:

    {"t0": <time.time() asked>, "t": <answered>, "dns": "tasks.web", "answers": ["10.0.0.3", ...]}
    {"t": ..., "http": "10.0.0.2:8080", "body": "<the serving task's hostname>"}
    {"t": ..., "http": "10.0.0.2:8080", "error": "timed out"}
    {"t": ..., "tcp": "198.18.0.11:2377", "connected": true}   (a connection opened and closed)

Usage: python3 overlay_probe.py '{"dns": [["10.0.0.254", "tasks.web"]], "http": [["10.0.0.2", 8080]],
                                  "stop_file": "/tmp/x", "duration": 30, "timeout": 0.5}'
Standalone on purpose (dnslib and the standard library only): it runs with this
machine's Python in any namespace."""
from __future__ import annotations

import json
import os
import socket
import sys
import time

from dnslib import QTYPE, DNSRecord

REQUEST = b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n"


def lookup(server: str, name: str, timeout: float) -> list[str]:
    reply = DNSRecord.parse(DNSRecord.question(name, "A").send(server, 53, timeout=timeout))
    return sorted(str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A)


def fetch(address: str, port: int, timeout: float) -> str:
    with socket.create_connection((address, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(REQUEST)
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
        raise OSError(f"bad answer: {head[:60]!r}")
    return body.decode().strip()


def main(config: dict) -> None:
    deadline = time.monotonic() + config.get("duration", 60)
    timeout = config.get("timeout", 0.5)
    stop_file = config.get("stop_file")
    rounds = config.get("rounds")  # None: until the stop file or the deadline
    while time.monotonic() < deadline and not (stop_file and os.path.exists(stop_file)):
        if rounds is not None:
            if rounds == 0:
                break
            rounds -= 1
        for server, name in config.get("dns", ()):
            started = time.time()
            try:
                line = {"dns": name, "answers": lookup(server, name, timeout)}
            except (OSError, ValueError) as err:
                line = {"dns": name, "error": str(err) or type(err).__name__}
            print(json.dumps({"t0": started, "t": time.time(), **line}), flush=True)
        for address, port in config.get("http", ()):
            started = time.time()
            try:
                line = {"body": fetch(address, port, timeout)}
            except OSError as err:
                line = {"error": str(err) or type(err).__name__}
            print(json.dumps({"t0": started, "t": time.time(), "http": f"{address}:{port}", **line}), flush=True)
        for address, port in config.get("tcp", ()):
            started = time.time()
            try:
                socket.create_connection((address, port), timeout=timeout).close()
                line = {"connected": True}
            except OSError as err:
                line = {"error": str(err) or type(err).__name__}
            print(json.dumps({"t0": started, "t": time.time(), "tcp": f"{address}:{port}", **line}), flush=True)
        time.sleep(config.get("interval", 0.01))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
