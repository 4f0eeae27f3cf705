"""What breaks a cluster and heals it again: the I/O edge of the chaos engine.

A *target* knows the cluster's nodes, how to reach its API, and how to inject each
fault kind into one node and undo it. Every fault is written down *before* it is
injected, so ``heal_all`` (run on the way out, also after Ctrl-C) undoes whatever was
begun, even half-way: nodes killed are started again, frozen ones continued,
partitions and loss rules removed. Nodes that were already down before the run are
left as they were.
"""
from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from swarmlet.chaos.schedule import DEFAULT_LOSS_PERCENT, FaultKind
from swarmlet.cli.client import Client
from swarmlet.local.cluster import LocalCluster, LocalClusterError, process_state


class FaultError(Exception):
    pass


@dataclass(frozen=True)
class NodeInfo:
    name: str
    id: str
    role: str      # manager | worker
    address: str   # the address its peers reach it on
    api: str = ""  # ADDRESS:PORT of its API (managers)


def unsupported_reason(kind: FaultKind) -> str | None:
    """Why ``kind`` cannot be injected on this host, or None."""
    if kind == FaultKind.LATENCY:
        return ("latency is not supported yet: this kernel has no netem (CONFIG_NET_SCH_NETEM is not set) "
                "and the delaying proxy on the node's channels is not built; use loss, kill, freeze or partition")
    if kind == FaultKind.LOSS and _run(["nft", "--version"]).returncode != 0:
        return "loss needs nftables (`nft`, Debian's nftables package) and root"
    return None


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
        for kind in (FaultKind.FREEZE, FaultKind.PARTITION, FaultKind.LOSS, FaultKind.KILL):
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

    def __init__(self, directory: str | Path, loss_percent: int = DEFAULT_LOSS_PERCENT):
        super().__init__()
        self.cluster = LocalCluster(directory)
        self.loss_percent = loss_percent
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
            else:
                raise FaultError(unsupported_reason(kind) or f"{kind.value} is not supported on a local cluster")
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
                  f"    ip saddr {node.address} ip daddr {{ {peers} }} numgen random mod 100 < {self.loss_percent} drop\n"
                  f"    ip daddr {node.address} ip saddr {{ {peers} }} numgen random mod 100 < {self.loss_percent} drop\n"
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

    def leftovers(self) -> list[str]:
        """What of ours is still in place (for checks and tests)."""
        found = []
        if _run(["nft", "list", "table", "ip", self.nft_table]).returncode == 0:
            found.append(f"nft table {self.nft_table}")
        rules = _run(["iptables", "-S", "INPUT"]).stdout
        marker = f"swarmlet-local:{hashlib.sha256(str(self.cluster.directory).encode()).hexdigest()[:8]}:"
        found += [line for line in rules.splitlines() if marker in line]
        return found
