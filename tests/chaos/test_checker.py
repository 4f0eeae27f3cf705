"""The chaos checker and figures on histories written by hand: each anomaly injected
must be reported, and a clean history must pass."""
from __future__ import annotations

import pytest

from swarmlet.chaos.history import (READ_ERROR, READ_FOUND, READ_MISSING, WRITE_FAILED, WRITE_OK, WRITE_UNKNOWN,
                                    Fault, History, HttpSample, LeaderSample, Read, ReplicaSample, TaskSample, Write,
                                    duplicates, failover_s, lost_writes, passed, phantom_writes, stale_reads,
                                    summarize, time_to_full_s, unavailable_s)
from swarmlet.chaos.schedule import FaultKind, TargetClass, parse_duration, parse_kinds, parse_targets, plan

LEADER_A, LEADER_B = "node-a", "node-b"


def task(task_id: str, slot: int | None, state: str = "running", desired: str = "running", node: str = "n1") -> dict:
    return {"id": task_id, "service_id": "svc", "slot": slot, "node_id": node, "desired_state": desired,
            "state": state}


def clean_history() -> History:
    history = History(duration=10.0)
    history.writes = [Write("w1", 0.0, 0.1, WRITE_OK), Write("w2", 0.2, 0.3, WRITE_OK),
                      Write("w3", 0.4, 5.4, WRITE_UNKNOWN), Write("w4", 0.5, 5.5, WRITE_FAILED)]
    history.reads = [Read("w1", 0.2, 0.25, READ_FOUND), Read("w2", 0.35, 0.4, READ_FOUND),
                     Read("w1", 1.0, 3.0, READ_ERROR)]
    history.tasks = [TaskSample(1.0, (task("t1", 1), task("t2", 2))),
                     # a replacement running while the old task is already desired shut down: not a duplicate
                     TaskSample(2.0, (task("t1", 1, desired="shutdown"), task("t3", 1), task("t2", 2)))]
    history.final_names = {"w1", "w2", "w3"}
    return history


def test_a_clean_history_passes():
    history = clean_history()
    record = summarize(history)
    assert (lost_writes(history), phantom_writes(history), stale_reads(history), duplicates(history)) == ([], [], [], [])
    assert record["writes"]["acked"] == 2 and record["writes"]["indeterminate"] == 1 and record["writes"]["failed"] == 1
    assert passed(record)


def test_a_lost_acknowledged_write_is_reported():
    history = clean_history()
    history.final_names = {"w1", "w3"}  # w2 was acknowledged and is gone
    assert lost_writes(history) == ["w2"]
    record = summarize(history)
    assert record["writes"]["lost"] == ["w2"] and not passed(record)


def test_an_indeterminate_write_may_be_missing_but_a_refused_one_must_be():
    history = clean_history()
    history.final_names = {"w1", "w2"}  # w3 (unknown) absent: allowed
    assert passed(summarize(history))
    history.final_names = {"w1", "w2", "w4"}  # w4 was refused as "not committed", yet it is there
    assert phantom_writes(history) == ["w4"]
    assert not passed(summarize(history))


def test_an_unread_final_state_fails_the_run():
    history = clean_history()
    history.final_names = None
    record = summarize(history)
    assert record["writes"]["checked"] is False and not passed(record)


def test_a_stale_read_is_reported():
    history = clean_history()
    # w2 acknowledged at 0.3; a read begun at 0.5 that misses it is stale.
    history.reads.append(Read("w2", 0.5, 0.6, READ_MISSING, "127.0.0.3:2377"))
    assert [(r.name, r.start) for r in stale_reads(history)] == [("w2", 0.5)]
    record = summarize(history)
    assert record["writes"]["stale_reads"][0]["via"] == "127.0.0.3:2377" and not passed(record)


def test_a_read_concurrent_with_the_write_is_not_stale():
    history = clean_history()
    history.reads.append(Read("w2", 0.25, 0.35, READ_MISSING))  # began before w2's ack at 0.3
    assert stale_reads(history) == []


def test_two_running_tasks_in_one_slot_are_a_duplicate():
    history = clean_history()
    history.tasks.append(TaskSample(3.0, (task("t1", 1), task("t3", 1), task("t2", 2))))
    history.tasks.append(TaskSample(3.5, (task("t1", 1), task("t3", 1), task("t2", 2))))  # the same pair again
    found = duplicates(history)
    assert found == [{"service_id": "svc", "slot": 1, "tasks": ["t1", "t3"], "first_seen": 3.0}]
    assert not passed(summarize(history))


def test_global_tasks_are_slotted_by_node():
    history = History()
    history.tasks = [TaskSample(1.0, (task("g1", None, node="n1"), task("g2", None, node="n2")))]
    assert duplicates(history) == []
    history.tasks.append(TaskSample(2.0, (task("g1", None, node="n1"), task("g3", None, node="n1"))))
    assert duplicates(history) == [{"service_id": "svc", "node": "n1", "tasks": ["g1", "g3"], "first_seen": 2.0}]


def test_failover_counts_only_a_new_leader_seen_by_another_node():
    history = History(duration=10.0)
    fault = Fault("kill", "manager-1", "leader", 5.0, 7.0, node_id=LEADER_A)
    history.leaders = [LeaderSample(4.0, LEADER_B, LEADER_A, 1),
                       LeaderSample(5.2, LEADER_A, LEADER_A, 1),   # the faulted node's own view: ignored
                       LeaderSample(5.3, LEADER_B, LEADER_B, 2),   # a leader naming itself: ignored
                       LeaderSample(5.4, "node-c", None, 2),
                       LeaderSample(5.7, "node-c", LEADER_B, 2)]
    history.faults = [fault]
    assert failover_s(history, fault) == pytest.approx(0.7)
    assert failover_s(history, Fault("kill", "manager-2", "manager", 5.0, 7.0, node_id="node-c")) is None
    record = summarize(history)
    assert record["leader"]["changes"] == 1 and record["leader"]["failover_s"] == [pytest.approx(0.7)]


def test_unavailability_adds_the_gaps_between_acknowledgements():
    history = History(duration=3.0)
    history.writes = [Write(f"w{i}", t - 0.01, t, WRITE_OK) for i, t in enumerate([0.1, 0.2, 1.2, 1.3, 2.9])]
    # gaps: 1.0 (0.2 -> 1.2) and 1.6 (1.3 -> 2.9) exceed 0.25 s; 0.1 and the 0.1 tail do not
    assert unavailable_s(history) == pytest.approx(2.6)
    assert summarize(history)["writes"]["unavailable_windows"] == [{"start": 0.2, "s": 1.0}, {"start": 1.3, "s": 1.6}]
    assert unavailable_s(History(duration=4.0)) == 4.0  # nothing acknowledged at all


def test_time_to_full_replicas():
    history = History(duration=20.0)
    history.replicas = [ReplicaSample(t, 3, r) for t, r in [(4.0, 3), (5.5, 2), (6.0, 2), (7.5, 3), (9.0, 3)]]
    fault = Fault("kill", "worker-1", "worker", 5.0, 7.0)
    assert time_to_full_s(history, fault, until=10.0) == pytest.approx(2.5)
    assert time_to_full_s(history, Fault("kill", "w", "worker", 8.0, 9.0), until=10.0) == 0.0  # never dropped
    history.replicas.append(ReplicaSample(10.5, 3, 1))
    assert time_to_full_s(history, fault, until=None) is None  # not back by the end


def test_http_figures_per_fault():
    history = clean_history()
    history.faults = [Fault("kill", "worker-1", "worker", 1.0, 2.0)]
    history.http = [HttpSample(0.5, True, url="http://a/"), HttpSample(1.5, False, "refused", "http://b/"),
                    HttpSample(1.8, True, url="http://a/"), HttpSample(2.5, False, "timed out", "http://b/"),
                    HttpSample(3.0, True, url="http://a/")]
    record = summarize(history)
    assert record["http"] == {
        "requests": 5, "errors": 2, "error_rate": 0.4,
        "outside_faults": {"requests": 3, "errors": 1, "error_rate": pytest.approx(1 / 3, abs=1e-4)},
        "by_fault": [{"kind": "kill", "target": "worker-1", "start": 1.0, "requests": 2, "errors": 1,
                      "error_rate": 0.5}],
        "urls": ["http://a/", "http://b/"]}


def test_http_error_rate_of_a_fault_with_no_request_is_none():
    history = clean_history()
    history.faults = [Fault("freeze", "worker-2", "worker", 1.0, 1.2)]
    history.http = [HttpSample(0.5, True), HttpSample(2.0, True)]
    (row,) = summarize(history)["http"]["by_fault"]
    assert row["requests"] == 0 and row["error_rate"] is None


def test_the_same_seed_gives_the_same_schedule():
    kinds, targets = parse_kinds("kill,freeze,partition"), parse_targets("leader,random")
    first = plan(7, 120, 5, kinds, targets)
    assert first == plan(7, 120, 5, kinds, targets)
    assert first != plan(8, 120, 5, kinds, targets)
    assert len(first) == 23 and first[0].at == 3 and first[-1].at == 113
    assert {f.kind for f in first} == set(kinds) and {f.target for f in first} == set(targets)


def test_bad_options_are_refused_with_what_was_expected():
    with pytest.raises(ValueError, match="--faults: explode is not one of kill, freeze, partition, loss, latency"):
        parse_kinds("kill,explode")
    with pytest.raises(ValueError, match="--targets"):
        parse_targets("")
    with pytest.raises(ValueError, match="must be longer than a fault lasts"):
        plan(1, 60, 2, [FaultKind.KILL], [TargetClass.LEADER], fault_duration=2)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    assert parse_duration("2m") == 120 and parse_duration("90") == 90 and parse_duration("1.5s") == 1.5


def test_a_lost_write_is_reported_with_when_where_and_the_faults_around_it():
    history = clean_history()
    tried = ({"host": "127.0.0.2:2377", "start": 0.2, "end": 2.2, "status": None, "error": "timed out"},
             {"host": "127.0.0.3:2377", "start": 2.2, "end": 2.5, "status": 201, "error": ""})
    history.writes.append(Write("w5", 0.2, 2.5, WRITE_OK, attempts=tried, index=42))
    history.faults = [Fault("kill", "manager-1", "leader", 1.0, 3.0), Fault("freeze", "manager-2", "leader", 9.0, 9.5)]
    record = summarize(history)
    assert record["writes"]["lost"] == ["w5"] and not passed(record)
    (detail,) = record["writes"]["lost_detail"]
    assert detail["index"] == 42 and detail["attempts"] == list(tried)
    assert (detail["start"], detail["end"]) == (0.2, 2.5)
    assert [f["target"] for f in detail["faults"]] == ["manager-1"]  # not the freeze long after
    assert summarize(clean_history())["writes"]["lost_detail"] == []
