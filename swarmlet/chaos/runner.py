"""One chaos run: start the workload, inject the planned faults one after another,
heal everything, check the final state, report. Interrupting it (Ctrl-C, SIGINT) ends
the schedule at once; healing and the checks still run."""
from __future__ import annotations

import contextlib
import random
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field

from swarmlet.chaos.faults import FaultError, NodeInfo
from swarmlet.chaos.history import Fault, History, passed, summarize
from swarmlet.chaos.schedule import FaultKind, PlannedFault, TargetClass
from swarmlet.chaos.workload import CHAOS_LABEL, ProberError, Workload
from swarmlet.cli.client import ApiError, ClusterUnreachable

# Before each fault the cluster gets this long to be whole again (every node alive, a
# leader every manager reaches); a fault is injected anyway after it, with a note.
RECOVERY_TIMEOUT_S = 20.0
# After the run: this long for the managers to agree, before the final state is read.
SETTLE_TIMEOUT_S = 30.0
POLL_S = 0.05
# A fault aimed at the leader waits this long for one to be known (a returning manager's
# election, pysyncobj having no pre-vote, can leave none for a moment) before it is skipped.
LEADER_WAIT_S = 5.0


@dataclass
class RunOptions:
    duration: float
    schedule: list[PlannedFault]
    seed: int
    writers: int = 4
    service: str | None = None
    http_urls: list[str] = field(default_factory=list)
    keep_writes: bool = False


def run(target, options: RunOptions, log=lambda message: None) -> dict:
    """Run ``options.schedule`` against ``target`` (faults.LocalTarget or IsolatedTarget, compose.ComposeTarget)
    and return the JSON record (history.summarize, plus ``passed``/``interrupted``)."""
    # Ctrl-C must reach the run even when it was started with SIGINT ignored (a
    # background job of a non-interactive shell inherits SIG_IGN, and Python then installs
    # no KeyboardInterrupt handler): the run heals what it broke on SIGINT, so take it.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    history = History()
    began = time.monotonic()
    clock = lambda: time.monotonic() - began  # noqa: E731
    managers = [n.api for n in target.nodes() if n.role == "manager" and n.api]
    run_id = secrets.token_hex(3)
    workload = Workload(history, clock, target.client, managers, run_id, options.writers, options.seed,
                        options.service, options.http_urls, target.client_command)
    chooser = random.Random(options.seed + 1)  # which manager/worker, given the same cluster
    interrupted = False
    healed: list[str] = []
    try:
        workload.start()
    except ProberError as err:
        workload.stop()
        raise FaultError(str(err)) from None
    # The schedule counts from when every client runs (the prober may take seconds).
    origin = time.monotonic()
    try:
        for planned in options.schedule:
            _sleep_until(origin + planned.at)
            if not _wait_whole(target, RECOVERY_TIMEOUT_S, service=options.service):
                note = f"cluster not whole after {RECOVERY_TIMEOUT_S:g}s"
            else:
                note = ""
            _inject_one(target, planned, chooser, history, clock, log, note)
        _sleep_until(origin + options.duration)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: healing what was broken")
    finally:
        # Healing must not itself be cut short by a second Ctrl-C.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            healed = target.heal_all()
            for fault in history.faults:
                if fault.end is None:
                    fault.end = clock()
            history.duration = clock()
            workload.stop()
            log(f"healed {', '.join(healed) or 'nothing left broken'}; waiting for the managers to agree")
            _wait_whole(target, SETTLE_TIMEOUT_S, converged=True)
            history.final_names = _final_names(target)
            log("final state read" if history.final_names is not None else "final state could not be read")
            if not options.keep_writes:
                _remove_writes(target, run_id)
                log("the run's writes removed")
        finally:
            signal.signal(signal.SIGINT, previous)
    record = summarize(history)
    record.update({"seed": options.seed, "run_id": run_id, "target": target.kind, "interrupted": interrupted,
                   "healed_on_exit": healed, "passed": passed(record)})
    record["_history"] = history  # for the HTML report; dropped from the JSON
    return record


def _inject_one(target, planned: PlannedFault, chooser: random.Random, history: History, clock, log,
                note: str) -> None:
    nodes = target.nodes()
    leader_id, term = _leader(target, LEADER_WAIT_S if planned.target == TargetClass.LEADER else 0.0)
    node = _resolve(planned.target, nodes, leader_id, chooser)
    if node is None:
        history.faults.append(Fault(planned.kind.value, "", planned.target.value, clock(), clock(),
                                    note=f"no {planned.target.value} to target"))
        return
    role = "leader" if leader_id and node.id == leader_id else node.role
    fault = Fault(planned.kind.value, node.name, role, clock(), node_id=node.id, leader_before=leader_id,
                  term_before=term, note=note)
    history.faults.append(fault)
    log(f"{fault.start:7.2f}s  {planned.kind.value} {node.name} ({role}) for {planned.duration:g}s")
    # On Ctrl-C the fault is left to run()'s heal_all, which a second Ctrl-C cannot cut short.
    try:
        with _uninterrupted():
            target.inject(planned.kind, node)
        # The fault counts from when it is fully in effect (a `docker pause` or a
        # partition's several rules take a moment): no write begun before can be
        # mistaken for one that got through it.
        fault.start = clock()
        _sleep_until(time.monotonic() + planned.duration)
    except FaultError as err:
        fault.note = (fault.note + "; " if fault.note else "") + str(err)
    try:
        with _uninterrupted():
            target.undo(planned.kind, node)
    except FaultError as err:
        fault.note = (fault.note + "; " if fault.note else "") + str(err)
    fault.end = clock()


@contextlib.contextmanager
def _uninterrupted():
    """Ctrl-C waits until the block is done: a fault is injected (or undone) whole, never
    half (a partition is several rules; a SIGINT between them once left one behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A deferring handler rather than a signal mask: children (iptables, restarted
    # nodes) would inherit the mask, but not a Python handler.
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:  # also over an error the Ctrl-C caused (a child of ours got it too)
            raise KeyboardInterrupt


def _resolve(wanted: TargetClass, nodes: list[NodeInfo], leader_id: str | None,
             chooser: random.Random) -> NodeInfo | None:
    if wanted == TargetClass.LEADER:
        # No leader known (none answered): no node is it, not even one whose ID is unknown too.
        return next((n for n in nodes if n.id == leader_id), None) if leader_id else None
    if wanted == TargetClass.MANAGER:
        pool = [n for n in nodes if n.role == "manager" and n.id != leader_id]
    elif wanted == TargetClass.WORKER:
        pool = [n for n in nodes if n.role == "worker"]
    else:
        pool = list(nodes)
    return chooser.choice(sorted(pool, key=lambda n: n.name)) if pool else None


def _leader(target, wait: float = 0.0) -> tuple[str | None, int | None]:
    """(leader ID, term) as the cluster reports it; asked again for up to ``wait``
    seconds while no leader is known."""
    deadline = time.monotonic() + wait
    while True:
        try:
            status = target.client(timeout=2.0).call("GET", "/v1/cluster/status")
            leader, term = status.get("leader"), status.get("term")
        except (ApiError, ClusterUnreachable):
            leader, term = None, None
        if leader or time.monotonic() >= deadline:
            return leader, term
        time.sleep(POLL_S)


def _wait_whole(target, timeout: float, converged: bool = False, service: str | None = None) -> bool:
    """Until every node runs and a leader reaches every manager (and, with
    ``converged``, every manager has caught up; with ``service``, it runs its full
    replicas: the next fault measures its own way back, not the last one's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(target.alive().values()):
            try:
                client = target.client(timeout=2.0)
                status = client.call("GET", "/v1/cluster/status")
                view = client.call("GET", f"/v1/services/{service}") if service else None
            except (ApiError, ClusterUnreachable):
                status = view = None
            if status and status.get("leader") and all(m["reachable"] for m in status["managers"]) and (
                    not converged or all(m["lag"] == 0 for m in status["managers"])) and (
                    not service or (view and view["running"] >= (view["replicas"] or 0))):
                return True
        time.sleep(POLL_S)
    return False


def _final_names(target) -> set[str] | None:
    """Every config name, read linearisably after healing; None if no manager answers."""
    try:
        return {c["name"] for c in target.client(timeout=15.0).call("GET", "/v1/configs?consistent=1")}
    except (ApiError, ClusterUnreachable):
        return None


def _remove_writes(target, run_id: str) -> None:
    """Leave the cluster as it was found: delete this run's configs (one request)."""
    try:
        target.client(timeout=30.0).call("DELETE", f"/v1/configs?label={CHAOS_LABEL}={run_id}")
    except (ApiError, ClusterUnreachable):
        pass


def _sleep_until(moment: float) -> None:
    """The schedule's clock (not synchronisation): wake at ``moment``, in short steps so
    that Ctrl-C is taken at once."""
    while (left := moment - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
