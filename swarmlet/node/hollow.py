"""Hollow nodes: many workers in one process, for scale tests (as Kubernetes' kubemark
hollow nodes and Nomad's nodesim).

A hollow host is one OS process on one asyncio loop running many workers. What is
real is everything a manager sees: each hollow node joins through the real join path
(token and CSR, ``bootstrap.join_cluster``; its certificate lands in its own data
dir), then runs the real ``Agent`` (mutually authenticated dispatcher session,
heartbeats, status reports, certificate renewal) and the real ``Executor``. What is
simulated is only the runtime beneath the executor (``runtime/hollow.py``): a task
reaches ``running`` after a short start delay and nothing is executed.

A host's directory holds ``host.json`` (its nodes: name, address, data dir; the
manager to join through; the start delay), ``host.log`` and, until its nodes have
joined, ``join.token`` (owner-only, removed once used). Each node's data dir gets the
host's PID in ``node.pid`` and a ``ready`` file once its session is up, as a real
node's does, so ``swarmlet local status`` and ``down`` treat it like any node. A host
restarted on the same directory runs its nodes again from their data dirs without
joining (their tasks were lost with the process, as with a rebooted machine).

A hollow node cannot become a manager: a promotion is logged and ignored.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

from swarmlet.agent.agent import Agent
from swarmlet.agent.executor import Executor
from swarmlet.ca.tls import bound_tls_read_buffers
from swarmlet.node.bootstrap import join_cluster
from swarmlet.node.config import DataDir
from swarmlet.node.identity import NodeTls
from swarmlet.private import write_private
from swarmlet.runtime.hollow import DEFAULT_START_DELAY, HollowRuntime

log = logging.getLogger("swarmlet.hollow")

HOLLOW_RUNTIME = "hollow"  # NodeConfig.runtime of a hollow node
HOST_FILE = "host.json"
TOKEN_FILE = "join.token"
HOST_LOG = "host.log"
# Joins in flight at once, per host: each is two HTTPS calls and one Raft commit on the
# manager; more at once only queues them there (and times out the slowest).
JOIN_CONCURRENCY = 16


@dataclass
class HollowNodeSpec:
    name: str
    address: str  # the node's advertise address (it listens on nothing; its connections leave from it)
    data_dir: str


@dataclass
class HostSpec:
    nodes: list[HollowNodeSpec]
    manager: str  # "ip:port" of the manager to join through
    port: int  # the cluster's API port, for the nodes' advertise addresses
    start_delay: float = DEFAULT_START_DELAY

    def save(self, directory: Path) -> None:
        write_private(directory / HOST_FILE, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, directory: Path) -> "HostSpec":
        data = json.loads((directory / HOST_FILE).read_text())
        return cls(**{**data, "nodes": [HollowNodeSpec(**n) for n in data["nodes"]]})


async def join_nodes(spec: HostSpec, token: str, concurrency: int = JOIN_CONCURRENCY) -> None:
    """Join every node of ``spec`` that has no data dir yet, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def join(node: HollowNodeSpec) -> None:
        async with gate:
            await join_cluster(DataDir(node.data_dir), token=token, manager=spec.manager,
                               advertise_addr=f"{node.address}:{spec.port}", hostname=node.name,
                               runtime=HOLLOW_RUNTIME)

    await asyncio.gather(*(join(n) for n in spec.nodes if not DataDir(n.data_dir).exists()))


class HollowNode:
    """One worker: the real agent and executor over a hollow runtime."""

    def __init__(self, data_dir: DataDir, start_delay: float):
        self.data_dir = data_dir
        self.config = data_dir.load()
        self.executor = Executor(HollowRuntime(self.config.node_id, start_delay))
        self.agent = Agent(data_dir, self.config, NodeTls(data_dir.certs), on_role_change=self._role_changed,
                           on_expelled=self._expelled, executor=self.executor)
        self._warned_role: str | None = None
        self._ready: asyncio.Task | None = None
        self.expelled = asyncio.Event()

    async def start(self) -> None:
        write_private(self.data_dir.pid_path, str(os.getpid()).encode())
        self.data_dir.ready_path.unlink(missing_ok=True)
        await self.executor.start()
        self.agent.start()
        self._ready = asyncio.ensure_future(self._announce_ready())

    async def _announce_ready(self) -> None:
        await self.agent.connected.wait()
        write_private(self.data_dir.ready_path, str(os.getpid()).encode())

    async def stop(self) -> None:
        if self._ready is not None:
            self._ready.cancel()
        await self.agent.stop()
        await self.executor.close()
        self.data_dir.ready_path.unlink(missing_ok=True)

    def _role_changed(self, role: str) -> None:
        if role != self._warned_role:  # the agent says so at every heartbeat
            log.warning("hollow node %s was given the role %s; it stays a worker", self.config.hostname, role)
            self._warned_role = role

    def _expelled(self, reason: str) -> None:
        log.error("hollow node %s: %s; it stops", self.config.hostname, reason)
        self.expelled.set()


async def run_host(directory: Path) -> None:
    """Join the host's nodes that have not joined yet, run them all until SIGTERM/SIGINT."""
    spec = HostSpec.load(directory)
    bound_tls_read_buffers()
    write_private(directory / "host.pid", str(os.getpid()).encode())
    token_path = directory / TOKEN_FILE
    if token_path.exists():
        await join_nodes(spec, token_path.read_text().strip())
        token_path.unlink()
        log.info("%d hollow nodes joined", len(spec.nodes))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    nodes = [HollowNode(DataDir(n.data_dir), spec.start_delay) for n in spec.nodes]
    for node in nodes:
        await node.start()
    log.info("hollow host running %d nodes", len(nodes))
    expulsions = [asyncio.ensure_future(_stop_when_expelled(node)) for node in nodes]
    await stop.wait()
    for task in expulsions:
        task.cancel()
    await asyncio.gather(*(node.stop() for node in nodes if not node.expelled.is_set()), return_exceptions=True)


async def _stop_when_expelled(node: HollowNode) -> None:
    await node.expelled.wait()
    await node.stop()
