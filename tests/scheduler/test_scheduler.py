import random
from collections import Counter
from copy import deepcopy

from swarmlet.manager.scheduler import NodeInfo, Placement, ResourceAmount, TaskRequest, plan, schedule

GIB = 1 << 30


def tasks_per_node(placements) -> Counter:
    return Counter(p.node_id for p in placements if p.node_id is not None)


def test_ten_tasks_over_five_equal_nodes_gives_two_each(roomy_node, replicas):
    nodes = [roomy_node(f"n{i}") for i in range(5)]
    placements = schedule(nodes, replicas(10))
    assert tasks_per_node(placements) == {f"n{i}": 2 for i in range(5)}


def test_prefers_fewest_tasks_of_the_service_then_fewest_overall_then_node_id(roomy_node, replicas):
    nodes = [
        roomy_node("n1", tasks_by_service={"svc": 1}, total_tasks=1),
        roomy_node("n2", tasks_by_service={"other": 5}, total_tasks=5),
        roomy_node("n3", tasks_by_service={"other": 2}, total_tasks=2),
        roomy_node("n4", tasks_by_service={"other": 2}, total_tasks=2),
    ]
    placements = schedule(nodes, replicas(3))
    # n3/n4 tie on both counts (node id decides), n2 has more tasks overall, n1 already runs the service.
    assert [p.node_id for p in placements] == ["n3", "n4", "n2"]


def test_resources_are_exhausted_as_the_batch_fills_nodes(roomy_node, replicas):
    nodes = [roomy_node(f"n{i}", capacity=ResourceAmount.from_cpus(4, 2 * GIB)) for i in range(3)]
    placements = schedule(nodes, replicas(8, reservations=ResourceAmount(0, GIB)))
    assert tasks_per_node(placements) == {"n0": 2, "n1": 2, "n2": 2}
    pending = [p for p in placements if p.node_id is None]
    assert len(pending) == 2
    assert {p.explanation for p in pending} == {"no suitable node: insufficient memory on 3 nodes"}


def test_cpu_reservations_already_on_a_node_count_against_it(roomy_node, replicas):
    nodes = [
        roomy_node("busy", capacity=ResourceAmount.from_cpus(2), reserved=ResourceAmount.from_cpus(1.5)),
        roomy_node("idle", capacity=ResourceAmount.from_cpus(2)),
    ]
    placements = schedule(nodes, replicas(3, reservations=ResourceAmount.from_cpus(1)))
    assert tasks_per_node(placements) == {"idle": 2}
    assert placements[2].explanation == "no suitable node: insufficient cpu on 2 nodes"


def test_max_replicas_per_node(roomy_node, replicas):
    nodes = [roomy_node("n1", tasks_by_service={"svc": 1}, total_tasks=1), roomy_node("n2")]
    placements = schedule(nodes, replicas(5, max_replicas_per_node=2))
    assert tasks_per_node(placements) == {"n1": 1, "n2": 2}
    assert placements[-1].explanation == "no suitable node: max replicas per node (2) reached on 2 nodes"


def test_host_port_conflicts_inside_one_batch(roomy_node, replicas):
    nodes = [roomy_node("n1"), roomy_node("n2"), roomy_node("n3", host_ports={("tcp", 80)})]
    placements = schedule(nodes, replicas(3, host_ports=[("tcp", 80)]))
    assert tasks_per_node(placements) == {"n1": 1, "n2": 1}
    assert placements[2].explanation == "no suitable node: host-mode published port in use on 3 nodes"


def test_dynamic_host_port_does_not_limit_tasks_per_node(roomy_node, replicas):
    placements = schedule([roomy_node("n1")], replicas(3, host_ports=[("tcp", 0)]))
    assert tasks_per_node(placements) == {"n1": 3}


def test_spread_preference_over_zones_with_unequal_node_counts(roomy_node, replicas):
    nodes = [roomy_node("a1", labels={"zone": "a"})] + [roomy_node(f"b{i}", labels={"zone": "b"}) for i in range(3)]
    placements = schedule(nodes, replicas(4, preferences=["node.labels.zone"]))
    by_node = tasks_per_node(placements)
    assert by_node["a1"] == 2
    assert sum(by_node[f"b{i}"] for i in range(3)) == 2
    assert max(by_node[f"b{i}"] for i in range(3)) == 1


def test_spread_preference_evens_out_existing_tasks(roomy_node, replicas):
    nodes = [
        roomy_node("a1", labels={"zone": "a"}, tasks_by_service={"svc": 3}, total_tasks=3),
        roomy_node("b1", labels={"zone": "b"}),
    ]
    placements = schedule(nodes, replicas(5, preferences=["node.labels.zone"]))
    assert tasks_per_node(placements) == {"b1": 4, "a1": 1}


def test_nodes_missing_the_preference_label_form_their_own_group(roomy_node, replicas):
    nodes = [roomy_node("a1", labels={"zone": "a"}), roomy_node("x1"), roomy_node("x2")]
    placements = schedule(nodes, replicas(4, preferences=["node.labels.zone"]))
    by_node = tasks_per_node(placements)
    assert by_node["a1"] == 2
    assert by_node["x1"] + by_node["x2"] == 2


def test_nested_preferences_spread_inside_each_outer_group(roomy_node, replicas):
    nodes = [
        roomy_node("a-r1-1", labels={"zone": "a", "rack": "r1"}),
        roomy_node("a-r1-2", labels={"zone": "a", "rack": "r1"}),
        roomy_node("a-r1-3", labels={"zone": "a", "rack": "r1"}),
        roomy_node("a-r2-1", labels={"zone": "a", "rack": "r2"}),
        roomy_node("b-r3-1", labels={"zone": "b", "rack": "r3"}),
    ]
    placements = schedule(nodes, replicas(8, preferences=["node.labels.zone", "node.labels.rack"]))
    by_node = tasks_per_node(placements)
    assert by_node["b-r3-1"] == 4
    assert by_node["a-r2-1"] == 2  # zone a's four tasks split evenly between its two racks
    assert by_node["a-r1-1"] + by_node["a-r1-2"] + by_node["a-r1-3"] == 2


def test_full_preference_group_overflows_to_the_others(roomy_node, replicas):
    nodes = [
        roomy_node("a1", labels={"zone": "a"}, capacity=ResourceAmount(0, GIB)),
        roomy_node("b1", labels={"zone": "b"}, capacity=ResourceAmount(0, 8 * GIB)),
    ]
    placements = schedule(nodes, replicas(4, preferences=["node.labels.zone"], reservations=ResourceAmount(0, GIB)))
    assert tasks_per_node(placements) == {"a1": 1, "b1": 3}


def test_down_paused_and_drained_nodes_get_no_tasks(roomy_node, replicas):
    nodes = [
        roomy_node("down", state="down"),
        roomy_node("paused", availability="pause"),
        roomy_node("drained", availability="drain"),
        roomy_node("ok"),
    ]
    assert tasks_per_node(schedule(nodes, replicas(3))) == {"ok": 3}
    placements = schedule(nodes[:3], replicas(1))
    assert placements[0].explanation == "no suitable node: node not ready on 1 node, node paused or drained on 2 nodes"


def test_unmet_constraint_is_explained(roomy_node, replicas):
    nodes = [roomy_node("n1", labels={"zone": "b"}), roomy_node("n2", labels={"zone": "c"}), roomy_node("n3")]
    placements = schedule(nodes, replicas(1, constraints=["node.labels.zone==a"]))
    assert placements == [Placement("t00", None, "no suitable node: constraint node.labels.zone==a unmet on 3 nodes")]


def test_global_task_goes_only_to_its_node(roomy_node):
    nodes = [roomy_node("n1"), roomy_node("n2", tasks_by_service={"x": 9}, total_tasks=9)]
    placements = schedule(nodes, [TaskRequest("g1", "agent", node_id="n2"), TaskRequest("g2", "agent", node_id="n1")])
    assert [(p.task_id, p.node_id) for p in placements] == [("g1", "n2"), ("g2", "n1")]


def test_global_task_explains_why_its_node_is_unsuitable(roomy_node):
    nodes = [roomy_node("n1", availability="drain"), roomy_node("n2")]
    placements = schedule(nodes, [TaskRequest("g1", "agent", node_id="n1"), TaskRequest("g2", "agent", node_id="gone")])
    assert placements[0].node_id is None
    assert placements[0].explanation == "no suitable node: node paused or drained on 1 node"
    assert placements[1].explanation == "no suitable node: node gone not found"


def test_later_batches_see_earlier_placements(roomy_node):
    nodes = [roomy_node("n1", capacity=ResourceAmount(0, 2 * GIB)), roomy_node("n2", capacity=ResourceAmount(0, 2 * GIB))]
    tasks = [TaskRequest("a1", "a", reservations=ResourceAmount(0, 2 * GIB)), TaskRequest("b1", "b")]
    placements = schedule(nodes, tasks)
    # Service a fills n1; b then prefers n2, which has fewer tasks overall.
    assert [p.node_id for p in placements] == ["n1", "n2"]


def test_inputs_are_not_mutated_and_plan_returns_updated_copies(roomy_node, replicas):
    nodes = [roomy_node("n1"), roomy_node("n2")]
    before = deepcopy(nodes)
    result = plan(nodes, replicas(3, reservations=ResourceAmount(0, GIB), host_ports=[("udp", 0)]))
    assert nodes == before
    updated = {n.node_id: n for n in result.nodes}
    assert updated["n1"].tasks_by_service == {"svc": 2}
    assert updated["n1"].total_tasks == 2
    assert updated["n1"].reserved == ResourceAmount(0, 2 * GIB)
    assert updated["n2"].reserved == ResourceAmount(0, GIB)


def test_host_ports_recorded_on_updated_node(roomy_node):
    result = plan([roomy_node("n1")], [TaskRequest("t", "s", host_ports=[("tcp", 443)])])
    assert result.nodes[0].host_ports == {("tcp", 443)}


def _mixed_cluster():
    nodes = [
        NodeInfo(
            f"n{i}",
            labels={"zone": "abc"[i % 3]} if i % 4 else {},
            role="manager" if i < 2 else "worker",
            capacity=ResourceAmount.from_cpus(4, 4 * GIB),
            tasks_by_service={"web": i % 3},
            total_tasks=i % 5,
        )
        for i in range(12)
    ]
    tasks = (
        [TaskRequest(f"web{i}", "web", preferences=["node.labels.zone"], reservations=ResourceAmount(0, GIB)) for i in range(20)]
        + [TaskRequest(f"api{i}", "api", constraints=["node.role==worker"], max_replicas_per_node=2) for i in range(15)]
        + [TaskRequest(f"agent{i}", "agent", node_id=f"n{i}") for i in range(12)]
    )
    return nodes, tasks


def test_same_input_gives_same_output():
    nodes, tasks = _mixed_cluster()
    assert schedule(nodes, tasks) == schedule(nodes, tasks)


def test_shuffled_input_gives_same_assignments():
    nodes, tasks = _mixed_cluster()
    expected = {p.task_id: p for p in schedule(nodes, tasks)}
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(nodes)
        rng.shuffle(tasks)
        assert {p.task_id: p for p in schedule(nodes, tasks)} == expected
