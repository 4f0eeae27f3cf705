"""Recovering from quorum loss: `swarmlet init --force-new-cluster`, `swarmlet backup`,
`swarmlet restore` (docs/failover-testing.md, "Recovering")."""
from __future__ import annotations

from pathlib import Path

import click

from swarmlet.cli.client import client_options, make_client
from swarmlet.cli.unlocking import unlock_offline
from swarmlet.node.config import DataDir
from swarmlet.node.recovery import RecoveryError, force_new_cluster as force_data_dir, restore as restore_data_dir
from swarmlet.private import write_private

BACKUP_TIMEOUT = 60.0


def force_new_cluster(directory: DataDir, stop, start) -> None:
    """``stop`` the node if it runs, make its state a one-manager cluster, ``start`` it
    again (`init` passes its own process helpers)."""
    stop(directory)
    try:
        kept = force_data_dir(directory)
    except RecoveryError as err:
        raise click.ClickException(str(err)) from None
    counts = ", ".join(f"{n} {kind}s" for kind, n in kept["objects"].items() if n)
    click.echo(f"New cluster from this manager's state (index {kept['index']}: {counts}); "
               f"the old Raft directory is kept at {kept['old_raft_dir']}.")
    click.echo("Other managers join it again with `swarmlet join-token manager`.")
    start()


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@client_options
def backup(file, host, context_dir):
    """Write a consistent backup of the cluster's store to FILE, taken online (sealed
    under the cluster key; no node keys in it)."""
    blob = make_client(host, context_dir).call("GET", "/v1/backup", timeout=BACKUP_TIMEOUT, raw=True)
    write_private(Path(file), blob)
    click.echo(f"backup written to {file} ({len(blob)} bytes)")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--data-dir", required=True,
              help="A stopped manager's data dir of the backup's cluster (its raft/ is replaced; the old one kept).")
@click.option("--unlock-key-file", default=None, metavar="FILE",
              help="A locked manager's data dir (autolock): its unlock key, from FILE ('-': standard input).")
def restore(file, data_dir, unlock_key_file):
    """Restore a backup into a stopped manager's data dir as a one-manager cluster (as
    after `init --force-new-cluster`); then start it with `swarmlet agent --data-dir`."""
    directory = DataDir(data_dir)
    unlock_offline(directory, unlock_key_file)
    try:
        kept = restore_data_dir(directory, Path(file).read_bytes())
    except RecoveryError as err:
        raise click.ClickException(str(err)) from None
    counts = ", ".join(f"{n} {kind}s" for kind, n in kept["objects"].items() if n)
    click.echo(f"Restored the backup (index {kept['index']}: {counts}) into {directory.path}; "
               f"start it with `swarmlet agent --data-dir {directory.path} --detach`.")


RECOVERY_COMMANDS = [backup, restore]
