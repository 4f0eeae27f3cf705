"""Placement constraint and preference expressions.

Constraints look like `node.labels.zone==a` or `node.role!=manager`. As in
Swarm, values compare case-insensitively, and a constraint on a label the node
does not have fails for `==` and passes for `!=`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

# Fixed keys and the node attribute each reads.
_FIXED_KEYS = {
    "node.id": "node_id",
    "node.hostname": "hostname",
    "node.role": "role",
    "node.platform.os": "platform_os",
    "node.platform.arch": "platform_arch",
}
# Prefixed keys and the node label dictionary each reads.
_LABEL_PREFIXES = {"node.labels.": "labels", "engine.labels.": "engine_labels"}

_LABEL_NAME = re.compile(r"[A-Za-z0-9_\-.]+")
_VALUE = re.compile(r"[A-Za-z0-9:\-_\s.*()?+\[\]\\^$|/]+")
_OPERATORS = ("==", "!=")
_KNOWN_KEYS_HINT = ", ".join([*_FIXED_KEYS, "node.labels.<name>", "engine.labels.<name>"])

NodeField = Callable[[object], "str | None"]


class PlacementSpecError(ValueError):
    """A constraint or placement preference that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Constraint:
    expression: str
    key: str
    equal: bool  # True for ==, False for !=
    value: str
    read: NodeField

    def matches(self, node) -> bool:
        actual = self.read(node)
        if actual is None:
            # Missing label: only a "not equal" constraint is satisfied.
            return not self.equal
        return (actual.casefold() == self.value.casefold()) == self.equal


def field_reader(key: str) -> NodeField | None:
    """A function reading `key` from a node, or None if the key is not supported."""
    if key in _FIXED_KEYS:
        attribute = _FIXED_KEYS[key]
        return lambda node: getattr(node, attribute)
    for prefix, attribute in _LABEL_PREFIXES.items():
        name = key[len(prefix):]
        if key.startswith(prefix) and _LABEL_NAME.fullmatch(name):
            return lambda node: getattr(node, attribute).get(name)
    return None


@lru_cache(maxsize=4096)
def parse_constraint(expression: str) -> Constraint:
    """Parse one `KEY==VALUE` / `KEY!=VALUE` expression, or raise PlacementSpecError."""
    found = [op for op in _OPERATORS if op in expression]
    if len(found) != 1 or expression.count(found[0]) != 1:
        raise PlacementSpecError(f"invalid constraint {expression!r}: expected exactly one == or !=")
    operator = found[0]
    key, value = (part.strip() for part in expression.split(operator))
    read = field_reader(key)
    if read is None:
        raise PlacementSpecError(f"invalid constraint {expression!r}: unknown key {key!r} (use {_KNOWN_KEYS_HINT})")
    if not _VALUE.fullmatch(value):
        raise PlacementSpecError(f"invalid constraint {expression!r}: missing or invalid value")
    return Constraint(expression, key, operator == "==", value, read)


def parse_constraints(expressions) -> tuple[Constraint, ...]:
    return tuple(parse_constraint(expression) for expression in expressions)


@lru_cache(maxsize=1024)
def parse_preference(key: str) -> NodeField:
    """Reader for a spread preference key such as `node.labels.zone`."""
    read = field_reader(key.strip())
    if read is None:
        raise PlacementSpecError(f"invalid placement preference {key!r}: use {_KNOWN_KEYS_HINT}")
    return read


def parse_preferences(keys) -> tuple[NodeField, ...]:
    return tuple(parse_preference(key) for key in keys)
