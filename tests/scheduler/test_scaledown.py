from swarmlet.manager.scheduler import choose_tasks_to_remove


def test_removes_from_nodes_holding_most_tasks_first():
    tasks_by_node = {
        "n1": [("a1", True), ("a2", True), ("a3", True)],
        "n2": [("b1", True)],
        "n3": [("c1", True), ("c2", True)],
    }
    removed = choose_tasks_to_remove(tasks_by_node, 3)
    # n1 3->2, then n1 and n3 tie at 2 (n1 first by id), then n3 2->1: one task left on each node.
    assert removed == ["a1", "a2", "c1"]


def test_not_running_tasks_go_first_on_a_node():
    removed = choose_tasks_to_remove({"n1": [("a1", True), ("a2", False), ("a3", True)]}, 2)
    assert removed == ["a2", "a1"]


def test_among_equally_loaded_nodes_one_with_a_stopped_task_goes_first():
    tasks_by_node = {"n1": [("a1", True), ("a2", True)], "n2": [("b1", True), ("b2", False)]}
    assert choose_tasks_to_remove(tasks_by_node, 1) == ["b2"]


def test_count_beyond_available_removes_everything_and_zero_removes_nothing():
    tasks_by_node = {"n1": [("a1", True)], "n2": [], "n3": [("c1", False)]}
    assert sorted(choose_tasks_to_remove(tasks_by_node, 10)) == ["a1", "c1"]
    assert choose_tasks_to_remove(tasks_by_node, 0) == []


def test_result_does_not_depend_on_input_order():
    forward = {"n1": [("a1", True), ("a2", False)], "n2": [("b1", True), ("b2", True)], "n3": [("c1", True)]}
    backward = {node: list(reversed(tasks)) for node, tasks in reversed(forward.items())}
    assert choose_tasks_to_remove(forward, 3) == choose_tasks_to_remove(backward, 3) == ["a2", "b1", "a1"]
