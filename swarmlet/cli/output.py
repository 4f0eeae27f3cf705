"""Output for people (tables) and for scripts (``--format json``)."""
from __future__ import annotations

import json
from typing import Callable, Iterable

import click

FORMAT_OPTION = click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="table for people, json for scripts")


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def emit_table(columns: list[str], rows: Iterable[Iterable]) -> None:
    from rich.console import Console  # here, not at the top: the CLI starts faster (cli/main.py)
    from rich.table import Table

    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if cell is None else str(cell) for cell in row])
    console = Console()
    if not console.is_terminal:  # piped: never squeeze or cut columns to a guessed width
        console = Console(width=10_000)
    console.print(table)


def emit(output_format: str, data, columns: list[str], row: Callable[[dict], list]) -> None:
    if output_format == "json":
        emit_json(data)
    else:
        emit_table(columns, (row(item) for item in data))
