"""`swarmlet local …`: a whole cluster on this machine, one process per node."""
from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path

import click

from swarmlet.api.objects import suggested_heartbeat_period
from swarmlet.cli.options import limit_option
from swarmlet.cli.unlocking import read_unlock_key
from swarmlet.cli.output import FORMAT_OPTION, emit
from swarmlet.local.cluster import (DEFAULT_FIRST_ADDRESS, DEFAULT_HOLLOW_PER_HOST, DEFAULT_LOCAL_DIR, LocalCluster,
                                    LocalClusterError)
from swarmlet.local.isolated import DEFAULT_NAME_PREFIX, MAX_NAME_PREFIX, IsolationError
from swarmlet.api.addresses import DEFAULT_API_PORT
from swarmlet.node.config import DataDir
from swarmlet.runtime.hollow import DEFAULT_START_DELAY

dir_option = click.option("--dir", "directory", default=str(DEFAULT_LOCAL_DIR), show_default=True,
                          envvar="SWARMLET_LOCAL_DIR", help="Where the local cluster keeps its nodes.")

# Loaded into every engine of an isolated cluster when this machine's engine has it.
DEFAULT_ISOLATED_IMAGES = ("swarmlet-test/busybox:1",)


def _run(action):
    try:
        return action()
    except (LocalClusterError, IsolationError) as err:
        raise click.ClickException(str(err)) from None


@click.group()
def local():
    """A cluster on this machine: each node a process on its own loopback address, or
    (--isolated) in its own network namespace with its own Docker engine."""


@local.command("up")
@click.option("--managers", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 50))
@click.option("--hollow-workers", default=0, show_default=True, type=click.IntRange(0, 5000),
              help="Simulated workers (real join, session and heartbeats; tasks only pretend to run).")
@click.option("--hollow-per-host", default=DEFAULT_HOLLOW_PER_HOST, show_default=True, type=click.IntRange(1),
              help="Hollow workers per host process.")
@click.option("--hollow-start-delay", default=DEFAULT_START_DELAY, show_default=True, type=float,
              help="Seconds a hollow worker's task takes to start.")
@click.option("--first-address", default=DEFAULT_FIRST_ADDRESS, show_default=True,
              envvar="SWARMLET_LOCAL_FIRST_ADDRESS", help="Loopback address of the first node; the others follow it.")
@click.option("--port", default=DEFAULT_API_PORT, show_default=True, type=int, help="API port (Raft: port+1).")
@click.option("--runtime", type=click.Choice(["docker", "process"]), default="docker", show_default=True)
@click.option("--heartbeat-period", type=float, default=None,
              help="Seconds between node heartbeats (default: 1, longer for many nodes, up to 5 for 1,000).")
@click.option("--cert-expiry", default=None, help="Validity of node certificates (e.g. 90d, 10m).")
@click.option("--election-timeout", nargs=2, type=float, default=None, help="Raft election timeout range, seconds.")
@click.option("--snapshot-interval", type=int, default=None, help="Raft log entries between snapshots.")
@click.option("--isolated", is_flag=True,
              help="Each node in its own network namespace on a LAN (with the docker runtime, its own Docker "
                   "engine too), plus a client namespace; needs root.")
@click.option("--name-prefix", default=DEFAULT_NAME_PREFIX, show_default=True, envvar="SWARMLET_LOCAL_NAME_PREFIX",
              help=f"--isolated: what the names of its namespaces and links start with (1-{MAX_NAME_PREFIX} "
                   "lower-case letters or digits).")
@click.option("--image", "images", multiple=True, default=DEFAULT_ISOLATED_IMAGES, show_default=True,
              help="--isolated --runtime docker: an image of this machine's engine to load into every node's "
                   "engine; repeatable.")
@click.option("--autolock", is_flag=True, help="`init --autolock`: restarted managers wait for the unlock key "
                                                 "printed here (`swarmlet local start NODE --unlock-key-file`).")
@limit_option
@dir_option
def up(managers, workers, hollow_workers, hollow_per_host, hollow_start_delay, first_address, port, runtime,
       heartbeat_period, cert_expiry, election_timeout, snapshot_interval, isolated, name_prefix, images, autolock,
       limits, directory):
    """Start a local cluster and wait until every node is ready."""
    args = ["--runtime", runtime] + (["--autolock"] if autolock else [])
    if heartbeat_period is None:
        heartbeat_period = suggested_heartbeat_period(managers + workers + hollow_workers)
    args += ["--heartbeat-period", str(heartbeat_period)]
    if cert_expiry is not None:
        args += ["--cert-expiry", cert_expiry]
    if election_timeout:
        args += ["--election-timeout", *map(str, election_timeout)]
    if snapshot_interval is not None:
        args += ["--snapshot-interval", str(snapshot_interval)]
    for name, value in limits.items():
        args += ["--limit", f"{name}={value}"]
    cluster = LocalCluster(directory)
    dir_args = "" if directory == str(DEFAULT_LOCAL_DIR) else f" --dir {shlex.quote(str(cluster.directory))}"
    if runtime == "docker":  # at once, before any node starts: an engine, and the examples' image
        from swarmlet.local.engine import EngineUnavailable, connect, ensure_example_image
        try:
            engine = connect()
        except EngineUnavailable as err:
            raise click.ClickException(str(err)) from None
        try:
            ensure_example_image(engine, lambda m: click.echo(m, err=True))
        finally:
            engine.close()
    try:
        nodes = cluster.up(managers, workers, first_address, port, args, log=lambda m: click.echo(m, err=True),
                           hollow_workers=hollow_workers, hollow_per_host=hollow_per_host,
                           hollow_start_delay=hollow_start_delay, isolated=isolated, runtime=runtime,
                           name_prefix=name_prefix, images=list(images))
    except (LocalClusterError, IsolationError) as err:
        left = (f"\nWhat was made so far (namespaces, engines, nodes) stays until `swarmlet local down{dir_args}`."
                if cluster.record_path.exists() else "")
        raise click.ClickException(f"{err}{left}") from None
    hollow = f", {hollow_workers} hollow workers" if hollow_workers else ""
    click.echo(f"Local cluster up: {managers} managers, {workers} workers{hollow} in {cluster.directory} "
               f"(heartbeat every {heartbeat_period:g}s).")
    if isolated:
        record = cluster.isolation().record
        click.echo(f"Isolated: LAN {record.lan}, this machine at {record.host_address}; the client namespace "
                   f"{record.client_netns} ({record.client_address}): `swarmlet local exec --client -- CMD`.")
    click.echo(f"Point the CLI at it with:\n\n    eval \"$(swarmlet local env{dir_args})\"\n")
    if cluster.unlock_key:
        click.echo(f"Autolock is on; a restarted manager needs this unlock key "
                   f"(`swarmlet local start NODE --unlock-key-file FILE`, or `swarmlet unlock`):\n\n"
                   f"    {cluster.unlock_key}\n")
    return nodes


@local.command("env")
@dir_option
def env(directory):
    """Print `export` lines that point the CLI at the local cluster."""
    for key, value in _run(lambda: LocalCluster(directory).env()).items():
        click.echo(f"export {key}={shlex.quote(value)}")


@local.command("status")
@FORMAT_OPTION
@dir_option
def status(output_format, directory):
    """Each node's name, ID, role, address, PID, data dir and whether it is alive (on an
    isolated cluster also its network namespace; JSON: `netns` and `docker_host`)."""
    rows = _run(lambda: LocalCluster(directory).status())
    if output_format == "json":
        rows = [{k: r[k] for k in ("name", "id", "role", "address", "pid", "data_dir", "alive", "state", "hollow",
                                   "netns", "docker_host")}
                for r in rows]
    isolated = any(r["netns"] for r in rows)
    emit(output_format, rows, ["NAME", "ID", "ROLE", "ADDRESS", "PID", "STATE", *(["NETNS"] if isolated else []),
                               "DATA DIR"],
         lambda r: [r["name"], r["id"], r["role"] + (" (hollow)" if r["hollow"] else ""), r["address"], r["pid"],
                    r["state"], *([r["netns"]] if isolated else []), r["data_dir"]])


@local.command("kill")
@click.argument("node")
@click.option("--signal", "signame", type=click.Choice(["KILL", "STOP", "CONT", "TERM"], case_sensitive=False),
              default="KILL", show_default=True)
@dir_option
def kill(node, signame, directory):
    """Send a signal to a node's process (KILL, STOP to freeze, CONT to thaw, TERM).
    A hollow worker shares its process with the others of its host: they all get it."""
    cluster = LocalCluster(directory)
    killed = _run(lambda: cluster.kill(node, signame))
    click.echo(f"sent SIG{signame.upper()} to {_process_of(cluster, killed)}")


@local.command("start")
@click.argument("node")
@click.option("--unlock-key-file", default=None, metavar="FILE",
              help="A locked manager (autolock): its unlock key, from FILE ('-': standard input).")
@dir_option
def start(node, unlock_key_file, directory):
    """Restart a stopped or killed node (`swarmlet agent` on its data dir; a hollow
    worker's host process, with every node it holds)."""
    cluster = LocalCluster(directory)
    key = read_unlock_key(unlock_key_file)
    started = _run(lambda: cluster.start(node, key))
    data_dir = DataDir(started.data_dir)
    locked = not started.hollow and data_dir.is_locked() and not data_dir.ready_path.exists()
    click.echo(f"{_process_of(cluster, started)} started" + (
        f"; it is locked and waits for its unlock key (`swarmlet unlock --data-dir {data_dir.path}`)" if locked else ""))


def _process_of(cluster: LocalCluster, node) -> str:
    if not node.hollow:
        return node.name
    members = cluster.host_members(node)
    return f"{Path(node.host).name} (hollow workers {members[0].name} … {members[-1].name})"


@local.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--client", is_flag=True, help="In the client namespace (the outside world) instead of a node's.")
@click.argument("node", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@dir_option
def exec_(client, node, command, directory):
    """Run a command in NODE's network namespace, with DOCKER_HOST set to its engine,
    or in the client namespace (--client), of an isolated cluster:
    `swarmlet local exec worker-1 -- docker ps`, `swarmlet local exec --client -- ping -c1 ADDRESS`."""
    if client and node is not None:
        command = (node, *command)  # with --client, the first word is the command
        node = None
    if not client and node is None:
        raise click.UsageError("name a node, or --client")
    argv, env = _run(lambda: LocalCluster(directory).exec_command(None if client else node, list(command)))
    os.execvpe(argv[0], argv, env)


@local.command("partition")
@click.argument("node")
@dir_option
def partition(node, directory):
    """Cut NODE off from the other nodes (iptables DROP both ways; on an isolated
    cluster, its link on the LAN taken down; needs root)."""
    cut = _run(lambda: LocalCluster(directory).partition(node))
    click.echo(f"{cut.name} is cut off from the other nodes")


@local.command("heal")
@click.argument("node", required=False)
@dir_option
def heal(node, directory):
    """Remove the partition of NODE (of every node when none is named)."""
    healed = _run(lambda: LocalCluster(directory).heal(node))
    click.echo(f"healed: {', '.join(healed) or 'nothing was partitioned'}")


@local.command("down")
@click.option("--volumes", "-v", is_flag=True, help="Also remove the named volumes its tasks mounted.")
@dir_option
def down(volumes, directory):
    """Stop every node of the local cluster, remove its tasks' containers and the networks
    made for them (named volumes stay unless --volumes), and remove its directory."""
    cluster = LocalCluster(directory)
    if _run(lambda: cluster.down(volumes=volumes)):
        click.echo("local cluster removed")
    else:
        click.echo(f"no local cluster in {cluster.directory}: nothing to remove")


@click.command("hollow-host", hidden=True)
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, exists=True),
              help="The host's directory (host.json), made by `swarmlet local up --hollow-workers`.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def hollow_host(directory, log_level):
    """Run the hollow workers of one host directory in this process, until SIGTERM."""
    from swarmlet.node.hollow import run_host
    from swarmlet.node.run import configure_logging
    from swarmlet.private import OWNER_ONLY_UMASK

    os.umask(OWNER_ONLY_UMASK)
    configure_logging(log_level)
    asyncio.run(run_host(Path(directory)))
