"""`${VAR…}` interpolation of Compose values, and `.env` files."""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from swarmlet.compose.errors import ComposeIssue, Path_

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")  # two-character ones first


class InterpolationError(ValueError):
    pass


def interpolate(text: str, lookup: Mapping[str, str], on_unset: Callable[[str], None] = lambda name: None) -> str:
    """Expands $VAR, ${VAR}, ${VAR:-default} and friends; `$$` is a literal `$`, and so
    is a `$` followed by anything but a name, `{` or `$`. Arguments of operators
    (defaults, replacements, messages) are taken as written, as docker/cli takes them,
    but for `${…}` inside them (the spec's nesting), expanded only when used: an unused
    `${A:-${B:?required}}` default cannot fail."""
    return _substitute(text, lookup, on_unset, text, braced_only=False)


def _substitute(text: str, lookup: Mapping[str, str], on_unset: Callable[[str], None], whole: str,
                braced_only: bool) -> str:
    """`braced_only`: an operator's argument, where only `${…}` is expanded. docker/cli
    returns defaults literally, so a bcrypt hash `$2y$05$oZcj…` as a default survives,
    `$oZcj…` and all."""
    out: list[str] = []
    pos = 0
    while True:
        dollar = text.find("$", pos)
        if dollar < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:dollar])
        following = text[dollar + 1: dollar + 2]
        name = None if braced_only or following in ("$", "{") else _NAME.match(text, dollar + 1)
        if following == "{":
            end = _closing_brace(text, dollar + 2)
            out.append(_expand_braced(text[dollar + 2: end], lookup, on_unset, whole))
            pos = end + 1
        elif following == "$":
            out.append("$$" if braced_only else "$")  # kept whole where defaults are literal
            pos = dollar + 2
        elif name:
            out.append(_lookup(name.group(), lookup, on_unset))
            pos = name.end()
        else:
            # The spec (12-interpolation.md) keeps a "$" that starts no variable:
            # "$2y$05$…" in a bcrypt hash, "cost $ 5".
            out.append("$")
            pos = dollar + 1


def _closing_brace(text: str, start: int) -> int:
    depth, pos = 1, start
    while pos < len(text):
        if text.startswith("$$", pos):
            pos += 2
            continue
        if text.startswith("${", pos):
            depth, pos = depth + 1, pos + 2
            continue
        if text[pos] == "}":
            depth -= 1
            if depth == 0:
                return pos
        pos += 1
    raise InterpolationError(f'invalid interpolation format in "{text}": missing "}}"')


def _lookup(name: str, lookup: Mapping[str, str], on_unset: Callable[[str], None]) -> str:
    value = lookup.get(name)
    if value is None:
        on_unset(name)
        return ""
    return value


def _expand_braced(body: str, lookup: Mapping[str, str], on_unset: Callable[[str], None], whole: str) -> str:
    name_match = _NAME.match(body)
    if not name_match:
        raise InterpolationError(f'invalid interpolation format in "{whole}": "${{{body}}}" has no variable name')
    name, rest = name_match.group(), body[name_match.end():]
    if not rest:
        return _lookup(name, lookup, on_unset)
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(f'invalid interpolation format in "{whole}": unknown operator in "${{{body}}}"')
    argument = rest[len(operator):]
    value = lookup.get(name)
    # ":" variants treat an empty value like an unset one.
    present = bool(value) if operator.startswith(":") else value is not None
    kind = operator[-1]
    if kind == "-":
        return value if present else _substitute(argument, lookup, on_unset, whole, braced_only=True)
    if kind == "+":
        return _substitute(argument, lookup, on_unset, whole, braced_only=True) if present else ""
    if present:
        return value
    detail = _substitute(argument, lookup, on_unset, whole, braced_only=True)
    raise InterpolationError(f"required variable {name} is missing a value" + (f": {detail}" if detail else ""))



def interpolate_tree(data: Any, lookup: Mapping[str, str], path: Path_,
                     error: Callable[[Path_, str], None], on_unset: Callable[[str], None]) -> Any:
    """Interpolates every string value (never a key) of a YAML tree."""
    if isinstance(data, str):
        if "$" not in data:
            return data
        try:
            return interpolate(data, lookup, on_unset)
        except InterpolationError as exc:
            error(path, str(exc))
            return data
    if isinstance(data, dict):
        return {k: interpolate_tree(v, lookup, path + (k,), error, on_unset) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate_tree(v, lookup, path + (i,), error, on_unset) for i, v in enumerate(data)]
    return data


def interpolate_found(found: list[tuple[Any, Any, Path_]], lookup: Mapping[str, str],
                      error: Callable[[Path_, str], None], on_unset: Callable[[str], None]) -> None:
    """interpolate_tree for a tree whose strings holding "$" are known already, in
    place: `found` lists (container, key or index, path of the container) in document
    order, as yamlsource.load_yaml notes them."""
    for container, key, path in found:
        try:
            container[key] = interpolate(container[key], lookup, on_unset)
        except InterpolationError as exc:
            error(path + (key,), str(exc))


_ENV_KEY = re.compile(r"[A-Za-z0-9_.\-]+")
_EXPORT = re.compile(r"export\s+")
# Escapes a double-quoted env value understands; `\$` is a literal `$` (written `$$` for interpolation).
_DOUBLE_QUOTED_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$$"}


def parse_env_file(text: str, file: str, lookup: Mapping[str, str],
                   raw: bool = False) -> tuple[dict[str, str], list[ComposeIssue]]:
    """An env file, as the Compose spec reads one: `KEY=VALUE` lines (optionally
    `export KEY=VALUE`); `#` starts a comment line, or an inline comment after a space;
    a bare `KEY` takes its value from `lookup`, or stays unset; single quotes are
    literal (but for `\\'`); double quotes understand \\n, \\r, \\t, \\\\, \\" and \\$
    and may span lines; unquoted and double-quoted values may use ${VAR} of lines above
    or of `lookup`. `raw` (env_file `format: raw`): values are taken as written."""
    values: dict[str, str] = {}
    issues: list[ComposeIssue] = []
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        start = number
        line = lines[number].strip()
        number += 1
        if not line or line.startswith("#"):
            continue
        line = _EXPORT.sub("", line, count=1)
        key, sep, value = line.partition("=")
        key = key.strip()
        if not _ENV_KEY.fullmatch(key):
            issues.append(ComposeIssue(file, "", start + 1, f'expected KEY=VALUE, found "{lines[start].strip()}"'))
            continue
        if not sep:
            if key in lookup:
                values[key] = lookup[key]
            continue
        value = value.lstrip()
        if raw:
            values[key] = value.rstrip()
            continue
        quote = value[:1]
        if quote in ("'", '"'):
            # A quoted value ends at its closing quote, which may be on a later line.
            while _closing_quote(value, quote) is None and number < len(lines):
                value += "\n" + lines[number]
                number += 1
        try:
            values[key] = _env_value(value, quote, {**lookup, **values})
        except InterpolationError as exc:
            issues.append(ComposeIssue(file, key, start + 1, str(exc)))
    return values, issues


def _closing_quote(value: str, quote: str) -> int | None:
    pos = 1
    while pos < len(value):
        if value[pos] == "\\":
            pos += 2
            continue
        if value[pos] == quote:
            return pos
        pos += 1
    return None


def _env_value(value: str, quote: str, lookup: Mapping[str, str]) -> str:
    if quote in ("'", '"'):
        end = _closing_quote(value, quote)
        if end is None:
            raise InterpolationError(f"unterminated quoted value {value.splitlines()[0]}")
        body = value[1:end]
        if quote == "'":
            return body.replace("\\'", "'")
        return interpolate(re.sub(r"\\(.)", lambda m: _DOUBLE_QUOTED_ESCAPES.get(m[1], m[0]), body), lookup)
    return interpolate(re.split(r"\s#", value, maxsplit=1)[0].rstrip(), lookup)
