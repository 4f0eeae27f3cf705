"""What happened during a run, the checker and the figures: pure functions of the
record (times are seconds since the run started, from one monotonic clock).

Write outcomes:
- ``ok``: acknowledged (HTTP 201): it must be in the final state, else it was **lost**;
- ``failed``: the cluster said it certainly did not commit (``no quorum … not
  committed``): it must not be in the final state, else it is a **phantom**;
- ``unknown``: timed out, connection lost, outcome unknown: either is allowed.

A read is a linearisable read (``GET /v1/configs/NAME?consistent=1``, answered after a
Raft read barrier) of a name whose write was acknowledged before the read began. It is
**stale** if it answers "not found". Reads that fail (timeout, no quorum) are counted,
not judged.

A **duplicate** is two tasks of one slot (replicated: service + slot; global: service +
node) both desired running and reported running in one sample of the task table.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

WRITE_OK, WRITE_FAILED, WRITE_UNKNOWN = "ok", "failed", "unknown"
READ_FOUND, READ_MISSING, READ_ERROR = "found", "missing", "error"
# Writes are "unavailable" while no acknowledgement arrives for longer than this; below
# it, a gap is ordinary latency on a loaded machine.
UNAVAILABLE_GAP_S = 0.25


@dataclass(frozen=True)
class Write:
    name: str
    start: float
    end: float
    outcome: str
    error: str = ""
    # Each manager the client tried, in order: {"host", "start", "end", "status", "error"}
    # (run-clock seconds; status None: no answer). Where a lost write went, and when.
    attempts: tuple = ()
    # The store index the acknowledging manager gave (a retried write answered as a
    # duplicate gives the index where it was first applied).
    index: int | None = None


@dataclass(frozen=True)
class Read:
    name: str
    start: float
    end: float
    outcome: str
    via: str = ""


@dataclass(frozen=True)
class LeaderSample:
    t: float
    observer: str        # the node that answered (its own view: ?local=1)
    leader: str | None   # node ID it names as leader
    term: int | None


@dataclass(frozen=True)
class TaskSample:
    t: float
    tasks: tuple         # of dicts: id, service_id, slot, node_id, desired_state, state


@dataclass(frozen=True)
class ReplicaSample:
    t: float
    desired: int
    running: int


@dataclass(frozen=True)
class HttpSample:
    t: float             # when the request began
    ok: bool
    error: str = ""
    url: str = ""


@dataclass
class Fault:
    kind: str
    target: str          # node name
    role: str            # its role, and whether it led, when hit: leader | manager | worker
    start: float
    end: float | None = None
    node_id: str = ""
    leader_before: str | None = None
    term_before: int | None = None
    note: str = ""


@dataclass
class History:
    writes: list[Write] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    leaders: list[LeaderSample] = field(default_factory=list)
    tasks: list[TaskSample] = field(default_factory=list)
    replicas: list[ReplicaSample] = field(default_factory=list)
    http: list[HttpSample] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    final_names: set[str] | None = None   # every config name in the final state (read after healing)
    duration: float = 0.0


# -- the checker ----------------------------------------------------------------------------------
def lost_writes(history: History) -> list[str]:
    present = history.final_names or set()
    return sorted(w.name for w in history.writes if w.outcome == WRITE_OK and w.name not in present)


def lost_write_details(history: History) -> list[dict]:
    """Each lost write with its times, the index it was acknowledged at, every attempt
    (which manager, when, what it answered) and the faults under way while it was in
    flight: the report says when and where to look (node logs, Raft journals)."""
    lost = set(lost_writes(history))
    details = []
    for write in sorted((w for w in history.writes if w.name in lost), key=lambda w: w.start):
        during = [{"kind": f.kind, "target": f.target, "role": f.role, "start": round(f.start, 3),
                   "end": None if f.end is None else round(f.end, 3)}
                  for f in history.faults
                  if f.start <= write.end and (f.end is None or f.end >= write.start - FAULT_MARGIN_S)]
        details.append({"name": write.name, "start": round(write.start, 3), "end": round(write.end, 3),
                        "index": write.index, "attempts": list(write.attempts), "faults": during})
    return details


# A lost write is reported with the faults that overlapped it or ended this shortly
# before it began (a restart still catching up).
FAULT_MARGIN_S = 5.0


def phantom_writes(history: History) -> list[str]:
    present = history.final_names or set()
    return sorted(w.name for w in history.writes if w.outcome == WRITE_FAILED and w.name in present)


def stale_reads(history: History) -> list[Read]:
    acked_at = {w.name: w.end for w in history.writes if w.outcome == WRITE_OK}
    return [r for r in history.reads
            if r.outcome == READ_MISSING and r.name in acked_at and acked_at[r.name] < r.start]


def duplicates(history: History) -> list[dict]:
    """Each slot seen with more than one running task, once per distinct set of tasks."""
    seen: dict[tuple, dict] = {}
    for sample in history.tasks:
        slots: dict[tuple, list[str]] = {}
        for task in sample.tasks:
            if task.get("state") != "running" or task.get("desired_state") != "running":
                continue
            slot = task.get("slot")
            key = (task["service_id"], ("slot", slot) if slot is not None else ("node", task.get("node_id")))
            slots.setdefault(key, []).append(task["id"])
        for key, ids in slots.items():
            if len(ids) > 1:
                entry = (key, tuple(sorted(ids)))
                if entry not in seen:
                    seen[entry] = {"service_id": key[0], key[1][0]: key[1][1], "tasks": sorted(ids),
                                   "first_seen": sample.t}
    return list(seen.values())


# -- figures ----------------------------------------------------------------------------------------
def leader_timeline(history: History) -> list[tuple[float, str, int | None]]:
    """(first seen, leader, term) for each leadership, as reported by a node other than
    the leader itself (a deposed leader may still name itself for a moment)."""
    timeline: list[tuple[float, str, int | None]] = []
    known: set[tuple[str, int | None]] = set()
    for sample in sorted(history.leaders, key=lambda s: s.t):
        if sample.leader is None or sample.observer == sample.leader:
            continue
        key = (sample.leader, sample.term)
        if key not in known:
            known.add(key)
            timeline.append((sample.t, sample.leader, sample.term))
    return timeline


def leader_changes(history: History) -> int:
    timeline = leader_timeline(history)
    return sum(1 for before, after in zip(timeline, timeline[1:]) if before[1] != after[1])


def failover_s(history: History, fault: Fault) -> float | None:
    """For a fault on the leader: from the fault until another node is seen as leader by
    a node other than the faulted one."""
    if fault.role != "leader" or not fault.node_id:
        return None
    for sample in sorted(history.leaders, key=lambda s: s.t):
        if (sample.t > fault.start and sample.observer != fault.node_id and sample.leader
                and sample.leader != fault.node_id and sample.observer != sample.leader):
            return round(sample.t - fault.start, 3)
    return None


def first_write_s(history: History, fault: Fault) -> float | None:
    """From the fault to the first acknowledgement of a write begun after it."""
    acks = [w.end for w in history.writes if w.outcome == WRITE_OK and w.start >= fault.start]
    return round(min(acks) - fault.start, 3) if acks else None


def unavailable_windows(history: History, gap: float = UNAVAILABLE_GAP_S) -> list[tuple[float, float]]:
    """(start, seconds) of each stretch longer than ``gap`` with no write acknowledged,
    from the first acknowledgement to the end of the run."""
    acks = sorted(w.end for w in history.writes if w.outcome == WRITE_OK)
    if not acks:
        return [(0.0, history.duration)] if history.duration else []
    return [(before, after - before) for before, after in zip(acks, acks[1:] + [max(history.duration, acks[-1])])
            if after - before > gap]


def unavailable_s(history: History, gap: float = UNAVAILABLE_GAP_S) -> float:
    """Total time with no write acknowledged for longer than ``gap``."""
    return round(sum(length for _, length in unavailable_windows(history, gap)), 3)


def time_to_full_s(history: History, fault: Fault, until: float | None) -> float | None:
    """From the fault until the service is back at full replicas and stays there until
    ``until`` (the next fault or the end); 0 if it never dropped; None if it did not
    come back."""
    window = [s for s in history.replicas if s.t >= fault.start and (until is None or s.t < until)]
    if not window:
        return None
    if all(s.running >= s.desired for s in window):
        return 0.0
    if window[-1].running < window[-1].desired:
        return None
    back = next(s.t for s in reversed(window) if s.running < s.desired)
    after = next(s.t for s in window if s.t > back)
    return round(after - fault.start, 3)


def error_rate(samples: list[HttpSample]) -> float | None:
    return round(sum(1 for s in samples if not s.ok) / len(samples), 4) if samples else None


def http_errors_by_fault(history: History) -> list[dict]:
    """Requests begun during each fault (from its start to its end), and how many failed."""
    rows = []
    for fault in sorted(history.faults, key=lambda f: f.start):
        end = fault.end if fault.end is not None else history.duration
        window = [s for s in history.http if fault.start <= s.t <= end]
        rows.append({"kind": fault.kind, "target": fault.target, "start": round(fault.start, 3),
                     "requests": len(window), "errors": sum(1 for s in window if not s.ok),
                     "error_rate": error_rate(window)})
    return rows


def http_outside_faults(history: History) -> list[HttpSample]:
    """Requests begun while no fault was in effect."""
    spans = [(f.start, f.end if f.end is not None else history.duration) for f in history.faults]
    return [s for s in history.http if not any(start <= s.t <= end for start, end in spans)]


def summarize(history: History) -> dict:
    """The JSON record (keys documented in docs/failover-testing.md)."""
    faults = sorted(history.faults, key=lambda f: f.start)
    per_fault = []
    for position, fault in enumerate(faults):
        until = faults[position + 1].start if position + 1 < len(faults) else None
        per_fault.append({"kind": fault.kind, "target": fault.target, "role": fault.role,
                          "start": round(fault.start, 3), "end": None if fault.end is None else round(fault.end, 3),
                          "failover_s": failover_s(history, fault), "first_write_s": first_write_s(history, fault),
                          "time_to_full_s": time_to_full_s(history, fault, until) if history.replicas else None,
                          "note": fault.note})
    failovers = [f["failover_s"] for f in per_fault if f["failover_s"] is not None]
    stale = stale_reads(history)
    record = {
        "duration_s": round(history.duration, 3),
        "faults": per_fault,
        "leader": {"changes": leader_changes(history), "failover_s": failovers,
                   "timeline": [{"t": round(t, 3), "leader": leader, "term": term}
                                for t, leader, term in leader_timeline(history)]},
        "writes": {"attempted": len(history.writes),
                   "acked": sum(1 for w in history.writes if w.outcome == WRITE_OK),
                   "failed": sum(1 for w in history.writes if w.outcome == WRITE_FAILED),
                   "indeterminate": sum(1 for w in history.writes if w.outcome == WRITE_UNKNOWN),
                   "lost": lost_writes(history), "lost_detail": lost_write_details(history),
                   "phantom": phantom_writes(history),
                   "reads": len(history.reads),
                   "read_errors": sum(1 for r in history.reads if r.outcome == READ_ERROR),
                   "stale_reads": [asdict(r) for r in stale],
                   "unavailable_s": unavailable_s(history),
                   "unavailable_windows": [{"start": round(start, 3), "s": round(length, 3)}
                                           for start, length in unavailable_windows(history)],
                   "checked": history.final_names is not None},
        "replicas": {"time_to_full_s": [f["time_to_full_s"] for f in per_fault if f["time_to_full_s"] is not None],
                     "not_back": sum(1 for f in per_fault if history.replicas and f["time_to_full_s"] is None)},
        "duplicates": duplicates(history),
    }
    if history.http:
        calm = http_outside_faults(history)
        record["http"] = {"requests": len(history.http), "errors": sum(1 for s in history.http if not s.ok),
                          "error_rate": error_rate(history.http),
                          "outside_faults": {"requests": len(calm), "errors": sum(1 for s in calm if not s.ok),
                                             "error_rate": error_rate(calm)},
                          "by_fault": http_errors_by_fault(history),
                          "urls": sorted({s.url for s in history.http if s.url})}
    return record


def passed(record: dict) -> bool:
    """The run's verdict: nothing lost, no phantom, no stale read, no duplicate, and
    the final state was actually read."""
    writes = record["writes"]
    return (writes["checked"] and not writes["lost"] and not writes["phantom"] and not writes["stale_reads"]
            and not record["duplicates"])
