"""The isolated local cluster's machinery: every node a "host" of its own.

``swarmlet local up --isolated`` gives each node a network namespace with one link
(``lan0``) into a "LAN" namespace that holds a bridge; a client namespace on the same
LAN plays the outside world, and the root namespace joins the LAN through a veth with
a LAN address, as an operator's laptop would, so that the CLI and the tests reach the
managers' APIs. No namespace gets a default route: nothing leaves the namespaces made
here. With the docker runtime every node also gets its own Docker engine (its own data
root, exec root, pid file, socket, cgroup parent, bridge subnet ``--bip`` and ``--dns``
set to the node's LAN address), started inside the node's namespace, with the local
test image loaded into it.

Everything created is recorded in ``isolated.json`` (in the cluster's directory)
*before* it is created, so that ``teardown`` can undo a partial ``up`` (one that
crashed or was killed half way) as well as a whole one, and a second teardown finds
nothing left to do. Teardown does not trust the record alone for processes: whatever
runs inside the recorded namespaces (node processes, engines, their containerd and
shims) is killed, with its descendants (container processes live in namespaces of
their own, under the shims), and whatever is mounted under the recorded directories
is unmounted before they are removed.

Names derive from a short random cluster ID, so that several isolated clusters share
the machine: namespaces ``<prefix><id>-lan``, ``-client``, ``-<node name>``; the
root namespace's veth ``<prefix><id>``; exec roots under ``/run/swarmlet/<prefix><id>/``
(Unix socket paths must stay under 108 bytes). The LAN is one /24 of 198.18.0.0/16
(RFC 2544's benchmarking range, 198.18.0.0/15: never a real network), the first one no route of the
root namespace covers, taken under a machine-wide lock; each engine's docker0 is
198.19.<n>.0/24, seen only inside its node's namespace.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swarmlet.private import make_private_dir, write_private

RECORD_FILE = "isolated.json"
DEFAULT_NAME_PREFIX = "swl"
MAX_NAME_PREFIX = 4  # the root namespace's veth, <prefix><id>, must fit IFNAMSIZ (15)
CLUSTER_ID_LENGTH = 5
RUN_ROOT = Path("/run/swarmlet")
NETNS_DIR = Path("/run/netns")
LAN_POOL = ipaddress.IPv4Network("198.18.0.0/16")  # one /24 per isolated cluster
# Each engine's default bridge (docker0, inside its node's namespace only): 198.19.<n>.0/24.
BIP_POOL = ipaddress.IPv4Network("198.19.0.0/16")
HOST_HOST_NUMBER = 1  # the root namespace's address on the LAN: .1
CLIENT_HOST_NUMBER = 2  # the client namespace's: .2
FIRST_NODE_HOST_NUMBER = 11  # nodes from .11 on
LAN_BRIDGE = "br0"
NODE_LINK = "lan0"  # a node's (and the client's) one link, in its own namespace
HOST_PEER = "host"  # the LAN end of the root namespace's veth
ENGINE_READY_TIMEOUT = 60.0
ENGINE_STOP_TIMEOUT = 15.0
PROCESS_KILL_TIMEOUT = 5.0
# Containers are removed (SIGKILL) before their engine stops, so the engine's own
# shutdown never waits for a container's grace period.
ENGINE_SHUTDOWN_TIMEOUT = 5


class IsolationError(Exception):
    pass


def isolated_extra_args(runtime: str) -> list[str]:
    """Extra `init`/`join` arguments for a node of an isolated cluster."""
    # Docker nodes run the overlay data plane (swarmlet/network/): VXLAN between the
    # nodes' namespaces, DNS, VIPs and the routing mesh. Process-runtime tasks share
    # their node's address, so they have no use for one.
    return ["--data-plane", "overlay"] if runtime == "docker" else []


def preflight(runtime: str) -> None:
    """Refuse at once, before anything is created, what cannot work here."""
    if os.geteuid() != 0:
        raise IsolationError("--isolated needs root: it creates network namespaces, veth pairs, a bridge and (with "
                             "the docker runtime) a Docker engine per node; run it as root (e.g. with sudo)")
    tools = ["ip", "nsenter"] + (["dockerd"] if runtime == "docker" else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise IsolationError(f"--isolated needs {', '.join(missing)} on PATH (Debian: iproute2, util-linux"
                             f"{', docker.io' if 'dockerd' in missing else ''})")


def check_name_prefix(prefix: str) -> str:
    if not (1 <= len(prefix) <= MAX_NAME_PREFIX and prefix.isascii() and prefix.isalnum() and prefix.islower()):
        raise IsolationError(f"name prefix {prefix!r}: expected 1 to {MAX_NAME_PREFIX} lower-case letters or digits")
    return prefix


# -- the record ------------------------------------------------------------------------------------------

@dataclass
class Engine:
    node: str
    netns: str
    data_root: str
    exec_root: str
    cgroup_parent: str
    bip: str
    dns: str
    pid: int = 0

    @property
    def socket(self) -> str:
        return f"{self.exec_root}/docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> str:
        return f"{self.exec_root}/docker.pid"

    @property
    def log_path(self) -> str:
        return f"{self.data_root}.log"


@dataclass
class Record:
    """What an isolated cluster holds on the machine; written before each creation."""
    prefix: str
    cluster_id: str
    lan: str = ""  # the LAN's subnet, once taken
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # in the root namespace
    dirs: list[str] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.cluster_id}"

    @property
    def lan_netns(self) -> str:
        return f"{self.name}-lan"

    @property
    def client_netns(self) -> str:
        return f"{self.name}-client"

    def node_netns(self, node: str) -> str:
        return f"{self.name}-{node}"

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def lan_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.lan)

    def lan_address(self, host_number: int) -> str:
        return str(self.lan_network.network_address + host_number)

    @property
    def host_address(self) -> str:
        return self.lan_address(HOST_HOST_NUMBER)

    @property
    def client_address(self) -> str:
        return self.lan_address(CLIENT_HOST_NUMBER)

    def node_address(self, index: int) -> str:
        """The LAN address of the ``index``-th node (0-based)."""
        if FIRST_NODE_HOST_NUMBER + index >= self.lan_network.num_addresses - 1:
            raise IsolationError(f"the LAN {self.lan} has no address left for node {index + 1}")
        return self.lan_address(FIRST_NODE_HOST_NUMBER + index)

    def engine(self, node: str) -> Engine | None:
        return next((e for e in self.engines if e.node == node), None)

    @classmethod
    def load(cls, path: Path) -> "Record | None":
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        data["engines"] = [Engine(**e) for e in data.get("engines", [])]
        return cls(**data)

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), indent=2).encode())


class Isolation:
    """Builds an isolated cluster's namespaces and engines, recording each piece first."""

    def __init__(self, directory: Path, record: Record, log=print):
        self.directory = directory
        self.path = directory / RECORD_FILE
        self.record = record
        self.log = log

    @classmethod
    def create(cls, directory: Path, prefix: str, log=print) -> "Isolation":
        check_name_prefix(prefix)
        while True:
            record = Record(prefix, secrets.token_hex(CLUSTER_ID_LENGTH)[:CLUSTER_ID_LENGTH])
            if not (NETNS_DIR / record.lan_netns).exists() and not record.run_dir.exists():
                break
        isolation = cls(directory, record, log)
        isolation._save()
        return isolation

    @classmethod
    def open(cls, directory: Path, log=print) -> "Isolation | None":
        record = Record.load(directory / RECORD_FILE)
        return cls(directory, record, log) if record else None

    def _save(self) -> None:
        self.record.save(self.path)

    # -- the LAN -----------------------------------------------------------------------------------------
    def make_lan(self) -> None:
        r = self.record
        self._add_netns(r.lan_netns)
        _ip("-n", r.lan_netns, "link", "add", LAN_BRIDGE, "type", "bridge")
        _ip("-n", r.lan_netns, "link", "set", LAN_BRIDGE, "up")
        make_private_dir(RUN_ROOT)
        # The subnet is free once a route of the root namespace covers it: take it and
        # put the route there under one lock, or two `up`s could take the same one.
        with open(RUN_ROOT / "lan.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            r.lan = str(_free_lan())
            r.links.append(r.name)
            self._save()
            _ip("link", "add", r.name, "type", "veth", "peer", "name", HOST_PEER, "netns", r.lan_netns)
            # Up first: the kernel adds an address's routes only on a link that is up.
            _ip("link", "set", r.name, "up")
            _ip("addr", "add", f"{r.host_address}/{r.lan_network.prefixlen}", "dev", r.name)
        self._attach(HOST_PEER)
        self._add_netns(r.client_netns)
        self._plug(r.client_netns, "client", r.client_address)
        self.log(f"LAN {r.lan} in namespace {r.lan_netns}; this machine is {r.host_address} on it, "
                 f"the client namespace {r.client_netns} is {r.client_address}")

    def _add_netns(self, name: str) -> None:
        self.record.netns.append(name)
        self._save()
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _attach(self, lan_side: str) -> None:
        lan = self.record.lan_netns
        _ip("-n", lan, "link", "set", lan_side, "master", LAN_BRIDGE)
        _ip("-n", lan, "link", "set", lan_side, "up")

    def _plug(self, netns: str, lan_side: str, address: str) -> None:
        """A veth from ``netns`` (``lan0``, with ``address``) to the LAN's bridge (``lan_side``)."""
        r = self.record
        _ip("link", "add", NODE_LINK, "netns", netns, "type", "veth", "peer", "name", lan_side, "netns", r.lan_netns)
        _ip("-n", netns, "addr", "add", f"{address}/{r.lan_network.prefixlen}", "dev", NODE_LINK)
        _ip("-n", netns, "link", "set", NODE_LINK, "up")
        self._attach(lan_side)

    # -- nodes -------------------------------------------------------------------------------------------
    def add_node(self, node: str, address: str) -> str:
        """The node's namespace and link (named ``node`` on the LAN side); returns the namespace."""
        netns = self.record.node_netns(node)
        self._add_netns(netns)
        self._plug(netns, node, address)
        return netns

    def start_engine(self, node: str, address: str, number: int) -> Engine:
        """Start the node's own dockerd inside its namespace (not waiting for it)."""
        r = self.record
        engine = Engine(node=node, netns=r.node_netns(node), data_root=str(self.directory / "engines" / node),
                        exec_root=str(r.run_dir / node), cgroup_parent=f"/{r.name}-{node}",
                        bip=f"{BIP_POOL.network_address + 256 * number + 1}/24", dns=address)
        r.dirs += [engine.data_root, engine.exec_root]
        r.engines.append(engine)
        self._save()
        make_private_dir(engine.data_root)
        make_private_dir(engine.exec_root)
        config = Path(engine.exec_root) / "daemon.json"
        config.write_text("{}\n")  # not /etc/docker/daemon.json: the machine's engine's settings
        with open(engine.log_path, "ab") as log_file:
            process = subprocess.Popen(
                ["nsenter", f"--net={NETNS_DIR / engine.netns}", "--", "dockerd", "--config-file", str(config),
                 "--data-root", engine.data_root, "--exec-root", engine.exec_root, "--pidfile", engine.pidfile,
                 "-H", engine.docker_host, "--bip", engine.bip, "--dns", engine.dns,
                 "--cgroup-parent", engine.cgroup_parent, "--shutdown-timeout", str(ENGINE_SHUTDOWN_TIMEOUT)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
        engine.pid = process.pid  # nsenter execs dockerd: the same process
        self._save()
        return engine

    def wait_engines(self, engines: list[Engine], images: list[str]) -> None:
        """Until every engine answers; then load ``images`` (from this machine's engine) into each."""
        with ThreadPoolExecutor(max_workers=max(1, len(engines))) as pool:
            list(pool.map(_wait_engine, engines))
        if not images or not engines:
            return
        archives = _save_images(images)
        if not archives:
            self.log(f"this machine's Docker engine has none of {', '.join(images)}: the nodes' engines start empty")
            return
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            list(pool.map(lambda e: _load_images(e, archives), engines))
        self.log(f"loaded {len(archives)} of {', '.join(images)} into {len(engines)} engines")

    # -- partitions ---------------------------------------------------------------------------------------
    def set_link(self, node: str, up: bool) -> None:
        _ip("-n", self.record.lan_netns, "link", "set", node, "up" if up else "down")

    def links_down(self) -> set[str]:
        """The LAN-side links that are administratively down (partitioned nodes)."""
        out = _ip("-n", self.record.lan_netns, "-j", "link", "show")
        return {link["ifname"] for link in json.loads(out or "[]") if "UP" not in link.get("flags", [])}

    # -- teardown -----------------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Undo everything recorded, in dependency order; harmless on what is already gone."""
        r = self.record
        engines = [e for e in r.engines if _engine_alive(e)]
        with ThreadPoolExecutor(max_workers=max(1, len(engines))) as pool:
            list(pool.map(_stop_engine, engines))
        kill_processes(namespace_processes([n for n in r.netns if (NETNS_DIR / n).exists()])
                       | cgroup_processes([e.cgroup_parent for e in r.engines]))
        unmount_under([*r.dirs, str(r.run_dir)])
        remove_cgroups([e.cgroup_parent for e in r.engines])
        for name in r.links:
            if Path(f"/sys/class/net/{name}").exists():
                _ip("link", "del", name, check=False)
        for name in reversed(r.netns):
            if (NETNS_DIR / name).exists():
                _ip("netns", "del", name, check=False)
        for directory in [*r.dirs, str(r.run_dir)]:
            shutil.rmtree(directory, ignore_errors=True)
        self.path.unlink(missing_ok=True)


# -- engines ------------------------------------------------------------------------------------------------

def _wait_engine(engine: Engine) -> None:
    import docker

    deadline = time.monotonic() + ENGINE_READY_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if not _pid_alive(engine.pid):
            raise IsolationError(f"the Docker engine of {engine.node} exited; see {engine.log_path}:\n"
                                 f"{_tail(engine.log_path)}")
        if Path(engine.socket).exists():
            try:
                client = docker.APIClient(base_url=engine.docker_host, version="auto", timeout=5)
                client.close()
                return
            except Exception as err:  # not listening yet
                last = err
        time.sleep(0.05)
    raise IsolationError(f"the Docker engine of {engine.node} did not answer within {ENGINE_READY_TIMEOUT:.0f}s "
                         f"({last}); see {engine.log_path}:\n{_tail(engine.log_path)}")


def _save_images(images: list[str]) -> list[bytes]:
    """`docker save` of each of ``images`` this machine's engine has."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(version="auto", timeout=60)
    except docker.errors.DockerException as err:
        raise IsolationError(f"cannot reach this machine's Docker engine to copy {', '.join(images)} from: {err}")
    try:
        archives = []
        for image in images:
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                continue
            archives.append(b"".join(client.api.get_image(image)))
        return archives
    finally:
        client.close()


def _load_images(engine: Engine, archives: list[bytes]) -> None:
    import docker

    client = docker.APIClient(base_url=engine.docker_host, version="auto", timeout=60)
    try:
        for archive in archives:
            for _ in client.load_image(archive):
                pass
    finally:
        client.close()


def _engine_alive(engine: Engine) -> bool:
    """Whether the recorded PID is still this engine (not a recycled PID)."""
    try:
        return engine.exec_root.encode() in Path(f"/proc/{engine.pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stop_engine(engine: Engine) -> None:
    """Remove its containers (SIGKILL, at once), then SIGTERM the engine and wait."""
    import docker

    try:
        client = docker.APIClient(base_url=engine.docker_host, version="auto", timeout=10)
        try:
            for container in client.containers(all=True):
                client.remove_container(container["Id"], force=True, v=True)
        finally:
            client.close()
    except Exception:  # an engine that does not answer: the namespace sweep kills what it ran
        pass
    try:
        os.kill(engine.pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + ENGINE_STOP_TIMEOUT
    while time.monotonic() < deadline and _engine_alive(engine):
        time.sleep(0.05)


# -- sweeping the machine --------------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _processes() -> dict[int, int]:
    """Every process's parent: {pid: ppid}."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return parents


def namespace_processes(netns: list[str]) -> set[int]:
    """The processes inside these named network namespaces, and all their descendants
    (a container's processes have a namespace of their own, under their shim)."""
    inodes = set()
    for name in netns:
        try:
            inodes.add(os.stat(NETNS_DIR / name).st_ino)
        except OSError:
            pass
    parents = _processes()
    inside = set()
    for pid in set(parents) - {os.getpid()}:  # a `local down` run through `local exec` goes on
        try:
            link = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if int(link[link.index("[") + 1:-1]) in inodes:
            inside.add(pid)
    return inside | _descendants(inside, parents)


def _descendants(roots: set[int], parents: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _cgroup_dirs(parent: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # cgroup v2: one hierarchy
        return [root / parent.lstrip("/")]
    return [controller / parent.lstrip("/") for controller in root.iterdir() if controller.is_dir()
            and not controller.is_symlink()]


def cgroup_processes(parents: list[str]) -> set[int]:
    """The processes in the engines' cgroup parents (their containers), at any depth."""
    pids = set()
    for parent in parents:
        for directory in _cgroup_dirs(parent):
            if directory.is_dir():
                for procs in directory.rglob("cgroup.procs"):
                    try:
                        pids.update(int(p) for p in procs.read_text().split())
                    except (OSError, ValueError):
                        pass
    return pids


def remove_cgroups(parents: list[str]) -> None:
    for parent in parents:
        for directory in _cgroup_dirs(parent):
            if directory.is_dir():
                for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    _rmdir(sub)
                _rmdir(directory)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def kill_processes(pids: set[int], signum: int = signal.SIGKILL) -> None:
    """Signal ``pids`` and wait (a while) until they are gone."""
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    deadline = time.monotonic() + PROCESS_KILL_TIMEOUT
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.02)


def mounts_under(roots: list[str]) -> list[str]:
    prefixes = [str(Path(r)).rstrip("/") + "/" for r in roots]
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].replace("\\040", " ")
            if any((target + "/").startswith(p) for p in prefixes):
                found.append(target)
    return found


def unmount_under(roots: list[str]) -> None:
    """Unmount everything mounted at or below ``roots``, deepest first."""
    for target in sorted(set(mounts_under(roots)), key=lambda t: -t.count("/")):
        subprocess.run(["umount", "-l", target], capture_output=True)


# -- the LAN's subnet ---------------------------------------------------------------------------------------

def _free_lan() -> ipaddress.IPv4Network:
    taken = []
    for route in json.loads(_ip("-j", "route", "show", "table", "all") or "[]"):
        destination = route.get("dst", "")
        if destination and destination != "default" and ":" not in destination:
            try:
                taken.append(ipaddress.IPv4Network(destination, strict=False))
            except ValueError:
                pass
    for subnet in LAN_POOL.subnets(new_prefix=24):
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise IsolationError(f"every /24 of {LAN_POOL} is in use on this machine: take some isolated clusters down")


def _ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise IsolationError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def in_netns(netns: str, command: list[str]) -> list[str]:
    """``command`` run inside the named network namespace (``nsenter --net``, not ``ip
    netns exec``, which remounts /sys)."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *command]
