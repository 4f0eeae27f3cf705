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
@pytest.mark.parametrize("stack", ["voting", "monitoring", "everything"])
def test_config_output_loads_again_to_the_same_specs(tmp_path, stack, fmt):
    source = STACKS / stack / "compose.yml"
    result = run("-c", str(source), "--format", fmt, env={"VOTE_TAG": "v9", "TOKEN": "t0k"})
    assert result.exit_code == 0, result.stderr
    printed = tmp_path / f"printed.{fmt}"
    printed.write_text(result.stdout)
    original = load_stack([source], environ={"VOTE_TAG": "v9", "TOKEN": "t0k"})
    # Nothing left to interpolate, paths absolute; an `environment:` secret still reads its variable.
    reloaded = load_stack([printed], environ={"TOKEN": "t0k"})
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


def test_config_refuses_a_constraint_the_scheduler_could_never_match(tmp_path):
    # SwarmKit's constraint values hold no comma; the scheduler's own parser says so.
    source = tmp_path / "compose.yml"
    source.write_text("services:\n  web:\n    image: x\n    deploy:\n      placement:\n"
                      "        constraints:\n          - node.labels.zone==a,b\n")
    result = run("-c", str(source))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"error: {source}:7: services.web.deploy.placement.constraints[0]: "
                             "invalid constraint 'node.labels.zone==a,b': missing or invalid value 'a,b' "
                             r"(a value holds letters, digits, spaces and : - _ . * ( ) ? + [ ] \ ^ $ | / only)" "\n")


def test_config_refuses_a_flow_list_constraint_split_at_its_comma(tmp_path):
    # In YAML flow style the comma ends the item: [node.labels.zone==a,b] is two items.
    source = tmp_path / "compose.yml"
    source.write_text("services:\n  web:\n    image: x\n    deploy:\n      placement:\n"
                      "        constraints: [node.labels.zone==a,b]\n")
    result = run("-c", str(source))
    assert result.exit_code == 1
    assert result.stderr == (f"error: {source}:6: services.web.deploy.placement.constraints[1]: "
                             "invalid constraint 'b': expected exactly one == or !=\n")
