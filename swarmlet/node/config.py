"""What a node keeps in its data dir, apart from its certificates (certs/) and, on a
manager, the Raft journal and snapshot (raft/).

``node.json`` holds the node's identity and how to reach the cluster; it is rewritten
atomically whenever the set of managers changes, so ``swarmlet agent --data-dir D``
can restart a node that already belongs to a cluster.

Everything in the data dir is owner-only (``swarmlet.private``). Secrets are sealed
(``swarmlet.ca.sealing``) under the node's key-encryption key, ``node.kek``: the
cluster key (``cluster.key``, from which a manager derives the key that seals its
Raft log and snapshots) and the bootstrap spec that holds the root CA's key until the
first manager has written it into the (sealed) log. Without autolock the KEK itself
lies in the data dir, protected by its mode alone, like the node's TLS key. A locked
manager (autolock) keeps it only sealed under its unlock key (``node.kek.locked``,
swarmlet/ca/unlock.py) and its TLS key sealed under the KEK; the node holds the KEK in
memory once ``unlock`` was given the right key. See docs/security.md.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass, field

from pathlib import Path

from swarmlet.api.addresses import DEFAULT_API_PORT, RAFT_PORT_OFFSET
from swarmlet.api.ipam import DEFAULT_DATA_PLANE

from swarmlet.ca import NodeCertStore
from swarmlet.ca.sealing import SealError, Sealer, is_sealed, new_key
from swarmlet.ca.unlock import UnlockKeyError, kek_sealer
from swarmlet.private import make_private_dir, write_private

log = logging.getLogger("swarmlet.node")

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
TLS_KEY_PURPOSE = "node TLS key"


class NodeLocked(Exception):
    """The data dir is a locked manager's and this process has not been given its unlock key."""


def new_id(length: int = 25) -> str:
    """A random base36 ID, the shape of Swarm's node, service and task IDs. One read of
    the system's randomness per ID (``secrets.choice`` per character made 20,000 task
    IDs cost ~2 s); bytes of 252 and over are dropped, so that every digit is uniform."""
    digits: list[str] = []
    while len(digits) < length:
        digits += [_BASE36[b % 36] for b in secrets.token_bytes(2 * length) if b < 252]
    return "".join(digits[:length])


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
    # What carries overlay networks on this node (swarmlet.api.ipam.DATA_PLANES): "none"
    # (the engine's own bridge networks) or "overlay" (swarmlet.network's data plane).
    data_plane: str = DEFAULT_DATA_PLANE
    managers: list[str] = field(default_factory=list)  # manager API addresses, "ip:port"
    raft_members: list[str] = field(default_factory=list)  # Raft addresses, "ip:port"
    raft_settings: dict = field(default_factory=dict)  # RaftSettings overrides
    # HOST:PORT for plain-HTTP GET /metrics (--metrics-addr, like dockerd's); None: off
    metrics_addr: str | None = None

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
        # A locked data dir's KEK once unlocked, and the unlock key it is sealed under.
        self._kek: bytes | None = None
        self.unlock_key: str | None = None

    @property
    def config_path(self) -> Path:
        return self.path / "node.json"

    @property
    def certs(self) -> NodeCertStore:
        # Sealed once a locked KEK exists (also while locking, before the plain KEK goes).
        return NodeCertStore(self.path / "certs",
                             seal_key=lambda: self._sealer(TLS_KEY_PURPOSE) if self.locked_kek_path.exists() else None,
                             open_key=lambda: self._sealer(TLS_KEY_PURPOSE))

    @property
    def raft_dir(self) -> Path:
        return self.path / "raft"

    @property
    def cluster_key_path(self) -> Path:
        return self.path / "cluster.key"

    @property
    def kek_path(self) -> Path:
        return self.path / "node.kek"

    @property
    def locked_kek_path(self) -> Path:
        return self.path / "node.kek.locked"

    @property
    def unlock_socket_path(self) -> Path:
        return self.path / "unlock.sock"

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

    def create(self) -> None:
        make_private_dir(self.path)

    def save(self, config: NodeConfig) -> None:
        self.create()
        write_private(self.config_path, json.dumps(asdict(config), indent=2).encode())

    # -- autolock --------------------------------------------------------------------------------
    def is_locked(self) -> bool:
        """The KEK lies here only sealed under an unlock key. (Both files present: a
        lock or an unlock stopped half-way; the plain KEK still counts.)"""
        return self.locked_kek_path.exists() and not self.kek_path.exists()

    def needs_unlock(self) -> bool:
        return self.is_locked() and self._kek is None

    def unlock(self, unlock_key: str) -> None:
        """Open the sealed KEK with ``unlock_key``; UnlockKeyError if it is not this node's."""
        sealer = kek_sealer(unlock_key)
        try:
            kek = sealer.open(self.locked_kek_path.read_bytes())
        except SealError:
            raise UnlockKeyError("wrong unlock key: it does not open this manager's key-encryption key") from None
        self._kek, self.unlock_key = kek, unlock_key
        self.certs.rewrite_key()  # sealed, if a lock stopped before it got there

    def lock(self, unlock_key: str) -> None:
        """Keep the KEK only sealed under ``unlock_key`` (again, after a rotation), and the TLS key under the KEK."""
        # A data dir locked as it is made (init --autolock) never has a plain KEK on disk.
        kek = self._kek_bytes() if self._kek or self.kek_path.exists() or self.locked_kek_path.exists() else new_key()
        write_private(self.locked_kek_path, kek_sealer(unlock_key).seal(kek))
        self._kek, self.unlock_key = kek, unlock_key
        if self.certs.exists():
            self.certs.rewrite_key()
        self.kek_path.unlink(missing_ok=True)  # last: from here on nothing here is plain

    def unlock_permanently(self) -> None:
        """Autolock turned off: the KEK and the TLS key lie here in plain form again (0600)."""
        kek = self._kek_bytes()
        write_private(self.kek_path, kek)
        self.locked_kek_path.unlink(missing_ok=True)
        self.certs.rewrite_key()
        self.unlock_key = None

    # -- sealed files --------------------------------------------------------------------------
    def _kek_bytes(self) -> bytes:
        if self._kek is not None:
            return self._kek
        try:
            return self.kek_path.read_bytes()
        except FileNotFoundError:
            if self.locked_kek_path.exists():
                raise NodeLocked(f"{self.path} is a locked manager's data dir: give it the unlock key "
                                 f"(`swarmlet unlock --data-dir {self.path}`)") from None
        kek = new_key()
        write_private(self.kek_path, kek)
        return kek

    def _sealer(self, purpose: str) -> Sealer:
        return Sealer(self._kek_bytes(), purpose)

    def write_sealed(self, path: Path, data: bytes, purpose: str) -> None:
        write_private(path, self._sealer(purpose).seal(data))

    def read_sealed(self, path: Path, purpose: str) -> bytes:
        """The content of a sealed file. One written before sealing existed (plain) is
        read as it is and sealed in place, with a warning."""
        blob = path.read_bytes()
        if is_sealed(blob):
            return self._sealer(purpose).open(blob)
        log.warning("%s held the %s in plain text; it is sealed now", path, purpose)
        self.write_sealed(path, blob, purpose)
        return blob

    def read_cluster_key(self) -> str:
        return self.read_sealed(self.cluster_key_path, "cluster key").decode().strip()

    def write_cluster_key(self, key: str) -> None:
        self.write_sealed(self.cluster_key_path, key.encode(), "cluster key")
