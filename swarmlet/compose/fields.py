"""Small validating converters for Compose values.

A handler takes (ctx, path, value) and returns the normalised value, or None after
reporting an error (or when the value is null, which Compose treats as "not set").
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Any, Callable, Mapping

from swarmlet.compose import units
from swarmlet.compose.context import FileContext, expected
from swarmlet.compose.errors import Path_

Handler = Callable[[FileContext, Path_, Any], Any]

TRUE_WORDS = {"true", "yes", "y", "on"}
FALSE_WORDS = {"false", "no", "n", "off"}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scalar_text(value: Any) -> str:
    """A scalar as Compose writes it into a string field: true -> "true", 8080 -> "8080"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def string(ctx: FileContext, path: Path_, value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if is_number(value):
        return str(value)
    if value is not None:
        ctx.error(path, expected("a string", value))
    return None


def boolean(ctx: FileContext, path: Path_, value: Any) -> bool | None:
    # YAML 1.1 words (yes/no/on/off) are strings in Compose's YAML but accepted here.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in TRUE_WORDS | FALSE_WORDS:
        return value.lower() in TRUE_WORDS
    if value is not None:
        ctx.error(path, expected("a boolean (true or false)", value))
    return None


def integer(minimum: int = 0, maximum: int | None = None) -> Handler:
    def handler(ctx: FileContext, path: Path_, value: Any) -> int | None:
        number = value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value)  # interpolated values arrive as strings
        if value is None:
            return None
        if not isinstance(number, int) or isinstance(number, bool) \
                or number < minimum or (maximum is not None and number > maximum):
            what = "a non-negative integer" if minimum == 0 else f"an integer of at least {minimum}"
            if maximum is not None:
                what = f"an integer from {minimum} to {maximum}"
            ctx.error(path, expected(what, value))
            return None
        return number
    return handler


def ratio(ctx: FileContext, path: Path_, value: Any) -> float | None:
    number = units.parse_cpus(value)  # same syntax: a non-negative decimal
    if value is not None and (number is None or number > 1):
        ctx.error(path, expected("a decimal from 0 to 1", value))
        return None
    return number


_OCTAL_MODE = re.compile(r"0?[0-7]{1,4}")


def file_mode(ctx: FileContext, path: Path_, value: Any) -> int | None:
    """Permission bits: an octal string ("0440"), or a number as YAML reads it (an
    unquoted 0440 is octal, 440 is not), as compose-go's FileMode."""
    if isinstance(value, str) and _OCTAL_MODE.fullmatch(value):
        return int(value, 8)
    return integer(0, 0o7777)(ctx, path, value)


def choice(*allowed: str) -> Handler:
    def handler(ctx: FileContext, path: Path_, value: Any) -> str | None:
        if value in allowed:
            return value
        if value is not None:
            ctx.error(path, expected("one of " + ", ".join(allowed), value))
        return None
    return handler


def duration(ctx: FileContext, path: Path_, value: Any) -> str | None:
    ns = units.duration_value_ns(value)
    if ns is None:
        if value is not None:
            ctx.error(path, expected('a duration such as "1m30s" or "500ms"', value))
        return None
    return units.render_duration(ns)


def byte_size(ctx: FileContext, path: Path_, value: Any) -> int | None:
    size = units.parse_bytes(value)
    if size is None and value is not None:
        ctx.error(path, expected('a byte size such as "512M" or "1.5GB"', value))
    return size


def cpus(ctx: FileContext, path: Path_, value: Any) -> float | None:
    amount = units.parse_cpus(value)
    if amount is None and value is not None:
        ctx.error(path, expected('a decimal number of CPUs such as "0.5"', value))
    return amount


def ip_address(ctx: FileContext, path: Path_, value: Any) -> str | None:
    text = string(ctx, path, value)
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        ctx.error(path, expected("an IP address", value))
        return None


def _of_type(kind: type, what: str) -> Handler:
    def handler(ctx: FileContext, path: Path_, value: Any) -> Any:
        if isinstance(value, kind):
            return value
        if value is not None:
            ctx.error(path, expected(what, value))
        return None
    return handler


mapping = _of_type(dict, "a mapping")
sequence = _of_type(list, "a list")


def matching(pattern: re.Pattern[str], what: str) -> Handler:
    """A string that must match `pattern`."""
    def handler(ctx: FileContext, path: Path_, value: Any) -> str | None:
        text = string(ctx, path, value)
        if text is not None and not pattern.match(text):
            ctx.error(path, expected(what, value))
            return None
        return text
    return handler


def list_of(item: Handler, single_string: bool = False) -> Handler:
    """A list whose items go through `item`; optionally a lone string stands for [string]."""
    def handler(ctx: FileContext, path: Path_, value: Any) -> list | None:
        if single_string and isinstance(value, str):
            value = [value]
        items = sequence(ctx, path, value)
        if items is None:
            return None
        converted = [item(ctx, path + (i,), v) for i, v in enumerate(items)]
        return [v for v in converted if v is not None]
    return handler


string_list = list_of(string)


def string_map(keep_unset: bool = False) -> Handler:
    """`["K=V", "K"]` or `{K: V}` -> {K: V}. A bare `K` (or `K: null`) is None when
    keep_unset (environment: taken from the shell later), else ""."""
    def handler(ctx: FileContext, path: Path_, value: Any) -> dict[str, str | None] | None:
        result: dict[str, str | None] = {}
        if isinstance(value, list):
            for i, entry in enumerate(value):
                text = string(ctx, path + (i,), entry)
                if text is not None:
                    key, sep, val = text.partition("=")
                    result[key] = val if sep else (None if keep_unset else "")
            return result
        entries = mapping(ctx, path, value)
        if entries is None:
            return None
        for key, val in entries.items():
            if val is None:
                result[key] = None if keep_unset else ""
            elif isinstance(val, (dict, list)):
                ctx.error(path + (key,), expected("a string, number or boolean", val))
            else:
                result[key] = scalar_text(val)
        return result
    return handler


def unknown_key_message(key: str, allowed: dict) -> str:
    names = sorted(allowed)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    what = "one of " + ", ".join(names) if len(names) <= 12 else "a known key"
    return f'unknown key "{key}"{hint}; expected {what}'


def fields(ctx: FileContext, path: Path_, value: Any, handlers: dict[str, Handler],
           ignored: Mapping[str, str] = {}) -> dict | None:
    """Runs each key of a mapping through its handler; `x-` keys are extension fields
    (dropped), `ignored` keys (key -> why) are dropped with a warning, anything else is
    an error."""
    if value.__class__ is not dict:  # the common case skips a call
        value = mapping(ctx, path, value)
        if value is None:
            return None
    result = {}
    known = handlers.get
    for key, item in value.items():
        handler = known(key)
        if handler is None:
            if key.startswith("x-"):
                continue
            if key in ignored:
                ctx.warn(path + (key,), f'"{key}" is ignored: {ignored[key]}')
                continue
            ctx.error(path + (key,), unknown_key_message(key, handlers))
            continue
        converted = handler(ctx, path + (key,), item)
        if converted is not None:
            result[key] = converted
    return result


def section(handlers: dict[str, Handler], ignored: Mapping[str, str] = {}) -> Handler:
    """A handler for a nested mapping with a fixed set of keys."""
    return lambda ctx, path, value: fields(ctx, path, value, handlers, ignored)
