"""The session's wire format: every message survives the trip, and nothing malformed
gets past ``unpack``."""
from __future__ import annotations

import msgpack
import pytest

from swarmlet.api import session
from swarmlet.api.session import (MAX_MESSAGE_SIZE, AssignmentChanges, Assignments, AssignmentSet, OutOfSequence,
                                  Heartbeat, HeartbeatAck, Hello, Log, LogEnd, Logs,
                                  LogsCancel, MessageType, NetworkPlaneUpdate, ProtocolError, Redirect, Status, UnknownMessage, Welcome,
                                  pack, unpack)

EXAMPLES = [
    Hello(description={"hostname": "n1", "resources": {"nano_cpus": 2_000_000_000}}),
    Hello(description={}, protocol=2),
    Welcome(heartbeat_period=1.0, managers=["10.0.0.1:2377"], node={"spec": {"role": "worker"}}),
    HeartbeatAck(heartbeat_period=2.5, managers=[], node=None),
    Redirect(leader="10.0.0.1:2377"), Redirect(leader=None), Heartbeat(),
    Assignments(tasks=[{"id": "t1", "spec": {"node_id": "n1"}, "phase": "new"}],
                secrets={"app_db": {"data": b"\x00pw", "id": "app_db"}}, configs={}),
    AssignmentChanges(sequence=3, applies_to=2, tasks=[{"id": "t2", "spec": {}, "phase": "active"}],
                      removed=["t1"], secrets={"s": {"data": b"pw", "id": "s1"}}, removed_configs=["c"]),
    Status(updates=[{"task_id": "t1", "status": {"state": "running", "exit_code": None}}]),
    Logs("r1", "t1", tail=10, follow=True), Logs("r1", "t1"), LogsCancel("r1", "t1"),
    Log("r1", "t1", lines=["a", "b"]), LogEnd("r1", "t1"), LogEnd("r1", "t1", error="no such container"),
    NetworkPlaneUpdate(plane={"node_address": "10.99.0.2", "version": 7, "networks": [], "ingress": []}),
]


def test_every_message_type_has_one_class():
    assert sorted(session.MESSAGES) == sorted(t.value for t in MessageType)
    assert {type(m).TYPE for m in EXAMPLES} == set(MessageType)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_a_message_survives_the_wire(message):
    assert unpack(pack(message)) == message


def test_the_wire_is_a_map_with_a_type():
    assert msgpack.unpackb(pack(LogsCancel("r1", "t1"))) == {"type": "logs_cancel", "request_id": "r1", "task_id": "t1"}


def test_fields_a_newer_peer_adds_are_ignored_and_missing_optional_ones_defaulted():
    wire = msgpack.packb({"type": "welcome", "managers": ["m:1"], "future_field": 1})
    assert unpack(wire) == Welcome(managers=["m:1"])


@pytest.mark.parametrize("wire, complaint", [
    (b"\xc1", "not msgpack"),
    (msgpack.packb(["hello"]), "must be a map"),
    (msgpack.packb({"description": {}}), "must be a map with a 'type'"),
    (msgpack.packb({"type": "logs", "task_id": "t"}), "'request_id' is missing"),
    (msgpack.packb({"type": "hello", "description": "me"}), "'description' is not dict"),
    (msgpack.packb({"type": "welcome", "heartbeat_period": True}), "'heartbeat_period'"),
    (msgpack.packb({"type": "status", "updates": [{"task_id": "t1"}]}), "'updates'"),
    (msgpack.packb({"type": "status", "updates": [{"task_id": 7, "status": {}}]}), "'updates'"),
    (msgpack.packb({"type": "log", "request_id": "r", "task_id": "t", "lines": ["ok", 3]}), "'lines'"),
    (msgpack.packb({"type": "assignments", "secrets": {"s": {"data": "text", "id": "s"}}}), "'secrets'"),
])
def test_a_malformed_frame_is_refused(wire, complaint):
    with pytest.raises(ProtocolError, match=complaint):
        unpack(wire)


def test_an_unknown_type_is_told_apart_from_a_malformed_frame():
    with pytest.raises(UnknownMessage) as unknown:
        unpack(msgpack.packb({"type": "gossip"}))
    assert unknown.value.type == "gossip" and isinstance(unknown.value, ProtocolError)


def test_a_frame_over_the_limit_is_refused_before_decoding():
    with pytest.raises(ProtocolError, match="at most"):
        unpack(b"\x00" * (MAX_MESSAGE_SIZE + 1))


def test_a_hello_without_a_protocol_is_an_older_nodes():
    assert unpack(msgpack.packb({"type": "hello", "description": {}})).protocol == 1


def task(task_id: str, phase: str = "new", **spec) -> dict:
    return {"id": task_id, "spec": {"desired_state": "running", **spec}, "phase": phase}


def test_changes_to_a_set_turn_it_into_the_target_and_apply_to_a_copy_of_it():
    held = AssignmentSet.of(Assignments(tasks=[task("a"), task("b"), task("c")],
                                        secrets={"s": {"data": b"1", "id": "s1"}, "gone": {"data": b"", "id": "g"}},
                                        sequence=4))
    target = Assignments(tasks=[task("a"), task("b", "active"), task("d")],
                         secrets={"s": {"data": b"2", "id": "s2"}}, configs={"c": {"data": b"c", "id": "c1"}})
    changes = held.changes_to(target)
    assert (changes.sequence, changes.applies_to) == (5, 4)
    assert [t["id"] for t in changes.tasks] == ["b", "d"] and changes.removed == ["c"]  # "a" unchanged: not sent
    assert changes.secrets == {"s": {"data": b"2", "id": "s2"}} and changes.removed_secrets == ["gone"]
    assert changes.configs == {"c": {"data": b"c", "id": "c1"}} and changes.removed_configs == []
    node = AssignmentSet.of(Assignments(tasks=[task("a"), task("b"), task("c")],
                                        secrets={"s": {"data": b"1", "id": "s1"}, "gone": {"data": b"", "id": "g"}},
                                        sequence=4))
    node.apply(unpack(pack(changes)))  # as the node gets it
    assert node.tasks == {t["id"]: t for t in target.tasks}
    assert (node.secrets, node.configs, node.sequence) == (target.secrets, target.configs, 5)
    assert not node.changes_to(target.__class__(**{**target.__dict__, "sequence": 0}))  # nothing left to send


def test_changes_that_do_not_follow_the_set_held_are_refused_and_change_nothing():
    held = AssignmentSet.of(Assignments(tasks=[task("a")], sequence=2))
    with pytest.raises(OutOfSequence, match="apply to 1, but the set held is 2"):
        held.apply(AssignmentChanges(sequence=2, applies_to=1, removed=["a"]))
    assert list(held.tasks) == ["a"] and held.sequence == 2
