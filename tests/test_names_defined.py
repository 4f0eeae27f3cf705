"""Every name the code uses is defined somewhere in scope: pyflakes' undefined-name check
over the package, the benchmarks and the tests. Found by a merge: a command's lazy imports moved
into one function while a helper beside it still used them (`swarmlet leave` failed
with NameError only when run)."""
from __future__ import annotations

from pathlib import Path

import pytest

pyflakes_api = pytest.importorskip("pyflakes.api")
pyflakes_messages = pytest.importorskip("pyflakes.messages")
from pyflakes.reporter import Reporter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
UNDEFINED = (pyflakes_messages.UndefinedName, pyflakes_messages.UndefinedLocal, pyflakes_messages.UndefinedExport)


class Collect(Reporter):
    def __init__(self):
        self.found: list[str] = []

    def flake(self, message):
        if isinstance(message, UNDEFINED):
            self.found.append(str(message))

    def syntaxError(self, filename, msg, lineno, offset, text):
        self.found.append(f"{filename}:{lineno}: syntax error: {msg}")

    def unexpectedError(self, filename, msg):
        self.found.append(f"{filename}: {msg}")


def undefined_names(paths: list[Path]) -> list[str]:
    reporter = Collect()
    for path in paths:
        pyflakes_api.checkPath(str(path), reporter)
    return reporter.found


def test_no_undefined_names_in_the_package_the_benchmarks_or_the_tests():
    paths = [p for folder in ("swarmlet", "benchmarks", "tests") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(paths) > 100
    assert undefined_names(paths) == []


def test_the_check_flags_a_name_no_scope_defines(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def leave():\n    from os import path\n\n\ndef tell():\n    return path.join('a', 'b')\n")
    assert any("undefined name 'path'" in found for found in undefined_names([broken]))
