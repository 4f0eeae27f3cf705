"""Options and argument parsers shared by several command modules, kept free of the node
side so that importing them costs the API-only commands nothing (swarmlet/cli/main.py)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from swarmlet.api.limits import Limits, parse_limit

DEFAULT_DATA_DIR = "/var/lib/swarmlet" if os.geteuid() == 0 else str(Path.home() / ".local/share/swarmlet")
data_dir_option = click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True,
                               type=click.Path(file_okay=False), help="Where the node keeps its state.")


def _parse_limits(ctx, param, values: tuple[str, ...]) -> dict[str, int]:
    try:
        return dict(parse_limit(value) for value in values)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


limit_option = click.option(
    "--limit", "limits", multiple=True, callback=_parse_limits, metavar="NAME=VALUE",
    help=f"A cluster limit; repeatable. NAME: {', '.join(Limits().to_dict())} (docs/orchestration.md, Limits).")


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
