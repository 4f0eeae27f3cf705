"""What a node keeps in its data dir, apart from its certificates (certs/) and, on a
manager, the Raft journal and snapshot (raft/).

``node.json`` holds the node's identity and how to reach the cluster; it is rewritten
atomically whenever the set of managers changes, so ``swarmlet agent --data-dir D``
can restart a node that already belongs to a cluster.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swarmlet.ca import NodeCertStore
from swarmlet.ca.store import PRIVATE_FILE_MODE, write_atomically

DEFAULT_API_PORT = 2377
# The Raft port is the API port + 1 unless set: one address, two listeners.
RAFT_PORT_OFFSET = 1
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id(length: int = 25) -> str:
    """A random base36 ID, the shape of Swarm's node, service and task IDs."""
    return "".join(secrets.choice(_BASE36) for _ in range(length))


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """'IP', 'IP:PORT' or '[v6]:PORT' -> (ip, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port)
    return address, default_port


@dataclass
class NodeConfig:
    node_id: str
    cluster_id: str
    role: str  # "manager" | "worker": what this process runs as
    advertise_addr: str  # IP other nodes reach this node at
    api_port: int = DEFAULT_API_PORT
    raft_port: int = DEFAULT_API_PORT + RAFT_PORT_OFFSET
    listen_addr: str | None = None  # bind address; the advertise address when None
    hostname: str = ""
    runtime: str = "docker"
    # Other nodes on this machine run tasks on the same Docker engine (`swarmlet local`):
    # their network changes are serialised through a machine-wide lock.
    shared_engine: bool = False
    managers: list[str] = field(default_factory=list)  # manager API addresses, "ip:port"
    raft_members: list[str] = field(default_factory=list)  # Raft addresses, "ip:port"
    raft_settings: dict = field(default_factory=dict)  # RaftSettings overrides

    @property
    def api_address(self) -> str:
        return f"{self.advertise_addr}:{self.api_port}"

    @property
    def raft_address(self) -> str:
        return f"{self.advertise_addr}:{self.raft_port}"

    @property
    def bind_host(self) -> str:
        return self.listen_addr or self.advertise_addr


class DataDir:
    """The layout of a node's data directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()

    @property
    def config_path(self) -> Path:
        return self.path / "node.json"

    @property
    def certs(self) -> NodeCertStore:
        return NodeCertStore(self.path / "certs")

    @property
    def raft_dir(self) -> Path:
        return self.path / "raft"

    @property
    def cluster_key_path(self) -> Path:
        return self.path / "cluster.key"

    @property
    def admin_dir(self) -> Path:
        return self.path / "admin"

    @property
    def pid_path(self) -> Path:
        return self.path / "node.pid"

    @property
    def ready_path(self) -> Path:
        return self.path / "ready"

    @property
    def log_path(self) -> Path:
        return self.path / "node.log"

    def exists(self) -> bool:
        return self.config_path.exists()

    def load(self) -> NodeConfig:
        try:
            data = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{self.path} holds no swarmlet node (no node.json): run `swarmlet init` or `swarmlet join` first") from None
        return NodeConfig(**data)

    def save(self, config: NodeConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_private(self.config_path, json.dumps(asdict(config), indent=2).encode())

    def read_cluster_key(self) -> str:
        return self.cluster_key_path.read_text().strip()

    def write_cluster_key(self, key: str) -> None:
        write_private(self.cluster_key_path, key.encode())



def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data, PRIVATE_FILE_MODE)
