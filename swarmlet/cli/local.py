"""`swarmlet local …`: a whole cluster on this machine, one process per node."""
from __future__ import annotations

import shlex

import click

from swarmlet.cli.nodes import limit_option
from swarmlet.cli.output import FORMAT_OPTION, emit
from swarmlet.local.cluster import DEFAULT_FIRST_ADDRESS, DEFAULT_LOCAL_DIR, LocalCluster, LocalClusterError
from swarmlet.node.config import DEFAULT_API_PORT

dir_option = click.option("--dir", "directory", default=str(DEFAULT_LOCAL_DIR), show_default=True,
                          envvar="SWARMLET_LOCAL_DIR", help="Where the local cluster keeps its nodes.")


def _run(action):
    try:
        return action()
    except LocalClusterError as err:
        raise click.ClickException(str(err)) from None


@click.group()
def local():
    """A cluster on this machine: each node a process on its own loopback address."""


@local.command("up")
@click.option("--managers", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 50))
@click.option("--first-address", default=DEFAULT_FIRST_ADDRESS, show_default=True,
              help="Loopback address of the first node; the others follow it.")
@click.option("--port", default=DEFAULT_API_PORT, show_default=True, type=int, help="API port (Raft: port+1).")
@click.option("--runtime", type=click.Choice(["docker", "process"]), default="docker", show_default=True)
@click.option("--heartbeat-period", type=float, default=None, help="Seconds between node heartbeats.")
@click.option("--cert-expiry", default=None, help="Validity of node certificates (e.g. 90d, 10m).")
@click.option("--election-timeout", nargs=2, type=float, default=None, help="Raft election timeout range, seconds.")
@click.option("--snapshot-interval", type=int, default=None, help="Raft log entries between snapshots.")
@limit_option
@dir_option
def up(managers, workers, first_address, port, runtime, heartbeat_period, cert_expiry, election_timeout,
       snapshot_interval, limits, directory):
    """Start a local cluster and wait until every node is ready."""
    args = ["--runtime", runtime]
    if heartbeat_period is not None:
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
    nodes = _run(lambda: cluster.up(managers, workers, first_address, port, args, log=lambda m: click.echo(m, err=True)))
    click.echo(f"Local cluster up: {managers} managers, {workers} workers in {cluster.directory}.")
    click.echo("Point the CLI at it with:\n\n    eval \"$(swarmlet local env" +
               ("" if directory == str(DEFAULT_LOCAL_DIR) else f" --dir {shlex.quote(str(cluster.directory))}") +
               ")\"\n")
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
    """Each node's name, ID, role, address, PID, data dir and whether it is alive."""
    rows = _run(lambda: LocalCluster(directory).status())
    if output_format == "json":
        rows = [{k: r[k] for k in ("name", "id", "role", "address", "pid", "data_dir", "alive", "state")} for r in rows]
    emit(output_format, rows, ["NAME", "ID", "ROLE", "ADDRESS", "PID", "STATE", "DATA DIR"],
         lambda r: [r["name"], r["id"], r["role"], r["address"], r["pid"], r["state"], r["data_dir"]])


@local.command("kill")
@click.argument("node")
@click.option("--signal", "signame", type=click.Choice(["KILL", "STOP", "CONT", "TERM"], case_sensitive=False),
              default="KILL", show_default=True)
@dir_option
def kill(node, signame, directory):
    """Send a signal to a node's process (KILL, STOP to freeze, CONT to thaw, TERM)."""
    killed = _run(lambda: LocalCluster(directory).kill(node, signame))
    click.echo(f"sent SIG{signame.upper()} to {killed.name}")


@local.command("start")
@click.argument("node")
@dir_option
def start(node, directory):
    """Restart a stopped or killed node (`swarmlet agent` on its data dir)."""
    started = _run(lambda: LocalCluster(directory).start(node))
    click.echo(f"{started.name} started")


@local.command("partition")
@click.argument("node")
@dir_option
def partition(node, directory):
    """Cut NODE off from the other nodes (iptables DROP both ways; needs root)."""
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
@dir_option
def down(directory):
    """Stop every node of the local cluster and remove its directory."""
    _run(lambda: LocalCluster(directory).down())
    click.echo("local cluster removed")
