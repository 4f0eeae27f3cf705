"""A small world of network namespaces for the data-plane tests and benchmark, built for real (root).

    LAN namespace: bridge lan0 ── eth0 of each node namespace (10.99.0.11, .12, .13)
                              └── eth0 of a client namespace (10.99.0.100), the outside world
    node namespace: the data plane's bridges swbr<vni>, each with "task" namespaces on veths
                    (plain processes serving HTTP and UDP echo, no Docker engine), and a
                    data-plane agent process (tests/network/nodeagent.py) inside it, as the
                    real agent runs inside its node's namespace.

Every name carries the prefix `swd` plus a random tag; everything is removed at the end,
also when a test fails (the namespaces take their devices and rules with them). The
namespaces get no route out: traffic stays among them.
"""
from __future__ import annotations

import ctypes
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, PublishedPort, ServiceEndpoint

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
TOOLS = ("ip", "nsenter", "nft", "conntrack", "bridge")


def world_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the data-plane tests need root (network namespaces, nftables)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools {missing} (Debian: iproute2, nftables, conntrack)"
    return None


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError as err:
            last = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


def _enter(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
    finally:
        os.close(fd)


class Netns:
    """A namespace, and one thread of this process inside it: sockets made there belong to it."""

    def __init__(self, name: str):
        self.name = name
        self._thread = ThreadPoolExecutor(1, initializer=_enter, initargs=(name,), thread_name_prefix=name)

    def call(self, fn, *args, **kwargs):
        return self._thread.submit(fn, *args, **kwargs).result()

    def ip(self, *args: str, check: bool = True) -> str:
        return run("ip", "-n", self.name, *args, check=check).stdout

    def sh(self, *argv: str, check: bool = True) -> str:
        return run("nsenter", f"--net=/run/netns/{self.name}", *argv, check=check).stdout

    def popen(self, *argv: str, **kwargs) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.Popen(["nsenter", f"--net=/run/netns/{self.name}", *argv], env=env, **kwargs)

    # -- clients, run in the namespace --------------------------------------------------------

    def http_get(self, address: str, port: int, timeout: float = 2.0) -> str:
        return self.call(_http, address, port, "GET", b"", timeout)

    def http_post(self, address: str, port: int, body: bytes, timeout: float = 2.0) -> bytes:
        return self.call(_http, address, port, "POST", body, timeout, raw=True)

    def keepalive(self, address: str, port: int, timeout: float = 2.0) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
        self.call(connection.connect)
        return connection

    def udp_echo(self, address: str, port: int, payload: bytes, timeout: float = 2.0) -> bytes:
        return self.call(_udp_echo, address, port, payload, timeout)

    def dns(self, server: str, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 2.0):
        from dnslib import DNSRecord

        def ask():
            return DNSRecord.parse(DNSRecord.question(name, qtype).send(server, 53, tcp=tcp, timeout=timeout))
        return self.call(ask)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def _http(address, port, method, body, timeout, raw=False):
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request(method, "/echo" if method == "POST" else "/", body=body or None)
        data = connection.getresponse().read()
    finally:
        connection.close()
    return data if raw else data.decode()


def _udp_echo(address, port, payload, timeout):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Don't fragment: a datagram too big for the overlay's MTU fails instead of passing in pieces.
        sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
        sock.settimeout(timeout)
        sock.sendto(payload, (address, port))
        return sock.recvfrom(65535)[0]
    finally:
        sock.close()


def keepalive_get(connection: http.client.HTTPConnection) -> str:
    connection.request("GET", "/")
    return connection.getresponse().read().decode()


class Agent:
    """The data-plane agent of one node, a process inside the node's namespace."""

    def __init__(self, node: Netns, *options: str):
        self.node = node
        self.process = node.popen(sys.executable, str(HERE / "nodeagent.py"), *options, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)

    def command(self, message: dict) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the agent of {self.node.name} exited ({self.process.wait()})")
        return json.loads(line)

    def apply(self, plane: NetworkPlane) -> dict:
        answer = self.command({"op": "apply", "plane": plane.to_wire()})
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.command({"op": "close"})
            except (BrokenPipeError, RuntimeError):
                pass
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


# -- the topology ------------------------------------------------------------------------------

LAN_PREFIX = 24
NODES = {"n1": "10.99.0.11", "n2": "10.99.0.12", "n3": "10.99.0.13"}
CLIENT = "10.99.0.100"
PORT = 8080
PUBLISHED = 18080


@dataclass(frozen=True)
class Net:
    id: str
    name: str
    vni: int
    subnet: str
    internal: bool
    nodes: tuple[str, ...]

    def gateway(self, node: str) -> str:
        # Every node its own gateway on the network: no two bridges answer ARP for one address.
        return self.prefix() + f".{250 + int(node[1:])}"

    def prefix(self) -> str:
        return self.subnet.rsplit(".", 1)[0]  # "10.0.1" of "10.0.1.0/24"


APP = Net("app", "demo_app", 4097, "10.0.1.0/24", False, ("n1", "n2", "n3"))
BACK = Net("back", "demo_back", 4098, "10.0.2.0/24", True, ("n1", "n2"))


@dataclass(frozen=True)
class Task:
    name: str
    node: str
    net: Net
    address: str

    @property
    def backend(self) -> Backend:
        return Backend(task_id=self.name, address=self.address, node_address=NODES[self.node])


WEB1 = Task("web1", "n1", APP, "10.0.1.11")
WEB2 = Task("web2", "n2", APP, "10.0.1.12")
C1 = Task("c1", "n1", APP, "10.0.1.21")
I1 = Task("i1", "n1", BACK, "10.0.2.11")
I2 = Task("i2", "n2", BACK, "10.0.2.12")
TASKS = (WEB1, WEB2, C1, I1, I2)
WEB_VIP, STORE_VIP = "10.0.1.2", "10.0.2.2"


def plane_for(node: str, web: tuple[Task, ...] = (WEB1, WEB2), version: int = 1, back: bool = True) -> NetworkPlane:
    """Node `node`'s plane: web (VIP, port 8080) and pool (dnsrr) on app, store (VIP, every
    port) on the internal back network, web published on 18080."""
    backends = tuple(t.backend for t in web)
    services = {
        "app": (ServiceEndpoint("web", ("web", "demo_web", "www"), "vip", WEB_VIP, backends, ((PORT, "tcp"),)),
                ServiceEndpoint("pool", ("pool", "demo_pool"), "dnsrr", None, backends)),
        "back": (ServiceEndpoint("store", ("store", "demo_store"), "vip", STORE_VIP, (I2.backend,)),),
    }
    networks = tuple(
        OverlayNetwork(id=net.id, name=net.name, vni=net.vni, subnet=net.subnet, gateway=net.gateway(node),
                       internal=net.internal, peers=tuple(NODES[n] for n in net.nodes if n != node),
                       services=services[net.id])
        for net in (APP, BACK) if node in net.nodes and (back or net is not BACK))
    ingress = (PublishedPort("web", PUBLISHED, PORT, "tcp", "app", backends),)
    return NetworkPlane(node_address=NODES[node], version=version, networks=networks, ingress=ingress)


class World:
    def __init__(self) -> None:
        self.tag = "swd" + secrets.token_hex(2)
        self.namespaces: dict[str, Netns] = {}
        self.processes: list[subprocess.Popen] = []
        self.agents: dict[str, Agent] = {}

    def netns(self, role: str) -> Netns:
        name = f"{self.tag}-{role}"
        run("ip", "netns", "add", name)
        ns = self.namespaces[role] = Netns(name)
        ns.ip("link", "set", "lo", "up")
        return ns

    def on_lan(self, role: str, address: str) -> Netns:
        ns, lan = self.netns(role), self.namespaces["lan"]
        lan.ip("link", "add", role, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        lan.ip("link", "set", role, "master", "lan0", "up")
        ns.ip("addr", "add", f"{address}/{LAN_PREFIX}", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
        return ns

    def serve(self, ns: Netns, name: str, port: int = PORT) -> None:
        process = ns.popen(sys.executable, str(HERE / "taskserver.py"), name, str(port),
                           stdout=subprocess.PIPE, text=True)
        self.processes.append(process)
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"task server {name} did not start")

    def add_task(self, task: Task) -> Netns:
        ns, node = self.netns(task.name), self.namespaces[task.node]
        port = f"v{task.name}"
        node.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        node.ip("link", "set", port, "master", f"swbr{task.net.vni}", "mtu", "1450", "up")
        ns.ip("addr", "add", f"{task.address}/24", "dev", "eth0")
        ns.ip("link", "set", "eth0", "mtu", "1450", "up")
        ns.ip("route", "add", "default", "via", task.net.gateway(task.node))
        self.serve(ns, task.name)
        return ns

    def start_agent(self, node: str) -> Agent:
        agent = self.agents[node] = Agent(self.namespaces[node])
        return agent

    def apply_all(self, **kwargs) -> dict[str, dict]:
        return {node: agent.apply(plane_for(node, **kwargs)) for node, agent in self.agents.items()}

    def state(self, node: str) -> dict:
        """What a node's kernel holds of ours: devices (with their indexes), FDB, addresses, rules."""
        ns = self.namespaces[node]
        links = json.loads(ns.sh("ip", "-j", "-d", "link", "show"))
        return {
            "links": sorted((l["ifindex"], l["ifname"], l.get("master"), l.get("mtu"), l["operstate"])
                            for l in links if l["ifname"].startswith(("swvx", "swbr"))),
            # our flood entries; learned ones come and go with traffic
            "fdb": sorted(line for line in ns.sh("bridge", "fdb", "show").splitlines()
                          if line.startswith("00:00:00:00:00:00")),
            "addrs": ns.sh("ip", "-4", "-o", "addr", "show"),
            "ruleset": ns.sh("nft", "list", "ruleset"),
        }

    def build(self) -> None:
        lan = self.netns("lan")
        lan.ip("link", "add", "lan0", "type", "bridge")
        lan.ip("link", "set", "lan0", "up")
        for node, address in NODES.items():
            self.on_lan(node, address)
            self.start_agent(node)
        client = self.on_lan("client", CLIENT)
        self.serve(client, "outside")
        self.apply_all()  # the bridges first: tasks plug into them
        for task in TASKS:
            self.add_task(task)

    def destroy(self) -> None:
        for agent in self.agents.values():
            agent.kill()
        for process in self.processes:
            process.kill()
            process.wait()
        for ns in self.namespaces.values():
            ns.close()
            run("ip", "netns", "del", ns.name, check=False)


