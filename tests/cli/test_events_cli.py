"""`swarmlet events`' own parts: filters, the text line, and resuming from the last cursor
when a manager's stream breaks (against stand-in streams: the real ones in
tests/cluster/test_observe.py)."""
from __future__ import annotations

import http.client

import click
import pytest

from swarmlet.api.events import Cursor, Point
from swarmlet.cli import events as cli_events


def test_filters_are_type_only_and_named_types():
    assert cli_events._types(("type=service", "type=task")) == ["service", "task"]
    for bad in ("kind=service", "type=pods", "service"):
        with pytest.raises(click.BadParameter):
            cli_events._types((bad,))


def test_a_text_line_reads_like_docker_events_and_leaves_out_empty_attributes():
    line = cli_events.format_event({"cursor": "7:1", "index": 7, "time": 0.5, "type": "task", "action": "state",
                                    "id": "t1", "name": "web.1",
                                    "attributes": {"from": "running", "to": "failed", "error": "", "slot": 1}})
    assert line == "1970-01-01T00:00:00.500000Z task state t1 (name=web.1, from=running, slot=1, to=failed)"


class FakeClient:
    hosts = ["m1", "m2"]


def test_a_broken_stream_resumes_on_the_next_manager_from_the_last_cursor(monkeypatch):
    asked: list[tuple[str, str]] = []

    def stream(client, host, since, until, types):
        asked.append((host, str(since)))
        if host == "m1":
            yield {"cursor": "5:0"}
            yield {"cursor": "5:1"}
            raise http.client.IncompleteRead(b"")  # the manager died mid-stream
        yield {"cursor": "6:0"}
    monkeypatch.setattr(cli_events, "_stream", stream)
    got = [e["cursor"] for e in cli_events.follow_events(FakeClient(), Point(cursor=Cursor(4, 0)),
                                                         Point(cursor=Cursor(6, 0)), [])]
    assert got == ["5:0", "5:1", "6:0"]
    assert asked == [("m1", "4:0"), ("m2", "5:1")]
