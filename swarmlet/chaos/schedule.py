"""The fault schedule: a pure function of the seed and the options, so the same seed
gives the same schedule (which kinds, which target classes, when, for how long). The
concrete node a target class names ("leader") is resolved when the fault is injected,
since it depends on the cluster at that moment."""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class FaultKind(str, enum.Enum):
    KILL = "kill"            # SIGKILL, restarted after the fault's duration
    FREEZE = "freeze"        # SIGSTOP, SIGCONT after the duration
    PARTITION = "partition"  # cut off from every other node, both ways, healed after the duration
    LOSS = "loss"            # a share of its packets to and from the other nodes dropped (nftables numgen)
    LATENCY = "latency"      # the node's sends held by a proxy in its namespace (isolated clusters: faults.py)


class TargetClass(str, enum.Enum):
    LEADER = "leader"
    MANAGER = "manager"   # a manager that is not the leader
    WORKER = "worker"
    RANDOM = "random"     # any node


DEFAULT_INTERVAL_S = 5.0
DEFAULT_FAULT_DURATION_S = 2.0
DEFAULT_LOSS_PERCENT = 30
# What a latency fault adds to the node's round trip to each peer (isolated clusters).
DEFAULT_LATENCY_MS = 100.0
# The first fault comes after this much of steady workload (or after one interval, if
# shorter): the figures then have a baseline.
FIRST_FAULT_S = 3.0
# A fault is never planned closer than this to the end: it must have time to heal
# and be measured.
TAIL_S = 3.0


@dataclass(frozen=True)
class PlannedFault:
    at: float          # seconds after the run starts (the earliest moment; see runner.py)
    kind: FaultKind
    target: TargetClass
    duration: float


def parse_kinds(text: str) -> list[FaultKind]:
    return _parse(text, FaultKind, "--faults")


def parse_targets(text: str) -> list[TargetClass]:
    return _parse(text, TargetClass, "--targets")


def _parse(text: str, enum_type, option: str) -> list:
    names = [part.strip() for part in text.split(",") if part.strip()]
    known = [member.value for member in enum_type]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"{option}: {', '.join(unknown) or 'nothing given'} is not one of {', '.join(known)} "
                         "(a comma-separated list)")
    return [enum_type(name) for name in dict.fromkeys(names)]


def plan(seed: int, duration: float, interval: float, kinds: list[FaultKind], targets: list[TargetClass],
         fault_duration: float = DEFAULT_FAULT_DURATION_S) -> list[PlannedFault]:
    """One fault every ``interval`` seconds from ``FIRST_FAULT_S`` on, kinds and targets drawn
    from ``random.Random(seed)``; none starts within ``TAIL_S`` of the end or so late that
    it could not heal before it."""
    if interval <= fault_duration:
        raise ValueError(f"--interval ({interval:g}s) must be longer than a fault lasts ({fault_duration:g}s)")
    if not kinds or not targets:
        raise ValueError("at least one fault kind and one target class are needed")
    rng = random.Random(seed)
    faults = []
    at = min(interval, FIRST_FAULT_S)
    while at + fault_duration + TAIL_S <= duration:
        faults.append(PlannedFault(round(at, 3), rng.choice(kinds), rng.choice(targets), fault_duration))
        at += interval
    return faults


def parse_duration(text: str) -> float:
    """'90', '90s', '2m', '1h' → seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    factor = units.get(value[-1:], None)
    number = value[:-1] if factor else value
    try:
        seconds = float(number) * (factor or 1)
    except ValueError:
        raise ValueError(f"--duration: {text!r} is not a duration (e.g. 60, 90s, 2m)") from None
    if seconds <= 0:
        raise ValueError(f"--duration: {text!r} must be positive")
    return seconds
