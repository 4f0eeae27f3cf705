"""Structured loader errors: every problem found is kept, then raised together."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Path_ = tuple[Any, ...]  # a key path: ("services", "web", "ports", 0)


def format_path(path: Path_) -> str:
    """("services", "web", "ports", 0) -> "services.web.ports[0]"."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def describe(value: Any) -> str:
    """How a found value is shown in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


@dataclass(frozen=True)
class ComposeIssue:
    file: str | None
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file or "<stack>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ComposeError(Exception):
    """Raised when a stack has any error; carries all of them."""

    def __init__(self, issues: list[ComposeIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
