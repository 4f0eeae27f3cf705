"""What normalisation of one file needs to know and where it reports."""
from __future__ import annotations

import codecs
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from swarmlet.compose.errors import ComposeIssue, Path_, describe, format_path


class Sources(Protocol):
    """File access, injected so that normalisation stays testable without a disk."""

    def read_bytes(self, path: Path) -> bytes | None: ...  # None when there is no such file

    def is_file(self, path: Path) -> bool: ...


class DiskSources:
    def read_bytes(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def is_file(self, path: Path) -> bool:
        return path.is_file()


# YAML 1.2 (5.2) reads UTF-8, UTF-16 and UTF-32, told apart by a byte order mark, as
# go-yaml does for docker/cli and compose-go. UTF-32 first: its LE mark starts like UTF-16's.
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(data: bytes, file: str) -> tuple[str | None, ComposeIssue | None]:
    """Text of a Compose or env file: UTF-8 unless a byte order mark says otherwise.
    Undecodable bytes are an issue naming the line they are on."""
    encoding = next((name for mark, name in _BYTE_ORDER_MARKS if data.startswith(mark)), "utf-8")
    try:
        return data.decode(encoding), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1 if encoding.startswith("utf-8") else None
        return None, ComposeIssue(file, "", line, f"cannot be read as {encoding.upper().removesuffix('-SIG')} "
                                  f"(byte {data[exc.start]:#04x} at offset {exc.start}); expected UTF-8, "
                                  "or UTF-16 or UTF-32 with a byte order mark")


def read_text(sources: Sources, path: Path) -> tuple[str | None, ComposeIssue | None]:
    """(text, None); (None, None) when there is no such file; (None, issue) when it
    cannot be decoded."""
    data = sources.read_bytes(path)
    if data is None:
        return None, None
    return decode_text(data, str(path))


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
