"""`swarmlet service …`: the services of every stack, and the tables of services and
tasks that `swarmlet stack services/ps` show too."""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import quote

import click

from swarmlet.api.objects import JOB_MODES
from swarmlet.cli.client import Client, client_options, make_client
from swarmlet.cli.nodes import parse_duration
from swarmlet.cli.output import FORMAT_OPTION, emit, emit_json
from swarmlet.cli.progress import wait_converged, wait_gone

SERVICE_COLUMNS = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "MESSAGE"]
TASK_COLUMNS = ["ID", "NAME", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"]

timeout_option = click.option("--timeout", default="5m", show_default=True, callback=lambda c, p, v: parse_duration(v),
                              help="Give up waiting after this long (e.g. 90s, 5m).")
detach_option = click.option("--detach", "-d", is_flag=True, help="Return at once; do not wait for the tasks.")


def _ref(ref: str) -> str:
    return quote(ref, safe="")


def emit_services(output_format: str, client: Client, services: list[dict]) -> None:
    """Services with running/desired tasks; a job's REPLICAS (and its JSON ``completed``)
    counts the slots whose task completed."""
    if any(s["mode"] in JOB_MODES for s in services):
        completed: dict[str, set] = {}
        for task in client.call("GET", "/v1/tasks"):
            if task["state"] == "complete":
                completed.setdefault(task["service_id"], set()).add(task["slot"] or task["node_id"])
        for s in services:
            if s["mode"] in JOB_MODES:
                s["completed"] = len(completed.get(s["id"], ()))

    def row(s: dict) -> list:
        done = f"{s['completed']}/{s['replicas']} completed" if "completed" in s else f"{s['running']}/{s['replicas']}"
        return [s["id"][:12], s["name"], s["mode"], done, s["image"], (s.get("status") or {}).get("message", "")]
    emit(output_format, services, SERVICE_COLUMNS, row)


def _age(timestamp) -> str:
    if not timestamp:
        return ""
    try:
        then = (datetime.fromtimestamp(timestamp, timezone.utc) if isinstance(timestamp, (int, float))
                else datetime.fromisoformat(str(timestamp)))
        if then.tzinfo is None:
            then = then.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return ""
    seconds = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def emit_tasks(output_format: str, client: Client, tasks: list[dict]) -> None:
    """Tasks with their node's hostname (also added as ``node`` to the JSON); a pending
    task's ERROR is the scheduler's explanation."""
    hostnames = {n["id"]: n["status"].get("hostname") or n["id"] for n in client.call("GET", "/v1/nodes")}
    for task in tasks:
        task["node"] = hostnames.get(task["node_id"]) if task["node_id"] else None

    def row(t: dict) -> list:
        slot = t["slot"] if t["slot"] is not None else (t["node_id"] or "")[:12]
        state = f"{t['state']} {_age(t['timestamp'])}".strip()
        error = t["err"] or (t["message"] if t["state"] == "pending" else "")
        return [t["id"][:12], f"{t['service_name']}.{slot}", t["node"] or "", t["desired_state"], state, error]
    emit(output_format, tasks, TASK_COLUMNS, row)


def wait_for_services(client: Client, refs: list[str], timeout: float) -> None:
    """Wait until the services (IDs) converged (see swarmlet.cli.progress)."""
    names: list[str] = []

    def snapshot():
        services = [client.call("GET", f"/v1/services/{_ref(r)}") for r in refs]
        names[:] = [s["name"] for s in services]
        tasks = [t for s in services for t in client.call("GET", f"/v1/tasks?service={s['id']}")]
        return services, tasks
    wait_converged(snapshot, lambda: ("services " if len(names) > 1 else "service ") + ", ".join(names), timeout)


@click.group()
def service() -> None:
    """List, inspect, scale, follow and remove services."""


@service.command("ls")
@FORMAT_OPTION
@client_options
def service_ls(output_format, host, context_dir):
    """List services (running/desired tasks; completed/desired for jobs)."""
    client = make_client(host, context_dir)
    emit_services(output_format, client, client.call("GET", "/v1/services"))


@service.command("ps")
@click.argument("ref")
@FORMAT_OPTION
@client_options
def service_ps(ref, output_format, host, context_dir):
    """The tasks of a service, with the scheduler's explanation for pending ones."""
    client = make_client(host, context_dir)
    emit_tasks(output_format, client, client.call("GET", f"/v1/tasks?service={_ref(ref)}"))


@service.command("inspect")
@click.argument("refs", nargs=-1, required=True)
@client_options
def service_inspect(refs, host, context_dir):
    """Show services in full (JSON)."""
    client = make_client(host, context_dir)
    emit_json([client.call("GET", f"/v1/services/{_ref(ref)}") for ref in refs])


def _parse_scale(items: tuple[str, ...]) -> list[tuple[str, int]]:
    parsed = []
    for item in items:
        name, sep, count = item.rpartition("=")
        if not sep or not name or not count.isdigit():
            raise click.BadParameter(f"{item!r}: expected SERVICE=REPLICAS (e.g. web=3)", param_hint="SERVICE=N")
        parsed.append((name, int(count)))
    return parsed


@service.command("scale")
@click.argument("items", nargs=-1, required=True, metavar="SERVICE=N...")
@detach_option
@timeout_option
@client_options
def service_scale(items, detach, timeout, host, context_dir):
    """Set the replicas of replicated services; waits until they run unless --detach."""
    client = make_client(host, context_dir)
    scaled = []
    for name, replicas in _parse_scale(items):
        answer = client.call("POST", f"/v1/services/{_ref(name)}/scale", {"replicas": replicas})
        click.echo(f"{answer['name']} scaled to {replicas}")
        scaled.append(answer["id"])
    if not detach:
        wait_for_services(client, scaled, timeout)


@service.command("logs")
@click.argument("ref")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", default="all", show_default=True, help="Lines to show from the end of each task's output.")
@client_options
def service_logs(ref, follow, tail, host, context_dir):
    """The output of a service's tasks, each line prefixed with its task and node."""
    if tail != "all" and not tail.isdigit():
        raise click.BadParameter("a number of lines or 'all'", param_hint="--tail")
    client = make_client(host, context_dir)
    service_id = client.call("GET", f"/v1/services/{_ref(ref)}")["id"]  # a clear error for an unknown service
    path = f"/v1/services/{service_id}/logs?tail={tail}" + ("&follow=1" if follow else "")
    try:
        for line in client.stream(path, timeout=None if not follow else 365 * 86400.0):
            click.echo(line)
    except KeyboardInterrupt:
        pass


@service.command("rm")
@click.argument("refs", nargs=-1, required=True)
@detach_option
@timeout_option
@client_options
def service_rm(refs, detach, timeout, host, context_dir):
    """Remove services; waits until their tasks are gone unless --detach."""
    client = make_client(host, context_dir)
    removed = []
    for ref in refs:
        service_id = client.call("GET", f"/v1/services/{_ref(ref)}")["id"]
        client.call("DELETE", f"/v1/services/{service_id}")
        click.echo(ref)
        removed.append(service_id)
    if not detach:
        wait_gone(lambda: [t for t in client.call("GET", "/v1/tasks") if t["service_id"] in removed],
                  "service " + ", ".join(refs), timeout)
