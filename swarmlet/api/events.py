"""Cluster events: what ``GET /v1/events`` and ``swarmlet events`` speak.

An event is derived from one change of the replicated store (manager/events.py), so
every manager derives the same events with the same cursors: the store index of the
transaction and the event's position among that transaction's events,
``"<index>:<position>"``. A client that read up to a cursor on one manager resumes on
any other with ``since=<cursor>`` and gets exactly the events after it.

Points in the stream (``since`` / ``until``) are a cursor, an RFC 3339 time, a unix
time, or (on the CLI, as ``docker events``) a duration ago such as ``10m``.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

from swarmlet.api import errors

EVENT_TYPES = ("service", "task", "node", "stack", "network", "secret", "config", "cluster", "leader")
EVENT_ACTIONS = ("create", "update", "remove", "state", "up", "down", "leader")
# follow=0 answers the newest this many events after ``since`` (GET /v1/events?limit=).
DEFAULT_EVENT_LIMIT = 100


@dataclass(frozen=True, order=True)
class Cursor:
    """A place in the event stream; ``Cursor(i, p)`` is the ``p``-th event of the
    transaction at store index ``i``. Ordered as the stream is."""

    index: int
    position: int = 0

    def __str__(self) -> str:
        return f"{self.index}:{self.position}"

    @classmethod
    def after_index(cls, index: int) -> "Cursor":
        """The place after every event of the transaction at ``index``."""
        return cls(index, _LAST_POSITION)


_LAST_POSITION = 2 ** 31  # no transaction holds this many operations (store: MAX_TRANSACTION_OPS)
_CURSOR = re.compile(r"^(\d+):(\d+)$")
_UNIX_TIME = re.compile(r"^\d+(\.\d+)?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Point:
    """``since`` or ``until``: exactly one of a cursor or a unix time."""

    cursor: Cursor | None = None
    time: float | None = None

    def __str__(self) -> str:
        return str(self.cursor) if self.cursor is not None else repr(self.time)


def parse_point(text: str, what: str, now: float | None = None) -> Point:
    """A cursor (``12:0``), an RFC 3339 time, a unix time, or, when ``now`` is given, a
    duration before it (``10m``, ``1h``, ``30s``). Refused with an error naming ``what``."""
    text = text.strip()
    match = _CURSOR.match(text)
    if match:
        return Point(cursor=Cursor(int(match[1]), int(match[2])))
    if _UNIX_TIME.match(text):
        return Point(time=float(text))
    match = _DURATION.match(text)
    if match and now is not None:
        return Point(time=now - float(match[1]) * _DURATION_SECONDS[match[2]])
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        moment = None
    if moment is not None and "T" in text.upper():
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return Point(time=moment.timestamp())
    durations = ", a duration ago (10m, 1h)" if now is not None else ""
    raise errors.Invalid(f"{what} {text!r} is not a cursor (INDEX:POSITION, e.g. 1532:0), an RFC 3339 time "
                         f"(2026-12-01T15:00:00Z), a unix time{durations}")


@dataclass(frozen=True)
class Event:
    """One thing that happened, as the API sends it (``to_dict``)."""

    cursor: Cursor
    time: float  # the proposer's (normally the leader's) clock in the transaction
    type: str
    action: str
    id: str
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"cursor": str(self.cursor), "index": self.cursor.index, "time": self.time, "type": self.type,
                "action": self.action, "id": self.id, "name": self.name, "attributes": dict(self.attributes)}


def check_types(types: list[str]) -> list[str]:
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise errors.Invalid(f"unknown event type {', '.join(map(repr, unknown))}: the types are "
                             f"{', '.join(EVENT_TYPES)}")
    return types


class EventsGone(errors.Gone):
    """``since`` is older than what this manager still holds (HTTP 410); ``oldest`` is the
    oldest cursor it can serve after (None: it holds no event yet)."""

    def __init__(self, message: str, oldest: Cursor | None):
        super().__init__(message)
        self.oldest = oldest
