"""`swarmlet service …`: the services of every stack, and the tables of services and
tasks that `swarmlet stack services/ps` show too."""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import quote

import click

from swarmlet.api.objects import JOB_MODES
from swarmlet.cli.client import Client, client_options, make_client
from swarmlet.cli.options import parse_duration
from swarmlet.cli.output import FORMAT_OPTION, emit, emit_json

SERVICE_COLUMNS = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "MESSAGE"]
TASK_COLUMNS = ["ID", "NAME", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"]

timeout_option = click.option("--timeout", default="5m", show_default=True, callback=lambda c, p, v: parse_duration(v),
                              help="Give up waiting after this long (e.g. 90s, 5m).")
detach_option = click.option("--detach", "-d", is_flag=True, help="Return at once; do not wait for the tasks.")


def _ref(ref: str) -> str:
    return quote(ref, safe="")


def update_note(status: dict) -> str:
    """A service's update, in a few words, while it is under way or held (not once it
    completed or was rolled back): its state, and for a blue-green update which set takes
    the traffic."""
    update = status.get("update") or {}
    state = update.get("state")
    if not state or state in ("completed", "rollback_completed"):
        return ""
    note = f"update {state}"
    if update.get("traffic") and state.startswith("rollback"):
        note += ", traffic back on the old set"  # the spec gone back to is the rollback's "new" one
    elif update.get("traffic"):
        note += f", traffic on the {update['traffic']} set"
        if state == "switched" and update.get("hold_until"):
            note += f", old set held until {datetime.fromtimestamp(update['hold_until'], timezone.utc):%H:%M:%S}Z"
    return note


def emit_services(output_format: str, client: Client, services: list[dict]) -> None:
    """Services with running/desired tasks; a job's REPLICAS (and its JSON ``completed``)
    counts the slots whose task completed."""
    if any(s["mode"] in JOB_MODES for s in services):
        completed: dict[str, set] = {}
        for task in client.list_all("/v1/tasks"):
            if task["state"] == "complete":
                completed.setdefault(task["service_id"], set()).add(task["slot"] or task["node_id"])
        for s in services:
            if s["mode"] in JOB_MODES:
                s["completed"] = len(completed.get(s["id"], ()))

    def row(s: dict) -> list:
        done = f"{s['completed']}/{s['replicas']} completed" if "completed" in s else f"{s['running']}/{s['replicas']}"
        status = s.get("status") or {}
        return [s["id"][:12], s["name"], s["mode"], done, s["image"], status.get("message") or update_note(status)]
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
    hostnames = {n["id"]: n["status"].get("hostname") or n["id"] for n in client.list_all("/v1/nodes")}
    tasks.sort(key=lambda t: (t["service_name"], t["slot"] or 0, t.get("created_at") or 0))  # pages: in ID order
    for task in tasks:
        task["node"] = hostnames.get(task["node_id"]) if task["node_id"] else None

    def row(t: dict) -> list:
        slot = t["slot"] if t["slot"] is not None else (t["node_id"] or "")[:12]
        state = f"{t['state']} {_age(t['timestamp'])}".strip()
        error = t["err"] or (t["message"] if t["state"] == "pending" else "")
        return [t["id"][:12], f"{t['service_name']}.{slot}", t["node"] or "", t["desired_state"], state, error]
    emit(output_format, tasks, TASK_COLUMNS, row)


def wait_for_services(client: Client, refs: list[str], timeout: float, expect_rollback: bool = False) -> None:
    """Wait until the services (IDs) converged (see swarmlet.cli.progress)."""
    names: list[str] = []

    def snapshot():
        services = [client.call("GET", f"/v1/services/{_ref(r)}") for r in refs]
        names[:] = [s["name"] for s in services]
        tasks = [t for s in services for t in client.list_all(f"/v1/tasks?service={s['id']}")]
        return services, tasks
    from swarmlet.cli.progress import wait_converged  # here: rich's live display is slow to import
    wait_converged(snapshot, lambda: ("services " if len(names) > 1 else "service ") + ", ".join(names), timeout,
                   expect_rollback=expect_rollback)


@click.group()
def service() -> None:
    """List, inspect, update, roll back, scale, follow and remove services."""


@service.command("ls")
@FORMAT_OPTION
@client_options
def service_ls(output_format, host, context_dir):
    """List services (running/desired tasks; completed/desired for jobs)."""
    client = make_client(host, context_dir)
    emit_services(output_format, client, sorted(client.list_all("/v1/services"), key=lambda s: s["name"]))


@service.command("ps")
@click.argument("ref")
@FORMAT_OPTION
@client_options
def service_ps(ref, output_format, host, context_dir):
    """The tasks of a service, with the scheduler's explanation for pending ones."""
    client = make_client(host, context_dir)
    emit_tasks(output_format, client, client.list_all(f"/v1/tasks?service={_ref(ref)}"))


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
        from swarmlet.cli.progress import wait_gone  # here: rich's live display is slow to import
        wait_gone(lambda: [t for t in client.list_all("/v1/tasks") if t["service_id"] in removed],
                  "service " + ", ".join(refs), timeout)


def _env_pairs(items: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--env-add")
        pairs[name] = value
    return pairs


def _config_changes(values: dict) -> dict:
    return {key: value for key, value in values.items() if value is not None}


def plan_lines(entries: list[dict]) -> list[str]:
    """A dry run's plan (``swarmlet.manager.changes.plan``) as lines for people."""
    if not entries:
        return ["nothing would change"]
    lines = []
    for entry in entries:
        lines.append(f"{entry['kind']} {entry['name']}: would be {_PAST[entry['action']]}")
        for change in entry.get("fields", ()):
            lines.append(f"  {change['field']}: {_show(change['old'])} -> {_show(change['new'])}")
        if entry["kind"] == "service" and entry["action"] == "update":
            replaced = entry["tasks_replaced"]
            if replaced:
                how = (f"{entry['canary']} canary task(s) first, then " if entry.get("canary") else "")
                lines.append(f"  tasks replaced: {len(replaced)} ({how}{entry['batches']} batch(es), "
                             f"parallelism {entry['parallelism'] or 'all'}, {entry['order']})")
            else:
                lines.append("  tasks replaced: none")
        if entry["kind"] == "service" and entry["action"] == "remove":
            lines.append(f"  tasks removed: {entry['tasks_removed']}")
    return lines


_PAST = {"create": "created", "update": "updated", "remove": "removed"}


def _show(value: object) -> str:
    return "(none)" if value is None else repr(value) if isinstance(value, str) else str(value)


def emit_plan(output_format: str, answer: dict) -> None:
    """A dry run's plan: the lines of ``changes.describe``, or the whole answer as JSON."""
    if output_format == "json":
        emit_json(answer)
        return
    for line in plan_lines(answer["plan"]):
        click.echo(line)


_duration = lambda c, p, v: None if v is None else parse_duration(v)  # noqa: E731


def _secret_ref(value: str) -> dict:
    """`--secret-add` as Docker takes it: a name, or source=…,target=…,uid=…,gid=…,mode=… (mode in octal)."""
    if "=" not in value:
        return {"source": value}
    ref: dict = {}
    for part in value.split(","):
        key, equals, item = part.partition("=")
        key = {"src": "source", "dst": "target", "destination": "target"}.get(key.strip(), key.strip())
        if not equals or key not in ("source", "target", "uid", "gid", "mode"):
            raise click.BadParameter(f"{part!r}: expected source=, target=, uid=, gid= or mode=")
        try:
            ref[key] = int(item, 8) if key == "mode" else item
        except ValueError:
            raise click.BadParameter(f"mode {item!r}: expected an octal number such as 0444") from None
    return ref


@service.command("update")
@click.argument("ref")
@click.option("--image", help="The new image.")
@click.option("--env-add", multiple=True, metavar="NAME=VALUE", help="Add or change a variable; repeatable.")
@click.option("--env-rm", multiple=True, metavar="NAME", help="Remove a variable; repeatable.")
@click.option("--replicas", type=click.IntRange(min=0), help="Replicated services: the number of tasks.")
@click.option("--force", is_flag=True, help="Replace every task even if nothing changed.")
@click.option("--secret-add", multiple=True, callback=lambda c, p, v: [_secret_ref(s) for s in v],
              metavar="NAME|source=NAME[,target=T,uid=U,gid=G,mode=0444]",
              help="Mount a secret (target under /run/secrets, default its name); repeatable.")
@click.option("--secret-rm", multiple=True, metavar="NAME", help="Stop mounting a secret; repeatable.")
@click.option("--update-parallelism", type=click.IntRange(min=0), help="Tasks updated at once (0: all).")
@click.option("--update-delay", callback=_duration, help="Wait between batches (e.g. 10s).")
@click.option("--update-failure-action", type=click.Choice(["pause", "continue", "rollback"]))
@click.option("--update-monitor", callback=_duration, help="How long each new task is watched for failure.")
@click.option("--update-max-failure-ratio", type=click.FloatRange(0, 1))
@click.option("--update-order", type=click.Choice(["stop-first", "start-first"]))
@click.option("--canary", type=click.IntRange(min=0), help="New tasks started beside the old ones first (x-canary).")
@click.option("--auto-promote/--no-auto-promote", default=None,
              help="Promote healthy canaries (or switch to a healthy blue-green set) by themselves.")
@click.option("--blue-green/--no-blue-green", default=None,
              help="Start a whole new set out of traffic; `service promote` switches traffic to it (x-blue-green).")
@click.option("--hold", callback=_duration,
              help="Blue-green: keep the old set, out of traffic, this long after the switch (x-hold, e.g. 10m).")
@click.option("--rollback-parallelism", type=click.IntRange(min=0))
@click.option("--rollback-delay", callback=_duration)
@click.option("--rollback-failure-action", type=click.Choice(["pause", "continue"]))
@click.option("--rollback-monitor", callback=_duration)
@click.option("--rollback-max-failure-ratio", type=click.FloatRange(0, 1))
@click.option("--rollback-order", type=click.Choice(["stop-first", "start-first"]))
@click.option("--dry-run", is_flag=True, help="Print what would change (field by field, tasks replaced); change nothing.")
@FORMAT_OPTION
@detach_option
@timeout_option
@client_options
def service_update(ref, image, env_add, env_rm, replicas, force, secret_add, secret_rm, update_parallelism, update_delay,
                   update_failure_action, update_monitor, update_max_failure_ratio, update_order, canary, auto_promote,
                   blue_green, hold, rollback_parallelism, rollback_delay, rollback_failure_action, rollback_monitor,
                   rollback_max_failure_ratio, rollback_order, dry_run, output_format, detach, timeout, host,
                   context_dir):
    """Change one service as `docker service update` does, then wait with progress until
    it converged (unless --detach): exits 1 when the update pauses or is rolled back."""
    changes: dict = {}
    if image:
        changes["image"] = image
    if env_add:
        changes["env_add"] = _env_pairs(env_add)
    if env_rm:
        changes["env_rm"] = list(env_rm)
    if replicas is not None:
        changes["replicas"] = replicas
    if force:
        changes["force"] = True
    if secret_add:
        changes["secret_add"] = secret_add
    if secret_rm:
        changes["secret_rm"] = list(secret_rm)
    update_config = _config_changes({"parallelism": update_parallelism, "delay": update_delay,
                                     "failure_action": update_failure_action, "monitor": update_monitor,
                                     "max_failure_ratio": update_max_failure_ratio, "order": update_order,
                                     "canary": canary, "auto_promote": auto_promote, "blue_green": blue_green,
                                     "hold": hold})
    rollback_config = _config_changes({"parallelism": rollback_parallelism, "delay": rollback_delay,
                                       "failure_action": rollback_failure_action, "monitor": rollback_monitor,
                                       "max_failure_ratio": rollback_max_failure_ratio, "order": rollback_order})
    if update_config:
        changes["update_config"] = update_config
    if rollback_config:
        changes["rollback_config"] = rollback_config
    client = make_client(host, context_dir)
    answer = client.call("POST", f"/v1/services/{_ref(ref)}/update", {"changes": changes, "dry_run": dry_run})
    if dry_run:
        emit_plan(output_format, answer)
        return
    click.echo(f"{answer['name']}: " + ("updated" if answer["changed"] else "nothing changed"))
    if not detach:
        wait_for_services(client, [answer["id"]], timeout)


@service.command("rollback")
@click.argument("ref")
@detach_option
@timeout_option
@client_options
def service_rollback(ref, detach, timeout, host, context_dir):
    """Return a service to its previous spec (per its rollback_config); waits until its
    tasks run the previous spec unless --detach."""
    client = make_client(host, context_dir)
    answer = client.call("POST", f"/v1/services/{_ref(ref)}/rollback", {})
    click.echo(f"{answer['name']}: rolling back")
    if not detach:
        wait_for_services(client, [answer["id"]], timeout, expect_rollback=True)


@service.command("promote")
@click.argument("ref")
@detach_option
@timeout_option
@client_options
def service_promote(ref, detach, timeout, host, context_dir):
    """Let an update held on its canaries go on; waits until it converged unless --detach."""
    client = make_client(host, context_dir)
    answer = client.call("POST", f"/v1/services/{_ref(ref)}/promote", {})
    click.echo(f"{answer['name']}: promoted")
    if not detach:
        wait_for_services(client, [answer["id"]], timeout)
