"""From what a node's runtime reports to where the scheduler puts tasks: the runtime's
`NodeDescription` -> the agent's hello (`describe_node`) -> the node object's
`status.description` -> `NodeInfo` -> placement. Pure: no runtime, no store."""

from swarmlet.agent.agent import describe_node
from swarmlet.api.objects import NODE_READY, node_object_spec, node_object_status
from swarmlet.api.specs import Placement, Platform
from swarmlet.api.views import Node, Task
from swarmlet.manager.scheduler import ResourceAmount, schedule
from swarmlet.manager.scheduler.storemap import node_info, task_request
from swarmlet.node.config import NodeConfig
from swarmlet.runtime.base import NodeDescription
from swarmlet.store.state import freeze

GIB = 1 << 30


def stored_node(node_id: str, described: NodeDescription) -> Node:
    """A node object as the dispatcher stores it after the node's hello."""
    config = NodeConfig(node_id=node_id, cluster_id="c", role="worker", advertise_addr="127.0.0.1",
                        hostname=f"host-{node_id}")
    status = node_object_status(addr="127.0.0.1", hostname=config.hostname, state=NODE_READY,
                                description=describe_node(config, described))
    return Node(freeze({"id": node_id, "spec": node_object_spec("worker"), "status": status}))


def described(engine_labels: dict | None = None, architecture: str = "x86_64") -> NodeDescription:
    # As the Docker runtime reports a node: the platform as the engine names it.
    return NodeDescription(os="linux", architecture=architecture, cpus=2.0, memory_bytes=4 * GIB,
                           engine_labels=engine_labels or {})


def stored_task(task_id: str, placement: Placement) -> Task:
    return Task(freeze({"id": task_id, "spec": {"service_id": "svc", "slot": 1, "placement": placement.to_dict()},
                        "status": {"state": "pending"}}))


def test_the_runtimes_description_reaches_the_node_info():
    info = node_info(stored_node("n1", described({"disk": "ssd"})))
    assert (info.platform_os, info.platform_arch) == ("linux", "x86_64")
    assert info.capacity == ResourceAmount.from_cpus(2, 4 * GIB)
    assert info.engine_labels == {"disk": "ssd"}


def test_an_engine_label_constraint_is_met_by_the_node_whose_engine_has_the_label():
    nodes = [node_info(stored_node("plain", described())),
             node_info(stored_node("ssd", described({"disk": "ssd"}))),
             node_info(stored_node("hdd", described({"disk": "hdd"})))]
    task = task_request(stored_task("t1", Placement(constraints=["engine.labels.disk==ssd"])))
    [placement] = schedule(nodes, [task])
    assert placement.node_id == "ssd"


def test_an_unmet_engine_label_constraint_is_explained():
    nodes = [node_info(stored_node("plain", described()))]
    task = task_request(stored_task("t1", Placement(constraints=["engine.labels.disk==ssd"])))
    [placement] = schedule(nodes, [task])
    assert placement.node_id is None
    assert "constraint engine.labels.disk==ssd unmet on 1 node" in placement.explanation


def test_placement_platforms_go_to_nodes_of_that_platform_under_either_name():
    nodes = [node_info(stored_node("x86", described(architecture="x86_64"))),
             node_info(stored_node("arm", described(architecture="aarch64")))]
    # Image platforms use Go's names; engines report the kernel's.
    for architecture, expected in (("arm64", "arm"), ("amd64", "x86"), ("aarch64", "arm")):
        task = task_request(stored_task("t1", Placement(platforms=[Platform("linux", architecture)])))
        assert [p.node_id for p in schedule(nodes, [task])] == [expected], architecture
    windows = task_request(stored_task("t2", Placement(platforms=[Platform("windows", "")])))
    [placement] = schedule(nodes, [windows])
    assert placement.node_id is None
    assert "unsupported platform on 2 nodes" in placement.explanation
