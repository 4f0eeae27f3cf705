"""`swarmlet stack …`: Compose stacks."""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import click

from swarmlet.api.objects import MAX_OUTCOME_LENGTH
from swarmlet.cli.client import ApiError, ClusterUnreachable, client_options, make_client
from swarmlet.cli.options import parse_duration
from swarmlet.cli.output import FORMAT_OPTION, emit
from swarmlet.cli.service import detach_option, emit_plan, emit_services, emit_tasks, timeout_option

if TYPE_CHECKING:
    from swarmlet.api.specs import StackSpec


@click.group()
def stack() -> None:
    """Deploy and inspect Compose stacks."""


@stack.command("config")
@click.option("-c", "--compose-file", "files", multiple=True, required=True,
              type=click.Path(path_type=Path), help="Compose file; repeat to merge several, in order.")
@click.option("--env-file", "env_files", multiple=True, type=click.Path(path_type=Path),
              help="Variables for interpolation (default: .env beside the first file); later ones win.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def config(files: tuple[Path, ...], env_files: tuple[Path, ...], fmt: str) -> None:
    """Print the merged, interpolated, normalised stack without contacting a cluster."""
    from swarmlet.compose import render_document

    result = _load_or_exit(files, env_files)
    click.echo(render_document(result.document, fmt), nl=False)


def _load_or_exit(files, env_files):
    """Load the stack, printing every error (and exiting 1) or warning. (The Compose
    loader, YAML included, is imported here: `stack ls` and the like need none of it.)"""
    from swarmlet.compose import ComposeError, load_stack

    try:
        result = load_stack(list(files), list(env_files) or None)
    except ComposeError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        raise SystemExit(1)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    return result


def deploy_body(stack: StackSpec, prune: bool = False, dry_run: bool = False) -> dict:
    """The body of ``POST /v1/stacks/{name}``: the stack, the data of its secrets and
    configs (base64: the files they name, or their inline content), and whether to prune."""
    files: dict[str, dict[str, str]] = {"secrets": {}, "configs": {}}
    for kind, entries in (("secrets", stack.secrets), ("configs", stack.configs)):
        for name, entry in entries.items():
            if entry.external:
                continue
            data = entry.content.encode() if entry.content is not None else Path(entry.file).read_bytes()
            files[kind][name] = base64.b64encode(data).decode("ascii")
    plain = stack.to_dict()
    for kind in files:
        for entry in plain[kind].values():
            del entry["content"]  # sent once, under "files"
    return {"stack": plain, "files": files, "prune": prune, "dry_run": dry_run}


@stack.command("deploy")
@click.option("-c", "--compose-file", "files", multiple=True, required=True,
              type=click.Path(path_type=Path), help="Compose file; repeat to merge several, in order.")
@click.option("--env-file", "env_files", multiple=True, type=click.Path(path_type=Path))
@click.option("--prune", is_flag=True, help="Remove the stack's services that are no longer in the files.")
@click.option("--dry-run", is_flag=True,
              help="Print what would change (service by service, field by field); change nothing.")
@click.option("--rollback-on-failure", is_flag=True,
              help="When the stack fails to converge, roll every service of it back to the previous revision.")
@FORMAT_OPTION
@detach_option
@timeout_option
@click.option("--pending-timeout", default="60s", show_default=True, callback=lambda c, p, v: parse_duration(v),
              help="Fail when a task stays pending (with the scheduler's explanation) this long.")
@client_options
@click.argument("name")
def deploy(files, env_files, prune, dry_run, rollback_on_failure, output_format, detach, timeout, pending_timeout,
           host, context_dir, name):
    """Create or update a stack, then wait until it converged (unless --detach).

    Waiting shows each service's running/desired tasks (completed/desired for jobs) and
    its latest error or pending explanation, and exits 1 with the reasons when a service
    fails (tasks failing repeatedly or not restarted, a task pending too long, a paused
    update) or --timeout passes."""
    result = _load_or_exit(files, env_files)
    client = make_client(host, context_dir)
    answer = client.call("POST", f"/v1/stacks/{name}", deploy_body(result.stack, prune, dry_run))
    if dry_run:
        emit_plan(output_format, answer)
        return
    changed = answer["changed_services"]
    recorded = answer["operations"] > 0 and answer.get("revision") is not None
    click.echo(f"Stack {name}: " + (f"created or updated {', '.join(changed)}" if changed else "no service changed")
               + (f" (revision {answer['revision']})" if recorded else ""))
    if detach:
        return
    try:
        _wait_for_stack(client, name, timeout, pending_timeout)
    except click.ClickException as failure:
        if not recorded:
            raise
        if not rollback_on_failure:
            _report_outcome(client, name, answer["revision"], f"failed: {failure.message}")
            raise
        try:
            back = client.call("POST", f"/v1/stacks/{name}/rollback", {"to": None})
        except ApiError as err:
            _report_outcome(client, name, answer["revision"], f"failed: {failure.message}")
            raise click.ClickException(f"{failure.message}\nno rollback: {err}") from None
        click.echo(f"Stack {name}: rolling back to revision {back['rollback_of']} (revision {back['revision']})")
        _report_outcome(client, name, answer["revision"],
                        f"failed: {failure.message}; rolled back to revision {back['rollback_of']}")
        _wait_for_stack(client, name, timeout, pending_timeout, expect_rollback=True)
        _report_outcome(client, name, back["revision"], "converged")
        raise click.ClickException(f"{failure.message}\nstack {name}: rolled back to revision {back['rollback_of']}")
    if recorded:
        _report_outcome(client, name, answer["revision"], "converged")


def _wait_for_stack(client, name: str, timeout: float, pending_timeout: float = 60.0,
                    expect_rollback: bool = False) -> None:
    from swarmlet.cli.progress import wait_converged  # here: rich's live display is slow to import
    wait_converged(lambda: (client.call("GET", f"/v1/stacks/{name}/services"),
                            client.call("GET", f"/v1/stacks/{name}/tasks")),
                   f"stack {name}", timeout, pending_timeout, expect_rollback=expect_rollback)


def _report_outcome(client, name: str, revision: int, outcome: str) -> None:
    """Record how a revision went; the deploy's own result stands if that fails."""
    try:
        client.call("POST", f"/v1/stacks/{name}/revisions/{revision}/outcome",
                    {"outcome": outcome[:MAX_OUTCOME_LENGTH]})
    except (ApiError, ClusterUnreachable) as err:
        click.echo(f"warning: the outcome of revision {revision} was not recorded: {err}", err=True)


@stack.command("history")
@click.argument("name")
@FORMAT_OPTION
@client_options
def history(name, output_format, host, context_dir):
    """The revisions of a stack: every deploy (and rollback) that changed it, who made it,
    and how it went."""
    revisions = make_client(host, context_dir).call("GET", f"/v1/stacks/{name}/revisions")

    def row(r: dict) -> list:
        when = datetime.fromtimestamp(r["created_at"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        change = f"rollback to {r['rollback_of']}" if r["rollback_of"] else "deploy"
        return [r["number"], when, change, r["by"] or "", ", ".join(r["services"]), r["outcome"] or ""]
    emit(output_format, revisions, ["REVISION", "CREATED (UTC)", "CHANGE", "BY", "SERVICES", "OUTCOME"], row)


@stack.command("rollback")
@click.argument("name")
@click.option("--to", "to", type=click.IntRange(min=1), help="The revision to return to (default: the previous one).")
@detach_option
@timeout_option
@client_options
def rollback(name, to, detach, timeout, host, context_dir):
    """Return every service, network, secret and config of a stack to a revision, as one
    change; waits with progress until the stack converged unless --detach."""
    client = make_client(host, context_dir)
    answer = client.call("POST", f"/v1/stacks/{name}/rollback", {"to": to})
    changed = answer["changed_services"]
    click.echo(f"Stack {name}: back to revision {answer['rollback_of']} (revision {answer['revision']})"
               + (f": {', '.join(changed)}" if changed else ""))
    if detach:
        return
    try:
        _wait_for_stack(client, name, timeout, expect_rollback=True)
    except click.ClickException as failure:
        _report_outcome(client, name, answer["revision"], f"failed: {failure.message}")
        raise
    _report_outcome(client, name, answer["revision"], "converged")


def _stack_names(client) -> set[str]:
    return {s["name"] for s in client.call("GET", "/v1/stacks")}


@stack.command("ls")
@FORMAT_OPTION
@client_options
def stack_ls(output_format, host, context_dir):
    """List stacks."""
    emit(output_format, make_client(host, context_dir).call("GET", "/v1/stacks"), ["NAME", "SERVICES"],
         lambda s: [s["name"], s["services"]])


@stack.command("services")
@click.argument("name")
@FORMAT_OPTION
@client_options
def stack_services(name, output_format, host, context_dir):
    """The services of a stack."""
    client = make_client(host, context_dir)
    services = client.call("GET", f"/v1/stacks/{name}/services")
    if not services:
        raise click.ClickException(f"no such stack: {name}")
    emit_services(output_format, client, services)


@stack.command("ps")
@click.argument("name")
@FORMAT_OPTION
@client_options
def ps(name, output_format, host, context_dir):
    """The tasks of a stack."""
    client = make_client(host, context_dir)
    tasks = client.call("GET", f"/v1/stacks/{name}/tasks")
    if not tasks and name not in _stack_names(client):
        raise click.ClickException(f"no such stack: {name}")
    emit_tasks(output_format, client, tasks)


@stack.command("rm")
@click.argument("name")
@detach_option
@timeout_option
@client_options
def remove(name, detach, timeout, host, context_dir):
    """Remove a stack: its services, networks, secrets and configs; waits until its
    tasks are gone unless --detach."""
    client = make_client(host, context_dir)
    client.call("DELETE", f"/v1/stacks/{name}")
    click.echo(f"Removed stack {name}")
    if not detach:
        from swarmlet.cli.progress import wait_gone  # here: rich's live display is slow to import
        wait_gone(lambda: client.call("GET", f"/v1/stacks/{name}/tasks"), f"stack {name}", timeout)
