"""The update state machine, pure: monitoring of new tasks, failure_action pause /
continue / rollback, max_failure_ratio, rollback_config, canaries and promotion."""
from __future__ import annotations

from swarmlet.api import specs
from swarmlet.api.objects import spec_digest

from .conftest import make_service

NO_RESTART_DELAY = specs.RestartPolicy(delay=0)


def update(w, image="busybox:2", update_config=None, rollback_config=None):
    """What the stack API does on an update: the spec changes, the old one is kept."""
    previous = w.service["spec"]
    spec = dict(previous, container=dict(previous["container"], image=image))
    if update_config:
        spec["update_config"] = dict(previous["update_config"], **update_config)
    if rollback_config:
        spec["rollback_config"] = dict(previous["rollback_config"], **rollback_config)
    w.service = dict(w.service, spec=spec, previous_spec=previous)
    return spec_digest(previous), spec_digest(spec)


def update_state(w) -> dict:
    return w.service["status"].get("update") or {}


def by_digest(w, digest):
    return [t for t in w.active() if t["spec"]["spec_digest"] == digest]


def reject_new(w, digest, state="rejected", err="No such image: busybox:2"):
    """The agents: new tasks fail to start (the image does not exist)."""
    for task in w.tasks.values():
        if task["spec"]["spec_digest"] == digest and task["status"]["state"] in ("pending", "assigned"):
            task["status"] = dict(task["status"], state=state, timestamp=w.now, err=err)


def cycle(w, fail_digest=None, rounds=30):
    """Orchestrate, place and run; tasks of ``fail_digest`` are rejected instead of run.
    Records every old task that was ever stopped."""
    stopped_old = set()
    for _ in range(rounds):
        w.step()
        w.place()
        if fail_digest:
            reject_new(w, fail_digest)
        w.run_all()
        stopped_old |= {t["id"] for t in w.tasks.values() if t["status"]["state"] == "shutdown"
                        and t["spec"]["spec_digest"] != fail_digest}
    return stopped_old


def test_an_update_to_a_missing_image_rolls_back_to_the_previous_spec(world):
    w = world(make_service(replicas=4, restart_policy=NO_RESTART_DELAY))
    w.settle()
    original = {t["id"] for t in w.running()}
    old, new = update(w, update_config={"failure_action": "rollback", "parallelism": 2})
    stopped = cycle(w, fail_digest=new)
    assert update_state(w)["state"] == "rollback_started"  # the old tasks are watched for `monitor` too
    w.now += 5.0
    w.settle()
    state = update_state(w)
    assert state["state"] == "rollback_completed", state
    assert state["message"] == "rollback completed"
    assert "update rolled back due to failure or early termination of task" not in state["reason"]
    assert state["reason"].startswith("failure or early termination of task t") and "No such image" in state["reason"]
    assert spec_digest(w.service["spec"]) == old and "previous_spec" not in w.service  # used up, as in SwarmKit
    assert len(w.running()) == 4 and {t["spec"]["spec_digest"] for t in w.running()} == {old}
    assert len(stopped & original) <= 2  # no more than `parallelism` old tasks were ever stopped
    assert not by_digest(w, new)


def test_a_task_that_exits_within_monitor_pauses_the_update_and_says_why(world):
    w = world(make_service(replicas=3, restart_policy=NO_RESTART_DELAY))
    w.settle()
    _, new = update(w)
    w.step()
    w.place()
    w.run_all()  # the old task stops
    w.step()
    w.place()
    w.run_all()  # the new task runs
    (task,) = [t for t in w.running() if t["spec"]["spec_digest"] == new]
    w.now += 2.0  # within monitor (5 s)
    w.set_state(task, "failed", exit_code=3)
    w.step()
    state = update_state(w)
    assert state["state"] == "paused"
    assert state["message"] == f"update paused due to failure or early termination of task {task['id']}: exit code 3"
    for _ in range(10):  # the restart supervisor retries the slot; no other slot is taken
        w.step()
        w.place()
        w.run_all()
    assert len(by_digest(w, new)) == 1 and update_state(w)["state"] == "paused"


def test_a_failure_after_the_monitor_window_is_not_the_updates(world):
    w = world(make_service(replicas=2, restart_policy=NO_RESTART_DELAY))
    w.settle()
    _, new = update(w)
    for _ in range(3):
        w.step()
        w.place()
        w.run_all()
    (task,) = [t for t in w.running() if t["spec"]["spec_digest"] == new]
    w.now += 6.0  # ran longer than monitor
    w.set_state(task, "failed", exit_code=1)
    w.settle()
    w.now += 5.0
    w.settle()
    assert update_state(w)["state"] == "completed"
    assert len(by_digest(w, new)) == 2


def test_one_failure_in_four_is_within_a_ratio_of_half(world):
    w = world(make_service(replicas=4, restart_policy=NO_RESTART_DELAY))
    w.settle()
    _, new = update(w, update_config={"max_failure_ratio": 0.5})
    failed_once = []

    def fail_first_new():
        for task in w.tasks.values():
            if (task["spec"]["spec_digest"] == new and task["status"]["state"] == "running" and not failed_once):
                w.set_state(task, "failed", exit_code=1)
                failed_once.append(task["id"])
    for _ in range(30):
        w.step()
        w.place()
        w.run_all()
        fail_first_new()
    w.now += 5.0
    w.settle()
    assert failed_once and update_state(w)["state"] == "completed"
    assert update_state(w)["failed_tasks"] == failed_once
    assert len(w.running()) == 4 and {t["spec"]["spec_digest"] for t in w.running()} == {new}


def test_two_failures_in_four_exceed_a_ratio_of_a_quarter(world):
    w = world(make_service(replicas=4, restart_policy=NO_RESTART_DELAY))
    w.settle()
    _, new = update(w, update_config={"max_failure_ratio": 0.25, "parallelism": 0})
    cycle(w, fail_digest=new, rounds=2)
    assert update_state(w)["state"] == "paused"


def test_continue_goes_on_whatever_fails(world):
    w = world(make_service(replicas=3, restart_policy=specs.RestartPolicy(condition="none")))
    w.settle()
    _, new = update(w, update_config={"failure_action": "continue"})
    cycle(w, fail_digest=new, rounds=12)
    assert update_state(w)["state"] == "completed"
    assert len(update_state(w)["failed_tasks"]) == 3  # every slot was tried
    assert not w.running()


def test_rollback_without_a_previous_spec_pauses_and_says_so(world):
    w = world(make_service(replicas=2, restart_policy=NO_RESTART_DELAY))
    w.settle()
    _, new = update(w, update_config={"failure_action": "rollback"})
    w.service.pop("previous_spec")
    cycle(w, fail_digest=new, rounds=3)
    state = update_state(w)
    assert state["state"] == "paused" and state["message"].endswith("; no previous spec to roll back to")


def test_rollback_follows_rollback_config(world):
    # Swarm rolls back with the rollback_config of the spec it returns to.
    w = world(make_service(replicas=4, restart_policy=NO_RESTART_DELAY,
                           rollback_config=specs.UpdateConfig(parallelism=0, monitor=1.0)))
    w.settle()
    old, new = update(w, update_config={"parallelism": 1, "failure_action": "rollback"})
    w.step()
    w.place()
    w.run_all()
    w.step()
    w.place()
    (task,) = [t for t in w.tasks.values() if t["spec"]["spec_digest"] == new]
    w.set_state(task, "failed", exit_code=1)
    decision = w.step()
    assert decision.rollback is not None and update_state(w)["state"] == "rollback_started"
    decision = w.step()
    assert len(decision.creates) == 1  # the one slot that was updated is put back
    w.place()
    w.run_all()
    w.now += 1.0  # the rollback's own monitor
    w.settle()
    assert update_state(w)["state"] == "rollback_completed"
    assert {t["spec"]["spec_digest"] for t in w.running()} == {old} and len(w.running()) == 4


def test_a_manual_rollback_replaces_the_new_tasks_per_rollback_config(world):
    w = world(make_service(replicas=4, restart_policy=NO_RESTART_DELAY,
                           rollback_config=specs.UpdateConfig(parallelism=0)))
    w.settle()
    old, new = update(w, update_config={"parallelism": 0})
    w.settle()
    assert {t["spec"]["spec_digest"] for t in w.running()} == {new}
    # `service rollback`: the spec and the previous one swap (the API does it)
    w.service = dict(w.service, spec=w.service["previous_spec"], previous_spec=w.service["spec"],
                     status={"update": {"digest": old, "state": "rollback_started", "started_at": w.now,
                                        "message": "manually requested rollback"}})
    decision = w.step()
    assert len(decision.creates) == 4  # parallelism 0: every slot at once
    w.settle()
    w.now += 5.0
    w.settle()
    assert update_state(w)["state"] == "rollback_completed"
    assert {t["spec"]["spec_digest"] for t in w.running()} == {old}


def test_a_failing_rollback_pauses_and_is_never_rolled_back(world):
    w = world(make_service(replicas=2, restart_policy=NO_RESTART_DELAY))
    w.settle()
    bad, _ = update(w)
    w.service = dict(w.service, status={"update": {"digest": bad, "state": "rollback_started",
                                                   "started_at": w.now}})
    w.settle()
    # now roll back "to" a spec whose tasks fail
    good = w.service["spec"]
    w.service = dict(w.service, spec=dict(good, container=dict(good["container"], image="gone:1")))
    target = spec_digest(w.service["spec"])
    w.service["status"] = {"update": {"digest": target, "state": "rollback_started", "started_at": w.now}}
    cycle(w, fail_digest=target, rounds=3)
    state = update_state(w)
    assert state["state"] == "rollback_paused" and state["message"].startswith("rollback paused due to failure")


def test_a_canary_runs_beside_the_old_tasks_until_promoted(world):
    w = world(make_service(replicas=4, restart_policy=NO_RESTART_DELAY))
    w.settle()
    old, new = update(w, update_config={"canary": 1})
    for _ in range(5):
        w.step()
        w.place()
        w.run_all()
    assert len(by_digest(w, new)) == 1 and len(by_digest(w, old)) == 4
    assert update_state(w)["state"] == "updating"  # the canary is watched for `monitor` first
    w.now += 5.0
    w.settle()
    state = update_state(w)
    assert state["state"] == "awaiting_promotion" and "service promote app_web" in state["message"]
    assert len(by_digest(w, new)) == 1 and len(w.running()) == 5
    # promotion: the rollout goes on
    w.service["status"] = {"update": dict(state, state="updating", promoted=True)}
    w.settle()
    w.now += 5.0
    w.settle()
    assert update_state(w)["state"] == "completed"
    assert len(w.running()) == 4 and {t["spec"]["spec_digest"] for t in w.running()} == {new}


def test_a_rolled_back_canary_is_dropped(world):
    w = world(make_service(replicas=4, restart_policy=NO_RESTART_DELAY))
    w.settle()
    originals = {t["id"] for t in w.running()}
    old, new = update(w, update_config={"canary": 1})
    w.settle()
    w.now += 5.0
    w.settle()
    assert update_state(w)["state"] == "awaiting_promotion"
    # service rollback: the spec swaps back
    w.service = dict(w.service, spec=w.service["previous_spec"], previous_spec=w.service["spec"],
                     status={"update": {"digest": old, "state": "rollback_started", "started_at": w.now}})
    w.settle()
    assert not by_digest(w, new) and {t["id"] for t in w.running()} == originals  # nothing else was touched
    w.now += 5.0
    w.settle()
    assert update_state(w)["state"] == "rollback_completed"


def test_auto_promote_and_blue_green(world):
    # a canary as large as the service is blue-green: a whole new set beside the old one,
    # switched to at once when it is healthy
    w = world(make_service(replicas=3, restart_policy=NO_RESTART_DELAY))
    w.settle()
    old, new = update(w, update_config={"canary": 3, "auto_promote": True})
    w.settle()
    assert len(by_digest(w, new)) == 3 and len(by_digest(w, old)) == 3
    w.now += 5.0
    decision = w.step()
    assert decision.service_status["update"]["promoted"] is True
    decision = w.step()
    assert sum(spec["desired_state"] == "shutdown" for _, spec in decision.updates) == 3  # all at once
    w.settle()
    w.now += 5.0
    w.settle()
    assert update_state(w)["state"] == "completed" and len(w.running()) == 3
