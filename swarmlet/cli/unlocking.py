"""Getting the unlock key of a locked manager (autolock) to where it is needed, for the
commands that start or recover one (`agent`, `init --force-new-cluster`, `restore`,
`local start`)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from swarmlet.node.config import DataDir


def unlock_here(data_dir: DataDir, unlock_key: str) -> None:
    from swarmlet.ca.unlock import UnlockKeyError

    try:
        data_dir.unlock(unlock_key)
    except UnlockKeyError as err:
        raise click.ClickException(f"{data_dir.path}: {err}") from None


def unlock_offline(data_dir: DataDir, unlock_key_file: str | None) -> str | None:
    """Open a stopped locked manager's data dir in this process (offline recovery); the
    key, to start the node with afterwards."""
    key = read_unlock_key(unlock_key_file)
    if key is not None and data_dir.exists() and data_dir.needs_unlock():
        unlock_here(data_dir, key)
    return key


def read_unlock_key(path: str | None) -> str | None:
    """The unlock key from a file, '-' for standard input; None when no path is given."""
    if path is None:
        return None
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return text.strip()
