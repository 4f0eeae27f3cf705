"""`swarmlet stack …`: Compose stacks."""
from __future__ import annotations

import base64
from pathlib import Path

import click

from swarmlet.api.specs import StackSpec
from swarmlet.cli.client import client_options, make_client
from swarmlet.compose import ComposeError, load_stack, render_document


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
    result = _load_or_exit(files, env_files)
    click.echo(render_document(result.document, fmt), nl=False)


def _load_or_exit(files, env_files):
    """Load the stack, printing every error (and exiting 1) or warning."""
    try:
        result = load_stack(list(files), list(env_files) or None)
    except ComposeError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        raise SystemExit(1)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    return result


def deploy_body(stack: StackSpec, prune: bool = False) -> dict:
    """The body of ``POST /v1/stacks/{name}``: the stack, the contents of the secret and
    config files it names (base64), and whether to prune."""
    files: dict[str, dict[str, str]] = {"secrets": {}, "configs": {}}
    for kind, entries in (("secrets", stack.secrets), ("configs", stack.configs)):
        for name, entry in entries.items():
            if not entry.external and entry.file:
                files[kind][name] = base64.b64encode(Path(entry.file).read_bytes()).decode("ascii")
    return {"stack": stack.to_dict(), "files": files, "prune": prune}


@stack.command("deploy")
@click.option("-c", "--compose-file", "files", multiple=True, required=True,
              type=click.Path(path_type=Path), help="Compose file; repeat to merge several, in order.")
@click.option("--env-file", "env_files", multiple=True, type=click.Path(path_type=Path))
@click.option("--prune", is_flag=True, help="Remove the stack's services that are no longer in the files.")
@client_options
@click.argument("name")
def deploy(files, env_files, prune, host, context_dir, name):
    """Create or update a stack: its networks, secrets, configs and services, at once."""
    result = _load_or_exit(files, env_files)
    answer = make_client(host, context_dir).call("POST", f"/v1/stacks/{name}", deploy_body(result.stack, prune))
    changed = answer["changed_services"]
    click.echo(f"Stack {name}: " + (f"updated {', '.join(changed)}" if changed else "no service changed"))


@stack.command("rm")
@client_options
@click.argument("name")
def remove(host, context_dir, name):
    """Remove a stack: its services (their tasks stop), networks, secrets and configs."""
    make_client(host, context_dir).call("DELETE", f"/v1/stacks/{name}")
    click.echo(f"Removed stack {name}")


@stack.command("ps")
@client_options
@click.argument("name")
def ps(host, context_dir, name):
    """The tasks of a stack."""
    for task in make_client(host, context_dir).call("GET", f"/v1/stacks/{name}/tasks"):
        slot = task["slot"] if task["slot"] is not None else (task["node_id"] or "")[:8]
        click.echo(f"{task['id'][:12]}  {task['service_name']}.{slot}  {(task['node_id'] or '-')[:12]:12}  "
                   f"{task['desired_state']:8}  {task['state']:9}  {task['err'] or task['message']}")
