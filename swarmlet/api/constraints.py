"""Placement constraint and preference expressions: one parser for the Compose loader
(which refuses what cannot be scheduled, with file, key and line) and the scheduler.

Constraints look like `node.labels.zone==a` or `node.role!=manager`. As in SwarmKit
(manager/constraint/constraint.go), values compare case-insensitively, a value holds
only letters, digits, spaces and `: - _ . * ( ) ? + [ ] \\ ^ $ | /` (so no comma), and a
constraint on a label the node does not have fails for `==` and passes for `!=`.

Spread preferences name what to spread tasks over. SwarmKit accepts any descriptor
but spreads only over `node.labels.*` and `engine.labels.*`; another one (`node.id`)
puts every node in one group, so it has no effect.
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
NODE_ROLES = ("manager", "worker")

_LABEL_NAME = re.compile(r"[A-Za-z0-9_\-.]+")
_VALUE = re.compile(r"[A-Za-z0-9:\-_\s.*()?+\[\]\\^$|/]+")
_VALUE_CHARACTERS = r"letters, digits, spaces and : - _ . * ( ) ? + [ ] \ ^ $ | /"
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

    @property
    def canonical(self) -> str:
        """The expression without the spaces around key, operator and value."""
        return f"{self.key}{'==' if self.equal else '!='}{self.value}"


def _label_reader(key: str) -> NodeField | None:
    for prefix, attribute in _LABEL_PREFIXES.items():
        name = key[len(prefix):]
        if key.startswith(prefix) and _LABEL_NAME.fullmatch(name):
            return lambda node: getattr(node, attribute).get(name)
    return None


def field_reader(key: str) -> NodeField | None:
    """A function reading `key` from a node, or None if the key is not supported."""
    if key in _FIXED_KEYS:
        attribute = _FIXED_KEYS[key]
        return lambda node: getattr(node, attribute)
    return _label_reader(key)


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
        shown = f" {value!r}" if value else ""
        raise PlacementSpecError(f"invalid constraint {expression!r}: missing or invalid value{shown} "
                                 f"(a value holds {_VALUE_CHARACTERS} only)")
    if key == "node.role" and value.casefold() not in NODE_ROLES:
        raise PlacementSpecError(f"invalid constraint {expression!r}: node.role is manager or worker, not {value!r}")
    return Constraint(expression, key, operator == "==", value, read)


def parse_constraints(expressions) -> tuple[Constraint, ...]:
    return tuple(parse_constraint(expression) for expression in expressions)


def spreads(descriptor: str) -> bool:
    """Whether a spread preference over `descriptor` spreads anything (labels only)."""
    return _label_reader(descriptor.strip()) is not None


def _one_group(node) -> None:
    return None


@lru_cache(maxsize=1024)
def parse_preference(descriptor: str) -> NodeField:
    """Reader of what a spread preference such as `node.labels.zone` groups nodes by."""
    if not descriptor.strip():
        raise PlacementSpecError("invalid placement preference '': expected a descriptor such as node.labels.zone")
    return _label_reader(descriptor.strip()) or _one_group


def parse_preferences(descriptors) -> tuple[NodeField, ...]:
    return tuple(parse_preference(descriptor) for descriptor in descriptors)
