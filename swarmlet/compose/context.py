"""What normalisation of one file needs to know and where it reports."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from swarmlet.compose.errors import ComposeIssue, Path_, describe, format_path


class Sources(Protocol):
    """File access, injected so that normalisation stays testable without a disk."""

    def read_text(self, path: Path) -> str | None: ...  # None when there is no such file

    def is_file(self, path: Path) -> bool: ...


class DiskSources:
    def read_text(self, path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def is_file(self, path: Path) -> bool:
        return path.is_file()


class Origin:
    """Where something was written: used by checks that run after files are merged.
    The line may be given as a function of nothing, looked up only when asked for:
    most remembered places never appear in a message."""
    __slots__ = ("file", "path", "_line")

    def __init__(self, file: str, path: Path_, line: int | None | Callable[[], int | None]):
        self.file = file
        self.path = path
        self._line = line

    @property
    def line(self) -> int | None:
        if callable(self._line):
            self._line = self._line()
        return self._line

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Origin) and (self.file, self.path, self.line) == (other.file, other.path, other.line)

    def __hash__(self) -> int:
        return hash((self.file, self.path, self.line))

    def __repr__(self) -> str:
        return f"Origin(file={self.file!r}, path={self.path!r}, line={self.line!r})"

    def issue(self, message: str, path: Path_ | None = None) -> ComposeIssue:
        return ComposeIssue(self.file, format_path(self.path if path is None else path), self.line, message)


@dataclass
class FileContext:
    file: str                       # as shown in messages
    lines: Mapping[Path_, int]      # key path -> line, from the YAML (a dict or a yamlsource.LineMap)
    base_dir: Path                  # relative paths resolve against the first file's folder
    lookup: Mapping[str, str]       # interpolation variables
    sources: Sources
    issues: list[ComposeIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Semantic key (e.g. ("secret-ref", "web", "db_password")) -> where it was written.
    origins: dict[tuple, Origin] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        return _line_of(self.lines, path)

    def error(self, path: Path_, message: str) -> None:
        self.issues.append(ComposeIssue(self.file, format_path(path), self.line_of(path), message))

    def warn(self, path: Path_, message: str) -> None:
        self.warnings.append(str(ComposeIssue(self.file, format_path(path), self.line_of(path), message)))

    def remember(self, key: tuple, path: Path_) -> None:
        # Not a closure over self: that would make a reference cycle holding the node tree.
        self.origins[key] = Origin(self.file, path, partial(_line_of, self.lines, path))

    def resolve_path(self, text: str) -> str:
        """A host path from the file, made absolute against the first file's folder."""
        if text.startswith("~"):
            home = self.lookup.get("HOME") or str(Path.home())
            text = home + text[1:]
        return os.path.normpath(self.base_dir / text)


def _line_of(lines: Mapping[Path_, int], path: Path_) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one."""
    get = lines.get
    while path:
        line = get(path)
        if line is not None:
            return line
        path = path[:-1]
    return None


def expected(what: str, found: Any) -> str:
    return f"expected {what}, found {describe(found)}"
