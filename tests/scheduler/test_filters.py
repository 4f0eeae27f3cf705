import pytest

from swarmlet.manager.scheduler import NodeInfo, ResourceAmount, TaskRequest, parse_constraint
from swarmlet.manager.scheduler.filters import (
    CPU_FILTER,
    MEMORY_FILTER,
    AvailabilityFilter,
    ConstraintFilter,
    HostPortFilter,
    MaxReplicasFilter,
    PlatformFilter,
    ReadyFilter,
    filters_for,
)
from swarmlet.manager.scheduler.pipeline import Pipeline

GIB = 1 << 30
TASK = TaskRequest("t1", "svc")


@pytest.mark.parametrize("state, accepted", [("ready", True), ("down", False), ("unknown", False), ("disconnected", False)])
def test_ready_filter(state, accepted):
    assert ReadyFilter().accepts(NodeInfo("n", state=state), TASK) is accepted


@pytest.mark.parametrize("availability, accepted", [("active", True), ("pause", False), ("drain", False)])
def test_availability_filter(availability, accepted):
    assert AvailabilityFilter().accepts(NodeInfo("n", availability=availability), TASK) is accepted


def test_cpu_filter_counts_what_is_already_reserved():
    node = NodeInfo("n", capacity=ResourceAmount.from_cpus(2, 0), reserved=ResourceAmount.from_cpus(1.5, 0))
    assert CPU_FILTER.accepts(node, TaskRequest("t", "s", reservations=ResourceAmount.from_cpus(0.5))) is True
    assert CPU_FILTER.accepts(node, TaskRequest("t", "s", reservations=ResourceAmount.from_cpus(0.6))) is False


def test_memory_filter_counts_what_is_already_reserved():
    node = NodeInfo("n", capacity=ResourceAmount(0, 4 * GIB), reserved=ResourceAmount(0, 3 * GIB))
    assert MEMORY_FILTER.accepts(node, TaskRequest("t", "s", reservations=ResourceAmount(0, GIB))) is True
    assert MEMORY_FILTER.accepts(node, TaskRequest("t", "s", reservations=ResourceAmount(0, GIB + 1))) is False


def test_constraint_filter():
    node_filter = ConstraintFilter(parse_constraint("node.labels.zone==a"))
    assert node_filter.accepts(NodeInfo("n", labels={"zone": "a"}), TASK) is True
    assert node_filter.accepts(NodeInfo("n", labels={"zone": "b"}), TASK) is False


@pytest.mark.parametrize(
    "platforms, accepted",
    [
        ((("linux", "x86_64"),), True),
        ((("linux", "amd64"),), True),  # alias of x86_64
        ((("linux", ""),), True),  # empty arch matches any
        ((("windows", "x86_64"), ("linux", "x86_64")), True),
        ((("windows", "x86_64"),), False),
        ((("linux", "arm64"),), False),
    ],
)
def test_platform_filter(platforms, accepted):
    node = NodeInfo("n", platform_os="linux", platform_arch="x86_64")
    assert PlatformFilter().accepts(node, TaskRequest("t", "s", platforms=platforms)) is accepted


def test_host_port_filter_rejects_port_in_use_for_same_protocol_only():
    node = NodeInfo("n", host_ports={("tcp", 80)})
    assert HostPortFilter().accepts(node, TaskRequest("t", "s", host_ports=[("tcp", 80)])) is False
    assert HostPortFilter().accepts(node, TaskRequest("t", "s", host_ports=[("udp", 80)])) is True
    assert HostPortFilter().accepts(node, TaskRequest("t", "s", host_ports=[("tcp", 81)])) is True


def test_max_replicas_filter_counts_tasks_of_the_same_service():
    task = TaskRequest("t", "svc", max_replicas_per_node=2)
    assert MaxReplicasFilter(2).accepts(NodeInfo("n", tasks_by_service={"svc": 1, "other": 9}), task) is True
    assert MaxReplicasFilter(2).accepts(NodeInfo("n", tasks_by_service={"svc": 2}), task) is False


@pytest.mark.parametrize(
    "node_filter, count, text",
    [
        (ReadyFilter(), 1, "node not ready on 1 node"),
        (AvailabilityFilter(), 2, "node paused or drained on 2 nodes"),
        (CPU_FILTER, 3, "insufficient cpu on 3 nodes"),
        (MEMORY_FILTER, 2, "insufficient memory on 2 nodes"),
        (ConstraintFilter(parse_constraint("node.labels.zone==a")), 3, "constraint node.labels.zone==a unmet on 3 nodes"),
        (PlatformFilter(), 4, "unsupported platform on 4 nodes"),
        (HostPortFilter(), 1, "host-mode published port in use on 1 node"),
        (MaxReplicasFilter(2), 5, "max replicas per node (2) reached on 5 nodes"),
    ],
)
def test_filter_explanations(node_filter, count, text):
    assert node_filter.explain(count) == text


def test_only_applicable_filters_are_used():
    plain = [f.name for f in filters_for(TaskRequest("t", "s"))]
    assert plain == ["ready", "availability"]
    full = TaskRequest(
        "t",
        "s",
        reservations=ResourceAmount.from_cpus(1, GIB),
        constraints=["node.role==worker", "node.labels.zone==a"],
        platforms=[("linux", "")],
        host_ports=[("tcp", 80)],
        max_replicas_per_node=1,
    )
    assert [f.name for f in filters_for(full)] == [
        "ready", "availability", "cpu", "memory", "constraint", "constraint", "platform", "host-port", "max-replicas",
    ]


def test_dynamic_host_port_zero_needs_no_port_filter():
    assert "host-port" not in [f.name for f in filters_for(TaskRequest("t", "s", host_ports=[("tcp", 0)]))]


def test_pipeline_explains_first_rejecting_filter_per_node_in_filter_order():
    task = TaskRequest("t", "s", reservations=ResourceAmount(0, GIB), constraints=["node.labels.zone==a"])
    nodes = [
        NodeInfo("small-a", labels={"zone": "a"}, capacity=ResourceAmount(0, GIB // 2)),
        NodeInfo("small-b", labels={"zone": "b"}, capacity=ResourceAmount(0, GIB // 2)),  # memory reported, not zone
        NodeInfo("big-b", labels={"zone": "b"}, capacity=ResourceAmount(0, 2 * GIB)),
        NodeInfo("big-none", capacity=ResourceAmount(0, 2 * GIB)),
        NodeInfo("big-a", labels={"zone": "a"}, capacity=ResourceAmount(0, 2 * GIB)),
    ]
    pipeline = Pipeline.for_task(task)
    accepted, rejections = pipeline.split(nodes)
    assert [n.node_id for n in accepted] == ["big-a"]
    assert pipeline.explain(rejections) == (
        "no suitable node: insufficient memory on 2 nodes, constraint node.labels.zone==a unmet on 2 nodes"
    )
