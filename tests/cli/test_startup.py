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

HEAVY = ("aiohttp", "pysyncobj", "docker", "swarmlet.manager", "swarmlet.agent", "swarmlet.store", "swarmlet.runtime",
         "swarmlet.node.run", "swarmlet.local")

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
