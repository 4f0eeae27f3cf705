from __future__ import annotations

from pathlib import Path

import pytest

from swarmlet.compose import ComposeError, load_stack
from swarmlet.compose.interpolation import InterpolationError, interpolate, parse_env_file

ENV = {"SET": "value", "EMPTY": "", "INNER": "deep"}


@pytest.mark.parametrize("text, result", [
    ("$SET", "value"),
    ("${SET}", "value"),
    ("pre-${SET}-post", "pre-value-post"),
    ("${UNSET:-fallback}", "fallback"),
    ("${EMPTY:-fallback}", "fallback"),
    ("${EMPTY-fallback}", ""),
    ("${UNSET-fallback}", "fallback"),
    ("${SET:-fallback}", "value"),
    ("${SET:+replacement}", "replacement"),
    ("${EMPTY:+replacement}", ""),
    ("${EMPTY+replacement}", "replacement"),
    ("${UNSET+replacement}", ""),
    ("${SET:?message}", "value"),
    ("${EMPTY?message}", ""),
    ("${UNSET:-${INNER}}", "deep"),
    ("${UNSET:-a-${ALSO_UNSET:-${INNER}}-b}", "a-deep-b"),
    ("${SET:-${UNSET:?never evaluated}}", "value"),
    ("$$SET", "$SET"),
    ("cost: $$5 and $${SET}", "cost: $5 and ${SET}"),
    ("${UNSET}", ""),
    # A "$" that starts no variable is kept (Compose spec, 12-interpolation.md).
    ("cost $ 5, $5 and 100$", "cost $ 5, $5 and 100$"),
    # Defaults are taken as written but for ${…} (docker/cli's softDefault returns them
    # literally): a bcrypt hash survives whole.
    ("${UNSET:-$2y$05$oZcj4FgdSFEYNCH0EH/3Vu}", "$2y$05$oZcj4FgdSFEYNCH0EH/3Vu"),
    ("${UNSET:-$SET}", "$SET"),
    ("${SET:+$$}", "$$"),
])
def test_forms(text, result):
    assert interpolate(text, ENV) == result


@pytest.mark.parametrize("text, fragment", [
    ("${UNSET:?please set it}", "required variable UNSET is missing a value: please set it"),
    ("${EMPTY:?empty is not enough}", "required variable EMPTY"),
    ("${UNSET?}", "required variable UNSET is missing a value"),
    ("${ 5}", "has no variable name"),
    ("${SET", 'missing "}"'),
    ("${SET/x}", "unknown operator"),
])
def test_errors(text, fragment):
    with pytest.raises(InterpolationError) as caught:
        interpolate(text, ENV)
    assert fragment in str(caught.value)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_env_file_beside_first_file_and_process_environment_wins(tmp_path):
    compose = write(tmp_path, "compose.yml",
                    "services:\n  web:\n    image: ${IMAGE}:${TAG}\n    environment: [\"MODE=${MODE:-dev}\"]\n")
    write(tmp_path, ".env", "IMAGE=nginx\nTAG=from-dotenv\nMODE='prod'\n")
    result = load_stack([compose], environ={"TAG": "from-shell"})
    service = result.stack.services["web"]
    assert service.container.image == "nginx:from-shell"
    assert service.container.env == {"MODE": "prod"}


def test_explicit_env_files_replace_dotenv_and_later_ones_win(tmp_path):
    compose = write(tmp_path, "compose.yml", "services:\n  web:\n    image: ${IMAGE}:${TAG}\n")
    write(tmp_path, ".env", "IMAGE=ignored\nTAG=ignored\n")
    first = write(tmp_path, "a.env", "IMAGE=redis\nTAG=6\n")
    second = write(tmp_path, "b.env", "export TAG=7 # comment\n")
    result = load_stack([compose], env_files=[first, second], environ={})
    assert result.stack.services["web"].container.image == "redis:7"


def test_env_file_values_may_refer_to_earlier_lines():
    values, issues = parse_env_file('A=1\nB="${A}\\n2"\nC=\'${A}\'\n', "x.env", {})
    assert values == {"A": "1", "B": "1\n2", "C": "${A}"} and issues == []


@pytest.mark.parametrize("line, value", [
    # The Compose spec's examples (05-services.md, "Env_file format").
    ('VAR="VAL # not a comment"', "VAL # not a comment"),
    ('VAR="VAL" # comment', "VAL"),
    ("VAR=VAL# not a comment", "VAL# not a comment"),
    ("VAR=VAL # comment", "VAL"),
    ("VAR='Let\\'s go!'", "Let's go!"),
    ('VAR="{\\"hello\\": \\"json\\"}"', '{"hello": "json"}'),
    ('VAR="some\\tvalue"', "some\tvalue"),
    ("VAR='some\\tvalue'", "some\\tvalue"),
    ("VAR=some\\tvalue", "some\\tvalue"),
    ('VAR="a\\$b"', "a$b"),
    ("VAR=", ""),
])
def test_env_file_value_forms(line, value):
    assert parse_env_file(line + "\n", "x.env", {}) == ({"VAR": value}, [])


def test_env_file_bare_key_passes_the_variable_through_and_quotes_span_lines():
    values, issues = parse_env_file('FROM_SHELL\nUNSET\nMULTI="one\ntwo"\nAFTER=3\n', "x.env",
                                    {"FROM_SHELL": "yes"})
    assert values == {"FROM_SHELL": "yes", "MULTI": "one\ntwo", "AFTER": "3"} and issues == []


def test_env_file_raw_format_takes_values_as_written():
    values, _ = parse_env_file("A='$B' # x\n", "x.env", {"B": "no"}, raw=True)
    assert values == {"A": "'$B' # x"}


def test_missing_required_variable_names_variable_file_and_place(tmp_path):
    compose = write(tmp_path, "compose.yml",
                    "services:\n  web:\n    image: nginx\n    environment:\n      PASSWORD: ${DB_PASSWORD:?is required}\n")
    with pytest.raises(ComposeError) as caught:
        load_stack([compose], environ={})
    (issue,) = caught.value.issues
    assert (issue.file, issue.path, issue.line) == (str(compose), "services.web.environment.PASSWORD", 5)
    assert "DB_PASSWORD" in issue.message and "is required" in issue.message


def test_keys_are_not_interpolated_and_unset_variables_warn(tmp_path):
    compose = write(tmp_path, "compose.yml",
                    "services:\n  web:\n    image: nginx${SUFFIX}\n    labels:\n      ${KEY}: ${VALUE}\n")
    result = load_stack([compose], environ={"KEY": "k", "VALUE": "v"})
    assert result.stack.services["web"].container.labels == {"${KEY}": "v"}
    assert result.stack.services["web"].container.image == "nginx"
    assert any('"SUFFIX" is not set' in w for w in result.warnings)


def test_yaml_11_booleans_stay_strings_in_values_but_count_as_booleans_in_flags(tmp_path):
    compose = write(tmp_path, "compose.yml",
                    "services:\n  web:\n    image: nginx\n    read_only: yes\n    init: off\n"
                    "    environment:\n      DEBUG: on\n      QUIET: no\n      REAL: true\n")
    container = load_stack([compose], environ={}).stack.services["web"].container
    assert container.read_only is True and container.init is False
    assert container.env == {"DEBUG": "on", "QUIET": "no", "REAL": "true"}
