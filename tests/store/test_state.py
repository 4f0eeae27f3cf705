"""The pure state machine: transactions, versions, request IDs, snapshots."""
import msgpack
import pytest

from swarmlet.store.state import StoreState, encode_transaction


def create(kind, object_id, spec=None):
    return {"op": "create", "kind": kind, "id": object_id, "spec": spec or {}}


def update(kind, object_id, version, **fields):
    return {"op": "update", "kind": kind, "id": object_id, "version": version, **fields}


def apply(state, ops, rid=None, ts=100.0):
    return state.apply(encode_transaction(rid or "", ts, ops))


def test_create_sets_version_to_index_and_timestamps_from_the_command():
    state = StoreState()
    applied = apply(state, [create("config", "c1", {"data": b"x"})], ts=42.0)
    obj = state.get("config", "c1")
    assert applied.result["ok"] and obj["version"] == applied.index == 1
    assert obj["created_at"] == obj["updated_at"] == 42.0
    assert [c.action for c in applied.changes] == ["create"]


def test_stale_update_is_refused_and_changes_nothing():
    state = StoreState()
    apply(state, [create("node", "n1", {"labels": {}})])
    apply(state, [update("node", "n1", 1, spec={"labels": {"a": "1"}})])
    stale = apply(state, [update("node", "n1", 1, spec={"labels": {"b": "2"}})])
    assert stale.result == {"ok": False, "code": "conflict",
                            "error": "node n1 is at version 2, the update expected version 1"}
    assert state.get("node", "n1")["spec"] == {"labels": {"a": "1"}}
    assert stale.changes == []


def test_update_keeps_fields_it_does_not_name():
    state = StoreState()
    apply(state, [{"op": "create", "kind": "node", "id": "n", "spec": {"s": 1}, "status": {"t": 1}}])
    apply(state, [update("node", "n", 1, status={"t": 2})])
    assert state.get("node", "n")["spec"] == {"s": 1} and state.get("node", "n")["status"] == {"t": 2}


def test_a_transaction_applies_all_or_nothing():
    state = StoreState()
    apply(state, [create("service", "s1")])
    refused = apply(state, [create("task", "t1"), create("service", "s1")])
    assert refused.result["code"] == "exists"
    assert state.get("task", "t1") is None


def test_ops_in_one_batch_see_each_other():
    state = StoreState()
    result = apply(state, [create("task", "t"), update("task", "t", 1, status={"state": "new"})])
    # the create stamps version 1 (this index), so the update in the same batch expects 1
    assert result.result["ok"], result.result
    assert state.get("task", "t")["status"] == {"state": "new"}


def test_delete_needs_the_current_version():
    state = StoreState()
    apply(state, [create("secret", "s")])
    assert apply(state, [{"op": "delete", "kind": "secret", "id": "s", "version": 7}]).result["code"] == "conflict"
    deleted = apply(state, [{"op": "delete", "kind": "secret", "id": "s", "version": 1}])
    assert deleted.result["ok"] and state.get("secret", "s") is None
    assert deleted.changes[0].action == "delete" and deleted.changes[0].object["id"] == "s"


def test_a_retried_request_id_applies_once():
    state = StoreState()
    first = apply(state, [create("config", "c")], rid="req-1")
    again = apply(state, [create("config", "c")], rid="req-1")
    assert first.result["ok"] and again.result["ok"] and again.result.get("duplicate")
    assert again.changes == []
    assert len(state.list("config")) == 1


def test_malformed_commands_are_refused_not_raised():
    state = StoreState()
    for command in (b"\xc1garbage", msgpack.packb([1, 2]), encode_transaction("", 0, [{"op": "drop"}]),
                    encode_transaction("", 0, [{"op": "create", "kind": "weird", "id": "x"}]),
                    encode_transaction("", 0, [{"op": "create", "kind": "node", "id": ""}])):
        applied = state.apply(command)
        assert applied.result["ok"] is False and applied.result["code"] == "invalid"
    assert state.index == 5  # each still consumed an index: the index is a function of the log


def test_snapshot_round_trip_is_exact():
    state = StoreState()
    apply(state, [create("node", "n1", {"x": [1, 2]}), create("config", "c", {"data": b"\x00\x01"})], rid="r")
    data = msgpack.unpackb(msgpack.packb(state.snapshot(), use_bin_type=True), raw=False)
    restored = StoreState.from_snapshot(data)
    assert restored.objects == state.objects and restored.index == state.index
    assert apply(restored, [create("config", "c2")], rid="r").result.get("duplicate")


def test_same_log_same_state():
    log = [encode_transaction(f"r{i}", float(i), [create("config", f"c{i}")]) for i in range(50)]
    log.append(encode_transaction("x", 1.0, [update("config", "c3", 4, spec={"v": 1})]))
    a, b = StoreState(), StoreState()
    for command in log:
        a.apply(command)
        b.apply(command)
    assert a.snapshot() == b.snapshot()


# -- the livelock watchdog's decision (pure) ----------------------------------------------------------
from swarmlet.store.raft import RaftView, stalled_followers  # noqa: E402


def view(peers, commit=100):
    return RaftView(self_address="a", leader="a", is_leader=True, has_quorum=True, term=3, commit_index=commit,
                    last_applied=commit, peers=peers, taken_at=0.0)


def test_a_connected_follower_stuck_behind_the_leader_is_reported_once_per_timeout():
    stuck = {"b": {"connected": True, "match_index": 40}}
    progress, stalled = stalled_followers({}, view(stuck), now=0.0, timeout=2.0)
    assert stalled == []
    progress, stalled = stalled_followers(progress, view(stuck), now=1.5, timeout=2.0)
    assert stalled == []
    progress, stalled = stalled_followers(progress, view(stuck), now=2.5, timeout=2.0)
    assert stalled == ["b"]
    _, stalled = stalled_followers(progress, view(stuck), now=3.0, timeout=2.0)
    assert stalled == []  # its clock restarted


def test_advancing_caught_up_or_disconnected_followers_are_not_stalled():
    progress = {"b": (40, 0.0), "c": (100, 0.0), "d": (10, 0.0)}
    peers = {"b": {"connected": True, "match_index": 41},     # advancing
             "c": {"connected": True, "match_index": 100},    # caught up
             "d": {"connected": False, "match_index": 10}}    # not connected: nothing to heal
    _, stalled = stalled_followers(progress, view(peers), now=10.0, timeout=2.0)
    assert stalled == []


def test_loop_handoff_runs_posts_from_another_thread_in_order():
    import asyncio
    import threading

    from swarmlet.store.store import LoopHandoff

    async def scenario():
        loop = asyncio.get_running_loop()
        handoff = LoopHandoff(loop)
        seen, done = [], asyncio.Event()

        def record(value):
            seen.append(value)
            if value == 9999:
                done.set()

        thread = threading.Thread(target=lambda: [handoff.post(record, i) for i in range(10_000)])
        thread.start()
        await asyncio.wait_for(done.wait(), 10)
        thread.join()
        return seen

    assert asyncio.run(scenario()) == list(range(10_000))


def test_objects_handed_out_are_frozen_all_the_way_down_and_equal_to_plain_dicts():
    import copy
    import json

    import msgpack

    from swarmlet.store.state import ReadOnlyError

    state = StoreState()
    spec = {"name": "web", "labels": {"a": "1"}, "ports": [{"target": 80}]}
    state.apply(encode_transaction("r1", 1.0, [{"op": "create", "kind": "service", "id": "s1", "spec": spec}]))
    stored = state.get("service", "s1")
    assert stored["spec"] == spec and json.loads(json.dumps(stored["spec"])) == spec
    assert msgpack.unpackb(msgpack.packb(stored, use_bin_type=True), raw=False)["spec"] == spec
    for edit in (lambda: stored.__setitem__("version", 99), lambda: stored["spec"]["labels"].update(b="2"),
                 lambda: stored["spec"]["ports"].append({"target": 81}), lambda: stored["spec"]["ports"][0].pop("target"),
                 lambda: stored["spec"].setdefault("x", 1)):
        with pytest.raises(ReadOnlyError, match="read-only"):
            edit()
    assert state.get("service", "s1")["spec"] == spec  # nothing changed
    # Copies are plain and mutable: the way to build the next version.
    changed = dict(stored["spec"], labels=dict(stored["spec"]["labels"], b="2"))
    changed["replicas"] = 3
    deep = copy.deepcopy(stored)
    deep["spec"]["ports"].append({"target": 81})
    assert type(deep["spec"]["ports"]) is list and state.get("service", "s1")["spec"]["ports"] == [{"target": 80}]


def test_updated_and_restored_objects_are_frozen_too():
    from swarmlet.store.state import ReadOnlyError

    state = StoreState()
    state.apply(encode_transaction("r1", 1.0, [{"op": "create", "kind": "node", "id": "n1", "spec": {"l": {}}}]))
    version = state.get("node", "n1")["version"]
    state.apply(encode_transaction("r2", 2.0, [{"op": "update", "kind": "node", "id": "n1", "version": version,
                                                "status": {"state": "ready", "tags": ["x"]}}]))
    restored = StoreState.from_snapshot(msgpack.unpackb(msgpack.packb(state.snapshot(), use_bin_type=True),
                                                        raw=False, strict_map_key=False))
    for current in (state, restored):
        node = current.get("node", "n1")
        assert node["status"] == {"state": "ready", "tags": ["x"]}
        with pytest.raises(ReadOnlyError):
            node["status"]["tags"].append("y")
        with pytest.raises(ReadOnlyError):
            node["spec"]["l"]["k"] = "v"


def test_a_follower_that_does_not_answer_or_is_being_sent_a_snapshot_is_not_stalled():
    # A frozen follower and one receiving a large snapshot both keep their match index
    # for longer than the timeout; compacting again would restart the transmission.
    peers = {"b": {"connected": True, "match_index": 40, "responding": False, "snapshot": False},
             "c": {"connected": True, "match_index": 40, "responding": True, "snapshot": True}}
    progress, stalled = stalled_followers({}, view(peers), now=0.0, timeout=2.0)
    for now in (1.0, 2.5, 5.0):
        progress, stalled = stalled_followers(progress, view(peers), now=now, timeout=2.0)
        assert stalled == []


# -- cutting a large change into bounded transactions (pure) ---------------------------------------------
from swarmlet.store.state import TransactionError, cut_transaction  # noqa: E402


def test_a_large_change_is_cut_in_order_into_transactions_within_both_bounds():
    ops = [create("task", f"t{i:05d}", {"blob": "x" * (50 + i % 200)}) for i in range(5000)]
    batches = cut_transaction(ops, max_ops=1000, max_bytes=64 * 1024)
    assert [op for batch in batches for op in batch] == ops
    assert all(len(batch) <= 1000 for batch in batches)
    assert all(len(encode_transaction("r" * 24, 1e9, batch)) <= 64 * 1024 for batch in batches)
    assert len(batches) > 5000 * 150 // (64 * 1024)  # the byte bound cut it, not only the count
    assert cut_transaction(ops[:10], max_ops=4, max_bytes=1 << 20) == [ops[:4], ops[4:8], ops[8:10]]
    assert cut_transaction([], max_ops=4, max_bytes=1 << 20) == []


def test_an_operation_too_big_for_any_transaction_is_refused_naming_the_limit():
    with pytest.raises(TransactionError) as refused:
        cut_transaction([create("config", "c", {"data": b"x" * 5000})], max_ops=10, max_bytes=4096)
    assert refused.value.code == "too_large" and "4096 bytes" in str(refused.value)


def test_a_snapshot_packed_in_pieces_is_the_same_bytes_and_a_picture_does_not_move():
    from swarmlet.store.raft import pack_in_pieces

    state = StoreState()
    apply(state, [create("task", f"t{i}", {"n": i, "tags": list(range(i % 100))}) for i in range(500)], rid="r1")
    picture = state.picture()
    payload = {"state": picture, "last": [b"x", 7, 2], "cluster": ["a:1", "b:1"]}
    assert pack_in_pieces(payload) == msgpack.packb(payload, use_bin_type=True)
    apply(state, [create("task", "later")])
    assert "later" not in picture["objects"]["task"] and picture["index"] == 1


def test_an_expect_op_is_a_precondition_that_writes_nothing():
    state = StoreState()
    apply(state, [create("leadership", "leadership", {"address": "a"})])
    held = apply(state, [create("task", "t1"), {"op": "expect", "kind": "leadership", "id": "leadership", "version": 1}])
    assert held.result["ok"] and [c.id for c in held.changes] == ["t1"]
    apply(state, [update("leadership", "leadership", 1, spec={"address": "b"})])  # a later claim
    stale = apply(state, [create("task", "t2"), {"op": "expect", "kind": "leadership", "id": "leadership", "version": 1}])
    assert stale.result == {"ok": False, "code": "conflict",
                            "error": "leadership leadership is at version 3, the transaction expected version 1"}
    assert state.get("task", "t2") is None
    missing = apply(state, [{"op": "expect", "kind": "config", "id": "nope", "version": 1}])
    assert missing.result["code"] == "conflict"


def _task(object_id, service, node=None, state="pending"):
    return {"op": "create", "kind": "task", "id": object_id,
            "spec": {"service_id": service, "node_id": node}, "status": {"state": state}}


def _ids(objects):
    return sorted(o["id"] for o in objects)


def test_the_task_indexes_follow_every_create_update_and_delete():
    state = StoreState()
    apply(state, [_task("t1", "s1"), _task("t2", "s1"), _task("t3", "s2", node="n1", state="running")])
    assert _ids(state.select("task", "service_id", "s1")) == ["t1", "t2"]
    assert _ids(state.select("task", "state", "pending")) == ["t1", "t2"]
    assert _ids(state.select("task", "node_id", "n1")) == ["t3"]
    apply(state, [update("task", "t1", 1, spec={"service_id": "s1", "node_id": "n1"}, status={"state": "assigned"})])
    assert _ids(state.select("task", "node_id", "n1")) == ["t1", "t3"]
    assert _ids(state.select("task", "state", "pending")) == ["t2"]
    assert state.select("task", "service_id", "s1")[0]["version"] in (1, 2)
    refused = apply(state, [{"op": "delete", "kind": "task", "id": "t3", "version": 1}, create("task", "t1")])
    assert not refused.result["ok"] and _ids(state.select("task", "node_id", "n1")) == ["t1", "t3"]  # nothing moved
    apply(state, [{"op": "delete", "kind": "task", "id": "t3", "version": 1}])
    assert state.select("task", "service_id", "s2") == [] and "s2" not in state.indexes[("task", "service_id")]
    # the indexed objects are the stored ones, current
    assert state.select("task", "node_id", "n1") == [state.get("task", "t1")]


def test_the_indexes_are_rebuilt_from_a_snapshot_and_match_a_scan():
    state = StoreState()
    apply(state, [_task(f"t{i}", f"s{i % 3}", node=f"n{i % 2}", state=("running", "pending")[i % 2])
                  for i in range(30)])
    restored = StoreState.from_snapshot(msgpack.unpackb(msgpack.packb(state.snapshot()), raw=False))
    for name, value in (("service_id", "s1"), ("node_id", "n0"), ("state", "pending")):
        scan = [o for o in state.list("task") if (o["spec"] | o["status"]).get(name) == value]
        assert _ids(restored.select("task", name, value)) == _ids(state.select("task", name, value)) == _ids(scan)


def test_nodes_are_indexed_by_role_through_promotion_and_demotion():
    # Every join's answer lists the managers: a scan of every node per join made
    # joining 5,000 hollow nodes quadratic (docs/performance.md, sixth session).
    state = StoreState()
    apply(state, [{"op": "create", "kind": "node", "id": f"n{i}", "spec": {"role": "manager" if i < 3 else "worker"},
                   "status": {}} for i in range(10)])
    assert _ids(state.select("node", "role", "manager")) == ["n0", "n1", "n2"]
    apply(state, [update("node", "n5", 1, spec={"role": "manager"}), update("node", "n0", 1, spec={"role": "worker"})])
    assert _ids(state.select("node", "role", "manager")) == ["n1", "n2", "n5"]
    assert len(state.select("node", "role", "worker")) == 7


# -- partial spec updates and shared task parts (issue 8: bytes through Raft, memory per task) ---------
from swarmlet.api.objects import task_object_spec  # noqa: E402
from swarmlet.api.specs import ContainerSpec, ServiceSpec  # noqa: E402
from swarmlet.store.state import TASK_SHARED_FIELDS, spec_update  # noqa: E402


def _service(command=("sleep", "600"), service_id="svc"):
    spec = ServiceSpec(name="web", replicas=3, container=ContainerSpec(image="busybox", command=list(command))).to_dict()
    return {"id": service_id, "spec": spec}


def _task_create(object_id, service, slot):
    return {"op": "create", "kind": "task", "id": object_id,
            "spec": task_object_spec(service, slot=slot, node_id=None), "status": {"state": "pending"}}


def test_spec_fields_set_the_keys_named_and_keep_the_rest():
    state = StoreState()
    apply(state, [{"op": "create", "kind": "task", "id": "t", "spec": {"node_id": None, "slot": 1, "x": {"a": 1}}}])
    applied = apply(state, [update("task", "t", 1, spec_fields={"node_id": "n1", "new": [1]})])
    assert applied.result["ok"]
    assert state.get("task", "t")["spec"] == {"node_id": "n1", "slot": 1, "x": {"a": 1}, "new": [1]}
    assert _ids(state.select("task", "node_id", "n1")) == ["t"]  # indexes follow a partial update too
    assert applied.changes[0].previous["spec"]["node_id"] is None


@pytest.mark.parametrize("fields, error", [
    ({"spec": {"node_id": "n2"}, "spec_fields": {"node_id": "n2"}}, "spec and spec_fields are exclusive"),
    ({"spec_fields": ["node_id", "n2"]}, "spec_fields must be a map"),
])
def test_a_malformed_partial_update_is_refused_and_changes_nothing(fields, error):
    state = StoreState()
    apply(state, [{"op": "create", "kind": "task", "id": "t", "spec": {"node_id": "n1"}}])
    refused = apply(state, [create("config", "c"), update("task", "t", 1, **fields)])
    assert refused.result["code"] == "invalid" and error in refused.result["error"]
    assert state.get("task", "t")["spec"] == {"node_id": "n1"} and state.get("config", "c") is None


def test_spec_update_names_only_what_changed_unless_a_key_goes():
    old = {"node_id": None, "desired_state": "running", "container": {"image": "a"}}
    assert spec_update(old, dict(old, desired_state="shutdown")) == {"spec_fields": {"desired_state": "shutdown"}}
    assert spec_update(old, dict(old, container={"image": "b"})) == {"spec_fields": {"container": {"image": "b"}}}
    assert spec_update(old, dict(old)) == {"spec_fields": {}}
    dropped = {k: v for k, v in old.items() if k != "node_id"}
    assert spec_update(old, dropped) == {"spec": dropped}  # spec_fields cannot drop a key
    # what the state machine makes of either form is the new spec
    for new in (dict(old, desired_state="shutdown"), dropped):
        state = StoreState()
        apply(state, [{"op": "create", "kind": "task", "id": "t", "spec": old}])
        apply(state, [update("task", "t", 1, **spec_update(old, new))])
        assert state.get("task", "t")["spec"] == new


def test_tasks_of_one_service_version_share_its_parts_and_keep_their_value():
    state = StoreState()
    service, changed = _service(), _service(command=("sleep", "1"))
    apply(state, [_task_create("t1", service, 1)])
    apply(state, [_task_create("t2", service, 2), _task_create("t3", changed, 3)])  # each its own copy on the wire
    t1, t2, t3 = (state.get("task", t) for t in ("t1", "t2", "t3"))
    for name in TASK_SHARED_FIELDS:
        assert t1["spec"][name] is t2["spec"][name], name  # one object for both
        assert t1["spec"][name] == task_object_spec(service, slot=1, node_id=None)[name]
    assert t3["spec"]["container"] is not t1["spec"]["container"]  # another version of the spec
    assert t3["spec"]["container"]["command"] == ["sleep", "1"]
    # a part that differs under the same version is kept as sent, not replaced by the shared one
    odd = _task_create("t4", service, 4)
    odd["spec"]["container"] = dict(odd["spec"]["container"], image="other")
    apply(state, [odd])
    assert state.get("task", "t4")["spec"]["container"]["image"] == "other"
    # a partial update (an assignment) and a whole-spec one keep sharing
    apply(state, [update("task", "t1", 1, spec_fields={"node_id": "n1"}),
                  update("task", "t2", 2, spec=task_object_spec(service, slot=2, node_id="n2"))])
    t1, t2 = state.get("task", "t1"), state.get("task", "t2")
    assert t1["spec"]["node_id"] == "n1" and t2["spec"]["node_id"] == "n2"
    assert t1["spec"]["container"] is t2["spec"]["container"]
    with pytest.raises(TypeError):  # shared, so frozen like everything stored
        t1["spec"]["container"]["image"] = "changed"


def test_tasks_restored_from_a_snapshot_share_their_parts_and_equal_the_original():
    state = StoreState()
    service = _service()
    apply(state, [_task_create(f"t{i}", service, i) for i in range(20)])
    # msgpack writes each task's parts out in full (raft.py's snapshots): restoring shares them again
    restored = StoreState.from_snapshot(msgpack.unpackb(msgpack.packb(state.snapshot()), raw=False))
    assert restored.objects == state.objects
    assert len({id(t["spec"]["container"]) for t in restored.list("task")}) == 1


def test_the_shared_parts_remembered_are_bounded():
    from swarmlet.store.state import SharedTaskParts
    shared = SharedTaskParts(versions=2)
    specs = [freeze_spec(_service(service_id=f"s{i}"), 1) for i in range(3)]
    for spec in specs:
        shared.task_spec(spec)
    assert len(shared._parts) == 2  # the least recently used version was forgotten
    again = freeze_spec(_service(service_id="s0"), 2)
    assert shared.task_spec(again)["container"] is again["container"]  # not shared any more: its own
    assert shared.task_spec(freeze_spec(_service(service_id="s2"), 2))["container"] is specs[2]["container"]


def freeze_spec(service, slot):
    from swarmlet.store.state import freeze
    return freeze(task_object_spec(service, slot=slot, node_id=None))


def test_a_create_takes_the_shared_parts_of_the_task_it_names_and_equals_a_whole_one():
    service = _service()
    whole = [_task_create(f"t{i}", service, i) for i in range(3)]
    lean = [whole[0]] + [dict(op, spec={k: v for k, v in op["spec"].items() if k not in TASK_SHARED_FIELDS},
                              parts_from="t0") for op in whole[1:]]
    a, b = StoreState(), StoreState()
    apply(a, whole)
    apply(b, lean[:2])  # t1 names t0 in the same transaction
    apply(b, lean[2:])  # t2 names t0, stored by then
    assert {t["id"]: t["spec"] for t in b.list("task")} == {t["id"]: t["spec"] for t in a.list("task")}
    assert b.get("task", "t2")["spec"]["container"] is b.get("task", "t0")["spec"]["container"]
    assert len(encode_transaction("", 0.0, lean[1:])) * 3 < len(encode_transaction("", 0.0, whole[1:]))


def test_a_create_naming_a_missing_or_unlike_task_is_refused_and_changes_nothing():
    state = StoreState()
    service, other = _service(), _service(command=("sleep", "1"))
    apply(state, [_task_create("t0", service, 0), _task_create("o0", other, 0)])

    def lean(object_id, source, keep=()):
        op = _task_create(object_id, service, 1)
        op["spec"] = {k: v for k, v in op["spec"].items() if k not in TASK_SHARED_FIELDS or k in keep}
        return dict(op, parts_from=source)

    for op, code in ((lean("t1", "nothing"), "not_found"), (lean("t1", "o0"), "invalid"),
                     (lean("t1", "t0", keep=("container",)), "invalid"),
                     (dict(lean("t1", "t0"), kind="config"), "invalid")):
        refused = apply(state, [create("config", "c"), op])
        assert refused.result["code"] == code, (op, refused.result)
        assert state.get("task", "t1") is None and state.get("config", "c") is None
