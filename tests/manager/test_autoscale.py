"""The autoscaling decision, pure (swarmlet/manager/autoscale.py): Kubernetes' HPA rule
(desired = ceil(current × utilisation / target), 10% tolerance), stabilisation windows
(a scale-down only to the highest recommendation of its window, a scale-up only to the
lowest of its), min/max, stale samples, and the Compose extension that sets it."""
from __future__ import annotations

import pytest

from swarmlet.api.specs import Autoscale, Resources
from swarmlet.manager.autoscale import SAMPLE_WINDOW, Sample, decide, recommend

CPU = Autoscale(min_replicas=1, max_replicas=10, target_cpu_percent=50, scale_down_window=60.0)
HALF_CPU = Resources(cpus=0.5, memory=256 << 20)
NOW = 1000.0


def usage(*cpus: float, at: float = NOW, memory: int = 0) -> list[Sample]:
    return [Sample(task_id=f"t{i}", at=at, cpus=c, memory=memory) for i, c in enumerate(cpus)]


@pytest.mark.parametrize("cpus,current,expected", [
    ((0.25, 0.25), 2, 2),    # exactly on target (50% of 0.5)
    ((0.27, 0.27), 2, 2),    # 108%: within the tolerance
    ((0.28, 0.28), 2, 3),    # 112%: ceil(2 × 1.12)
    ((0.5, 0.5), 2, 4),      # 200%
    ((0.5, 0.0), 2, 2),      # the mean: 100% of target
    ((0.05, 0.05), 2, 1),    # 20%: ceil(0.4)
    ((0.0, 0.0), 4, 0),      # idle: the rule says 0 (clamped by decide)
    ((2.0,), 1, 8),          # 800%
])
def test_the_hpa_rule(cpus, current, expected):
    assert recommend(usage(*cpus), CPU, HALF_CPU, current, NOW).replicas == expected


def test_the_highest_metric_wins_and_says_why():
    both = Autoscale(max_replicas=10, target_cpu_percent=50, target_memory_percent=50)
    found = recommend(usage(0.25, 0.25, memory=256 << 20), both, HALF_CPU, 2, NOW)  # memory at 100%
    assert found.replicas == 4 and found.reason.startswith("memory at 100% of the reservation (target 50%)")
    found = recommend(usage(0.5, 0.5, memory=64 << 20), both, HALF_CPU, 2, NOW)
    assert found.replicas == 4 and found.reason.startswith("cpu at 100%")


def test_only_each_tasks_latest_fresh_sample_counts():
    samples = [Sample("t1", NOW - 5, 0.5, 0), Sample("t1", NOW - 1, 0.25, 0),  # t1's latest: on target
               Sample("t2", NOW - SAMPLE_WINDOW - 1, 2.0, 0),  # stale: ignored
               Sample("t3", NOW - 2, 0.25, 0)]
    found = recommend(samples, CPU, HALF_CPU, 2, NOW)
    assert found.replicas == 2 and "over 2 task(s)" in found.reason
    stale = recommend([Sample("t1", NOW - SAMPLE_WINDOW - 1, 2.0, 0)], CPU, HALF_CPU, 2, NOW)
    assert stale.replicas == 2 and stale.reason.startswith("no usage reported")


def test_no_reservation_for_the_target_changes_nothing():
    found = recommend(usage(2.0), CPU, Resources(memory=1 << 20), 3, NOW)
    assert found.replicas == 3 and "no target with a reservation" in found.reason


def test_a_scale_up_is_at_once_and_clamped_to_max():
    decision = decide(usage(0.5, 0.5), CPU, HALF_CPU, 2, history=[], now=NOW)
    assert (decision.replicas, decision.recommendation) == (4, 4) and decision.changes(2)
    decision = decide(usage(5.0, 5.0), CPU, HALF_CPU, 2, history=[], now=NOW)
    assert decision.replicas == 10 and decision.recommendation == 40
    assert decision.reason.endswith("clamped to 10 (min 1, max 10)")


def test_a_scale_down_goes_only_to_the_highest_recommendation_of_its_window():
    history = [(NOW - 70, 9), (NOW - 50, 6), (NOW - 10, 3)]  # 9 is out of the 60 s window
    decision = decide(usage(0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05), CPU, HALF_CPU, 8, history, NOW)
    assert decision.recommendation == 2 and decision.replicas == 6
    assert "scale-down held at 6 by the last 60s" in decision.reason
    # once the window has passed the high ones, it goes all the way (but never below min)
    later = decide(usage(0.0, 0.0, at=NOW + 120), CPU, HALF_CPU, 6, [(NOW + 20, 2)], NOW + 120)
    assert later.replicas == 1 and later.recommendation == 0 and "clamped to 1" in later.reason


def test_a_scale_down_window_never_makes_it_grow():
    decision = decide(usage(0.05, 0.05), CPU, HALF_CPU, 2, [(NOW - 5, 9)], NOW)
    assert decision.replicas == 2 and not decision.changes(2)


def test_a_scale_up_window_holds_to_the_lowest_recommendation():
    slow = Autoscale(max_replicas=10, target_cpu_percent=50, scale_up_window=30.0)
    decision = decide(usage(0.5, 0.5), slow, HALF_CPU, 2, [(NOW - 20, 3), (NOW - 40, 2)], NOW)
    assert decision.replicas == 3 and "scale-up held at 3 by the last 30s" in decision.reason
    held = decide(usage(0.5, 0.5), slow, HALF_CPU, 2, [(NOW - 20, 1)], NOW)
    assert held.replicas == 2  # never below current on the way up


def test_min_and_max_bound_whatever_the_usage():
    bounded = Autoscale(min_replicas=2, max_replicas=3, target_cpu_percent=50, scale_down_window=0.0)
    for cpus, current in (((0.0,) * 3, 3), ((9.0,) * 2, 2), ((0.25,) * 5, 5), ((0.25,), 1)):
        decision = decide(usage(*cpus), bounded, HALF_CPU, current, [], NOW)
        assert 2 <= decision.replicas <= 3, (cpus, current, decision)


def test_no_samples_changes_nothing_within_the_bounds():
    decision = decide([], CPU, HALF_CPU, 3, [(NOW - 5, 9)], NOW)
    assert decision.replicas == 3 and decision.reason.startswith("no usage reported")


# -- Compose ----------------------------------------------------------------------------------------------

def load(tmp_path, deploy: str):
    from swarmlet.compose import load_stack
    path = tmp_path / "stack.yml"
    path.write_text(f"services:\n  web:\n    image: x\n    deploy:\n{deploy}")
    return load_stack([path])


def test_x_autoscale_is_parsed_with_hpa_defaults(tmp_path):
    stack = load(tmp_path, "      resources: {reservations: {cpus: '0.5'}}\n"
                           "      x-autoscale: {max_replicas: 4, target_cpu_percent: 70, scale_down_window: 30s}\n")
    assert stack.stack.services["web"].autoscale == Autoscale(
        min_replicas=1, max_replicas=4, target_cpu_percent=70, scale_down_window=30.0, scale_up_window=0.0)


@pytest.mark.parametrize("deploy,complaint", [
    ("      x-autoscale: {max_replicas: 4, target_cpu_percent: 70}\n",
     "target_cpu_percent is a share of the tasks' reservation: set deploy.resources.reservations.cpus"),
    ("      resources: {reservations: {cpus: '1'}}\n      x-autoscale: {target_cpu_percent: 70}\n",
     "x-autoscale needs max_replicas"),
    ("      resources: {reservations: {cpus: '1'}}\n      x-autoscale: {max_replicas: 2, min_replicas: 3, "
     "target_cpu_percent: 70}\n", "max_replicas 2 is below min_replicas 3"),
    ("      resources: {reservations: {cpus: '1'}}\n      x-autoscale: {max_replicas: 2}\n",
     "x-autoscale needs target_cpu_percent or target_memory_percent"),
    ("      mode: global\n      resources: {reservations: {cpus: '1'}}\n"
     "      x-autoscale: {max_replicas: 2, target_cpu_percent: 50}\n", "replicated services only"),
    ("      resources: {reservations: {cpus: '1'}}\n      x-autoscale: {max_replicas: 2, target_cpu: 50}\n",
     "target_cpu"),
])
def test_bad_x_autoscale_is_refused_naming_the_key(tmp_path, deploy, complaint):
    from swarmlet.compose import ComposeError
    with pytest.raises(ComposeError) as raised:
        load(tmp_path, deploy)
    assert complaint in str(raised.value) and "x-autoscale" in str(raised.value)
