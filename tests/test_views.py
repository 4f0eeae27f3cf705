"""swarmlet.api.views: typed, read-only views over the store's frozen objects, with the
defaults of the shapes the rest of swarmlet writes."""
import pytest

from swarmlet.api.objects import (DesiredState, NodeState, ServiceMode, TaskState, node_object_spec,
                                  node_object_status, task_object_spec, task_status)
from swarmlet.api.specs import ContainerSpec, ServiceSpec
from swarmlet.api.views import VIEWS, Node, Service, Task
from swarmlet.store.state import ReadOnlyError, StoreState, encode_transaction


def stored(kind: str, spec: dict, status: dict | None = None):
    state = StoreState()
    state.apply(encode_transaction("r", 5.0, [{"op": "create", "kind": kind, "id": "x1", "spec": spec,
                                               "status": status or {}}]))
    return state.get(kind, "x1")


def service_object() -> dict:
    spec = ServiceSpec(name="web_front", container=ContainerSpec(image="busybox", command=["sleep", "9"]),
                       mode="replicated", replicas=3)
    return stored("service", spec.to_dict())


def test_a_task_reads_as_typed_fields_and_enums():
    service = service_object()
    raw = stored("task", task_object_spec(service, slot=2, node_id=None), task_status("pending", 7.0, "waiting"))
    task = Task(raw)
    assert (task.id, task.version, task.created_at) == ("x1", 1, 5.0)
    assert task.spec.slot == 2 and task.spec.node_id is None and task.spec.mode is ServiceMode.REPLICATED
    assert task.spec.desired_state is DesiredState.RUNNING and task.status.state is TaskState.PENDING
    assert task.status.message == "waiting" and task.status.exit_code is None
    assert task.spec.container == ContainerSpec(image="busybox", command=["sleep", "9"])
    assert task.spec.restart_policy.condition == "any" and task.spec.placement.constraints == []
    assert Service(service).spec.replicas == 3 and Service(service).name == "web_front"


def test_fields_left_out_take_the_one_default():
    task = Task(stored("task", {"service_id": "s"}))
    assert task.status.state is TaskState.NEW and task.spec.desired_state is DesiredState.RUNNING
    assert task.spec.restarts == () and task.spec.ports == [] and task.spec.not_before == 0.0
    node = Node(stored("node", node_object_spec("worker"), node_object_status(addr="10.0.0.1", hostname="w1")))
    assert node.status.state is NodeState.UNKNOWN and node.spec.availability == "active"
    assert node.status.hostname == "w1" and node.spec.labels == {}


def test_a_view_shows_without_letting_anyone_change_the_store():
    node = Node(stored("node", node_object_spec("worker", labels={"zone": "a"}), {}))
    with pytest.raises(AttributeError):
        node.spec.role = "manager"
    with pytest.raises(ReadOnlyError):
        node.spec.labels["zone"] = "b"
    changed = node.spec.replace(availability="drain")
    assert changed == {"role": "worker", "availability": "drain", "labels": {"zone": "a"}}
    assert node.spec.availability == "active"


def test_every_stored_kind_has_a_view():
    from swarmlet.store.state import KINDS
    assert set(VIEWS) == set(KINDS)
