"""`swarmlet dashboard`: a one-time login link to the web dashboard of a manager."""
from __future__ import annotations

import webbrowser

import click

from swarmlet.cli.client import ClusterUnreachable, Client, client_options, resolve_context, resolve_hosts
from swarmlet.api.addresses import DEFAULT_API_PORT, split_address


@click.command()
@client_options
@click.option("--open", "open_browser", is_flag=True, help="Open the link in this machine's browser.")
def dashboard(host, context_dir, open_browser):
    """Print a login link for the web dashboard (valid once, for a minute).

    The link logs the browser in with a session bound to your admin certificate; the
    session reads what the dashboard shows and nothing else. The managers' TLS
    certificates come from the cluster's own CA: trust `swarm-root-ca.crt` of the admin
    directory in the browser, or accept the warning. See docs/security.md.
    """
    context = resolve_context(context_dir)
    hosts = resolve_hosts(host, context)
    problems = []
    for one in hosts or [None]:
        client = Client([one] if one else [], context)
        try:
            answer = client.call("POST", "/v1/dashboard/login")
        except ClusterUnreachable as err:
            problems.append(str(err))
            continue
        ip, port = split_address(one, DEFAULT_API_PORT)
        url = f"https://{f'[{ip}]' if ':' in ip else ip}:{port}{answer['path']}"
        click.echo(url)
        click.echo(f"(valid once, for {answer['expires_in']:.0f} s, on this manager only)", err=True)
        if open_browser:
            webbrowser.open(url)
        return
    raise ClusterUnreachable("; ".join(problems))
