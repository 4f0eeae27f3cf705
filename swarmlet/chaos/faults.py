"""What breaks a cluster and heals it again: the I/O edge of the chaos engine.

Three targets: ``LocalTarget`` (a shared-engine `swarmlet local` cluster, every node on
a loopback address), ``IsolatedTarget`` (`swarmlet local up --isolated`: every node in
a network namespace of its own, faults made inside it), and compose.ComposeTarget (the
containerised test cluster). ``unsupported`` says per target what it cannot inject.

A *target* knows the cluster's nodes, how to reach its API, and how to inject each
fault kind into one node and undo it. Every fault is written down *before* it is
injected, so ``heal_all`` (run on the way out, also after Ctrl-C) undoes whatever was
begun, even half-way: nodes killed are started again, frozen ones continued,
partitions and loss rules removed. Nodes that were already down before the run are
left as they were.
"""
from __future__ import annotations

import hashlib
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from swarmlet.chaos.schedule import DEFAULT_LATENCY_MS, DEFAULT_LOSS_PERCENT, FaultKind
from swarmlet.cli.client import Client
from swarmlet.local.cluster import LocalCluster, LocalClusterError, process_state
from swarmlet.local.isolated import NODE_LINK, in_netns, kill_processes, namespace_processes
from swarmlet.api.addresses import RAFT_PORT_OFFSET


class FaultError(Exception):
    pass


@dataclass(frozen=True)
class NodeInfo:
    name: str
    id: str
    role: str      # manager | worker
    address: str   # the address its peers reach it on
    api: str = ""  # ADDRESS:PORT of its API (managers)


LATENCY_ONLY_ISOLATED = ("latency needs an isolated cluster (`swarmlet local up --isolated`): this kernel has no netem "
                         "(CONFIG_NET_SCH_NETEM is not set), so the delay is a proxy inside the node's own network "
                         "namespace that nftables redirects its connections to; nodes sharing one namespace cannot be "
                         "delayed one by one")


def unsupported_reason(kind: FaultKind) -> str | None:
    """Why ``kind`` cannot be injected on this host (any target), or None."""
    if kind in (FaultKind.LOSS, FaultKind.LATENCY) and _run(["nft", "--version"]).returncode != 0:
        return f"{kind.value} needs nftables (`nft`, Debian's nftables package) and root"
    return None


def random_drop(percent: int) -> str:
    """The nftables statement dropping ``percent`` % of packets at random (numgen's
    values are 0-99: all of them is a plain drop)."""
    return "drop" if percent >= 100 else f"numgen random mod 100 < {percent} drop"


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True)
    except FileNotFoundError as err:
        return subprocess.CompletedProcess(argv, 127, "", str(err))


class FaultTarget:
    """What every target shares: the record of faults begun, and healing them all.
    Subclasses give ``nodes``, ``client``, ``alive``, ``_inject`` and ``_undo``."""

    kind = "abstract"

    def __init__(self):
        self.broken: dict[str, set[FaultKind]] = {}   # node name -> faults begun and not undone

    def unsupported(self, kind: FaultKind) -> str | None:
        """Why this target cannot inject ``kind``, or None."""
        return unsupported_reason(kind)

    def client_command(self, argv: list[str]) -> list[str]:
        """``argv`` run where the cluster's outside clients are (the HTTP prober)."""
        return argv

    def mesh_urls(self, service: dict) -> list[str]:
        """URLs that reach ``service`` (the API's view) through the routing mesh, one per
        node, or [] where the target has no mesh."""
        return []

    def inject(self, kind: FaultKind, node: NodeInfo) -> None:
        self.broken.setdefault(node.name, set()).add(kind)  # first: a half-done fault is healed too
        self._inject(kind, node)

    def undo(self, kind: FaultKind, node: NodeInfo) -> None:
        self._undo(kind, node)
        self.broken.get(node.name, set()).discard(kind)

    def heal_all(self) -> list[str]:
        """Undo every fault begun; returns what was undone (``kind:node``)."""
        undone = []
        nodes = {n.name: n for n in self.nodes()}
        # Thaw before restarting: a frozen node also holds its ports.
        for kind in (FaultKind.FREEZE, FaultKind.PARTITION, FaultKind.LOSS, FaultKind.LATENCY, FaultKind.KILL):
            for name, kinds in list(self.broken.items()):
                if kind in kinds and name in nodes:
                    self.undo(kind, nodes[name])
                    undone.append(f"{kind.value}:{name}")
        return undone

    def close(self) -> None:
        """Remove what the target itself made (temporary files)."""


class LocalTarget(FaultTarget):
    """A `swarmlet local` cluster: signals to the node processes, iptables partitions
    (LocalCluster's own), nftables ``numgen random`` drops for loss."""

    kind = "local"

    def __init__(self, directory: str | Path, loss_percent: int = DEFAULT_LOSS_PERCENT,
                 latency_ms: float = DEFAULT_LATENCY_MS):
        super().__init__()
        self.cluster = LocalCluster(directory)
        self.loss_percent = loss_percent
        self.latency_ms = latency_ms
        digest = hashlib.sha256(str(self.cluster.directory).encode()).hexdigest()[:8]
        self.nft_table = f"swarmlet_chaos_{digest}"

    # -- the cluster ---------------------------------------------------------------------------
    def nodes(self) -> list[NodeInfo]:
        _, port = self.cluster.load()
        return [NodeInfo(r["name"], r["id"], r["role"], r["address"],
                         f"{r['address']}:{port}" if r["role"] == "manager" else "")
                for r in self.cluster.status()]

    def client(self, hosts: list[str] | None = None, timeout: float = 5.0) -> Client:
        return Client(hosts or self.cluster.hosts(), self.cluster.admin_dir, timeout=timeout)

    def alive(self) -> dict[str, bool]:
        return {r["name"]: r["alive"] for r in self.cluster.status()}

    def unsupported(self, kind: FaultKind) -> str | None:
        return LATENCY_ONLY_ISOLATED if kind == FaultKind.LATENCY else unsupported_reason(kind)

    # -- faults -----------------------------------------------------------------------------------
    def _inject(self, kind: FaultKind, node: NodeInfo) -> None:
        try:
            if kind == FaultKind.KILL:
                self.cluster.kill(node.name, "KILL")
            elif kind == FaultKind.FREEZE:
                self.cluster.kill(node.name, "STOP")
            elif kind == FaultKind.PARTITION:
                self.cluster.partition(node.name)
            elif kind == FaultKind.LOSS:
                self._loss(node)
            elif kind == FaultKind.LATENCY and not self.unsupported(kind):
                self._delay(node)
            else:
                raise FaultError(self.unsupported(kind) or f"{kind.value} is not supported on a local cluster")
        except LocalClusterError as err:
            raise FaultError(f"{kind.value} of {node.name}: {err}") from None

    def _undo(self, kind: FaultKind, node: NodeInfo) -> None:
        try:
            if kind == FaultKind.KILL:
                if process_state(self.cluster.pid_of(self.cluster.find(node.name))) == "dead":
                    self.cluster.start(node.name)
            elif kind == FaultKind.FREEZE:
                self.cluster.kill(node.name, "CONT")
            elif kind == FaultKind.PARTITION:
                self.cluster.heal(node.name)
            elif kind == FaultKind.LOSS:
                self._unloss(node)
            elif kind == FaultKind.LATENCY:
                self._undelay(node)
        except LocalClusterError as err:
            raise FaultError(f"undoing {kind.value} of {node.name}: {err}") from None

    # -- loss: nftables numgen random ----------------------------------------------------------------
    def _loss(self, node: NodeInfo) -> None:
        others = [n.address for n in self.nodes() if n.name != node.name]
        if not others:
            return
        peers = ", ".join(others)
        # Drops a random share of the packets between the node and its peers, both ways,
        # before iptables' filter (priority -10); the table is this cluster's alone.
        chain = f"loss_{node.name.replace('-', '_')}"
        script = (f"table ip {self.nft_table} {{\n"
                  f"  chain {chain} {{\n"
                  f"    type filter hook input priority -10; policy accept;\n"
                  f"    ip saddr {node.address} ip daddr {{ {peers} }} {random_drop(self.loss_percent)}\n"
                  f"    ip daddr {node.address} ip saddr {{ {peers} }} {random_drop(self.loss_percent)}\n"
                  f"  }}\n}}\n")
        result = _run(["nft", "-f", "-"], stdin=script)
        if result.returncode != 0:
            raise FaultError(f"nft: {result.stderr.strip()}")

    def _unloss(self, node: NodeInfo) -> None:
        chain = f"loss_{node.name.replace('-', '_')}"
        listed = _run(["nft", "list", "table", "ip", self.nft_table])
        if listed.returncode != 0:
            return  # no table: nothing to remove
        _run(["nft", "delete", "chain", "ip", self.nft_table, chain])
        if "chain " not in _run(["nft", "list", "table", "ip", self.nft_table]).stdout:
            _run(["nft", "delete", "table", "ip", self.nft_table])

    def _delay(self, node: NodeInfo) -> None:
        raise FaultError(LATENCY_ONLY_ISOLATED)

    def _undelay(self, node: NodeInfo) -> None:
        pass

    def leftovers(self) -> list[str]:
        """What of ours is still in place (for checks and tests)."""
        found = []
        if _run(["nft", "list", "table", "ip", self.nft_table]).returncode == 0:
            found.append(f"nft table {self.nft_table}")
        rules = _run(["iptables", "-S", "INPUT"]).stdout
        marker = f"swarmlet-local:{hashlib.sha256(str(self.cluster.directory).encode()).hexdigest()[:8]}:"
        found += [line for line in rules.splitlines() if marker in line]
        return found


def open_local_target(directory: str | Path, loss_percent: int = DEFAULT_LOSS_PERCENT,
                      latency_ms: float = DEFAULT_LATENCY_MS) -> LocalTarget:
    """The target for the local cluster in ``directory``, of whichever kind it is."""
    if LocalCluster(directory).isolation() is not None:
        return IsolatedTarget(directory, loss_percent, latency_ms)
    return LocalTarget(directory, loss_percent, latency_ms)


# -- isolated clusters ---------------------------------------------------------------------------------------
# In a node's own namespace, so the names need not tell clusters apart.
LOSS_TABLE = "swarmlet_chaos_loss"
LATENCY_TABLE = "swarmlet_chaos_latency"
# SO_MARK of the delaying proxy's own connections: the redirect skips them (no loop).
PROXY_MARK = 0x5C4A
PROXY_MODULE = "swarmlet.chaos.delay"
PROXY_READY_TIMEOUT_S = 15.0
PROXY_STOP_TIMEOUT_S = 5.0  # for the proxy we started to be reaped


def loss_rules(percent: int, link: str = NODE_LINK) -> str:
    """A lossy link: a random ``percent`` of what crosses it is dropped, both ways,
    whether for the node itself or routed through it (the mesh, VXLAN)."""
    drop = random_drop(percent)
    return (f"table ip {LOSS_TABLE} {{\n"
            f"  chain inbound {{ type filter hook prerouting priority -300; policy accept; iifname \"{link}\" {drop}; }}\n"
            f"  chain outbound {{ type filter hook postrouting priority 300; policy accept; oifname \"{link}\" {drop}; }}\n"
            f"}}\n")


def latency_rules(address: str, ports: list[int], proxy_port: int, link: str = NODE_LINK,
                  mark: int = PROXY_MARK) -> str:
    """The node's TCP connections to and from the swarmlet ports (API, Raft) redirected
    to the delaying proxy on ``proxy_port``: its own connections out (output), and its
    peers' connections in to ``address`` (prerouting); the proxy's own, marked, are not."""
    dports = "{ " + ", ".join(str(p) for p in sorted(set(ports))) + " }"
    return (f"table ip {LATENCY_TABLE} {{\n"
            f"  chain outbound {{ type nat hook output priority -100; policy accept; "
            f"oifname \"{link}\" meta mark != {mark:#x} tcp dport {dports} redirect to :{proxy_port}; }}\n"
            f"  chain inbound {{ type nat hook prerouting priority -100; policy accept; "
            f"iifname \"{link}\" ip daddr {address} tcp dport {dports} redirect to :{proxy_port}; }}\n"
            f"}}\n")


class IsolatedTarget(LocalTarget):
    """A `swarmlet local up --isolated` cluster: every fault inside the node's own
    namespace. kill/freeze: signals to the node's process, as on any local cluster;
    partition: the node's link on the LAN goes down (`local partition`); loss: nftables
    ``numgen random`` drops on the node's link; latency: the node's API and Raft
    connections redirected (nftables) to a delaying proxy in its namespace
    (swarmlet/chaos/delay.py). The workload reaches the managers from this machine's
    own address on the LAN, as an operator's laptop would; the HTTP prober runs in the
    client namespace."""

    kind = "isolated"

    def __init__(self, directory: str | Path, loss_percent: int = DEFAULT_LOSS_PERCENT,
                 latency_ms: float = DEFAULT_LATENCY_MS):
        super().__init__(directory, loss_percent, latency_ms)
        isolation = self.cluster.isolation()
        if isolation is None:
            raise FaultError(f"the local cluster in {self.cluster.directory} is not isolated")
        self.record = isolation.record
        self._proxies: dict[str, subprocess.Popen] = {}

    def unsupported(self, kind: FaultKind) -> str | None:
        return unsupported_reason(kind)

    def client_command(self, argv: list[str]) -> list[str]:
        return in_netns(self.record.client_netns, argv)

    def mesh_urls(self, service: dict) -> list[str]:
        ports = [p["published"] for p in service.get("spec", {}).get("endpoint", {}).get("ports", [])
                 if p.get("mode") == "ingress" and p.get("protocol", "tcp") == "tcp" and p.get("published")]
        if not ports:
            return []
        return [f"http://{node.address}:{ports[0]}/" for node in self.nodes()]

    def _netns(self, node: NodeInfo) -> str:
        return self.cluster.find(node.name).netns

    def _nft(self, node: NodeInfo, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return _run(in_netns(self._netns(node), ["nft", *args]), stdin=stdin)

    # -- loss ------------------------------------------------------------------------------------------
    def _loss(self, node: NodeInfo) -> None:
        result = self._nft(node, "-f", "-", stdin=loss_rules(self.loss_percent))
        if result.returncode != 0:
            raise FaultError(f"nft in {self._netns(node)}: {result.stderr.strip()}")

    def _unloss(self, node: NodeInfo) -> None:
        self._nft(node, "delete", "table", "ip", LOSS_TABLE)

    # -- latency ---------------------------------------------------------------------------------------
    def _swarmlet_ports(self) -> list[int]:
        port = self.cluster.load()[1]
        return [port, port + RAFT_PORT_OFFSET]

    def _delay(self, node: NodeInfo) -> None:
        netns = self._netns(node)
        proxy = subprocess.Popen(
            in_netns(netns, [sys.executable, "-m", PROXY_MODULE, "--node-address", node.address,
                             "--delay-ms", f"{self.latency_ms:g}", "--mark", hex(PROXY_MARK)]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self._proxies[node.name] = proxy
        proxy_port = _ready_port(proxy, PROXY_READY_TIMEOUT_S)
        if proxy_port is None:
            raise FaultError(f"the delaying proxy in {netns} did not start within {PROXY_READY_TIMEOUT_S:g}s")
        result = self._nft(node, "-f", "-", stdin=latency_rules(node.address, self._swarmlet_ports(), proxy_port))
        if result.returncode != 0:
            raise FaultError(f"nft in {netns}: {result.stderr.strip()}")
        # NAT is decided when a connection starts: the node's open connections are cut
        # once (it and its peers reconnect at once, through the proxy).
        self._cut_connections(node)

    def _undelay(self, node: NodeInfo) -> None:
        self._nft(node, "delete", "table", "ip", LATENCY_TABLE)
        # Its connections close with it: the node and its peers reconnect, directly.
        proxy = self._proxies.pop(node.name, None)
        kill_processes(({proxy.pid} if proxy else set()) | self._proxy_pids(node), signal.SIGTERM)
        kill_processes(self._proxy_pids(node))  # one that did not stop
        if proxy:
            proxy.wait(PROXY_STOP_TIMEOUT_S)
            proxy.stdout.close()

    def _cut_connections(self, node: NodeInfo) -> None:
        ports = " or ".join(f"sport = :{p} or dport = :{p}" for p in self._swarmlet_ports())
        _run(in_netns(self._netns(node), ["ss", "-K", "-t", "state", "established", f"( {ports} )"]))

    def _proxy_pids(self, node: NodeInfo) -> set[int]:
        found = set()
        for pid in namespace_processes([self._netns(node)]):
            try:
                if PROXY_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.add(pid)
            except OSError:
                pass
        return found

    def leftovers(self) -> list[str]:
        found = []
        for node in self.nodes():
            tables = self._nft(node, "list", "tables").stdout
            found += [f"nft table {t} in {self._netns(node)}" for t in (LOSS_TABLE, LATENCY_TABLE) if t in tables]
            found += [f"delaying proxy {pid} in {self._netns(node)}" for pid in sorted(self._proxy_pids(node))]
        isolation = self.cluster.isolation()
        found += [f"link {name} down" for name in sorted(isolation.links_down())] if isolation else []
        return found


def _ready_port(process: subprocess.Popen, timeout: float) -> int | None:
    """The port in the process's first line, ``ready PORT``; None if it does not come."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        return None
    line = process.stdout.readline().decode().split()
    return int(line[1]) if len(line) == 2 and line[0] == "ready" else None
