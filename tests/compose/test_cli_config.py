from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from swarmlet.cli.main import cli
from swarmlet.compose import load_stack

HERE = Path(__file__).parent
STACKS = HERE / "stacks"


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["stack", "config", *args], env=env or {})


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("stack", ["voting", "monitoring"])
def test_config_output_loads_again_to_the_same_specs(tmp_path, stack, fmt):
    source = STACKS / stack / "compose.yml"
    result = run("-c", str(source), "--format", fmt, env={"VOTE_TAG": "v9"})
    assert result.exit_code == 0, result.stderr
    printed = tmp_path / f"printed.{fmt}"
    printed.write_text(result.stdout)
    original = load_stack([source], environ={"VOTE_TAG": "v9"})
    reloaded = load_stack([printed], environ={})  # nothing left to interpolate, paths absolute
    assert reloaded.stack == original.stack
    if fmt == "json":
        assert json.loads(result.stdout)["services"]


def test_config_round_trip_keeps_literal_dollars(tmp_path):
    source = tmp_path / "compose.yml"
    source.write_text("services:\n  web:\n    image: x\n    command: echo $$HOME\n")
    result = run("-c", str(source))
    assert result.exit_code == 0
    (tmp_path / "out").mkdir()
    printed = tmp_path / "out" / "compose.yml"
    printed.write_text(result.stdout)
    assert load_stack([printed], environ={"HOME": "/root"}).stack.services["web"].container.command == ["echo", "$HOME"]


def test_config_merges_files_and_warns_on_stderr(tmp_path):
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    a.write_text("services:\n  web:\n    image: x:1\n    container_name: web\n")
    b.write_text("services:\n  web:\n    image: x:2\n")
    result = run("-c", str(a), "-c", str(b))
    assert result.exit_code == 0
    assert "image: x:2" in result.stdout
    assert "services.web.container_name" in result.stderr and "ignored" in result.stderr


def test_config_on_a_broken_file_fails_and_names_file_path_and_line():
    broken = HERE / "broken" / "three_errors.yml"
    result = run("-c", str(broken))
    assert result.exit_code != 0
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert f"{broken}:8: services.web.deploy.replicas" in errors[0]
    assert f"{broken}:12: services.db.secrets[0]" in result.stderr
