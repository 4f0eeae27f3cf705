"""Node life cycle and cluster commands: init, join, agent, leave, join-token,
cluster status, node …, config …"""
from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from swarmlet.api.errors import Invalid
from swarmlet.api.ipam import DATA_PLANES, DEFAULT_ADDR_POOL, DEFAULT_ADDR_POOL_MASK_LENGTH, DEFAULT_DATA_PLANE, AddressPool
from swarmlet.api.limits import Limits, parse_limit
from swarmlet.api.objects import AVAILABILITIES, DEFAULT_HEARTBEAT_PERIOD
from swarmlet.cli.client import client_options, make_client
from swarmlet.cli.output import FORMAT_OPTION, emit, emit_json
from swarmlet.cli.unlocking import read_unlock_key, unlock_here, unlock_offline
from swarmlet.node.config import DataDir
from swarmlet.private import open_private_append

DEFAULT_DATA_DIR = "/var/lib/swarmlet" if os.geteuid() == 0 else str(Path.home() / ".local/share/swarmlet")
DETACH_TIMEOUT = 60.0

data_dir_option = click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True,
                               type=click.Path(file_okay=False), help="Where the node keeps its state.")
shared_engine_option = click.option(
    "--shared-engine", is_flag=True,
    help="Other nodes on this machine use the same Docker engine (`swarmlet local` sets it).")
log_level_option = click.option("--log-level", default="INFO", show_default=True,
                                type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))


def _parse_limits(ctx, param, values: tuple[str, ...]) -> dict[str, int]:
    try:
        return dict(parse_limit(value) for value in values)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


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


limit_option = click.option(
    "--limit", "limits", multiple=True, callback=_parse_limits, metavar="NAME=VALUE",
    help=f"A cluster limit; repeatable. NAME: {', '.join(Limits().to_dict())} (docs/orchestration.md, Limits).")


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


def parse_duration(text: str) -> float:
    """'90d', '12h', '5m', '30s' or plain seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 90d, 12h, 5m, 30s)") from None


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


@click.command("join-token")
@click.argument("role", type=click.Choice(["worker", "manager"]))
@click.option("--rotate", is_flag=True, help="Replace the token; the old one admits no one from now on.")
@click.option("--quiet", "-q", is_flag=True, help="Print the token only.")
@client_options
def join_token(role, rotate, quiet, host, context_dir):
    """Print (or rotate) the token that adds a worker or a manager."""
    client = make_client(host, context_dir)
    tokens = client.call("POST", f"/v1/join-tokens/{role}/rotate") if rotate else client.call("GET", "/v1/join-tokens")
    if quiet:
        click.echo(tokens[role])
        return
    if rotate:
        click.echo(f"Rotated the {role} join token.")
    click.echo(f"To add a {role} to this cluster, run:\n\n    swarmlet join --token {tokens[role]} {client.hosts[0]}\n")


@click.group()
def cluster():
    """The cluster as a whole."""


@cluster.command("status")
@FORMAT_OPTION
@client_options
def cluster_status(output_format, host, context_dir):
    """Leader, term, commit index, and each manager's reachability and log lag."""
    status = make_client(host, context_dir).call("GET", "/v1/cluster/status")
    if output_format == "json":
        emit_json(status)
        return
    click.echo(f"Leader: {status['leader'] or '(none)'}   term {status['term']}   commit index {status['commit_index']}")
    emit("table", status["managers"], ["MANAGER ID", "HOSTNAME", "RAFT ADDRESS", "LEADER", "REACHABLE", "LAG"],
         lambda m: [m["id"], m.get("hostname"), m["address"], "yes" if m["leader"] else "",
                    "yes" if m["reachable"] else "NO", "?" if m["lag"] is None else m["lag"]])


def _show_settings(settings: dict, output_format: str) -> None:
    if output_format == "json":
        emit_json(settings)
        return
    click.echo(f"Cluster {settings['name']}: heartbeat period {settings['heartbeat_period']}s, "
               f"node certificates valid {settings['cert_expiry'] / 86400:g} days")
    click.echo(f"Autolock: {'on' if settings.get('autolock') else 'off'}")
    pool = settings.get("address_pool") or {}
    if pool:
        click.echo(f"Address pool {', '.join(pool['subnets'])}, a /{pool['mask_length']} per network")
    emit("table", sorted(settings["limits"].items()), ["LIMIT", "VALUE"], lambda item: [f"limits.{item[0]}", item[1]])


@cluster.command("settings")
@FORMAT_OPTION
@client_options
def cluster_settings(output_format, host, context_dir):
    """The cluster's settings: heartbeat period, certificate validity, limits."""
    _show_settings(make_client(host, context_dir).call("GET", "/v1/cluster/settings"), output_format)


@cluster.command("update")
@limit_option
@click.option("--autolock", type=click.BOOL, default=None, metavar="true|false",
              help="Lock the managers (a restarted manager waits for the unlock key printed here), or stop doing so.")
@FORMAT_OPTION
@client_options
def cluster_update(limits, autolock, output_format, host, context_dir):
    """Change the cluster's limits (--limit NAME=VALUE, repeatable) or its autolock."""
    if not limits and autolock is None:
        raise click.UsageError("nothing to change: pass --limit NAME=VALUE or --autolock=true|false")
    body = {"limits": limits} if limits else {}
    if autolock is not None:
        body["autolock"] = autolock
    settings = make_client(host, context_dir).call("POST", "/v1/cluster/settings", body)
    _show_settings(settings, output_format)
    if output_format != "json" and settings.get("unlock_key"):
        click.echo(f"\nAutolock is on. Keep this unlock key safe: a restarted manager waits for it "
                   f"(`swarmlet unlock`):\n\n    {settings['unlock_key']}\n")


@click.group()
def node():
    """Manage the cluster's nodes."""


def _node_row(n: dict) -> list:
    manager = n.get("manager_status")
    manager_text = ("Leader" if manager["leader"] else manager["reachability"].capitalize()) if manager else ""
    return [n["id"], n["status"].get("hostname"), n["status"].get("state", "").capitalize(),
            n["spec"]["availability"].capitalize(), manager_text, n["status"].get("addr")]


@node.command("ls")
@FORMAT_OPTION
@client_options
def node_ls(output_format, host, context_dir):
    """List nodes."""
    nodes = sorted(make_client(host, context_dir).list_all("/v1/nodes"), key=lambda n: n["status"].get("hostname") or "")
    emit(output_format, nodes, ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ADDRESS"], _node_row)


@node.command("inspect")
@click.argument("refs", nargs=-1, required=True)
@client_options
def node_inspect(refs, host, context_dir):
    """Show nodes in full (JSON)."""
    client = make_client(host, context_dir)
    emit_json([client.call("GET", f"/v1/nodes/{ref}") for ref in refs])


@node.command("update")
@click.argument("ref")
@click.option("--availability", type=click.Choice(AVAILABILITIES))
@click.option("--label-add", multiple=True, help="key=value; repeatable.")
@click.option("--label-rm", multiple=True, help="key; repeatable.")
@client_options
def node_update(ref, availability, label_add, label_rm, host, context_dir):
    """Change a node's availability or labels."""
    labels = {}
    for item in label_add:
        key, sep, value = item.partition("=")
        if not key:
            raise click.BadParameter(f"{item!r}: expected key=value", param_hint="--label-add")
        labels[key] = value
    updated = make_client(host, context_dir).call("POST", f"/v1/nodes/{ref}/update", {
        "availability": availability, "label_add": labels, "label_rm": list(label_rm)})
    click.echo(updated["id"])


def _change_roles(refs, action: str, done: str, host, context_dir) -> None:
    client = make_client(host, context_dir)
    for ref in refs:
        answer = client.call("POST", f"/v1/nodes/{ref}/{action}", {}, timeout=60)
        click.echo(f"Node {answer['id']} {done}.")


@node.command("promote")
@click.argument("refs", nargs=-1, required=True)
@client_options
def node_promote(refs, host, context_dir):
    """Make workers managers (they join Raft and restart as managers)."""
    _change_roles(refs, "promote", "promoted to a manager", host, context_dir)


@node.command("demote")
@click.argument("refs", nargs=-1, required=True)
@client_options
def node_demote(refs, host, context_dir):
    """Make managers workers (they leave Raft first)."""
    _change_roles(refs, "demote", "demoted to a worker", host, context_dir)


@node.command("rm")
@click.argument("refs", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Remove a node that is still up.")
@client_options
def node_rm(refs, force, host, context_dir):
    """Remove nodes from the cluster and revoke their certificates."""
    client = make_client(host, context_dir)
    for ref in refs:
        client.call("DELETE", f"/v1/nodes/{ref}" + ("?force=1" if force else ""))
        click.echo(ref)


@click.group()
def config():
    """Manage configs (small files stored in the cluster)."""


@config.command("create")
@click.argument("name")
@click.argument("file", type=click.File("rb"))
@click.option("--label", "-l", multiple=True, help="key=value; repeatable.")
@client_options
def config_create(name, file, label, host, context_dir):
    """Create a config from FILE ('-' for standard input)."""
    from swarmlet.cli.secrets import create_named_file

    create_named_file("/v1/configs", name, file, dict(item.partition("=")[::2] for item in label), host, context_dir)


@config.command("ls")
@FORMAT_OPTION
@client_options
def config_ls(output_format, host, context_dir):
    """List configs."""
    configs = make_client(host, context_dir).call("GET", "/v1/configs")
    emit(output_format, configs, ["ID", "NAME", "VERSION", "SIZE"],
         lambda c: [c["id"], c["name"], c["version"], len(base64.b64decode(c["data"]))])


@config.command("inspect")
@click.argument("ref")
@client_options
def config_inspect(ref, host, context_dir):
    """Show a config (its data base64-encoded)."""
    emit_json(make_client(host, context_dir).call("GET", f"/v1/configs/{ref}"))


@config.command("rm")
@click.argument("refs", nargs=-1, required=True)
@client_options
def config_rm(refs, host, context_dir):
    """Remove configs."""
    client = make_client(host, context_dir)
    for ref in refs:
        client.call("DELETE", f"/v1/configs/{ref}")
        click.echo(ref)


COMMANDS = [init, join, agent, leave, join_token, cluster, node, config]
