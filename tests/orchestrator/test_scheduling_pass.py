"""One scheduling pass over store objects, and the transaction of an orchestrator decision."""
from __future__ import annotations

from swarmlet.api import specs
from swarmlet.manager.orchestrator.loop import decision_ops
from swarmlet.manager.scheduler.service import assignment_ops

from .conftest import World, make_node, make_service, task_views


def _capacity(node, cpus=4, memory=8 << 30):
    node["status"]["description"] = {"resources": {"nano_cpus": cpus * 10**9, "memory_bytes": memory},
                                      "platform": {"os": "linux", "arch": "x86_64"}}
    return node


def _world(service, nodes):
    w = World(service, [_capacity(n) for n in nodes])
    w.step()
    return w


def test_a_pass_assigns_every_pending_task_in_one_batch_spread_over_nodes():
    w = _world(make_service(replicas=4), [make_node("n1"), make_node("n2")])
    ops = assignment_ops(w.node_views(), task_views(w.tasks.values()), now=5.0)
    assert len(ops) == 4 and {op["status"]["state"] for op in ops} == {"assigned"}
    # only what placing changed goes through Raft, not the whole spec again
    assert [set(op["spec_fields"]) for op in ops] == [{"node_id"}] * 4 and all("spec" not in op for op in ops)
    assert sorted(op["spec_fields"]["node_id"] for op in ops) == ["n1", "n1", "n2", "n2"]
    assert all(op["version"] == w.tasks[op["id"]]["version"] for op in ops)


def test_unplaceable_tasks_get_the_explanation_once():
    huge = specs.ResourceRequirements(reservations=specs.Resources(memory=1 << 50))
    w = _world(make_service(replicas=1, resources=huge), [make_node("n1"), make_node("n2", state="down")])
    (op,) = assignment_ops(w.node_views(), task_views(w.tasks.values()), now=5.0)
    assert "spec" not in op and "spec_fields" not in op and op["status"]["state"] == "pending"
    assert "insufficient memory on 1 node" in op["status"]["message"]
    assert "node not ready on 1 node" in op["status"]["message"]
    (task,) = w.tasks.values()
    task["status"] = op["status"]
    assert assignment_ops(w.node_views(), task_views([task]), now=6.0) == []  # the same explanation is not rewritten


def test_running_tasks_hold_their_reservations_and_host_ports():
    service = make_service(replicas=2, endpoint=specs.EndpointSpec(ports=[specs.PortConfig(80, 8080, mode="host")]))
    w = _world(service, [make_node("n1"), make_node("n2")])
    first, second = w.tasks.values()
    first["spec"]["node_id"] = "n1"
    first["status"]["state"] = "running"
    (op,) = assignment_ops(w.node_views(), task_views([first, second]), now=5.0)
    assert op["id"] == second["id"] and op["spec_fields"]["node_id"] == "n2"  # port 8080 is taken on n1
    first["status"]["state"] = "failed"  # a stopped task frees it
    (op,) = assignment_ops(w.node_views(), task_views([first, second]), now=5.0)
    assert op["spec_fields"]["node_id"] in ("n1", "n2")


def test_global_tasks_go_only_to_their_node():
    w = _world(make_service(mode="global"), [make_node("n1"), make_node("n2")])
    ops = assignment_ops(w.node_views(), task_views(w.tasks.values()), now=5.0)
    assert sorted((w.tasks[op["id"]]["spec"]["node_id"], op["spec_fields"]["node_id"]) for op in ops) == [
        ("n1", "n1"), ("n2", "n2")]


def test_decision_ops_form_one_transaction():
    w = World(make_service(replicas=2), [make_node("n1")])
    w.settle()
    w.service["spec"]["replicas"] = 1
    decision = w.decide()
    ops = decision_ops(w.service_view(), decision)
    assert [op["op"] for op in ops] == ["update"] and ops[0]["spec_fields"] == {"desired_state": "remove"}
    w.service = None
    decision = w.decide()
    ops = decision_ops(None, decision)
    assert {op["op"] for op in ops} == {"update"} and len(ops) == 2


def test_replicas_of_one_spec_share_their_requirements_converted_once():
    from swarmlet.manager.scheduler.storemap import task_request

    placement = specs.Placement(constraints=["node.role==worker"], max_replicas_per_node=2)
    w = _world(make_service(replicas=3, placement=placement), [make_node("n1")])
    first, *others = task_views(w.tasks.values())
    like = task_request(first)
    for task in others:
        assert task_request(task, like) == task_request(task)  # the same request, only cheaper
    assert task_request(others[0], like).task_id == others[0].id


def test_the_creates_of_a_decision_carry_the_service_parts_once_and_store_whole_tasks():
    from swarmlet.store.state import TASK_SHARED_FIELDS, StoreState, encode_transaction
    w = World(make_service(replicas=5), [make_node("n1")])
    decision = w.decide()
    ops = decision_ops(w.service_view(), decision)
    assert [op["op"] for op in ops] == ["create"] * 5
    first, *rest = ops
    assert all(name in first["spec"] for name in TASK_SHARED_FIELDS) and "parts_from" not in first
    assert all(op["parts_from"] == first["id"] and not set(op["spec"]) & set(TASK_SHARED_FIELDS) for op in rest)
    # committed in parts, as commit_batched may cut them, the tasks are the decision's own, whole
    state = StoreState()
    for part in (ops[:2], ops[2:]):
        assert state.apply(encode_transaction("", 1.0, part)).result["ok"]
    stored = sorted((t["spec"] for t in state.list("task")), key=lambda spec: spec["slot"])
    assert stored == sorted((c["spec"] for c in decision.creates), key=lambda spec: spec["slot"])
