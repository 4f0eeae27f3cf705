"""A whole cluster on one machine: every node its own background process on its own
loopback address (127.0.0.2, 127.0.0.3, …), formed through the real ``init`` and
``join`` commands with real tokens. The cluster's directory holds each node's data
dir, a copy of the admin certificate, and ``cluster.json`` naming the nodes.

Hollow workers (``--hollow-workers``, swarmlet/node/hollow.py) join through the same
token and CSR path but run many to a process: ``hollow-host-N/`` holds one such
process's files and the nodes' data dirs lie beside the others'. Their node.pid is
their host's PID, so ``status``, ``kill`` and ``start`` of a hollow node act on its
whole host (every node it runs).

``--isolated`` (swarmlet/local/isolated.py) gives every node a network namespace of its
own on a LAN (and, with the docker runtime, a Docker engine of its own) instead of a
loopback address: the node processes run inside their namespaces, advertise their LAN
address and use their own engine (DOCKER_HOST); partitions take a node's link down.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from swarmlet.local.isolated import (DEFAULT_NAME_PREFIX, FIRST_NODE_HOST_NUMBER, RECORD_FILE, Isolation,
                                     isolated_extra_args, in_netns, preflight)
from swarmlet.api.addresses import DEFAULT_API_PORT
from swarmlet.node.config import DataDir
from swarmlet.node.unlock import UnlockFailed, send_unlock_key
from swarmlet.node.hollow import HOST_LOG, TOKEN_FILE, HollowNodeSpec, HostSpec
from swarmlet.private import make_private_dir, open_private_append, write_private

DEFAULT_LOCAL_DIR = Path.home() / ".swarmlet-local"
DEFAULT_FIRST_ADDRESS = "127.0.0.2"
STOP_TIMEOUT = 10.0
# Every node of a local cluster runs its tasks on this machine's one Docker engine.
SHARED_ENGINE_ARGS = ["--shared-engine"]
# Hollow nodes per host process: its one loop serves every session, heartbeat and task
# of its nodes; a few processes share the machine's cores with the managers.
DEFAULT_HOLLOW_PER_HOST = 250
# A hollow host has this long, plus a little per node (joins are bounded), to be ready.
HOLLOW_READY_TIMEOUT = 60.0
HOLLOW_READY_PER_NODE = 0.1


class LocalClusterError(Exception):
    """A refusal or failure of the local cluster (the CLI shows it, as it does an
    ``IsolationError`` from swarmlet/local/isolated.py about an isolated cluster's parts)."""


@dataclass
class LocalNode:
    name: str
    role: str  # the role it was started in; node.json has the current one
    address: str
    data_dir: str
    id: str = ""
    host: str = ""  # a hollow node's: the directory of the host process that runs it
    netns: str = ""  # an isolated node's network namespace (its name under /run/netns)
    docker_host: str = ""  # an isolated docker node's own engine, unix:///…/docker.sock

    @property
    def hollow(self) -> bool:
        return bool(self.host)


def process_state(pid: int | None) -> str:
    """running | stopped (SIGSTOP) | dead."""
    if not pid:
        return "dead"
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "dead"
    if state in ("Z", "X"):
        return "dead"
    return "stopped" if state in ("T", "t") else "running"


class LocalCluster:
    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory or DEFAULT_LOCAL_DIR).resolve()
        self.state_path = self.directory / "cluster.json"
        self.admin_dir = self.directory / "admin"
        self.record_path = self.directory / RECORD_FILE
        self.unlock_key: str | None = None  # set by `up` when the cluster was made with autolock

    def isolation(self, log=print) -> Isolation | None:
        """The isolated cluster's namespaces and engines; None for a loopback cluster."""
        return Isolation.open(self.directory, log)

    # -- state ---------------------------------------------------------------------------------------
    def load(self) -> tuple[list[LocalNode], int]:
        if not self.state_path.exists():
            raise LocalClusterError(f"no local cluster in {self.directory}: run `swarmlet local up` first")
        data = json.loads(self.state_path.read_text())
        return [LocalNode(**n) for n in data["nodes"]], data["port"]

    def _save(self, nodes: list[LocalNode], port: int) -> None:
        write_private(self.state_path, json.dumps({"nodes": [asdict(n) for n in nodes], "port": port}, indent=2).encode())

    def find(self, ref: str) -> LocalNode:
        nodes, _ = self.load()
        for node in nodes:
            if ref in (node.name, node.id, node.address) or (len(ref) >= 4 and node.id.startswith(ref)):
                return node
        raise LocalClusterError(f"no node {ref!r} in the local cluster ({', '.join(n.name for n in nodes)})")

    @staticmethod
    def pid_of(node: LocalNode) -> int | None:
        try:
            return int(DataDir(node.data_dir).pid_path.read_text())
        except (OSError, ValueError):
            return None

    def status(self) -> list[dict]:
        nodes, _ = self.load()
        rows = []
        for node in nodes:
            pid = self.pid_of(node)
            state = process_state(pid)
            try:
                role = DataDir(node.data_dir).load().role
            except (OSError, ValueError):
                role = node.role
            rows.append({"name": node.name, "id": node.id, "role": role, "address": node.address, "pid": pid,
                         "data_dir": node.data_dir, "alive": state == "running", "state": state,
                         "hollow": node.hollow, "netns": node.netns or None, "docker_host": node.docker_host or None})
        return rows

    def hosts(self) -> list[str]:
        nodes, port = self.load()
        managers = []
        for node in nodes:
            if node.hollow:
                continue  # always a worker
            try:
                role = DataDir(node.data_dir).load().role
            except (OSError, ValueError):
                role = node.role
            if role == "manager":
                managers.append(f"{node.address}:{port}")
        return managers

    def env(self) -> dict[str, str]:
        return {"SWARMLET_HOST": ",".join(self.hosts()), "SWARMLET_CONTEXT": str(self.admin_dir)}

    # -- up ---------------------------------------------------------------------------------------------
    def up(self, managers: int = 3, workers: int = 2, first_address: str = DEFAULT_FIRST_ADDRESS,
           port: int = DEFAULT_API_PORT, node_args: list[str] | None = None, log=print, hollow_workers: int = 0,
           hollow_per_host: int = DEFAULT_HOLLOW_PER_HOST, hollow_start_delay: float | None = None,
           isolated: bool = False, runtime: str = "docker", name_prefix: str = DEFAULT_NAME_PREFIX,
           images: list[str] | None = None) -> list[LocalNode]:
        """``isolated``: every node in a network namespace of its own (with the docker
        runtime, its own engine too, with ``images`` loaded from this machine's)."""
        if managers < 1:
            raise LocalClusterError("a cluster needs at least one manager")
        if isolated:
            if hollow_workers:
                raise LocalClusterError("--hollow-workers cannot be combined with --isolated (hollow workers "
                                        "share one process, so they cannot have a namespace each)")
            preflight(runtime)
        if self.state_path.exists() or self.record_path.exists():
            if self.state_path.exists() and any(row["state"] != "dead" for row in self.status()):
                raise LocalClusterError(f"a local cluster already runs in {self.directory}; "
                                        "`swarmlet local down` first")
            isolation = self.isolation()
            if isolation:  # what a dead isolated cluster left: its engines, namespaces, links
                isolation.teardown()
            shutil.rmtree(self.directory)
        elif self.directory.exists() or self.directory.is_symlink():
            check_fresh_directory(self.directory)
        make_private_dir(self.directory)
        self._save([], port)  # `down` finds the cluster even if `up` stops before its first node
        names = [(f"manager-{i + 1}", "manager") for i in range(managers)]
        names += [(f"worker-{i + 1}", "worker") for i in range(workers)]
        if isolated:
            isolation = Isolation.create(self.directory, name_prefix, log)
            isolation.make_lan()
            nodes = [self._isolated_node(isolation, name, role, i, runtime) for i, (name, role) in enumerate(names)]
            self._save(nodes, port)
            self._start_engines(isolation, nodes, images, log)
            engine_args = isolated_extra_args(runtime)
        else:
            base = ipaddress.IPv4Address(first_address)
            nodes = [LocalNode(name, role, str(base + i), str(self.directory / name))
                     for i, (name, role) in enumerate(names)]
            self._save(nodes, port)
            engine_args = SHARED_ENGINE_ARGS
        extra = list(node_args or []) + engine_args
        first = nodes[0]
        log(f"starting {first.name} at {first.address}:{port} (init)")
        out = _swarmlet("init", "--advertise-addr", f"{first.address}:{port}", "--data-dir", first.data_dir,
                        "--hostname", first.name, "--detach", *extra, node=first)
        # `init --autolock` (in node_args) prints the unlock key once; `local up` shows it.
        self.unlock_key = next(iter(re.findall(r"SWMKEY-1-\S+", out)), None)
        shutil.copytree(DataDir(first.data_dir).admin_dir, self.admin_dir)
        first.id = DataDir(first.data_dir).load().node_id
        self._save(nodes, port)
        manager_token = self._token("manager", first, port)
        worker_token = self._token("worker", first, port)
        join_args = [a for a in extra if a.startswith("--runtime") or a in ("process", "docker")] + engine_args
        # Managers join one at a time: Raft changes its membership one node at a time.
        for node in nodes[1:managers]:
            log(f"starting {node.name} at {node.address}:{port} (join as manager)")
            self._join(node, manager_token, first, port, join_args)
            self._save(nodes, port)
        # Workers are not Raft members: they join together.
        pending = [(node, self._join(node, worker_token, first, port, join_args, wait=False))
                   for node in nodes[managers:]]
        for node, process in pending:
            log(f"starting {node.name} at {node.address}:{port} (join as worker)")
            _wait_command(process, f"join of {node.name}")
            node.id = DataDir(node.data_dir).load().node_id
        self._save(nodes, port)
        if hollow_workers:
            nodes += self._up_hollow(hollow_workers, hollow_per_host, hollow_start_delay, base + len(nodes),
                                     worker_token, first, port, log)
            self._save(nodes, port)
        write_private(self.admin_dir / "hosts", ("\n".join(self.hosts()) + "\n").encode())
        return nodes

    def _isolated_node(self, isolation: Isolation, name: str, role: str, index: int, runtime: str) -> LocalNode:
        """A node of an isolated cluster: its namespace and link made, its engine not yet."""
        address = isolation.record.node_address(index)
        netns = isolation.add_node(name, address)
        node = LocalNode(name, role, address, str(self.directory / name), netns=netns)
        if runtime == "docker":
            node.docker_host = isolation.start_engine(name, address, index + 1).docker_host
        return node

    @staticmethod
    def _start_engines(isolation: Isolation, nodes: list[LocalNode], images: list[str] | None, log) -> None:
        engines = [isolation.record.engine(n.name) for n in nodes if n.docker_host]
        if engines:
            log(f"starting {len(engines)} Docker engines, one in each node's namespace")
            isolation.wait_engines(engines, list(images or []))

    def _up_hollow(self, count: int, per_host: int, start_delay: float | None, first_address, token: str,
                   via: LocalNode, port: int, log) -> list[LocalNode]:
        """Hollow workers on the addresses from ``first_address`` on, ``per_host`` to a
        host process; the hosts join their nodes (the real join path) and run them."""
        nodes = [LocalNode(f"hollow-{i + 1}", "worker", str(first_address + i), str(self.directory / f"hollow-{i + 1}"),
                           host=str(self.directory / f"hollow-host-{i // per_host + 1}")) for i in range(count)]
        hosts: dict[str, list[LocalNode]] = {}
        for node in nodes:
            hosts.setdefault(node.host, []).append(node)
        for host, members in hosts.items():
            log(f"starting {Path(host).name}: {len(members)} hollow workers ({members[0].name} … {members[-1].name})")
            make_private_dir(host)
            spec = HostSpec([HollowNodeSpec(n.name, n.address, n.data_dir) for n in members],
                            manager=f"{via.address}:{port}", port=port)
            if start_delay is not None:
                spec.start_delay = start_delay
            spec.save(Path(host))
            write_private(Path(host) / TOKEN_FILE, token.encode())
        started = [(members, _spawn_host(host)) for host, members in hosts.items()]
        joining = sum(len(members) for members in hosts.values())
        for members, process in started:
            _wait_hollow_ready(members, process, joining=joining)
        for node in nodes:
            node.id = DataDir(node.data_dir).load().node_id
        return nodes

    def add_node(self, role: str = "worker", join_args: list[str] | None = None, images: list[str] | None = None,
                 runtime: str = "docker", log=print) -> LocalNode:
        """Join one more node (the next address) to the running local cluster; on an
        isolated one, with its own namespace (and engine, with ``images``, when
        ``runtime`` is docker)."""
        nodes, port = self.load()
        number = 1 + sum(1 for n in nodes if n.name.startswith(f"{role}-"))
        name = f"{role}-{number}"
        isolation = self.isolation()
        if isolation:
            last = max(int(ipaddress.IPv4Address(n.address)) for n in nodes)
            index = last - int(isolation.record.lan_network.network_address) - FIRST_NODE_HOST_NUMBER + 1
            node = self._isolated_node(isolation, name, role, index, runtime)
            self._save(nodes + [node], port)
            self._start_engines(isolation, [node], images, log)
            engine_args = isolated_extra_args(runtime)
        else:
            address = str(max(ipaddress.IPv4Address(n.address) for n in nodes) + 1)
            node = LocalNode(name, role, address, str(self.directory / name))
            engine_args = SHARED_ENGINE_ARGS
        via = next(n for n in nodes if n.address + f":{port}" in self.hosts())
        self._join(node, self._token(role, via, port), via, port, list(join_args or []) + engine_args)
        self._save(nodes + [node], port)
        return node

    def _token(self, role: str, first: LocalNode, port: int) -> str:
        out = _swarmlet("join-token", role, "-q", "--host", f"{first.address}:{port}", "--context", str(self.admin_dir))
        return out.strip()

    def _join(self, node: LocalNode, token: str, first: LocalNode, port: int, extra: list[str], wait: bool = True):
        args = ["join", "--token", token, f"{first.address}:{port}", "--advertise-addr", f"{node.address}:{port}",
                "--data-dir", node.data_dir, "--hostname", node.name, "--detach", *extra]
        if not wait:
            return _spawn(*args, node=node)
        _swarmlet(*args, node=node)
        node.id = DataDir(node.data_dir).load().node_id
        return None

    # -- kill, start, down ----------------------------------------------------------------------------------
    def kill(self, ref: str, signame: str = "KILL") -> LocalNode:
        node = self.find(ref)
        pid = self.pid_of(node)
        if process_state(pid) == "dead":
            raise LocalClusterError(f"{node.name} is not running")
        os.kill(pid, getattr(signal, f"SIG{signame.upper()}"))
        return node

    def start(self, ref: str, unlock_key: str | None = None) -> LocalNode:
        """A locked manager (autolock) is given ``unlock_key``; without one it is left
        waiting for it (`swarmlet unlock --data-dir …`)."""
        node = self.find(ref)
        state = process_state(self.pid_of(node))
        if state == "stopped":
            os.kill(self.pid_of(node), signal.SIGCONT)
            return node
        if state == "running":
            raise LocalClusterError(f"{node.name} is already running")
        if node.hollow:  # its host runs again, with every node it holds
            _wait_hollow_ready(self.host_members(node), _spawn_host(node.host))
            return node
        _swarmlet("agent", "--data-dir", node.data_dir, "--detach", node=node)
        data_dir = DataDir(node.data_dir)
        if unlock_key is not None and not data_dir.ready_path.exists():
            try:
                send_unlock_key(data_dir, unlock_key)
            except UnlockFailed as err:
                raise LocalClusterError(f"{node.name} refused the unlock key: {err}") from None
            deadline = time.monotonic() + STOP_TIMEOUT * 6
            while not data_dir.ready_path.exists():
                if process_state(self.pid_of(node)) == "dead" or time.monotonic() > deadline:
                    raise LocalClusterError(f"{node.name} was unlocked but is not ready; see {data_dir.log_path}")
                time.sleep(0.05)
        return node

    def exec_command(self, ref: str | None, command: list[str]) -> tuple[list[str], dict[str, str]]:
        """``command`` (argv, environment) inside a node's namespace, with DOCKER_HOST
        set to its engine, or inside the client namespace when ``ref`` is None."""
        isolation = self.isolation()
        if isolation is None:
            raise LocalClusterError(f"the local cluster in {self.directory} is not isolated (`local up --isolated`): "
                                    "its nodes share this machine's network")
        if not command:
            raise LocalClusterError("no command given: `swarmlet local exec --client -- CMD [ARGS…]`")
        if ref is None:
            return in_netns(isolation.record.client_netns, command), dict(os.environ)
        node = self.find(ref)
        return in_netns(node.netns, command), _node_env(node)

    def host_members(self, node: LocalNode) -> list[LocalNode]:
        """The nodes that share ``node``'s process: the hollow nodes of its host, or itself."""
        if not node.hollow:
            return [node]
        nodes, _ = self.load()
        return [n for n in nodes if n.host == node.host]

    # -- partitions (iptables on the loopback addresses) ----------------------------------------------
    def _rule_comment(self, node: LocalNode) -> str:
        # A stable digest (not hash(): it changes per process) ties rules to this cluster.
        return f"swarmlet-local:{hashlib.sha256(str(self.directory).encode()).hexdigest()[:8]}:{node.name}"

    def partition(self, ref: str) -> LocalNode:
        """Cut ``ref`` off from every other node of the cluster, both ways. Connections
        from elsewhere (the CLI on 127.0.0.1) still reach it, as an operator's would;
        an isolated node's link goes down, so nothing reaches it, this machine included."""
        node = self.find(ref)
        isolation = self.isolation()
        if isolation:  # its link on the LAN goes down: nothing reaches it, nor does it reach anything
            isolation.set_link(node.name, False)
            return node
        nodes, _ = self.load()
        for other in nodes:
            if other.name == node.name:
                continue
            for source, destination in ((node.address, other.address), (other.address, node.address)):
                _iptables("-I", "INPUT", "-s", source, "-d", destination, "-j", "DROP",
                          "-m", "comment", "--comment", self._rule_comment(node))
        return node

    def heal(self, ref: str | None = None) -> list[str]:
        """Remove the partition rules of ``ref`` (of every node when None)."""
        nodes, _ = self.load()
        isolation = self.isolation()
        if isolation:
            down = isolation.links_down()
            healed = [n.name for n in nodes if n.name in down and (ref is None or ref in (n.name, n.id, n.address))]
            for name in healed:
                isolation.set_link(name, True)
            return sorted(healed)
        wanted = {self._rule_comment(n) for n in nodes if ref is None or ref in (n.name, n.id, n.address)}
        healed = []
        for rule in _iptables("-S", "INPUT").splitlines():
            for comment in wanted:
                if f'--comment {comment}' in rule or f'--comment "{comment}"' in rule:
                    _iptables(*rule.replace("-A INPUT", "-D INPUT", 1).replace('"', "").split())
                    healed.append(comment.rsplit(":", 1)[1])
        return sorted(set(healed))

    def down(self, volumes: bool = False) -> bool:
        """Stop and remove everything of the cluster (its tasks' named volumes only with
        ``volumes``); False when there was nothing (a second `down`, or none ever ran here)."""
        if not self.state_path.exists() and not self.record_path.exists():
            return False
        nodes = self.load()[0] if self.state_path.exists() else []
        isolation = self.isolation()
        if isolation is None:
            try:
                self.heal()
            except LocalClusterError:
                pass  # no iptables here: nothing was partitioned
        # Every node whose data dir lies in this directory: the listed ones, and any
        # joined into it by hand.
        data_dirs = {n.data_dir for n in nodes} | {str(p.parent) for p in self.directory.glob("*/node.pid")}
        # A hollow host's PID is in each of its nodes' data dirs: signal it once.
        pids = sorted({p for p in (self.pid_of(LocalNode("", "", "", d)) for d in sorted(data_dirs))
                       if process_state(p) != "dead"})
        for pid in pids:
            for signum in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(process_state(p) != "dead" for p in pids):
            time.sleep(0.05)
        for pid in pids:
            if process_state(pid) != "dead":
                os.kill(pid, signal.SIGKILL)
        if isolation:  # engines, containers, namespaces, links, mounts, exec roots
            isolation.teardown()
        else:
            remove_tasks([n for n in nodes if not n.hollow], volumes)  # a hollow node's tasks died with its host
        shutil.rmtree(self.directory, ignore_errors=True)
        return True


def check_fresh_directory(directory: Path) -> None:
    """A directory `up` may take that holds no cluster: it must be empty, since `down`
    removes it whole."""
    if not directory.is_dir():
        raise LocalClusterError(f"{directory} exists and is not a directory: give --dir a new or empty directory")
    if any(directory.iterdir()):
        raise LocalClusterError(f"{directory} is not empty and holds no local cluster: refusing to use it "
                                "(`swarmlet local down` removes the whole directory); give --dir a new or empty "
                                "directory")


def remove_tasks(nodes: list[LocalNode], volumes: bool = False) -> None:
    """Remove every container/process the nodes' runtimes own: a node that stops leaves
    its tasks running (the next start adopts them), a cluster taken down does not. Then
    the networks the nodes made for those tasks' stacks, where no container uses them
    any more, and with ``volumes`` the named volumes they mounted (as `docker compose
    down [--volumes]`)."""
    import asyncio

    from swarmlet.node.run import make_runtime

    async def clean() -> None:
        runtimes, namespaces, mounted = [], set(), set()
        try:
            for node in nodes:
                data_dir = DataDir(node.data_dir)
                try:
                    runtimes.append(make_runtime(data_dir.load(), data_dir))
                except Exception:  # no node.json, no Docker engine: nothing of it to remove
                    continue
                owned = await runtimes[-1].list_owned()
                mounted |= await runtimes[-1].named_volumes() if volumes else set()
                for task in owned:
                    await runtimes[-1].remove(task.task_id)
                namespaces |= {task.stack_namespace for task in owned} - {""}
            # Once every node's containers are gone: a network or volume another node's task used is free now.
            for runtime in runtimes:  # removing what another node already removed is a no-op
                for namespace in sorted(namespaces):
                    await runtime.remove_unused_networks(namespace)
                await runtime.remove_volumes(mounted)
        finally:
            for runtime in runtimes:
                await runtime.close()

    asyncio.run(clean())


def _iptables(*args: str) -> str:
    try:
        result = subprocess.run(["iptables", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise LocalClusterError("partitions need iptables (and root)") from None
    if result.returncode != 0:
        raise LocalClusterError(f"iptables {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "swarmlet.cli.main", *args]


def _node_env(node: LocalNode | None) -> dict[str, str]:
    env = dict(os.environ)
    if node is not None and node.docker_host:
        env["DOCKER_HOST"] = node.docker_host
    return env


def _spawn(*args: str, node: LocalNode | None = None) -> subprocess.Popen:
    """`swarmlet ARGS` for ``node``: inside its namespace, with its engine, when it is isolated."""
    command = _command(*args)
    if node is not None and node.netns:
        command = in_netns(node.netns, command)
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_node_env(node))


def _wait_command(process: subprocess.Popen, what: str) -> str:
    out, err = process.communicate()
    if process.returncode != 0:
        raise LocalClusterError(f"{what} failed:\n{err.strip() or out.strip()}")
    return out


def _swarmlet(*args: str, node: LocalNode | None = None) -> str:
    return _wait_command(_spawn(*args, node=node), " ".join(args[:1]))


def _spawn_host(host: str) -> subprocess.Popen:
    """A hollow host process in the background, logging to its directory."""
    with open_private_append(Path(host) / HOST_LOG) as log_file:
        return subprocess.Popen(_command("hollow-host", "--dir", host), stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=log_file, start_new_session=True)


def hollow_ready_seconds(own: int, joining: int) -> float:
    """How long a hollow host has to get its ``own`` nodes ready while ``joining`` nodes
    join the cluster at once."""
    return HOLLOW_READY_TIMEOUT + HOLLOW_READY_PER_NODE * max(own, joining)


def _wait_hollow_ready(nodes: list[LocalNode], process: subprocess.Popen, joining: int | None = None) -> None:
    """Until every node of the host has its session up; a host that dies or is late fails.
    ``joining``: how many nodes join at the same time, this host's among them (every
    host's joins queue at the same leader: with 5,000 nodes one host's 250 missed a
    deadline that counted only them)."""
    deadline = time.monotonic() + hollow_ready_seconds(len(nodes), joining or 0)
    host = Path(nodes[0].host)
    while not all(DataDir(n.data_dir).ready_path.exists() for n in nodes):
        if process.poll() is not None:
            raise LocalClusterError(f"{host.name} exited (code {process.returncode}) before its nodes were ready; "
                                    f"see {host / HOST_LOG}:\n{_tail(host / HOST_LOG)}")
        if time.monotonic() > deadline:
            process.kill()  # never leave behind a host nobody is waiting for
            raise LocalClusterError(f"{host.name}'s nodes were not ready in time; see {host / HOST_LOG}:\n"
                                    f"{_tail(host / HOST_LOG)}")
        time.sleep(0.05)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

