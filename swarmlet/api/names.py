"""The one rule for the names of things in the cluster (pure), used by the API and the
Compose loader alike.

Object names (stacks, services, networks, volumes, secrets, configs, node hostnames)
follow Docker's: ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``, at most 64 characters (SwarmKit's
limit for secrets and configs, Docker's for the names it checks). So a name is never a
path (``../../etc/x``), never empty, never carries whitespace or a control character.

A stack's objects are stored as ``<stack>_<name>`` (as ``docker stack deploy`` names
them), and that whole name obeys the rule too. A service's whole name is also a DNS
label (SwarmKit: "name must be valid as a DNS name component"; its tasks and VIP are
found by it), so it has at most 63 characters.

Label keys follow moby's ``ValidateLabel``: not empty, no whitespace; swarmlet also
refuses control characters and keys over 255 characters (no Docker rule: a bound so
that a key always fits a message and a log line).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Mapping

from swarmlet.api.errors import Invalid

MAX_NAME_LENGTH = 64
MAX_SERVICE_NAME_LENGTH = 63  # a DNS label
MAX_LABEL_KEY_LENGTH = 255
NAME_RULE = f"[a-zA-Z0-9][a-zA-Z0-9_.-]*, at most {MAX_NAME_LENGTH} characters"
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# The separator docker stack deploy puts between a stack's name and its objects' names.
STACK_SEPARATOR = "_"


class InvalidName(Invalid):
    """A name that breaks the rule; the message names the field, the name and the rule."""


def name_problem(name: object, limit: int = MAX_NAME_LENGTH) -> str | None:
    """Why ``name`` is not a valid object name, or None when it is."""
    if not isinstance(name, str):
        return f"expected a string, found {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > limit:
        return f"has {len(name)} characters; at most {limit}"
    if not _NAME.fullmatch(name):
        return "must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
    return None


def check_name(field: str, name: object, limit: int = MAX_NAME_LENGTH) -> str:
    """``name`` if valid, else ``InvalidName`` naming ``field`` (e.g. "secret name")."""
    problem = name_problem(name, limit)
    if problem is not None:
        rule = NAME_RULE if limit == MAX_NAME_LENGTH else f"[a-zA-Z0-9][a-zA-Z0-9_.-]*, at most {limit} characters"
        raise InvalidName(f"invalid {field} {name!r}: {problem} (the rule: {rule})")
    return name


def label_key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"expected a string, found {type(key).__name__}"
    if not key.strip():
        return "must not be empty"
    if len(key) > MAX_LABEL_KEY_LENGTH:
        return f"has {len(key)} characters; at most {MAX_LABEL_KEY_LENGTH}"
    if any(c.isspace() for c in key):
        return "must not contain whitespace"
    if any(unicodedata.category(c).startswith("C") for c in key):
        return "must not contain control characters"
    return None


def check_labels(field: str, labels: object) -> dict[str, str]:
    """``labels`` if every key is valid and every value a string, else ``InvalidName``
    naming ``field`` (e.g. "secret labels") and the key."""
    if not isinstance(labels, Mapping):
        raise InvalidName(f"invalid {field}: expected an object of key: value, found {type(labels).__name__}")
    for key, value in labels.items():
        problem = label_key_problem(key)
        if problem is not None:
            raise InvalidName(f"invalid {field}: label key {key!r} {problem} (moby's rule: a key is not empty and "
                              "holds no whitespace)")
        if not isinstance(value, str):
            raise InvalidName(f"invalid {field}: the value of label {key!r} must be a string, "
                              f"found {type(value).__name__}")
    return dict(labels)


def scoped(stack: str, name: str) -> str:
    """The cluster-wide name of a stack's object."""
    return f"{stack}{STACK_SEPARATOR}{name}"


def check_stack_names(stack: str, services: Iterable[str], cluster_names: Mapping[str, Mapping[str, str]]) -> None:
    """The stack's name and the whole names its objects get in the cluster:
    ``<stack>_<service>`` within a DNS label, and each network's, secret's, config's and
    volume's cluster name (``<stack>_<name>``, or its explicit or external name) within
    the name rule. ``cluster_names``: kind (plural) -> {name in the file: cluster name}."""
    check_name("stack name", stack)
    for service in services:
        check_name(f"service name (stack {stack}, service {service})", scoped(stack, service),
                   MAX_SERVICE_NAME_LENGTH)
    for kind, names in cluster_names.items():
        for name, cluster_name in names.items():
            check_name(f"{kind.rstrip('s')} name (stack {stack}, {kind.rstrip('s')} {name})", cluster_name)
