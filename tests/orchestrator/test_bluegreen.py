"""Blue-green updates, pure (reconcile.py's update state machine with ``now`` injected, and
the one traffic rule of swarmlet/api/traffic.py): a whole new set starts beside the old
one out of traffic; the switch (promote, or auto-promote once the new set ran
``monitor``) moves traffic in one status write; the old set is held, out of traffic, for
``hold`` and then removed; a rollback before the switch or during the hold moves traffic
back at once, starts nothing and drops the new set."""
from __future__ import annotations

import itertools

import pytest

from swarmlet.api import specs
from swarmlet.api.objects import spec_digest
from swarmlet.api.traffic import TRAFFIC_NEW, TRAFFIC_OLD, in_traffic, is_blue_green, rollback_update, switched

from .conftest import make_service
from .test_update_rollback import by_digest, reject_new, update, update_state

NO_RESTART_DELAY = specs.RestartPolicy(delay=0)
HOLD = 60.0
MONITOR = 5.0


def serving(w) -> set[str]:
    """The tasks in traffic, by the rule the network planes use."""
    update = w.service["status"].get("update")
    return {t["id"] for t in w.tasks.values() if in_traffic(t["spec"], t["status"], update)}


def blue_green(w, replicas=3, **config):
    """A settled service, then a blue-green update to a new image; the old and new digests
    and the old task IDs."""
    w.settle()
    originals = {t["id"] for t in w.running()}
    assert len(originals) == replicas
    w.now += 1  # the old set predates the update
    old, new = update(w, update_config={"blue_green": True, "hold": HOLD, "monitor": MONITOR, **config})
    return old, new, originals


def ready_for_promotion(w, new):
    """The new set starts, runs, and is watched for ``monitor``."""
    w.settle()
    w.now += MONITOR
    w.settle()
    assert update_state(w)["state"] == "awaiting_promotion", update_state(w)


def promote(w):
    """What `service promote` writes (StackApi.promote_service)."""
    w.service = dict(w.service, status=dict(w.service["status"],
                                            update=switched(update_state(w), HOLD, w.now)))


def roll_back(w, message="manually requested rollback"):
    """What `service rollback` writes: spec and previous spec swap, the traffic goes back."""
    previous = w.service["previous_spec"]
    w.service = dict(w.service, spec=previous, previous_spec=w.service["spec"],
                     status=dict(w.service["status"], update=rollback_update(update_state(w), spec_digest(previous),
                                                                             w.now, message)))


@pytest.fixture
def w(world):
    return world(make_service(replicas=3, restart_policy=NO_RESTART_DELAY))


# -- the rule ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("state,desired,live,traffic,of_update,expected", [
    (state, desired, live, traffic, of_update,
     state == "running" and desired == "running" and live
     and (traffic is None or (traffic == TRAFFIC_NEW) == of_update))
    for state, desired, live, traffic, of_update in itertools.product(
        ("pending", "assigned", "starting", "running", "complete", "failed", "shutdown"),
        ("ready", "running", "shutdown", "remove"), (True, False), (None, TRAFFIC_OLD, TRAFFIC_NEW), (True, False))
])
def test_a_task_is_in_traffic_when_it_runs_meant_to_on_a_live_node_and_of_the_serving_set(
        state, desired, live, traffic, of_update, expected):
    update = {"digest": "D2", "state": "updating", **({"traffic": traffic} if traffic else {})}
    spec = {"desired_state": desired, "spec_digest": "D2" if of_update else "D1"}
    assert in_traffic(spec, {"state": state}, update, node_live=live) is expected


def test_without_an_update_every_running_task_serves():
    spec = {"desired_state": "running", "spec_digest": "D1"}
    assert in_traffic(spec, {"state": "running"}, None) and in_traffic(spec, {"state": "running"}, {})
    assert not is_blue_green(None) and not is_blue_green({"digest": "D1", "state": "completed"})


def test_a_rollback_moves_traffic_back_only_for_a_blue_green_update_under_way():
    for state in ("updating", "awaiting_promotion", "switched", "paused"):
        update = rollback_update({"digest": "D2", "state": state, "traffic": "old"}, "D1", 5.0, "manually requested")
        assert (update["digest"], update["state"], update["traffic"]) == ("D1", "rollback_started", TRAFFIC_NEW)
        assert update["message"].endswith("traffic back on the old set at once") and update["started_at"] == 5.0
    # a rolling update, a blue-green update whose old set is gone, a rollback of a rollback: an ordinary rollback
    for current in ({"digest": "D2", "state": "updating"}, {"digest": "D2", "state": "completed"}, None,
                    {"digest": "D2", "state": "rollback_started", "traffic": "new"}):
        update = rollback_update(current, "D1", 5.0, "manually requested", reason="r")
        assert "traffic" not in update and update["reason"] == "r" and update["message"] == "manually requested"


def test_the_switch_names_the_hold_and_the_way_back():
    update = switched({"digest": "D2", "state": "awaiting_promotion", "traffic": "old"}, 600.0, 100.0)
    assert (update["state"], update["traffic"], update["promoted"]) == ("switched", TRAFFIC_NEW, True)
    assert (update["switched_at"], update["hold_until"]) == (100.0, 700.0)
    assert "600s" in update["message"] and "service rollback" in update["message"]


# -- the state machine -------------------------------------------------------------------------------------

def test_the_whole_new_set_starts_at_once_beside_the_old_one_out_of_traffic(w):
    old, new, originals = blue_green(w, parallelism=1)  # parallelism does not apply: every slot at once
    decision = w.step()
    assert len(decision.creates) == 3 and not decision.updates and not decision.deletes
    assert sorted(c["spec"]["slot"] for c in decision.creates) == [1, 2, 3]
    state = update_state(w)
    assert (state["state"], state["traffic"], state["blue_green"]) == ("updating", TRAFFIC_OLD, True)
    w.place()
    w.run_all()
    assert len(w.running()) == 6 and serving(w) == originals  # the new set runs, and takes nothing
    w.settle()
    assert update_state(w)["state"] == "updating"  # watched for `monitor` first
    w.now += MONITOR
    w.settle()
    state = update_state(w)
    assert state["state"] == "awaiting_promotion" and "service promote app_web" in state["message"] \
        and "service rollback app_web" in state["message"]
    assert {t["id"] for t in by_digest(w, old)} == originals and len(by_digest(w, new)) == 3
    assert serving(w) == originals
    w.now += 3600  # it waits for promotion, however long
    w.settle()
    assert update_state(w)["state"] == "awaiting_promotion" and serving(w) == originals and len(w.running()) == 6


def test_promote_switches_traffic_then_the_old_set_is_held_for_the_hold_time_then_removed_at_once(w):
    old, new, originals = blue_green(w)
    ready_for_promotion(w, new)
    newcomers = {t["id"] for t in by_digest(w, new)}
    promote(w)
    assert serving(w) == newcomers  # one status write: new set in, old set out
    decision = w.step()
    assert decision.empty or not (decision.creates or decision.updates or decision.deletes)
    assert decision.wake_at == w.now + HOLD  # the loop comes back when the hold is over
    w.now += HOLD - 1
    w.settle()
    assert {t["id"] for t in by_digest(w, old)} == originals and len(w.running()) == 6  # held, running
    assert update_state(w)["state"] == "switched" and serving(w) == newcomers
    w.now += 1
    decision = w.step()
    retired = {t.id for t, spec in decision.updates if spec["desired_state"] == "shutdown"}
    assert retired == originals and not decision.creates  # all at once, nothing started
    assert "the old set is being removed" in update_state(w)["message"]
    w.settle()
    state = update_state(w)
    assert state["state"] == "completed" and "traffic" not in state
    assert {t["id"] for t in w.running()} == newcomers == serving(w)


def test_auto_promote_switches_once_the_new_set_ran_monitor(w):
    old, new, originals = blue_green(w, auto_promote=True)
    w.settle()
    assert update_state(w)["state"] == "updating" and serving(w) == originals
    w.now += MONITOR
    decision = w.step()
    state = decision.service_status["update"]
    assert (state["state"], state["traffic"], state["hold_until"]) == ("switched", TRAFFIC_NEW, w.now + HOLD)
    assert "promoted automatically" in state["message"]
    assert serving(w) == {t["id"] for t in by_digest(w, new)}
    assert {t["id"] for t in by_digest(w, old)} == originals  # held


def test_a_hold_of_zero_removes_the_old_set_at_the_switch(w):
    old, new, originals = blue_green(w, hold=0.0, auto_promote=True)
    w.settle()
    w.now += MONITOR
    w.settle()
    assert update_state(w)["state"] == "completed" and not by_digest(w, old)
    assert len(w.running()) == 3


def test_a_rollback_during_the_hold_switches_back_at_once_starts_nothing_and_drops_the_new_set(w):
    old, new, originals = blue_green(w)
    ready_for_promotion(w, new)
    promote(w)
    w.settle()
    w.now += HOLD / 2
    roll_back(w)
    assert serving(w) == originals  # the same write: traffic back on the old set
    state = update_state(w)
    assert (state["digest"], state["state"], state["traffic"]) == (old, "rollback_started", TRAFFIC_NEW)
    newcomers = {t["id"] for t in by_digest(w, new)}
    decision = w.step()
    assert not decision.creates
    assert {t.id for t, spec in decision.updates if spec["desired_state"] == "shutdown"} == newcomers
    w.settle()
    state = update_state(w)
    assert state["state"] == "rollback_completed" and "traffic" not in state
    assert {t["id"] for t in w.running()} == originals == serving(w)
    assert not by_digest(w, new)


def test_a_rollback_before_the_switch_drops_the_new_set_and_the_old_one_never_stopped(w):
    old, new, originals = blue_green(w)
    w.settle()  # the new set runs (still watched)
    roll_back(w)
    assert serving(w) == originals
    w.settle()
    assert update_state(w)["state"] == "rollback_completed"
    assert {t["id"] for t in w.running()} == originals and not by_digest(w, new)
    assert not [t for t in w.tasks.values() if t["id"] in originals and t["status"]["state"] != "running"]


def test_a_held_old_task_that_died_is_started_again_by_the_rollback(w):
    old, new, originals = blue_green(w)
    ready_for_promotion(w, new)
    promote(w)
    w.settle()
    victim = sorted(originals)[0]
    w.set_state(w.tasks[victim], "failed", exit_code=1)
    w.tasks[victim]["spec"]["desired_state"] = "shutdown"  # (its slot is the new task's now)
    roll_back(w)
    w.settle()
    running = {t["id"] for t in w.running()}
    assert running >= originals - {victim} and len(running) == 3
    assert {t["spec"]["spec_digest"] for t in w.running()} == {old}


def test_a_new_set_that_fails_is_rolled_back_with_traffic_never_leaving_the_old_set(w):
    old, new, originals = blue_green(w, failure_action="rollback")
    for _ in range(10):
        w.step()
        w.place()
        reject_new(w, new)
        w.run_all()
        assert originals <= serving(w)
    state = update_state(w)
    assert state["state"] == "rollback_completed" and "No such image" in state["reason"]
    assert {t["id"] for t in w.running()} == originals


def test_a_new_set_that_fails_pauses_the_update_and_the_old_set_keeps_serving(w):
    old, new, originals = blue_green(w, failure_action="pause")
    w.step()
    w.place()
    reject_new(w, new)
    w.step()
    state = update_state(w)
    assert state["state"] == "paused" and state["traffic"] == TRAFFIC_OLD
    assert serving(w) == originals and {t["id"] for t in w.running()} == originals


def test_blue_green_is_fixed_when_the_update_starts(w):
    old, new, originals = blue_green(w)
    w.settle()
    # update_config alone changes no digest: the update under way stays blue-green
    w.service["spec"] = dict(w.service["spec"], update_config=dict(w.service["spec"]["update_config"],
                                                                    blue_green=False))
    w.now += MONITOR
    w.settle()
    assert update_state(w)["state"] == "awaiting_promotion" and serving(w) == originals


def test_a_rollback_after_the_old_set_is_gone_is_an_ordinary_rollback(w):
    old, new, originals = blue_green(w, hold=0.0, auto_promote=True)
    w.settle()
    w.now += MONITOR
    w.settle()
    assert update_state(w)["state"] == "completed"
    roll_back(w)
    assert "traffic" not in update_state(w)
    w.settle()
    w.now += MONITOR  # the rollback's new tasks are watched
    w.settle()
    assert update_state(w)["state"] == "rollback_completed"
    assert len(w.running()) == 3 and not ({t["id"] for t in w.running()} & originals)  # started again


def test_a_global_service_gets_a_new_task_beside_the_old_one_on_every_node(world):
    w = world(make_service(mode="global", restart_policy=NO_RESTART_DELAY))
    old, new, originals = blue_green(w)
    w.settle()
    assert {t["spec"]["node_id"] for t in by_digest(w, new)} == {"n1", "n2", "n3"}
    assert serving(w) == originals
    w.now += MONITOR
    w.settle()
    promote(w)
    assert serving(w) == {t["id"] for t in by_digest(w, new)}
    w.now += HOLD
    w.settle()
    assert update_state(w)["state"] == "completed" and not by_digest(w, old) and len(w.running()) == 3
