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
    """Expands $VAR, ${VAR}, ${VAR:-default} and friends; `$$` is a literal `$`.
    Arguments of operators are expanded only when used, so an unused
    `${A:-${B:?required}}` default cannot fail."""
    out: list[str] = []
    pos = 0
    while True:
        dollar = text.find("$", pos)
        if dollar < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:dollar])
        following = text[dollar + 1: dollar + 2]
        if following == "$":
            out.append("$")
            pos = dollar + 2
        elif following == "{":
            end = _closing_brace(text, dollar + 2)
            out.append(_expand_braced(text[dollar + 2: end], lookup, on_unset, text))
            pos = end + 1
        else:
            name = _NAME.match(text, dollar + 1)
            if not name:
                raise InterpolationError(f'invalid interpolation format in "{text}": "$" must be followed by a name, "{{" or "$"')
            out.append(_lookup(name.group(), lookup, on_unset))
            pos = name.end()


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
        return value if present else interpolate(argument, lookup, on_unset)
    if kind == "+":
        return interpolate(argument, lookup, on_unset) if present else ""
    if present:
        return value
    detail = interpolate(argument, lookup, on_unset)
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


def parse_env_file(text: str, file: str, lookup: Mapping[str, str]) -> tuple[dict[str, str], list[ComposeIssue]]:
    """`KEY=VALUE` lines (optionally `export KEY=VALUE`); `#` comments; single quotes are
    literal, double quotes understand \\n, \\t, \\" and \\\\; unquoted and double-quoted
    values may use ${VAR} of lines above or of `lookup`."""
    values: dict[str, str] = {}
    issues: list[ComposeIssue] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            issues.append(ComposeIssue(file, "", number, f'expected KEY=VALUE, found "{raw.strip()}"'))
            continue
        try:
            values[key] = _env_value(value.strip(), {**lookup, **values})
        except InterpolationError as exc:
            issues.append(ComposeIssue(file, key, number, str(exc)))
    return values, issues


def _env_value(value: str, lookup: Mapping[str, str]) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        unescaped = re.sub(r'\\(.)', lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), value[1:-1])
        return interpolate(unescaped, lookup)
    return interpolate(value.split(" #", 1)[0].rstrip(), lookup)
