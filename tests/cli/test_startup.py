"""The CLI's start-up stays light: the commands that only talk to the API load neither
aiohttp, pysyncobj, the Docker SDK nor the manager or agent side (swarmlet/cli/main.py
imports each command when it is run). A structural check, not a timing one: the
figures are benchmarks/cli_startup.py's (docs/performance.md)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# cryptography and asyncio too (and the Compose loader, for `stack ls`): the CLI hands the admin certificate's files to ssl itself
# (swarmlet/ca/tls.py client_context_from_files) and talks plain http.client.
HEAVY = ("aiohttp", "pysyncobj", "docker", "swarmlet.manager", "swarmlet.agent", "swarmlet.store", "swarmlet.runtime",
         "swarmlet.node", "swarmlet.local", "cryptography", "asyncio", "yaml", "swarmlet.compose")

PROBE = """
import json, sys
from swarmlet.cli.main import cli
args = json.loads(sys.argv[1])
preload = json.loads(sys.argv[2])
for module in preload:
    __import__(module)
if args is not None:
    try:
        cli.main(args, standalone_mode=False)
    except SystemExit:
        pass
heavy = json.loads(sys.argv[3])
print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))))
"""


def heavy_modules(args: list[str] | None, preload: list[str] = ()) -> list[str]:
    """The heavy modules loaded once ``swarmlet ARGS`` ran (None: the CLI only imported)."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(list(preload)),
                             json.dumps(HEAVY)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SWARMLET_HOST": "", "SWARMLET_CONTEXT": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_the_cli_loads_nothing_heavy():
    assert heavy_modules(None) == []


@pytest.mark.parametrize("args", [["node", "ls", "--help"], ["service", "ls", "--help"], ["secret", "ls", "--help"],
                                  ["config", "ls", "--help"], ["cluster", "status", "--help"],
                                  ["stack", "ls", "--help"]])
def test_commands_that_only_talk_to_the_api_load_nothing_heavy(args):
    assert heavy_modules(args) == []


def test_the_check_sees_a_heavy_module_when_one_is_loaded():
    assert "aiohttp" in heavy_modules(["node", "ls", "--help"], preload=["aiohttp"])
    assert "swarmlet.manager.manager" in heavy_modules(["--help"], preload=["swarmlet.manager.manager"])


CALLING_PROBE = """
import json, sys
import click
from swarmlet.cli.main import cli
try:
    cli.main(json.loads(sys.argv[1]), standalone_mode=False)
except click.ClickException as err:
    print(json.dumps({"error": err.format_message()}))
heavy = json.loads(sys.argv[2])
print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))))
"""


@pytest.fixture(scope="module")
def admin_context(tmp_path_factory):
    from swarmlet.ca import ROLE_ADMIN, NodeCertStore, RootCA, generate_key_pem, make_csr

    ca = RootCA.create("cli-startup")
    key = generate_key_pem()
    directory = tmp_path_factory.mktemp("admin")
    NodeCertStore(directory).save(ca.cert_pem, ca.issue(make_csr(key), "admin-1", ROLE_ADMIN), key)
    return directory


def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_command_that_calls_the_api_loads_the_admin_certificate_without_anything_heavy(admin_context):
    """`service ls` for real: the admin context is read and a manager dialled (none
    answers here), and still neither cryptography nor asyncio nor the node side loads."""
    args = ["service", "ls", "--host", f"127.0.0.1:{unused_port()}", "--context", str(admin_context)]
    result = subprocess.run([sys.executable, "-c", CALLING_PROBE, json.dumps(args), json.dumps(HEAVY)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    error, heavy = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    assert "127.0.0.1" in error["error"] and "admin certificate" not in error["error"], error
    assert heavy == []


def test_an_admin_key_that_is_not_its_certificates_is_named(admin_context, tmp_path):
    from click.testing import CliRunner
    from swarmlet.ca import generate_key_pem
    from swarmlet.cli.main import cli
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(admin_context, broken)
    (broken / "swarm-node.key").write_bytes(generate_key_pem())
    result = CliRunner().invoke(cli, ["service", "ls", "--host", "127.0.0.1:1", "--context", str(broken)])
    assert result.exit_code == 2, result.output
    assert f"the admin certificate in {broken} cannot be used" in result.output and "does not match" in result.output
