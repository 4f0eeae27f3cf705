"""The `swarmlet` command. Each role's commands live in their own module and are
registered here; the CLI talks to a cluster only through the manager API."""
from __future__ import annotations

import click

from swarmlet.cli.chaos import chaos
from swarmlet.cli.local import hollow_host, local
from swarmlet.cli.nodes import COMMANDS as NODE_COMMANDS
from swarmlet.cli.security import SECURITY_COMMANDS
from swarmlet.cli.service import service
from swarmlet.cli.stack import stack


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="swarmlet")
def cli() -> None:
    """swarmlet: run Compose stacks on a cluster of hosts."""


for command in [*NODE_COMMANDS, *SECURITY_COMMANDS, local, hollow_host, stack, service, chaos]:
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
