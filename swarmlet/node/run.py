"""Running a node from its data dir: a manager (store, API, dispatcher) plus the
agent every node runs, until a signal stops it or the cluster changes its role.

The node writes ``node.pid`` when it starts and ``ready`` once it serves: a manager
when it has the cluster state and a leader, every node when its dispatcher session
is up. ``swarmlet init/join --detach`` and ``swarmlet local`` wait for that file.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys

from swarmlet.agent.agent import Agent
from swarmlet.api.objects import CLUSTER_ID
from swarmlet.api.views import Cluster
from swarmlet.ca import ROLE_MANAGER, ROLE_WORKER
from swarmlet.ca.tls import bound_tls_read_buffers
from swarmlet.node.bootstrap import bootstrap_done, take_bootstrap_spec
from swarmlet.node import gcwatch
from swarmlet.node.config import DataDir
from swarmlet.node.identity import NodeTls
from swarmlet.node.metrics import NodeMetrics, serve_metrics
from swarmlet.node.unlock import wait_for_unlock
from swarmlet.private import OWNER_ONLY_UMASK, tighten, write_private

log = logging.getLogger("swarmlet.node")

READY_TIMEOUT = 60.0
EXIT_EXPELLED = 3


class NodeExpelled(Exception):
    """The cluster no longer accepts this node's certificate."""


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def run_node(data_dir: DataDir) -> str | None:
    """Run until stopped. Returns the new role when the node must restart in it."""
    tighten_data_dir(data_dir)
    config = data_dir.load()
    write_private(data_dir.pid_path, str(os.getpid()).encode())
    data_dir.ready_path.unlink(missing_ok=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # A locked manager (autolock) starts nothing before it has its unlock key.
    if data_dir.needs_unlock() and not await wait_for_unlock(data_dir, stop):
        return None
    tls = NodeTls(data_dir.certs)
    if tls.identity.role != config.role:
        config.role = tls.identity.role  # a role change completed before the last restart
        data_dir.save(config)
    if config.role == ROLE_WORKER and data_dir.raft_dir.exists():
        # Demoted: this node keeps no Raft state and no cluster key any more.
        shutil.rmtree(data_dir.raft_dir, ignore_errors=True)
        data_dir.cluster_key_path.unlink(missing_ok=True)
    if config.role == ROLE_WORKER and data_dir.is_locked():
        data_dir.unlock_permanently()  # autolock locks managers only, as in Swarm
    new_role: list[str] = []

    expelled: list[str] = []

    def expel(reason: str) -> None:
        log.error("%s: it was removed from the cluster; stopping", reason)
        expelled.append(reason)
        stop.set()

    def role_changed(role: str) -> None:
        if not new_role:
            log.info("the cluster changed this node's role to %s; restarting in it", role)
            new_role.append(role)
            stop.set()

    node_metrics = NodeMetrics(config.node_id, config.role)
    manager = None
    if config.role == ROLE_MANAGER:
        from swarmlet.manager.manager import Manager  # workers never import the manager side

        manager = Manager(data_dir, config, tls, node_metrics)
        await manager.start()
        spec = take_bootstrap_spec(data_dir)
        if spec is not None and manager.store.get(Cluster, CLUSTER_ID) is None:
            await manager.bootstrap(spec, config.hostname)
        bootstrap_done(data_dir)
        member_task = asyncio.ensure_future(manager.ensure_raft_member())
    executor = await start_executor(config, data_dir)
    agent = Agent(data_dir, config, tls, on_role_change=role_changed, on_expelled=expel, executor=executor)
    node_metrics.agent = agent
    agent.on_heartbeat_rtt = node_metrics.heartbeat_rtt.observe
    agent.start()
    metrics_runner = await serve_metrics(config.metrics_addr, node_metrics.exposition) if config.metrics_addr else None
    ready_task = asyncio.ensure_future(_announce_ready(data_dir, manager, agent))
    log.info("node %s (%s) running as %s at %s", config.node_id, config.hostname, config.role, config.api_address)
    await stop.wait()

    ready_task.cancel()
    if manager is not None:
        member_task.cancel()
    if new_role:
        try:
            await asyncio.wait_for(agent.renew_certificate(), 30)
        except Exception as err:  # the old certificate still works; retry after the restart
            log.warning("could not get a %s certificate yet: %s", new_role[0], err)
    await agent.stop()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    if executor is not None:
        await executor.close()
    if manager is not None:
        await manager.stop()  # first: its autolock loop would lock the data dir again
    if new_role == [ROLE_WORKER] and data_dir.is_locked():
        data_dir.unlock_permanently()  # the restarted worker is not asked for a key it no longer needs
    data_dir.ready_path.unlink(missing_ok=True)
    if expelled:
        raise NodeExpelled(expelled[0])
    return new_role[0] if new_role else None


def tighten_data_dir(data_dir: DataDir) -> None:
    """Make the data dir owner-only again if someone loosened it, and say what was."""
    loosened = tighten(data_dir.path)
    if loosened:
        log.warning("the data dir %s was readable by others: made owner-only (directories 0700, files 0600): %s",
                    data_dir.path, ", ".join(str(p) for p in loosened))


def make_runtime(config, data_dir: DataDir):
    """The runtime a node's tasks run on (``NodeConfig.runtime``)."""
    from swarmlet.runtime import DockerRuntime, HollowRuntime, ProcessRuntime
    from swarmlet.runtime.docker import MachineNetworkLock

    if config.runtime == "hollow":  # a hollow node's (swarmlet/node/hollow.py): nothing runs
        return HollowRuntime(config.node_id)
    if config.runtime == "process":
        return ProcessRuntime(config.node_id, data_dir.path / "runtime")
    return DockerRuntime(config.node_id, network_lock=MachineNetworkLock() if config.shared_engine else None)


async def start_executor(config, data_dir: DataDir):
    """The executor over this node's runtime, or None when the runtime cannot start (the
    node still serves its role; it runs no tasks and says so in its log)."""
    from swarmlet.agent.executor import Executor

    try:
        executor = Executor(make_runtime(config, data_dir))
        await executor.start()
        return executor
    except Exception as err:
        log.error("the %s runtime is unavailable (%s): this node runs no tasks", config.runtime, err)
        return None


async def _announce_ready(data_dir: DataDir, manager, agent: Agent) -> None:
    if manager is not None:
        store = manager.store
        await store.wait_for(lambda: store.ready and store.leader_address is not None
                             and store.get(Cluster, CLUSTER_ID) is not None, timeout=READY_TIMEOUT * 5)
    await agent.connected.wait()
    write_private(data_dir.ready_path, str(os.getpid()).encode())
    log.info("node ready")


def serve(data_dir: DataDir, log_level: str = "INFO") -> None:
    """Run the node in this process; re-exec it when its role changes, so that the
    same PID keeps serving as the new role."""
    # Some files of the data dir are created by pysyncobj, not by us: whatever umask
    # the node was started with, they must be owner-only. Task processes get theirs
    # from the runtime (runtime/process.py), not this one.
    os.umask(OWNER_ONLY_UMASK)
    configure_logging(log_level)
    bound_tls_read_buffers()
    gcwatch.install()
    try:
        new_role = asyncio.run(run_node(data_dir))
    except NodeExpelled as err:
        print(f"swarmlet: {err}: this node was removed from the cluster", file=sys.stderr)
        sys.exit(EXIT_EXPELLED)
    if new_role:
        os.execv(sys.executable, [sys.executable, "-m", "swarmlet.cli.main", "agent",
                                  "--data-dir", str(data_dir.path), "--log-level", log_level])
