"""Autoscaling decisions, pure: Kubernetes' horizontal pod autoscaler over a service's
usage samples (docs/orchestration.md, "Autoscaling").

``recommend(samples, autoscale, reservation, current, now)`` is one metric pass: each
task's latest sample within ``SAMPLE_WINDOW``, their mean utilisation of the reservation
against the target, ``desired = ceil(current × utilisation / target)`` unless the ratio
is within ``TOLERANCE`` of 1 (no change); the highest over CPU and memory.

``decide(..., history, now)`` adds the stabilisation windows (the HPA's behaviour): a
scale-down goes only as low as the *highest* recommendation of the last
``scale_down_window`` seconds, a scale-up only as high as the *lowest* of the last
``scale_up_window`` (0: the latest), and the result is clamped to min/max. It returns
the new replica count with its reason, and the recommendation to remember.

Samples and recommendations are soft state kept by the leader, never in Raft (see the
caller): they are many, short-lived and re-measured after a failover within a window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from swarmlet.api.specs import Autoscale, Resources

TOLERANCE = 0.1  # Kubernetes' --horizontal-pod-autoscaler-tolerance
SAMPLE_WINDOW = 30.0  # a task's sample older than this says nothing about now (seconds)


@dataclass(frozen=True)
class Sample:
    """One task's usage at one moment, as its node's runtime measured it."""

    task_id: str
    at: float
    cpus: float  # CPUs used (1.0 = one core busy)
    memory: int  # bytes


@dataclass(frozen=True)
class Recommendation:
    replicas: int
    reason: str


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int  # what the service should have now (== current: no change)
    reason: str
    recommendation: int  # this pass's raw recommendation, for the stabilisation history

    def changes(self, current: int) -> bool:
        return self.replicas != current


def _latest(samples: Iterable[Sample], now: float) -> list[Sample]:
    latest: dict[str, Sample] = {}
    for sample in samples:
        if now - SAMPLE_WINDOW <= sample.at <= now and (sample.task_id not in latest
                                                        or sample.at > latest[sample.task_id].at):
            latest[sample.task_id] = sample
    return [latest[k] for k in sorted(latest)]


def recommend(samples: Iterable[Sample], autoscale: Autoscale, reservation: Resources, current: int,
              now: float) -> Recommendation:
    """The raw recommendation from the latest samples (no stabilisation, no clamping)."""
    latest = _latest(samples, now)
    if not latest or current <= 0:
        return Recommendation(current, "no usage reported in the last "
                                       f"{SAMPLE_WINDOW:g}s" if not latest else "scaled to zero")
    best: Recommendation | None = None
    for name, target, reserved, used in (
            ("cpu", autoscale.target_cpu_percent, reservation.cpus, [s.cpus for s in latest]),
            ("memory", autoscale.target_memory_percent, reservation.memory, [s.memory for s in latest])):
        if not target or not reserved:
            continue
        utilisation = 100.0 * (sum(used) / len(used)) / reserved
        ratio = utilisation / target
        if abs(ratio - 1.0) <= TOLERANCE:
            replicas = current
        else:
            replicas = math.ceil(current * ratio - 1e-9)  # 2 × 1.5 is 3, not 4 by a rounding error
        found = Recommendation(replicas, f"{name} at {utilisation:.0f}% of the reservation "
                                         f"(target {target:g}%) over {len(latest)} task(s)")
        if best is None or found.replicas > best.replicas:
            best = found
    return best or Recommendation(current, "no target with a reservation to measure against")


def decide(samples: Iterable[Sample], autoscale: Autoscale, reservation: Resources, current: int,
           history: Sequence[tuple[float, int]], now: float) -> ScaleDecision:
    """``history``: earlier recommendations as (time, replicas), any order."""
    raw = recommend(samples, autoscale, reservation, current, now)
    wanted, reason = raw.replicas, raw.reason
    if wanted < current:
        window = [r for at, r in history if now - autoscale.scale_down_window <= at <= now] + [wanted]
        held = max(window)
        if held > wanted:
            reason += f"; scale-down held at {held} by the last {autoscale.scale_down_window:g}s"
        wanted = min(held, current)
    elif wanted > current and autoscale.scale_up_window > 0:
        window = [r for at, r in history if now - autoscale.scale_up_window <= at <= now] + [wanted]
        held = min(window)
        if held < wanted:
            reason += f"; scale-up held at {held} by the last {autoscale.scale_up_window:g}s"
        wanted = max(held, current)
    clamped = min(max(wanted, autoscale.min_replicas), autoscale.max_replicas)
    if clamped != wanted:
        reason += f"; clamped to {clamped} (min {autoscale.min_replicas}, max {autoscale.max_replicas})"
    return ScaleDecision(clamped, reason, raw.replicas)
