"""`swarmlet stack …`: Compose stacks."""
from __future__ import annotations

import click


@click.group()
def stack() -> None:
    """Deploy and inspect Compose stacks."""
