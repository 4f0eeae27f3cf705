"""Compose quantities: durations (Go syntax), byte sizes (Docker's RAMInBytes) and CPUs."""
from __future__ import annotations

import re
from functools import lru_cache

_NS_PER_UNIT = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h)")
_BYTES = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?$", re.IGNORECASE)
_BYTE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_CPUS = re.compile(r"\d+(\.\d*)?|\.\d+")


# Stacks repeat the same few durations ("30s", "5s") hundreds of times: both ways
# are pure functions of one string or int, so they are cached.
@lru_cache(maxsize=4096)
def parse_duration_ns(text: str) -> int | None:
    """"1m30s" -> 90_000_000_000; "0" -> 0; None when not a non-negative Go duration."""
    if text == "0":
        return 0
    if not text or _DURATION.sub("", text):
        return None
    total = 0
    for part in _DURATION.findall(text):
        unit = part.lstrip("0123456789.")
        number = part[: len(part) - len(unit)]
        total += round(float(number) * _NS_PER_UNIT[unit])
    return total


def duration_value_ns(value: object) -> int | None:
    """A YAML duration value: a Go duration string, or a plain number of seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return round(value * 1_000_000_000) if value >= 0 else None
    if isinstance(value, str):
        return parse_duration_ns(value.strip())
    return None


@lru_cache(maxsize=4096)
def render_duration(ns: int) -> str:
    """Inverse of parse_duration_ns, in the largest exact units: 90 s -> "1m30s"."""
    if ns == 0:
        return "0s"
    text = ""
    for unit in ("h", "m", "s", "ms", "us", "ns"):
        count, ns = divmod(ns, _NS_PER_UNIT[unit])
        if count:
            text += f"{count}{unit}"
    return text


def seconds(ns: int) -> float:
    return ns / 1_000_000_000


def parse_bytes(value: object) -> int | None:
    """512 -> 512; "512M" -> 536870912; "1.5GB" -> 1610612736 (binary multiples, as Docker)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _BYTES.match(value.strip())
    if not match:
        return None
    number, unit = match.groups()
    return int(float(number) * 1024 ** _BYTE_POWERS[unit.lower()])


def parse_cpus(value: object) -> float | None:
    """0.5, "0.5", 2 -> float CPUs; None when not a non-negative decimal."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str) and _CPUS.fullmatch(value.strip()):
        return float(value)
    return None
