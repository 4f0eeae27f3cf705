"""The orchestrators' decisions: replicated, global, jobs, restarts, updates, depends_on."""
from __future__ import annotations

import dataclasses
from collections import Counter

from swarmlet.api import specs
from swarmlet.api.objects import TASK_HISTORY_LIMIT, spec_digest
from swarmlet.manager.orchestrator.reconcile import dependencies_waiting, should_restart

from swarmlet.api.views import Service, Task
from swarmlet.store.state import freeze

from .conftest import make_node, make_service, task_views


def slots(world):
    return sorted(t["spec"]["slot"] for t in world.active())


# -- replicated ------------------------------------------------------------------------------------

def test_replicated_creates_one_task_per_slot_and_is_stable(world):
    w = world(make_service(replicas=3))
    w.settle()
    assert slots(w) == [1, 2, 3]
    assert len(w.running()) == 3
    assert w.decide().empty  # rerunning from scratch reaches the same answer


def test_scale_up_and_down_keeps_slots_dense_and_balanced(world):
    w = world(make_service(replicas=6))
    w.settle()
    w.service["spec"]["replicas"] = 2
    decision = w.step()
    removed = [t for t, spec in decision.updates if spec["desired_state"] == "remove"]
    assert len(removed) == 4
    w.run_all()
    w.settle()
    assert len(w.active()) == 2 and len(w.tasks) == 2  # removed tasks are deleted once stopped
    per_node = Counter(t["spec"]["node_id"] for t in w.active())
    assert max(per_node.values()) == 1  # removed from the nodes holding the most first
    w.service["spec"]["replicas"] = 5
    w.settle()
    assert len(set(slots(w))) == 5 and len(w.running()) == 5


def test_scale_down_removes_not_running_tasks_first(world):
    w = world(make_service(replicas=3), nodes=1)
    w.step()
    w.place()
    first, second, third = sorted(w.tasks.values(), key=lambda t: t["spec"]["slot"])
    w.set_state(first, "running")
    w.set_state(third, "running")
    w.service["spec"]["replicas"] = 2
    removed = [t.id for t, spec in w.decide().updates if spec["desired_state"] == "remove"]
    assert removed == [second["id"]]


def test_removed_service_marks_tasks_remove_then_deletes_them_once_stopped(world):
    w = world(make_service(replicas=2))
    w.settle()
    w.service = None
    decision = w.step()
    assert {spec["desired_state"] for _, spec in decision.updates} == {"remove"}
    assert not decision.deletes  # still running
    w.run_all()
    w.step()
    assert w.tasks == {}


def test_history_is_bounded_per_slot(world):
    w = world(make_service(replicas=1, restart_policy=specs.RestartPolicy(delay=0)))
    w.settle()
    for _ in range(10):
        (task,) = w.active()
        w.set_state(task, "failed", exit_code=1)
        w.settle()
    assert len(w.tasks) == TASK_HISTORY_LIMIT
    assert len(w.running()) == 1


# -- restarts -----------------------------------------------------------------------------------------

def test_failed_task_is_replaced_after_the_restart_delay(world):
    w = world(make_service(replicas=1, restart_policy=specs.RestartPolicy(delay=5.0)))
    w.settle()
    (task,) = w.active()
    w.set_state(task, "failed", exit_code=1)
    decision = w.step()
    (created,) = decision.creates
    assert created["spec"]["desired_state"] == "ready"  # placed and prepared, not started
    assert created["spec"]["not_before"] == w.now + 5.0
    assert decision.wake_at == w.now + 5.0
    assert w.tasks[task["id"]]["spec"]["desired_state"] == "shutdown"
    w.now += 4.9
    assert not any(spec["desired_state"] == "running" for _, spec in w.decide().updates)
    w.now += 0.2
    promoted = [spec for _, spec in w.decide().updates if spec["desired_state"] == "running"]
    assert len(promoted) == 1


def a_task(state, restarts=()) -> Task:
    return task_views([{"spec": {"restarts": list(restarts)}, "status": {"state": state}}])[0]


def test_restart_conditions():
    any_, on_failure, none = (specs.RestartPolicy(condition=c) for c in ("any", "on-failure", "none"))
    assert should_restart(a_task("failed"), any_, "replicated", 0)
    assert should_restart(a_task("complete"), any_, "replicated", 0)
    assert not should_restart(a_task("complete"), on_failure, "replicated", 0)
    assert should_restart(a_task("failed"), on_failure, "replicated", 0)
    assert not should_restart(a_task("failed"), none, "replicated", 0)
    assert should_restart(a_task("running"), none, "replicated", 0, lost=True)
    assert not should_restart(a_task("complete"), any_, "replicated-job", 0)
    assert not should_restart(a_task("complete"), any_, "replicated-job", 0, lost=True)


def test_max_attempts_counts_restarts_within_the_window():
    policy = specs.RestartPolicy(condition="any", max_attempts=2, window=10.0)
    failed = a_task("failed", [100.0, 105.0])
    assert not should_restart(failed, policy, "replicated", 108.0)
    assert should_restart(failed, policy, "replicated", 112.0)  # the first restart left the window
    assert not should_restart(failed, dataclasses.replace(policy, window=0), "replicated", 1e6)  # no window: all count


def test_max_attempts_stops_restarting_and_the_slot_stays_taken(world):
    w = world(make_service(replicas=1, restart_policy=specs.RestartPolicy(delay=0, max_attempts=2)))
    w.settle()
    for _ in range(5):
        (task,) = w.active()
        w.set_state(task, "failed", exit_code=1)
        w.settle()
    assert len(w.tasks) == 3  # the first run and two restarts
    (last,) = w.active()
    assert last["status"]["state"] == "failed"


def test_condition_none_leaves_a_failed_task_in_its_slot(world):
    w = world(make_service(replicas=1, restart_policy=specs.RestartPolicy(condition="none")))
    w.settle()
    (task,) = w.active()
    w.set_state(task, "failed", exit_code=1)
    assert w.decide().empty


def test_tasks_on_a_down_node_are_replaced_elsewhere_after_the_delay(world):
    w = world(make_service(replicas=2, restart_policy=specs.RestartPolicy(delay=2.0)), nodes=2)
    w.settle()
    w.nodes["n1"]["status"]["state"] = "down"
    decision = w.step()
    assert len(decision.creates) == 1 and decision.creates[0]["spec"]["desired_state"] == "ready"
    w.place(["n2"])
    w.now += 2.5
    w.settle()
    assert {t["spec"]["node_id"] for t in w.running()} == {"n2"}


def test_drained_node_tasks_are_replaced_even_with_condition_none(world):
    w = world(make_service(replicas=2, restart_policy=specs.RestartPolicy(condition="none", delay=0)), nodes=2)
    w.settle()
    w.nodes["n1"]["spec"]["availability"] = "drain"
    w.step()
    w.place(["n2"])
    w.run_all()
    w.settle()
    assert {t["spec"]["node_id"] for t in w.running()} == {"n2"} and len(w.running()) == 2


# -- global ---------------------------------------------------------------------------------------------

def test_global_follows_joins_drains_and_removals(world):
    w = world(make_service(mode="global"), nodes=3)
    w.settle()
    assert sorted(t["spec"]["node_id"] for t in w.running()) == ["n1", "n2", "n3"]
    w.nodes["n4"] = make_node("n4")
    w.settle()
    assert sorted(t["spec"]["node_id"] for t in w.running()) == ["n1", "n2", "n3", "n4"]
    w.nodes["n2"]["spec"]["availability"] = "drain"
    w.settle()
    assert sorted(t["spec"]["node_id"] for t in w.running()) == ["n1", "n3", "n4"]
    del w.nodes["n3"]
    w.settle()
    assert sorted(t["spec"]["node_id"] for t in w.active()) == ["n1", "n4"]
    assert not any(t["spec"]["node_id"] == "n3" for t in w.tasks.values())
    w.nodes["n2"]["spec"]["availability"] = "active"
    w.settle()
    assert sorted(t["spec"]["node_id"] for t in w.running()) == ["n1", "n2", "n4"]


def test_global_pause_keeps_tasks_and_down_node_keeps_its_task(world):
    w = world(make_service(mode="global"), nodes=2)
    w.settle()
    w.nodes["n1"]["spec"]["availability"] = "pause"
    w.nodes["n2"]["status"]["state"] = "down"
    assert w.decide().empty


def test_global_honours_label_constraints_as_labels_change(world):
    w = world(make_service(mode="global", placement=specs.Placement(constraints=["node.labels.gpu==yes"])), nodes=3)
    w.nodes["n2"]["spec"]["labels"] = {"gpu": "yes"}
    w.settle()
    assert [t["spec"]["node_id"] for t in w.running()] == ["n2"]
    w.nodes["n2"]["spec"]["labels"] = {}
    w.nodes["n3"]["spec"]["labels"] = {"gpu": "yes"}
    w.settle()
    assert [t["spec"]["node_id"] for t in w.running()] == ["n3"]


# -- jobs ------------------------------------------------------------------------------------------------

def test_replicated_job_runs_to_completion_and_is_never_restarted(world):
    w = world(make_service(mode="replicated-job", replicas=2, restart_policy=specs.RestartPolicy(delay=0)))
    w.settle()
    first, second = sorted(w.active(), key=lambda t: t["spec"]["slot"])
    w.set_state(first, "complete", exit_code=0)
    w.set_state(second, "failed", exit_code=3)
    w.settle()
    assert len(w.tasks) == 3  # only the failed one was retried
    retry = next(t for t in w.active() if t["spec"]["slot"] == 2 and t["id"] != second["id"])
    w.set_state(retry, "complete", exit_code=0)
    assert w.decide().empty


def test_global_job_runs_once_per_node_including_new_nodes(world):
    w = world(make_service(mode="global-job"), nodes=2)
    w.settle()
    for task in w.active():
        w.set_state(task, "complete", exit_code=0)
    assert w.decide().empty
    w.nodes["n3"] = make_node("n3")
    decision = w.decide()
    assert [c["spec"]["node_id"] for c in decision.creates] == ["n3"]


# -- rolling updates ----------------------------------------------------------------------------------------

def _change_image(w, **update):
    spec = dict(w.service["spec"], container=dict(w.service["spec"]["container"], image="busybox:2"))
    if update:
        spec["update_config"] = dict(spec["update_config"], **update)
    w.service = dict(w.service, spec=spec)
    return spec_digest(spec)


def test_stop_first_update_replaces_parallelism_slots_at_a_time(world):
    w = world(make_service(replicas=4))
    w.settle()
    digest = _change_image(w, parallelism=2)
    decision = w.step()
    assert len(decision.creates) == 2
    assert {c["spec"]["desired_state"] for c in decision.creates} == {"ready"}  # start after the old stops
    assert sum(spec["desired_state"] == "shutdown" for _, spec in decision.updates) == 2
    assert not w.step().creates  # two in progress: nothing more yet
    w.place()
    w.run_all()  # the old ones stop
    promoted = [spec for _, spec in w.step().updates if spec["desired_state"] == "running"]
    assert len(promoted) == 2
    w.settle()
    assert {t["spec"]["spec_digest"] for t in w.running()} == {digest} and len(w.running()) == 4
    # the last batch is still watched for `monitor` (5 s by default) before the update completes
    assert w.service["status"]["update"]["state"] == "updating" and w.decide().wake_at == w.now + 5.0
    w.now += 5.0
    w.settle()
    assert w.service["status"]["update"]["state"] == "completed"


def test_start_first_keeps_the_old_task_until_the_new_one_runs(world):
    w = world(make_service(replicas=1))
    w.settle()
    (old,) = w.active()
    _change_image(w, order="start-first")
    decision = w.step()
    assert decision.creates[0]["spec"]["desired_state"] == "running"
    assert not decision.updates
    w.place()
    w.run_all()
    decision = w.step()
    assert [(t.id, spec["desired_state"]) for t, spec in decision.updates] == [(old["id"], "shutdown")]


def test_update_delay_spaces_batches(world):
    w = world(make_service(replicas=2))
    w.settle()
    _change_image(w, delay=10.0)
    w.step()
    w.place()
    w.run_all()
    w.step()  # promote
    w.run_all()
    decision = w.decide()
    assert not decision.creates and decision.wake_at == w.now + 10.0
    w.now += 10.0
    assert len(w.decide().creates) == 1


def test_failed_update_pauses(world):
    w = world(make_service(replicas=3, restart_policy=specs.RestartPolicy(delay=0)))
    w.settle()
    _change_image(w)
    w.step()
    w.place()
    w.run_all()
    w.step()
    new = next(t for t in w.active() if t["spec"]["desired_state"] == "running" and t["status"]["state"] != "running")
    w.set_state(new, "failed", exit_code=1)
    w.step()
    assert w.service["status"]["update"]["state"] == "paused"
    w.settle()
    changed = [t for t in w.active() if t["spec"]["spec_digest"] == spec_digest(w.service["spec"])]
    assert len(changed) == 1  # the failed slot was retried, no other slot was updated


def test_changing_how_updates_roll_out_replaces_nothing(world):
    w = world(make_service(replicas=2))
    w.settle()
    before = {t["id"] for t in w.running()}
    w.service["spec"]["update_config"] = dict(w.service["spec"]["update_config"], parallelism=0, monitor=1.0)
    w.service["spec"]["rollback_config"] = dict(w.service["spec"]["rollback_config"], order="start-first")
    w.settle()
    assert {t["id"] for t in w.running()} == before


def test_scaling_alone_replaces_nothing(world):
    w = world(make_service(replicas=2))
    w.settle()
    before = {t["id"] for t in w.running()}
    w.service["spec"]["replicas"] = 3
    w.settle()
    assert before < {t["id"] for t in w.running()}


# -- depends_on -------------------------------------------------------------------------------------------

def test_dependencies_gate_the_first_tasks(world):
    db = make_service("db", replicas=1)
    web = make_service("web", replicas=2, depends_on={"db": "service_healthy"})
    job = make_service("migrate", mode="replicated-job", replicas=1)
    api = make_service("api", replicas=1, depends_on={"migrate": "service_completed_successfully"})
    services = [Service(freeze(s)) for s in (db, web, job, api)]
    web_view, api_view = services[1], services[3]

    def task(service, state):
        return task_views([{"spec": {"service_id": service["id"], "desired_state": "running"},
                            "status": {"state": state}}])

    assert dependencies_waiting(web_view, services, {}) == "waiting for db (service_healthy)"
    assert dependencies_waiting(web_view, services, {db["id"]: task(db, "starting")}) is not None
    assert dependencies_waiting(web_view, services, {db["id"]: task(db, "running")}) is None
    assert dependencies_waiting(api_view, services, {job["id"]: task(job, "running")}) is not None
    assert dependencies_waiting(api_view, services, {job["id"]: task(job, "complete")}) is None
    assert dependencies_waiting(Service(freeze(make_service("x", depends_on={"nope": "service_started"}))),
                                services, {}) == "waiting for nope: not deployed"

    w = world(web)
    decision = w.step(waiting_for="waiting for db (service_healthy)")
    assert not decision.creates and w.service["status"]["message"] == "waiting for db (service_healthy)"
    w.settle()
    assert len(w.running()) == 2 and w.service["status"]["message"] == ""
