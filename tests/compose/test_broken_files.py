"""Every file in broken/ must fail to load with exactly the errors its header states:
`# expect: <line|-> <key path|-> | <message fragment>`."""
from __future__ import annotations

from pathlib import Path

import pytest

from swarmlet.compose import ComposeError, load_stack

BROKEN = Path(__file__).parent / "broken"
BROKEN_FILES = sorted(BROKEN.glob("*.yml"))


def expectations(file: Path) -> list[tuple[int | None, str, str]]:
    result = []
    for line in file.read_text().splitlines():
        if line.startswith("# expect: "):
            where, fragment = line[len("# expect: "):].split(" | ", 1)
            number, path = where.split(" ", 1)
            result.append((None if number == "-" else int(number), "" if path == "-" else path, fragment))
    return result


def test_there_are_at_least_forty_broken_files():
    assert len(BROKEN_FILES) >= 40


@pytest.mark.parametrize("file", BROKEN_FILES, ids=lambda p: p.stem)
def test_broken_file_reports_file_path_and_line(file: Path):
    expected = expectations(file)
    assert expected, f"{file.name} has no # expect: header"
    with pytest.raises(ComposeError) as caught:
        load_stack([file], environ={})
    issues = caught.value.issues
    found = [(i.line, i.path, i.message) for i in issues]
    assert len(issues) == len(expected), found
    for line, path, fragment in expected:
        matching = [i for i in issues if i.line == line and i.path == path and fragment in i.message]
        assert matching, f"no error at line {line} path {path!r} containing {fragment!r}; got {found}"
        assert matching[0].file == str(file)
        # The one-line form names file, line and path too.
        rendered = str(matching[0])
        assert rendered.startswith(f"{file}:{line}: " if line else f"{file}: ")
        assert path in rendered


def test_str_lists_every_error_one_per_line():
    file = BROKEN / "three_errors.yml"
    with pytest.raises(ComposeError) as caught:
        load_stack([file], environ={})
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert lines[0] == f"{file}:8: services.web.deploy.replicas: expected a non-negative integer, found -3"
