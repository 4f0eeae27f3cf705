"""`swarmlet events`: follow what changes in the cluster (GET /v1/events?follow=1).

Every manager serves the same events with the same cursors (swarmlet/api/events.py),
so when the manager it reads from goes away the command resumes on the next one from
the last cursor it printed: nothing is missed or printed twice.
"""
from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl
import time
import urllib.parse

import click

from swarmlet.api import errors
from swarmlet.api.events import EVENT_TYPES, Cursor, Point, parse_point
from swarmlet.cli.client import ApiError, Client, ClusterUnreachable, client_options, make_client

# How long the command keeps trying the managers after losing its stream before it
# gives up (a failover takes about a second; a restart a few).
RESUME_DEADLINE = 30.0
RESUME_PAUSE = 0.2


def _point(text: str | None, what: str) -> Point | None:
    if not text:
        return None
    try:
        return parse_point(text, what, now=time.time())  # a duration is measured back from this machine's now
    except errors.Invalid as err:
        raise click.BadParameter(str(err)) from None


def _types(filters: tuple[str, ...]) -> list[str]:
    types = []
    for item in filters:
        key, equals, value = item.partition("=")
        if key != "type" or not equals:
            raise click.BadParameter(f"{item!r}: the filter is type=TYPE ({', '.join(EVENT_TYPES)})")
        if value not in EVENT_TYPES:
            raise click.BadParameter(f"{value!r} is not an event type: {', '.join(EVENT_TYPES)}")
        types.append(value)
    return types


def format_event(event: dict) -> str:
    """As `docker events` prints: time, type, action, ID, then (name=…, attributes)."""
    moment = datetime.datetime.fromtimestamp(event["time"], datetime.timezone.utc).isoformat(timespec="microseconds")
    pairs = [f"name={event['name']}"] + [f"{k}={v}" for k, v in sorted(event["attributes"].items())
                                         if v not in (None, "", {}, [])]
    return f"{moment.replace('+00:00', 'Z')} {event['type']} {event['action']} {event['id']} ({', '.join(pairs)})"


class StreamLost(Exception):
    pass


def follow_events(client: Client, since: Point | None, until: Point | None, types: list[str]):
    """Each event (a dict) after ``since`` up to ``until`` (forever when None), from
    whichever manager answers, resuming on another from the last cursor on a loss."""
    if since is None:  # "from now": pin now to a cursor, so that a resume misses nothing before the first event
        since = Point(cursor=parse_point(client.call("GET", "/v1/events?limit=0")["cursor"], "cursor").cursor)
    hosts, turn, lost_at = client.hosts, 0, None
    while True:
        host = hosts[turn % len(hosts)]
        try:
            for event in _stream(client, host, since, until, types):
                lost_at = None
                since = Point(cursor=Cursor(*map(int, event["cursor"].split(":"))))
                yield event
            if until is not None:
                return
            raise StreamLost("the stream ended")
        except (StreamLost, OSError, socket.timeout, ssl.SSLError, http.client.HTTPException) as err:
            now = time.monotonic()
            lost_at = lost_at or now
            if now - lost_at > RESUME_DEADLINE:
                raise ClusterUnreachable(f"no manager resumed the event stream within {RESUME_DEADLINE:.0f}s "
                                         f"(last: {host}: {err})") from None
            turn += 1
            time.sleep(RESUME_PAUSE if turn % len(hosts) == 0 else 0)  # a pause once every manager was tried


def _stream(client: Client, host: str, since: Point, until: Point | None, types: list[str]):
    query = [("follow", "1"), ("since", str(since))] + ([("until", str(until))] if until else [])
    query += [("type", t) for t in types]
    connection = client.connection(host, timeout=None)  # a quiet cluster sends nothing for a long time
    try:
        connection.request("GET", "/v1/events?" + urllib.parse.urlencode(query))
        response = connection.getresponse()
        if response.status >= 400:
            raw = response.read()
            message = (json.loads(raw) if raw else {}).get("error", f"HTTP {response.status}")
            if response.status in (502, 503, 504):
                raise StreamLost(message)
            raise ApiError(response.status, message)
        for line in response:
            if not line.strip():
                continue
            item = json.loads(line)
            if "error" in item:  # the reader fell behind this manager's ring: resuming would leave a gap
                raise ApiError(410, item["error"])
            yield item
    finally:
        connection.close()


@click.command("events")
@click.option("--since", help="Start after this point: a cursor (INDEX:POSITION), an RFC 3339 or unix time, or a "
                              "duration ago (10m). Default: now.")
@click.option("--until", help="Stop at this point (same forms); default: follow until Ctrl-C.")
@click.option("--filter", "-f", "filters", multiple=True, metavar="type=TYPE",
              help=f"Only events of this type (repeatable): {', '.join(EVENT_TYPES)}.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for people, json for scripts (one event a line)")
@client_options
def events(since, until, filters, output_format, host, context_dir):
    """Stream what changes in the cluster: services, tasks, nodes, stacks, networks,
    secrets, configs, the cluster and its leader."""
    types = _types(filters)
    client = make_client(host, context_dir)
    try:
        for event in follow_events(client, _point(since, "--since"), _point(until, "--until"), types):
            click.echo(json.dumps(event, sort_keys=True) if output_format == "json" else format_event(event))
    except KeyboardInterrupt:
        pass
