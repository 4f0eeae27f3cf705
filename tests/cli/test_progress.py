"""The convergence rules of `stack deploy` / `service scale` (swarmlet.cli.progress),
on hand-made API views: no cluster needed."""
from __future__ import annotations

import click
import pytest

from swarmlet.api.objects import spec_digest
from swarmlet.cli import progress
from swarmlet.cli.progress import Assessor, wait_converged

SPEC = {"name": "app_web", "mode": "replicated", "replicas": 2, "container": {"image": "busybox"}}
DIGEST = spec_digest(SPEC)


def service(mode="replicated", replicas=2, status=None, spec=SPEC):
    return {"id": "svc", "name": "app_web", "mode": mode, "replicas": replicas, "running": 0,
            "spec": dict(spec, mode=mode, replicas=replicas), "status": status or {}}


def task(tid, slot=1, state="running", desired="running", digest=None, err=None, message="", created=0.0,
         node="n1", mode="replicated"):
    return {"id": tid, "service_id": "svc", "slot": slot, "node_id": node, "state": state, "desired_state": desired,
            "spec_digest": digest or spec_digest(dict(SPEC, mode=mode)), "err": err, "message": message,
            "timestamp": created, "created_at": created}


def one(assessor, svc, tasks, now=0.0):
    (item,) = assessor.assess([svc], tasks, now)
    return item


def test_replicated_converges_only_at_the_desired_count_of_current_tasks():
    a = Assessor()
    assert not one(a, service(), [task("a")]).converged
    item = one(a, service(), [task("a"), task("b", slot=2)])
    assert (item.done, item.desired, item.converged) == (2, 2, True)
    # a task of the previous spec still running: an update is in progress
    item = one(a, service(), [task("a"), task("b", slot=2, digest="old")])
    assert (item.done, item.converged) == (1, False)
    # scaled down but an extra task still active
    assert not one(a, service(replicas=1), [task("a"), task("b", slot=2)]).converged


def test_job_counts_completed_slots():
    a = Assessor()
    job = service(mode="replicated-job", replicas=2)
    tasks = [task("a", state="complete", mode="replicated-job"), task("b", slot=2, state="running", mode="replicated-job")]
    item = one(a, job, tasks)
    assert (item.done, item.desired, item.converged, item.unit) == (1, 2, False, "completed")
    tasks[1]["state"] = "complete"
    assert one(a, job, tasks).converged


def test_pending_with_an_explanation_fails_after_the_deadline_and_the_note_shows_it():
    a = Assessor(pending_timeout=10)
    pending = [task("a", state="pending", message="no suitable node (insufficient memory on 3 nodes)", node=None)]
    item = one(a, service(replicas=1), pending, now=0)
    assert item.note == "pending: no suitable node (insufficient memory on 3 nodes)" and item.failure is None
    assert one(a, service(replicas=1), pending, now=9).failure is None
    item = one(a, service(replicas=1), pending, now=10.5)
    assert "pending for 10s" in item.failure and "insufficient memory" in item.failure and not item.converged


def test_a_failed_task_nothing_replaces_fails_after_the_grace_but_a_replaced_one_does_not():
    a = Assessor(grace=2)
    failed = [task("a", state="failed", err="exit code 3")]
    assert one(a, service(replicas=1), failed, now=0).failure is None
    assert "exit code 3" in one(a, service(replicas=1), failed, now=2.5).failure
    b = Assessor(grace=2)
    replaced = failed + [task("b", state="pending", desired="ready", created=1.0)]
    assert one(b, service(replicas=1), replaced, now=0).failure is None
    item = one(b, service(replicas=1), replaced, now=5)
    assert item.failure is None and item.note == "last error: exit code 3"


def test_repeated_failures_fail_but_failures_from_before_the_wait_do_not_count():
    tasks = [task(f"f{i}", state="failed", err=f"exit code {i}", created=i) for i in range(3)]
    tasks.append(task("r", created=10))
    a = Assessor(max_failures=3)
    assert "3 tasks failed; the last: exit code 2" == one(a, service(replicas=1), tasks).failure
    b = Assessor(max_failures=3)
    b.begin(tasks[:2], now=0)
    assert one(b, service(replicas=1), tasks).failure is None


def test_a_paused_update_is_a_failure():
    status = {"update": {"state": "paused", "message": "update paused: an updated task failed"}}
    assert one(Assessor(), service(status=status), [task("a"), task("b", slot=2)]).failure == \
        "update paused: an updated task failed"


def test_what_a_service_waits_for_is_its_note():
    item = one(Assessor(), service(status={"message": "waiting for db (service_healthy)"}), [])
    assert item.note == "waiting for db (service_healthy)"
    assert item.line() == "app_web: 0/2 running  waiting for db (service_healthy)"


def test_wait_converged_prints_lines_and_returns_or_raises(capsys, monkeypatch):
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0)
    snapshots = iter([([service()], [task("a")]), ([service()], [task("a"), task("b", slot=2)])])
    wait_converged(lambda: next(snapshots), "stack app", timeout=30, live=False)
    assert capsys.readouterr().out.splitlines() == ["app_web: 1/2 running", "app_web: 2/2 running",
                                                   "stack app: converged"]
    failing = [task(f"f{i}", state="failed", err="no such image") for i in range(3)]
    first = True

    def snapshot():
        nonlocal first
        tasks = [] if first else failing  # failures that happen after the wait began
        first = False
        return [service(replicas=1)], tasks
    with pytest.raises(click.ClickException, match="app_web: 3 tasks failed; the last: no such image"):
        wait_converged(snapshot, "stack app", timeout=30, live=False)


def test_wait_converged_gives_up_at_the_timeout(monkeypatch):
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0)
    with pytest.raises(click.ClickException, match=r"not converged after 0s:\n  app_web: 0/2 running"):
        wait_converged(lambda: ([service()], []), "stack app", timeout=0, live=False)


# -- update states: monitoring, rollbacks, canaries --------------------------------------------------

def test_an_update_is_waited_for_until_its_new_tasks_were_watched_for_monitor():
    digest = spec_digest(dict(SPEC, mode="replicated", replicas=2))
    updating = {"update": {"digest": digest, "state": "updating", "started_at": 5.0}}
    item = one(Assessor(), service(status=updating), [task("a"), task("b", slot=2)])
    assert not item.converged and item.note == "update: watching the new tasks (monitor)"
    done = {"update": dict(updating["update"], state="completed")}
    assert one(Assessor(), service(status=done), [task("a"), task("b", slot=2)]).converged


def test_a_rollback_fails_an_update_wait_but_not_a_rollback_wait_nor_an_old_one():
    rolled = {"update": {"state": "rollback_started", "started_at": 9.0,
                         "message": "update rolled back due to failure or early termination of task t1"}}
    tasks = [task("a"), task("b", slot=2)]
    a = Assessor()
    one(a, service(), tasks)  # the wait began before the rollback
    assert one(a, service(status=rolled), tasks).failure.startswith("update rolled back due to")
    assert one(Assessor(expect_rollback=True), service(status=rolled), tasks).failure is None
    old = Assessor()  # a rollback from before the wait began (an earlier deploy) is not this wait's
    assert one(old, service(status=rolled), tasks).failure is None
    paused = {"update": {"state": "rollback_paused", "message": "rollback paused due to …"}}
    assert one(Assessor(expect_rollback=True), service(status=paused), tasks).failure == "rollback paused due to …"


def test_canaries_awaiting_promotion_end_the_wait_as_held(capsys, monkeypatch):
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0)
    digest = spec_digest(dict(SPEC, mode="replicated", replicas=2))
    held = {"update": {"digest": digest, "state": "awaiting_promotion",
                       "message": "1 canary task(s) running beside the old ones"}}
    tasks = [task("a", digest="old"), task("b", slot=2, digest="old"), task("c")]
    wait_converged(lambda: ([service(status=held)], tasks), "service app_web", timeout=30, live=False)
    out = capsys.readouterr().out
    assert "service app_web: waiting for promotion:" in out and "1 canary task(s) running beside the old ones" in out


def test_the_clusters_digest_is_used_when_the_view_has_one():
    svc = dict(service(), spec_digest="from-the-cluster")
    tasks = [task("a", digest="from-the-cluster"), task("b", slot=2, digest="from-the-cluster")]
    assert one(Assessor(), svc, tasks).converged
