"""The commands that manage a running cluster through the API: join tokens, the cluster's
status and settings, nodes, configs. (Starting, joining and leaving a node is
swarmlet/cli/nodes.py.)"""
from __future__ import annotations

import base64

import click

from swarmlet.api.objects import AVAILABILITIES
from swarmlet.cli.client import client_options, make_client
from swarmlet.cli.options import limit_option
from swarmlet.cli.output import FORMAT_OPTION, emit, emit_json


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

