"""`swarmlet stack …`: Compose stacks."""
from __future__ import annotations

from pathlib import Path

import click

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
    try:
        result = load_stack(list(files), list(env_files) or None)
    except ComposeError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        raise SystemExit(1)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(render_document(result.document, fmt), nl=False)
