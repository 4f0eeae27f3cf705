"""Events from the store's changes (manager/events.py): the pure derivation, the ring's
cursors and refusals, and follow over the real state machine (the in-memory store)."""
from __future__ import annotations

import asyncio

import pytest

from swarmlet.api import errors
from swarmlet.api.events import Cursor, EventsGone, Point, parse_point
from swarmlet.manager.events import EventLog, EventRing, events_of
from swarmlet.store.state import StoreState, encode_transaction


def apply(state: StoreState, ops: list[dict], ts: float = 100.0):
    applied = state.apply(encode_transaction("", ts, ops))
    assert applied.result["ok"], applied.result
    return events_of(applied.index, applied.timestamp, applied.changes)


def task_op(op: str, state: str, version: int | None = None, err: str = "", node: str = "n1") -> dict:
    body = {"op": op, "kind": "task", "id": "t1",
            "spec": {"service_id": "s1", "service_name": "web_web", "slot": 2, "node_id": node},
            "status": {"state": state, "err": err}}
    if version is not None:
        body["version"] = version
    return body


def test_task_state_changes_carry_from_to_and_the_error_and_other_writes_are_no_events():
    state = StoreState()
    (created,) = apply(state, [task_op("create", "pending")])
    assert (created.type, created.action, created.name) == ("task", "state", "web_web.2")
    assert created.attributes == {"from": None, "to": "pending", "service": "web_web", "node": "n1", "slot": 2,
                                  "error": ""}
    version = state.get("task", "t1")["version"]
    assert apply(state, [task_op("update", "pending", version, node="n2")]) == []  # same state: no event
    version = state.get("task", "t1")["version"]
    (failed,) = apply(state, [task_op("update", "failed", version, err="exit code 1")], ts=123.5)
    assert failed.attributes["from"] == "pending" and failed.attributes["to"] == "failed"
    assert failed.attributes["error"] == "exit code 1"
    assert failed.time == 123.5 and failed.cursor == Cursor(3, 0)
    (removed,) = apply(state, [{"op": "delete", "kind": "task", "id": "t1", "version": state.get("task", "t1")["version"]}])
    assert removed.action == "remove"


def test_node_up_and_down_and_no_secret_or_cluster_data_in_events():
    state = StoreState()
    (node,) = apply(state, [{"op": "create", "kind": "node", "id": "n1", "spec": {"role": "worker"},
                             "status": {"state": "unknown", "hostname": "w1"}}])
    assert (node.action, node.name) == ("create", "w1")
    version = state.get("node", "n1")["version"]
    (up,) = apply(state, [{"op": "update", "kind": "node", "id": "n1", "version": version,
                           "status": {"state": "ready", "hostname": "w1"}}])
    assert up.action == "up" and up.attributes["from"] == "unknown"
    version = state.get("node", "n1")["version"]
    (down,) = apply(state, [{"op": "update", "kind": "node", "id": "n1", "version": version,
                             "status": {"state": "down", "hostname": "w1", "message": "no heartbeat"}}])
    assert down.action == "down" and down.attributes["message"] == "no heartbeat"
    version = state.get("node", "n1")["version"]
    (label,) = apply(state, [{"op": "update", "kind": "node", "id": "n1", "version": version,
                              "spec": {"role": "worker", "labels": {"a": "b"}}}])
    assert label.action == "update"
    events = apply(state, [
        {"op": "create", "kind": "secret", "id": "sec", "spec": {"name": "db_pw", "data": b"hunter2"}},
        {"op": "create", "kind": "cluster", "id": "c", "spec": {"name": "default", "ca_key": "PRIVATE"}}])
    assert [(e.type, e.action, e.name) for e in events] == [("secret", "create", "db_pw"),
                                                              ("cluster", "create", "default")]
    assert [e.cursor for e in events] == [Cursor(events[0].cursor.index, 0), Cursor(events[0].cursor.index, 1)]
    text = repr([e.to_dict() for e in events])
    assert "hunter2" not in text and "PRIVATE" not in text


def test_stack_create_update_and_one_remove_and_history_pruning_is_no_removal():
    state = StoreState()
    rev = lambda n: {"op": "create", "kind": "stack_revision", "id": f"web@{n}", "spec": {"stack": "web", "number": n}}
    assert [(e.type, e.action) for e in apply(state, [rev(1)])] == [("stack", "create")]
    # a deploy that drops the oldest revision is an update, not a removal
    first = state.get("stack_revision", "web@1")
    events = apply(state, [rev(2), {"op": "delete", "kind": "stack_revision", "id": "web@1", "version": first["version"]}])
    assert [(e.type, e.action) for e in events] == [("stack", "update")]
    apply(state, [rev(3)])
    events = apply(state, [{"op": "delete", "kind": "stack_revision", "id": r["id"], "version": r["version"]}
                           for r in state.list("stack_revision")])
    assert [(e.type, e.action, e.name) for e in events] == [("stack", "remove", "web")]


def test_service_and_leader_events():
    state = StoreState()
    (service,) = apply(state, [{"op": "create", "kind": "service", "id": "s1", "spec": {
        "name": "web_web", "labels": {"com.docker.stack.namespace": "web"}, "mode": "replicated", "replicas": 3,
        "container": {"image": "busybox"}}}])
    assert service.attributes == {"stack": "web", "mode": "replicated", "replicas": 3, "image": "busybox"}
    (leader,) = apply(state, [{"op": "create", "kind": "leadership", "id": "leadership",
                               "spec": {"address": "127.0.0.2:2378"}}])
    assert (leader.type, leader.action, leader.name) == ("leader", "leader", "127.0.0.2:2378")


def ring_with(count: int, capacity: int) -> EventRing:
    ring = EventRing(capacity)
    state = StoreState()
    for n in range(count):
        applied = state.apply(encode_transaction("", 100.0, [
            {"op": "create", "kind": "config", "id": f"c{n}", "spec": {"name": f"c{n}"}},
            {"op": "create", "kind": "network", "id": f"n{n}", "spec": {"name": f"n{n}"}}]))
        ring.add(applied.index, applied.timestamp, applied.changes)
        if n == count - 3:
            assert ring.head == Cursor(applied.index, 1)  # read before the rest: derived early, memoised
    return ring


def test_the_ring_serves_exactly_what_follows_a_cursor_and_refuses_a_cursor_it_no_longer_covers():
    ring = ring_with(10, capacity=8)  # 20 changes, the newest 8 kept: indexes 7..10
    assert ring.held_changes == 8
    assert [str(e.cursor) for e in ring.after(Point(cursor=Cursor(9, 0)))] == ["9:1", "10:0", "10:1"]
    assert [e.type for e in ring.after(Point(cursor=Cursor(9, 0)), types=["config"])] == ["config"]
    assert [str(e.cursor) for e in ring.after(Point(cursor=Cursor(7, 0)), until=Point(cursor=Cursor(8, 0)))] == \
        ["7:1", "8:0"]
    floor = Cursor.after_index(6)
    assert ring.floor == floor
    assert len(ring.after(Point(cursor=floor))) == 8  # from the floor itself: nothing missing
    assert len(ring.after(Point(cursor=Cursor(7, 0)))) == 7
    with pytest.raises(EventsGone) as gone:
        ring.after(Point(cursor=Cursor(6, 1)))
    assert str(floor) in str(gone.value) and "its oldest event is 7:0" in str(gone.value)
    assert gone.value.oldest == floor
    ring.reset(40)
    with pytest.raises(EventsGone):
        ring.after(Point(cursor=Cursor(10, 1)))
    assert ring.after(Point(cursor=Cursor.after_index(40))) == []


def test_points_parse_as_cursors_times_and_durations_and_anything_else_is_refused():
    assert parse_point("12:3", "since") == Point(cursor=Cursor(12, 3))
    assert parse_point("1764600000.5", "since") == Point(time=1764600000.5)
    assert parse_point("2026-12-01T15:00:00Z", "until").time == 1796137200.0
    assert parse_point("10m", "since", now=1000.0) == Point(time=400.0)
    for bad in ("10m", "yesterday", "12:x", "2026-13-01T00:00:00Z"):
        with pytest.raises(errors.Invalid, match="since"):
            parse_point(bad, "since")


async def test_follow_streams_new_events_in_order_and_stops_at_until(store):
    log = EventLog(store)
    log.start()
    try:
        await store.add("config", "a", {"name": "a"})
        await asyncio.wait_for(_until(lambda: log.ring.delivered_index >= store.index), 5)
        start, until = log.ring.head, Cursor(store.index + 2, 0)  # through the second add below
        seen: list = []

        async def follow():
            async for event in log.follow(Point(cursor=start), Point(cursor=until), ["config"]):
                seen.append(event)
        follower = asyncio.ensure_future(follow())
        await asyncio.sleep(0)  # one turn of the loop: the follower reads the (empty) backlog and waits
        assert not follower.done() and seen == []
        await store.add("network", "n", {"name": "n"})
        await store.add("config", "b", {"name": "b"})
        await store.add("config", "c", {"name": "c"})  # past until
        await asyncio.wait_for(follower, 5)
        assert [e.name for e in seen] == ["b"]
        page = log.read(None, None, [], limit=2)
        assert [e["name"] for e in page["events"]] == ["b", "c"] and page["cursor"] == page["events"][-1]["cursor"]
    finally:
        await log.stop()
    assert store.subscribers == 0


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.01)
