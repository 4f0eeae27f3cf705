"""Autolock and the operators' certificates: `swarmlet unlock`, `swarmlet unlock-key`,
`swarmlet admin create|renew|revoke|ls` (docs/security.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from swarmlet.cli.client import client_options, make_client, resolve_context, resolve_hosts
from swarmlet.cli.options import data_dir_option
from swarmlet.cli.output import FORMAT_OPTION, emit
from swarmlet.cli.unlocking import read_unlock_key
from swarmlet.node.config import DataDir
from swarmlet.private import write_private

ROLE_CHOICES = ("admin", "read-only")


@click.command()
@data_dir_option
@click.option("--key-file", default=None, metavar="FILE",
              help="Read the unlock key from FILE ('-': standard input) instead of asking for it.")
def unlock(data_dir, key_file):
    """Give a locked manager (autolock) its unlock key: it then starts Raft and its API."""
    from swarmlet.node.unlock import UnlockFailed, send_unlock_key

    directory = DataDir(data_dir)
    if not directory.exists():
        raise click.ClickException(f"{directory.path} holds no swarmlet node (no node.json)")
    if not directory.is_locked():
        raise click.ClickException(f"the node of {directory.path} is not locked")
    if key_file:
        key = read_unlock_key(key_file)
    elif sys.stdin.isatty():
        key = click.prompt("Unlock key", hide_input=True)
    else:
        key = sys.stdin.readline().strip()
    try:
        send_unlock_key(directory, key)
    except UnlockFailed as err:
        raise click.ClickException(str(err)) from None
    click.echo("Unlocked: the manager is starting.")


@click.command("unlock-key")
@click.option("--rotate", is_flag=True, help="Replace the unlock key; every manager re-seals its key under the new one.")
@click.option("--quiet", "-q", is_flag=True, help="Print the key only.")
@client_options
def unlock_key(rotate, quiet, host, context_dir):
    """Print (or rotate) the cluster's unlock key (autolock)."""
    client = make_client(host, context_dir)
    key = client.call("POST", "/v1/unlock-key/rotate") if rotate else client.call("GET", "/v1/unlock-key")
    if quiet:
        click.echo(key["unlock_key"])
        return
    if rotate:
        click.echo("Rotated the unlock key; the old one unlocks no manager once each has re-sealed its key.")
    click.echo(f"To unlock a restarted manager, run `swarmlet unlock` on it and give it:\n\n    {key['unlock_key']}\n")


@click.group()
def admin():
    """The operators' certificates (identities with the admin or read-only role)."""


def _save_identity(directory: Path, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, hosts: list[str]) -> None:
    from swarmlet.ca import NodeCertStore

    NodeCertStore(directory).save(ca_pem, cert_pem, key_pem)
    if hosts:
        write_private(directory / "hosts", ("\n".join(hosts) + "\n").encode())


@admin.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLE_CHOICES), default="admin", show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="A new (or empty) directory for the identity; use it as --context / SWARMLET_CONTEXT.")
@client_options
def admin_create(name, role, out_dir, host, context_dir):
    """Issue a certificate for a new named operator identity into OUT."""
    from swarmlet.ca import generate_key_pem, make_csr

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise click.ClickException(f"{out} is not empty: give a new or empty directory")
    client = make_client(host, context_dir)
    key = generate_key_pem()  # made here: the private key never leaves this machine
    issued = client.call("POST", "/v1/admin/certs", {"name": name, "role": role, "csr": make_csr(key).decode()})
    _save_identity(out, issued["ca_cert"].encode(), issued["cert"].encode(), key, client.hosts)
    click.echo(f"Created the {role} identity {name}: {out}\n  export SWARMLET_CONTEXT={out}")


@admin.command("renew")
@client_options
def admin_renew(host, context_dir):
    """Replace this context's certificate with a new one (same identity and role, new key)."""
    from swarmlet.ca import NodeCertStore, generate_key_pem, identity_of, make_csr

    client = make_client(host, context_dir)
    directory = resolve_context(context_dir)
    ca_pem, _, _ = NodeCertStore(directory).load()
    key = generate_key_pem()
    renewed = client.call("POST", "/v1/admin/renew", {"csr": make_csr(key).decode()})
    cert = renewed["cert"].encode()
    _save_identity(directory, ca_pem, cert, key, resolve_hosts(host, directory))
    identity = identity_of(cert)
    click.echo(f"Renewed {identity.node_id} ({identity.role}): serial {identity.serial:x}, valid until "
               f"{identity.not_after.isoformat()}")


@admin.command("revoke")
@click.argument("ref")
@client_options
def admin_revoke(ref, host, context_dir):
    """Revoke an identity by NAME (every certificate it holds) or one certificate by SERIAL (hex)."""
    make_client(host, context_dir).call("POST", "/v1/admin/revoke", {"ref": ref})
    click.echo(f"Revoked {ref}.")


@admin.command("ls")
@FORMAT_OPTION
@client_options
def admin_ls(output_format, host, context_dir):
    """The operator identities, their roles and certificate serials."""
    rows = make_client(host, context_dir).call("GET", "/v1/admin/certs")
    emit(output_format, rows, ["NAME", "ROLE", "REVOKED", "SERIALS"],
         lambda r: [r["name"], r["role"], "yes" if r["revoked"] else "", ", ".join(r["serials"])])


SECURITY_COMMANDS = [unlock, unlock_key, admin]
