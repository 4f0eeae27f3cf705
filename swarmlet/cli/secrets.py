"""`swarmlet secret …`: secrets as in `docker secret`. The CLI sends a secret's value
once, on create, and never shows it: the API has no way to read it back."""
from __future__ import annotations

import base64

import click

from swarmlet.cli.client import client_options, make_client
from swarmlet.cli.output import FORMAT_OPTION, emit, emit_json


def parse_labels(ctx, param, values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, equals, value = item.partition("=")
        if not equals:
            raise click.BadParameter(f"{item!r}: expected key=value")
        labels[key] = value
    return labels


@click.group()
def secret():
    """Manage secrets (sealed in the cluster; given only to the tasks that use them)."""


@secret.command("create")
@click.argument("name")
@click.argument("file", type=click.File("rb"))
@click.option("--label", "-l", "labels", multiple=True, callback=parse_labels, metavar="KEY=VALUE",
              help="A label; repeatable.")
@client_options
def secret_create(name, file, labels, host, context_dir):
    """Create a secret from FILE ('-' for standard input)."""
    create_named_file("/v1/secrets", name, file, labels, host, context_dir)


def create_named_file(path: str, name: str, file, labels: dict, host, context_dir) -> None:
    """POST a config or secret; prints its ID (never the data)."""
    created = make_client(host, context_dir).call("POST", path, {
        "name": name, "data": base64.b64encode(file.read()).decode(), "labels": labels})
    click.echo(created["id"])


@secret.command("ls")
@FORMAT_OPTION
@client_options
def secret_ls(output_format, host, context_dir):
    """List secrets."""
    secrets = make_client(host, context_dir).call("GET", "/v1/secrets")
    emit(output_format, secrets, ["ID", "NAME", "VERSION", "LABELS"],
         lambda s: [s["id"], s["name"], s["version"], ",".join(f"{k}={v}" for k, v in sorted(s["labels"].items()))])


@secret.command("inspect")
@click.argument("refs", nargs=-1, required=True)
@client_options
def secret_inspect(refs, host, context_dir):
    """Show secrets (never their data)."""
    client = make_client(host, context_dir)
    emit_json([client.call("GET", f"/v1/secrets/{ref}") for ref in refs])


@secret.command("rm")
@click.argument("refs", nargs=-1, required=True)
@client_options
def secret_rm(refs, host, context_dir):
    """Remove secrets (refused while a service uses one, naming the services)."""
    client = make_client(host, context_dir)
    for ref in refs:
        client.call("DELETE", f"/v1/secrets/{ref}")
        click.echo(ref)
