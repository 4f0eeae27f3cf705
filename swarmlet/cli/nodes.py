"""Node life cycle: init, join, agent, leave (the commands that start, join and stop a
node on this machine; managing a running cluster through its API is swarmlet/cli/cluster.py)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from swarmlet.api.errors import Invalid
from swarmlet.api.ipam import DATA_PLANES, DEFAULT_ADDR_POOL, DEFAULT_ADDR_POOL_MASK_LENGTH, DEFAULT_DATA_PLANE, AddressPool
from swarmlet.api.objects import DEFAULT_HEARTBEAT_PERIOD
from swarmlet.cli.options import data_dir_option, limit_option, parse_duration
from swarmlet.cli.unlocking import read_unlock_key, unlock_here, unlock_offline
from swarmlet.node.config import DataDir
from swarmlet.private import open_private_append

DETACH_TIMEOUT = 60.0

shared_engine_option = click.option(
    "--shared-engine", is_flag=True,
    help="Other nodes on this machine use the same Docker engine (`swarmlet local` sets it).")
log_level_option = click.option("--log-level", default="INFO", show_default=True,
                                type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))


data_plane_option = click.option(
    "--data-plane", type=click.Choice(DATA_PLANES), default=None,
    help="What carries overlay networks on this node: none (each engine's own bridge networks; the default) or "
         "overlay (VXLAN, service DNS, VIPs and the routing mesh: needed for ingress-published ports). "
         "Stored in the node's config.")


def _address_pool(subnets: tuple[str, ...], mask_length: int) -> AddressPool:
    try:
        return AddressPool(subnets=tuple(subnets) or DEFAULT_ADDR_POOL, mask_length=mask_length)
    except Invalid as err:
        raise click.BadParameter(str(err)) from None


def _metrics_addr(ctx, param, value: str | None) -> str | None:
    if value is None:
        return None
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9323)")
    return value


metrics_addr_option = click.option(
    "--metrics-addr", callback=_metrics_addr, metavar="HOST:PORT",
    help="Also serve this node's metrics (GET /metrics, Prometheus' format) over plain HTTP here, like dockerd's "
         "--metrics-addr; off by default. Stored in the node's config.")


def _save_metrics_addr(directory: DataDir, config, metrics_addr: str | None) -> None:
    if metrics_addr:
        config.metrics_addr = metrics_addr
        directory.save(config)


def start_detached(data_dir: DataDir, log_level: str, unlock_key: str | None = None) -> int:
    """Start `swarmlet agent` for this data dir in the background and wait until the
    node says it is ready. Returns its PID. A locked manager (autolock) is given
    ``unlock_key``; without one, this returns once the node waits for it."""
    from swarmlet.node.unlock import UnlockFailed, send_unlock_key, socket_path

    data_dir.ready_path.unlink(missing_ok=True)
    unlock_socket = socket_path(data_dir)
    unlock_socket.unlink(missing_ok=True)  # a killed locked node's; the new one makes its own
    with open_private_append(data_dir.log_path) as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "swarmlet.cli.main", "agent", "--data-dir", str(data_dir.path),
             "--log-level", log_level],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
    deadline = time.monotonic() + DETACH_TIMEOUT
    while time.monotonic() < deadline:
        if data_dir.ready_path.exists():
            return process.pid
        if unlock_socket.exists():
            if unlock_key is None:
                click.echo(f"the node (PID {process.pid}) is locked: it waits for its unlock key "
                           f"(`swarmlet unlock --data-dir {data_dir.path}`)", err=True)
                return process.pid
            try:
                send_unlock_key(data_dir, unlock_key)
            except UnlockFailed as err:
                raise click.ClickException(f"the node (PID {process.pid}) refused the unlock key: {err}; it keeps "
                                           f"waiting for the right one (`swarmlet unlock --data-dir {data_dir.path}`)")
            unlock_key = None
            unlock_socket.unlink(missing_ok=True)  # the node removes it as it goes on; do not send twice
        if process.poll() is not None:
            raise click.ClickException(f"the node exited (code {process.returncode}) before it was ready; "
                                       f"see {data_dir.log_path}:\n{_tail(data_dir.log_path)}")
        time.sleep(0.05)
    process.kill()  # never leave behind a node nobody is waiting for
    raise click.ClickException(f"the node (PID {process.pid}) was not ready within {DETACH_TIMEOUT:.0f}s and was "
                               f"stopped; see {data_dir.log_path}:\n{_tail(data_dir.log_path)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_or_detach(data_dir: DataDir, detach: bool, log_level: str, unlock_key: str | None = None) -> None:
    if detach:
        pid = start_detached(data_dir, log_level, unlock_key)
        click.echo(f"node running in the background (PID {pid}); log: {data_dir.log_path}")
        return
    if unlock_key is not None and data_dir.needs_unlock():
        unlock_here(data_dir, unlock_key)
    from swarmlet.node.run import serve

    serve(data_dir, log_level)


unlock_key_file_option = click.option(
    "--unlock-key-file", default=None, metavar="FILE",
    help="A locked manager (autolock): read its unlock key from FILE ('-': standard input) and unlock it at start.")


def raft_overrides(election_timeout: tuple[float, float] | None, snapshot_interval: int | None) -> dict:
    overrides = {}
    if election_timeout:
        overrides["election_timeout_min"], overrides["election_timeout_max"] = election_timeout
    if snapshot_interval:
        overrides["snapshot_every_entries"] = snapshot_interval
    return overrides


@click.command()
@click.option("--advertise-addr", help="IP[:PORT] other nodes reach this manager at (API port; Raft is PORT+1).")
@click.option("--listen-addr", help="IP to bind (default: the advertise address; nothing binds 0.0.0.0 unless asked).")
@click.option("--hostname", help="Node hostname (default: this machine's).")
@click.option("--cert-expiry", default="90d", show_default=True, help="Validity of node certificates.")
@click.option("--heartbeat-period", default=DEFAULT_HEARTBEAT_PERIOD, show_default=True, type=float,
              help="Seconds between node heartbeats; a node is down after 3 missed.")
@click.option("--election-timeout", nargs=2, type=float, default=None, help="Raft election timeout range, seconds.")
@click.option("--snapshot-interval", type=int, default=None, help="Raft log entries between snapshots (10000).")
@click.option("--runtime", type=click.Choice(["docker", "process"]), default="docker", show_default=True)
@click.option("--default-addr-pool", "addr_pools", multiple=True, metavar="CIDR",
              help=f"Where overlay networks take their subnets (repeatable; default {DEFAULT_ADDR_POOL[0]}).")
@click.option("--default-addr-pool-mask-length", "mask_length", type=int, default=DEFAULT_ADDR_POOL_MASK_LENGTH,
              show_default=True, help="The prefix length of each network's subnet taken from the pool.")
@data_plane_option
@limit_option
@shared_engine_option
@metrics_addr_option
@data_dir_option
@click.option("--detach", "-d", is_flag=True, help="Run in the background; return once the node is ready.")
@click.option("--force-new-cluster", is_flag=True,
              help="Quorum lost: restart this manager's cluster from its own state as a one-manager cluster "
                   "(nodes, services, secrets and tasks kept; other managers join again).")
@click.option("--autolock", is_flag=True,
              help="Lock the managers: a restarted manager starts only once given the unlock key printed here "
                   "(`swarmlet unlock`).")
@click.option("--unlock-key-file", default=None, metavar="FILE",
              help="--force-new-cluster on a locked manager (autolock): its unlock key, from FILE ('-': standard input).")
@log_level_option
def init(advertise_addr, listen_addr, hostname, cert_expiry, heartbeat_period, election_timeout, snapshot_interval,
         runtime, addr_pools, mask_length, data_plane, limits, shared_engine, metrics_addr, data_dir, detach,
         force_new_cluster, autolock, unlock_key_file, log_level):
    """Create a new cluster with this node as its first manager."""
    from swarmlet.cli.recovery import force_new_cluster as recover_force_new_cluster
    from swarmlet.node.bootstrap import JoinError, init_cluster

    directory = DataDir(data_dir)
    if force_new_cluster:
        key = unlock_offline(directory, unlock_key_file)
        recover_force_new_cluster(directory, _stop_process, lambda: run_or_detach(directory, detach, log_level, key))
        return
    pool = _address_pool(addr_pools, mask_length)
    try:
        config = init_cluster(directory, advertise_addr=advertise_addr, listen_addr=listen_addr, hostname=hostname,
                              cert_expiry=parse_duration(cert_expiry), heartbeat_period=heartbeat_period,
                              raft_settings=raft_overrides(election_timeout, snapshot_interval), runtime=runtime,
                              shared_engine=shared_engine, limits=limits, address_pool=pool,
                              data_plane=data_plane or DEFAULT_DATA_PLANE, autolock=autolock)
    except JoinError as err:
        raise click.ClickException(str(err)) from None
    _save_metrics_addr(directory, config, metrics_addr)
    click.echo(f"Cluster initialized: node {config.node_id} is now a manager at {config.api_address}.")
    if autolock:
        click.echo(f"Autolock is on. A restarted manager waits for this unlock key (`swarmlet unlock`); keep it "
                   f"safe, it is not stored anywhere you can read it back without an unlocked manager:\n\n"
                   f"    {directory.unlock_key}\n")
    click.echo(f"Admin certificate for the CLI: {directory.admin_dir}")
    click.echo(f"  export SWARMLET_HOST={config.api_address} SWARMLET_CONTEXT={directory.admin_dir}")
    click.echo("Then `swarmlet join-token worker` (or manager) prints the command that adds a node.")
    run_or_detach(directory, detach, log_level, directory.unlock_key)


@click.command()
@click.option("--token", required=True, help="A worker or manager join token (SWMTKN-1-…).")
@click.argument("manager_addr")
@click.option("--advertise-addr", help="IP[:PORT] other nodes reach this node at.")
@click.option("--listen-addr", help="IP to bind (default: the advertise address).")
@click.option("--hostname", help="Node hostname (default: this machine's).")
@click.option("--runtime", type=click.Choice(["docker", "process"]), default="docker", show_default=True,
              help="How this node runs tasks: Docker containers, or local process groups.")
@data_plane_option
@shared_engine_option
@metrics_addr_option
@data_dir_option
@click.option("--detach", "-d", is_flag=True, help="Run in the background; return once the node is ready.")
@log_level_option
def join(token, manager_addr, advertise_addr, listen_addr, hostname, runtime, data_plane, shared_engine, metrics_addr,
         data_dir, detach, log_level):
    """Join the cluster that MANAGER_ADDR belongs to."""
    from swarmlet.node.bootstrap import JoinError, join_cluster

    directory = DataDir(data_dir)
    try:
        config = asyncio.run(join_cluster(directory, token=token, manager=manager_addr, advertise_addr=advertise_addr,
                                          listen_addr=listen_addr, hostname=hostname, runtime=runtime,
                                          shared_engine=shared_engine,
                                          data_plane=data_plane or DEFAULT_DATA_PLANE))
    except JoinError as err:
        raise click.ClickException(str(err)) from None
    _save_metrics_addr(directory, config, metrics_addr)
    click.echo(f"This node joined the cluster as a {config.role} (node {config.node_id}).")
    run_or_detach(directory, detach, log_level)


@click.command()
@data_plane_option
@data_dir_option
@click.option("--detach", "-d", is_flag=True, help="Run in the background; return once the node is ready.")
@unlock_key_file_option
@log_level_option
def agent(data_plane, data_dir, detach, unlock_key_file, log_level):
    """Run a node that already belongs to a cluster (after a restart). --data-plane
    changes the node's stored choice."""
    directory = DataDir(data_dir)
    if not directory.exists():
        raise click.ClickException(f"{directory.path} holds no swarmlet node (no node.json)")
    if data_plane is not None:
        config = directory.load()
        if config.data_plane != data_plane:
            config.data_plane = data_plane
            directory.save(config)
    run_or_detach(directory, detach, log_level, read_unlock_key(unlock_key_file))


@click.command()
@click.option("--force", "-f", is_flag=True, help="Leave even if this is a manager (it is removed from Raft).")
@data_dir_option
def leave(force, data_dir):
    """Leave the cluster: stop the node, tell the managers, delete its state."""
    directory = DataDir(data_dir)
    config = directory.load()
    from swarmlet.node.identity import NodeTls

    if directory.needs_unlock():
        raise click.ClickException(f"{directory.path} is a locked manager's data dir (autolock): its certificate "
                                   "key is sealed; leaving it is not supported yet (docs/security.md, Known gaps)")
    tls = NodeTls(directory.certs)
    if config.role == "manager" and not force:
        raise click.ClickException("this node is a manager: demote it first (`swarmlet node demote`), or use --force "
                                   "(it leaves Raft; the remaining managers must still hold a majority)")
    # Stop first: a running agent would heartbeat the node back to ready.
    _stop_process(directory)
    others = [a for a in config.managers if a != config.api_address]
    calls = [("/v1/node/leave", {})]
    if config.role == "manager":
        calls.insert(0, ("/v1/raft/leave", {"raft_address": config.raft_address}))
    told = asyncio.run(_tell_managers(tls.client_context(), others, calls)) if others else False
    import shutil

    shutil.rmtree(directory.path, ignore_errors=True)
    click.echo("Node left the cluster." if told else "Node stopped and its state removed (no manager could be told).")


async def _tell_managers(context, managers: list[str], calls: list[tuple[str, dict]], timeout: float = 20.0) -> bool:
    """Make each call on some manager, retrying until one can act (after a manager
    leaves, the others may first have to elect a leader)."""
    from swarmlet.node.rpc import CALL_ERRORS, ApiCallError, api_call  # here: aiohttp is slow to import

    deadline = time.monotonic() + timeout
    for path, body in calls:
        while True:
            errors = []
            for address in managers:
                try:
                    await api_call(context, address, "POST", path, body, timeout=10)
                    break
                except (ApiCallError, *CALL_ERRORS) as err:
                    errors.append(f"{address}: {err}")
            else:
                if time.monotonic() > deadline:
                    click.echo("warning: " + "; ".join(errors), err=True)
                    return False
                await asyncio.sleep(0.5)
                continue
            break
    return True


def _stop_process(directory: DataDir, timeout: float = 15.0) -> None:
    try:
        pid = int(directory.pid_path.read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
