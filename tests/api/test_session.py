"""The session's wire format: every message survives the trip, and nothing malformed
gets past ``unpack``."""
from __future__ import annotations

import msgpack
import pytest

from swarmlet.api import session
from swarmlet.api.session import (MAX_MESSAGE_SIZE, Assignments, Heartbeat, HeartbeatAck, Hello, Log, LogEnd, Logs,
                                  LogsCancel, MessageType, NetworkPlaneUpdate, ProtocolError, Redirect, Status, UnknownMessage, Welcome,
                                  pack, unpack)

EXAMPLES = [
    Hello(description={"hostname": "n1", "resources": {"nano_cpus": 2_000_000_000}}),
    Welcome(heartbeat_period=1.0, managers=["10.0.0.1:2377"], node={"spec": {"role": "worker"}}),
    HeartbeatAck(heartbeat_period=2.5, managers=[], node=None),
    Redirect(leader="10.0.0.1:2377"), Redirect(leader=None), Heartbeat(),
    Assignments(tasks=[{"id": "t1", "spec": {"node_id": "n1"}, "phase": "new"}],
                secrets={"app_db": {"data": b"\x00pw", "id": "app_db"}}, configs={}),
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
