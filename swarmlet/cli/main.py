"""The `swarmlet` command. Each role's commands live in their own module and are
registered here; the CLI talks to a cluster only through the manager API.

Commands are imported when they are run (``LAZY_COMMANDS``), not when the CLI starts:
most only talk to the API, and loading the node side (aiohttp, pysyncobj, the Docker
SDK) for them took most of the CLI's start-up. `tests/cli/test_startup.py` keeps it so.
"""
from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of the command object.
LAZY_COMMANDS = {
    "init": "swarmlet.cli.nodes:init",
    "join": "swarmlet.cli.nodes:join",
    "agent": "swarmlet.cli.nodes:agent",
    "leave": "swarmlet.cli.nodes:leave",
    "join-token": "swarmlet.cli.cluster:join_token",
    "cluster": "swarmlet.cli.cluster:cluster",
    "node": "swarmlet.cli.cluster:node",
    "config": "swarmlet.cli.cluster:config",
    "backup": "swarmlet.cli.recovery:backup",
    "restore": "swarmlet.cli.recovery:restore",
    "local": "swarmlet.cli.local:local",
    "hollow-host": "swarmlet.cli.local:hollow_host",
    "stack": "swarmlet.cli.stack:stack",
    "service": "swarmlet.cli.service:service",
    "secret": "swarmlet.cli.secrets:secret",
    "chaos": "swarmlet.cli.chaos:chaos",
    "dashboard": "swarmlet.cli.dashboard:dashboard",
    "events": "swarmlet.cli.events:events",
    "unlock": "swarmlet.cli.security:unlock",
    "unlock-key": "swarmlet.cli.security:unlock_key",
    "admin": "swarmlet.cli.security:admin",
}


class LazyGroup(click.Group):
    """A group whose ``LAZY_COMMANDS`` are imported only when named (``--help`` of the
    whole CLI imports them all, for their short help). Commands added with
    ``add_command`` work as in any group."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in LAZY_COMMANDS:
            module, attribute = LAZY_COMMANDS[name].split(":")
            command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="swarmlet")
def cli() -> None:
    """swarmlet: run Compose stacks on a cluster of hosts."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
