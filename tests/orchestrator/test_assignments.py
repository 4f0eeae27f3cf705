"""What the dispatcher sends a node, and which status reports it accepts."""
from __future__ import annotations

from swarmlet.api import specs
from swarmlet.api.session import Assignments, AssignmentSet
from swarmlet.manager.dispatcher.assignments import accepted_status, node_assignment, task_changes, task_phase

from swarmlet.api.views import Secret, Task
from swarmlet.store.state import freeze

from .conftest import World, make_node, make_service, task_views


def _tasks_with_secrets():
    service = make_service("app", replicas=2)
    service["spec"]["container"]["secrets"] = [specs.FileRef("app_db", "/run/secrets/db").to_dict()]
    w = World(service, [make_node("n1"), make_node("n2")])
    w.step()
    w.place(["n1", "n2"])
    return w


def files(secrets):
    """What the dispatcher's lookup of a node's secrets and configs would find."""
    return lambda entries: (secrets, [])


def _secret(name, data):
    return Secret(freeze({"id": name, "spec": {"name": name, "data": data, "labels": {}}}))


def test_a_node_gets_its_tasks_and_only_the_secrets_they_use():
    w = _tasks_with_secrets()
    secrets = [_secret("app_db", b"pw"), _secret("other", b"nope")]
    message = node_assignment("n1", task_views(w.tasks.values()), secrets, [])
    assert [t["id"] for t in message.tasks] == [t["id"] for t in w.tasks.values() if t["spec"]["node_id"] == "n1"]
    assert message.secrets == {"app_db": {"data": b"pw", "id": "app_db"}}
    assert node_assignment("n3", task_views(w.tasks.values()), secrets, []) == Assignments(
        tasks=[], secrets={}, configs={})


def test_a_stopped_task_no_longer_brings_its_secret():
    w = _tasks_with_secrets()
    for task in w.tasks.values():
        task["spec"]["desired_state"] = "shutdown"
    message = node_assignment("n1", task_views(w.tasks.values()), [_secret("app_db", b"pw")], [])
    assert message.secrets == {} and len(message.tasks) == 1


def test_status_reports_only_move_forward_and_only_from_the_tasks_node():
    w = _tasks_with_secrets()
    raw = next(t for t in w.tasks.values() if t["spec"]["node_id"] == "n1")
    task = Task(freeze(raw))
    assert accepted_status(task, "n2", {"state": "running"}) is None  # not its node
    running = accepted_status(task, "n1", {"state": "running", "started_at": 5.0, "bogus": 1})
    assert running["state"] == "running" and running["started_at"] == 5.0 and "bogus" not in running
    task = Task(freeze(dict(raw, status=running)))
    assert accepted_status(task, "n1", {"state": "starting"}) is None  # backwards
    assert accepted_status(task, "n1", dict(running)) is None  # nothing new
    task = Task(freeze(dict(raw, status=dict(running, state="complete"))))
    assert accepted_status(task, "n1", {"state": "failed"}) is None  # an ended task stays ended
    assert accepted_status(None, "n1", {"state": "running"}) is None


def test_task_phase():
    def task(state):
        return Task(freeze({"status": {"state": state}}))
    assert [task_phase(task(s)) for s in ("pending", "assigned", "accepted", "running", "failed")] == \
        ["new", "new", "active", "active", "ended"]


def test_a_task_bound_to_its_node_goes_there_only_once_the_scheduler_assigned_it():
    """A global task is created with its node already named, but pending: the scheduler
    still has to check it fits and give it its overlay addresses. Sent before that, the
    node ran it without an address, on its engine's own bridge (found end to end)."""
    w = World(make_service("client", mode="global"), [make_node("n1"), make_node("n2")])
    w.step()
    bound = [t for t in w.tasks.values() if t["spec"]["node_id"] == "n1"]
    assert len(bound) == 1 and bound[0]["status"]["state"] == "pending"
    assert node_assignment("n1", task_views(w.tasks.values()), [], []).tasks == []
    bound[0]["status"]["state"] = "assigned"
    assert [t["id"] for t in node_assignment("n1", task_views(w.tasks.values()), [], []).tasks] == [bound[0]["id"]]
    # Pending but no longer meant to run (a stack removed before it was placed): it goes,
    # for the node to report it shut down before it started.
    bound[0]["status"]["state"], bound[0]["spec"]["desired_state"] = "pending", "remove"
    assert [t["id"] for t in node_assignment("n1", task_views(w.tasks.values()), [], []).tasks] == [bound[0]["id"]]


def _with(task: Task, **changes) -> Task:
    raw = task.raw if hasattr(task, "raw") else task
    return Task(freeze({**raw, "spec": {**raw["spec"], **changes.get("spec", {})},
                        "status": {**raw["status"], **changes.get("status", {})}}))


def test_changes_for_the_touched_tasks_only_and_the_secrets_follow_them():
    w = _tasks_with_secrets()
    secrets = [_secret("app_db", b"pw")]
    tasks = task_views(w.tasks.values())
    mine = next(t for t in tasks if t.spec.node_id == "n1")
    held = AssignmentSet.of(node_assignment("n1", tasks, secrets, [], sequence=1))
    # A status change that leaves the entry as it was (running after accepted), or changes only its
    # phase because the node took the task up (assigned -> accepted: the node's own report): nothing
    # to send. A whole set, as a new session gets it, has the phase as it is.
    accepted = _with(mine, status={"state": "accepted"})
    assert not task_changes("n1", held, {mine.id: accepted}, files(secrets))
    assert not task_changes("n1", held, {mine.id: _with(accepted, status={"state": "running"})}, files(secrets))
    assert [t["phase"] for t in node_assignment("n1", [accepted], secrets, []).tasks] == ["active"]
    # ... but a task that ended, or one whose spec changed too, is sent, with its phase as it is now
    failed = task_changes("n1", held, {mine.id: _with(accepted, status={"state": "failed"})}, files(secrets))
    assert [t["phase"] for t in failed.tasks] == ["ended"]
    changes = task_changes("n1", held, {mine.id: _with(accepted, spec={"env_note": 1})}, files(secrets))
    assert [t["phase"] for t in changes.tasks] == ["active"] and not changes.secrets and changes.applies_to == 1
    held.apply(changes)
    accepted = _with(accepted, spec={"env_note": 1})
    # Another node's task, and one that does not exist and never did: nothing.
    theirs = next(t for t in tasks if t.spec.node_id == "n2")
    assert not task_changes("n1", held, {theirs.id: theirs, "ghost": None}, files(secrets))
    # Shut down: the task stays in the set (its node reports it stopped), its secret goes.
    stopped = task_changes("n1", held, {mine.id: _with(accepted, spec={"desired_state": "shutdown"})}, files(secrets))
    assert [t["spec"]["desired_state"] for t in stopped.tasks] == ["shutdown"] and stopped.removed_secrets == ["app_db"]
    held.apply(stopped)
    # Deleted: removed from the set.
    gone = task_changes("n1", held, {mine.id: None}, files(secrets))
    assert gone.removed == [mine.id] and not gone.tasks and (gone.sequence, gone.applies_to) == (held.sequence + 1, 3)


def test_changes_add_a_secret_once_a_new_task_needs_it():
    w = _tasks_with_secrets()
    secrets = [_secret("app_db", b"pw")]
    tasks = task_views(w.tasks.values())
    mine = next(t for t in tasks if t.spec.node_id == "n1")
    held = AssignmentSet.of(node_assignment("n1", [], secrets, [], sequence=1))  # the node had nothing
    changes = task_changes("n1", held, {mine.id: mine}, files(secrets))
    assert [t["id"] for t in changes.tasks] == [mine.id] and changes.secrets == {"app_db": {"data": b"pw", "id": "app_db"}}
    held.apply(changes)
    assert held.whole() == node_assignment("n1", [mine], secrets, [], sequence=2)  # the same as a whole set


def test_files_are_looked_up_only_for_changes_that_touch_a_secret_or_config():
    w = World(make_service("plain", replicas=2), [make_node("n1")])
    w.step()
    w.place(["n1", "n1"])
    tasks = task_views(w.tasks.values())
    held = AssignmentSet.of(node_assignment("n1", tasks[:1], [], [], sequence=1))
    looked_up = []

    def files_of(entries):
        looked_up.append(len(entries))
        return [], []

    added = task_changes("n1", held, {tasks[1].id: tasks[1]}, files_of)
    assert [t["id"] for t in added.tasks] == [tasks[1].id] and looked_up == []  # no task of it uses a file
    w2 = _tasks_with_secrets()
    mine = next(t for t in task_views(w2.tasks.values()) if t.spec.node_id == "n1")
    task_changes("n1", AssignmentSet.of(node_assignment("n1", [], [], [], sequence=1)), {mine.id: mine}, files_of)
    assert looked_up == [1]  # one that uses a secret: the node's entries, once
