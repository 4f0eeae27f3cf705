"""Waiting for services to converge, with progress for people and for logs.

``assess`` is pure: from the services and tasks the API shows (views of
``swarmlet.manager.stacks``) it tells, per service, how far it got (running tasks, or
completed ones for jobs, against the desired count), the note worth showing (the
scheduler's explanation of a pending task, what the service waits for, the latest task
error) and whether it failed. ``wait_converged`` polls a snapshot function until every
service has converged or one failed, showing a live display on a terminal and plain
lines otherwise.

A service fails when:

- its rolling update paused (updated tasks failed past max_failure_ratio) or was rolled
  back (unless the wait is for a rollback), or its rollback paused,
- ``max_failures`` of its tasks failed or were rejected since the wait began,
- a slot (a node, for global modes) ended with a failed, rejected or, for a service that
  is not a job, completed task that nothing replaces for ``grace`` seconds (restart
  policy ``none``, ``max_attempts`` reached),
- a task stayed pending with an explanation from the scheduler for ``pending_timeout``.

A service whose update holds on canaries or a blue-green new set (``awaiting_promotion``)
ends the wait too, as held, and so does a blue-green update once its traffic switched
(``switched``: the old set is kept, out of traffic, for its hold time): the CLI says so
and exits 0.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from swarmlet.api.objects import GLOBAL_MODES, JOB_MODES, spec_digest
from swarmlet.cli.client import ClusterUnreachable

ACTIVE = ("ready", "running")
FAILED = ("failed", "rejected")
TERMINAL = ("complete", "shutdown", "failed", "rejected", "remove", "orphaned")
POLL_INTERVAL = 0.5


@dataclass
class ServiceProgress:
    name: str
    mode: str
    done: int
    desired: int
    converged: bool
    note: str = ""
    failure: str | None = None
    held: bool = False  # its update waits on canaries for `service promote`: done waiting, not converged
    held_as: str = "waiting for promotion"  # what it is held for, as the CLI says it

    @property
    def unit(self) -> str:
        return "completed" if self.mode in JOB_MODES else "running"

    def line(self) -> str:
        text = f"{self.name}: {self.done}/{self.desired} {self.unit}"
        if self.failure:
            return f"{text}  FAILED: {self.failure}"
        return f"{text}  {self.note}" if self.note and (self.held or not self.converged) else text


@dataclass
class Assessor:
    """Remembers what a single snapshot cannot tell: which tasks already existed when
    the wait began, and since when a condition has held."""
    baseline: set[str] = field(default_factory=set)  # IDs of tasks that had already failed
    pending_timeout: float = 60.0
    max_failures: int = 3
    grace: float = 3.0
    started: float | None = None
    # A rollback is what the wait is for (`service rollback`, `stack rollback`), not a failure.
    expect_rollback: bool = False
    _since: dict[str, float] = field(default_factory=dict)
    _updates_before: dict[str, object] = field(default_factory=dict)  # service ID -> its update's started_at

    def begin(self, tasks: list[dict], now: float) -> None:
        self.baseline = {t["id"] for t in tasks if t["state"] in FAILED}
        self.started = now

    def _held(self, key: str, now: float, holds: bool) -> float:
        """How long ``key`` has held (0 when it does not)."""
        if not holds:
            self._since.pop(key, None)
            return 0.0
        return now - self._since.setdefault(key, now)

    def assess(self, services: list[dict], tasks: list[dict], now: float) -> list[ServiceProgress]:
        if self.started is None:
            self.started = now
        for s in services:  # an update state from before the wait (an old rollback) is not this wait's
            self._updates_before.setdefault(s["id"], ((s.get("status") or {}).get("update") or {}).get("started_at"))
        return [self._service(s, [t for t in tasks if t["service_id"] == s["id"]], now) for s in services]

    def _service(self, service: dict, tasks: list[dict], now: float) -> ServiceProgress:
        mode, name = service["mode"], service["name"]
        # The cluster's digest of the spec: a CLI of another version may compute another one.
        digest = service.get("spec_digest") or spec_digest(service["spec"])
        is_job = mode in JOB_MODES
        slots: dict = {}
        for task in sorted(tasks, key=lambda t: t["created_at"]):
            slots.setdefault(task["slot"] if task["slot"] is not None else task["node_id"], []).append(task)
        current = [t for t in tasks if t["spec_digest"] == digest]
        active = [t for t in tasks if t["desired_state"] in ACTIVE]
        if is_job:
            done = sum(1 for group in slots.values() if any(t["state"] == "complete" and t["spec_digest"] == digest
                                                            for t in group))
            desired = service["replicas"] if mode == "replicated-job" else len({t["node_id"] for t in current})
        else:
            done = sum(1 for t in active if t["state"] == "running" and t["spec_digest"] == digest)
            desired = service["replicas"] if mode == "replicated" else len(active)
        outdated = any(t["spec_digest"] != digest for t in active if t["state"] not in TERMINAL)
        converged = done == desired and not outdated and (is_job or len(active) == desired)
        if mode in GLOBAL_MODES and desired == 0:
            converged = now - self.started >= self.grace  # give the orchestrator time to create the tasks

        progress = ServiceProgress(name, mode, done, desired, converged, note=self._note(service, current))
        update = (service.get("status") or {}).get("update") or {}
        if update.get("digest") == digest and update.get("state") in ("updating", "rollback_started"):
            # the new tasks are watched for `monitor` seconds before the update completes
            if progress.converged:
                progress.note = f"{'rollback' if update['state'] == 'rollback_started' else 'update'}: " \
                                "watching the new tasks (monitor)"
            progress.converged = False
        if update.get("state") in ("awaiting_promotion", "switched") and update.get("digest") == digest:
            progress.converged = progress.held = True
            progress.note = update.get("message", "")
            if update["state"] == "switched":
                progress.held_as = "traffic switched to the new set, the old set held"
        progress.failure = self._failure(service, tasks, slots, now, is_job)
        if progress.failure:
            progress.converged = False
        return progress

    @staticmethod
    def _note(service: dict, current: list[dict]) -> str:
        pending = [t for t in current if t["state"] == "pending" and t["message"]]
        if pending:
            return f"pending: {pending[-1]['message']}"
        status = service.get("status") or {}
        if status.get("message"):
            return status["message"]
        errors = sorted((t for t in current if t["err"]), key=lambda t: t["timestamp"] or 0)
        return f"last error: {errors[-1]['err']}" if errors else ""

    def _failure(self, service: dict, tasks: list[dict], slots: dict, now: float, is_job: bool) -> str | None:
        update = (service.get("status") or {}).get("update") or {}
        if update.get("state") in ("paused", "rollback_paused"):
            return update.get("message") or "the rolling update paused"
        if (update.get("state") in ("rollback_started", "rollback_completed") and not self.expect_rollback
                and update.get("started_at") != self._updates_before.get(service["id"])):
            return update.get("message") or "the update was rolled back"
        failed = sorted((t for t in tasks if t["state"] in FAILED and t["id"] not in self.baseline),
                        key=lambda t: t["timestamp"] or 0)
        if len(failed) >= self.max_failures:
            return f"{len(failed)} tasks failed; the last: {failed[-1]['err'] or failed[-1]['state']}"
        for key, group in slots.items():
            alive = [t for t in group if t["desired_state"] in ACTIVE and t["state"] not in TERMINAL]
            last = group[-1]
            ended = last["state"] in FAILED or (last["state"] == "complete" and not is_job)
            if self._held(f"ended:{last['id']}", now, ended and not alive) >= self.grace:
                reason = last["err"] or ("exited" if last["state"] == "complete" else last["state"])
                return f"task {last['id'][:12]} {last['state']} and is not restarted: {reason}"
        for task in tasks:
            waiting = task["state"] == "pending" and bool(task["message"]) and task["desired_state"] in ACTIVE
            if self._held(f"pending:{task['id']}", now, waiting) >= self.pending_timeout:
                return f"task {task['id'][:12]} pending for {self.pending_timeout:.0f}s: {task['message']}"
        return None


class _Display:
    """A live rich display on a terminal; otherwise a line whenever a service's line changes."""

    def __init__(self, live: bool):
        self.live = live
        self.progress = None
        self.rows: dict[str, int] = {}
        self.printed: dict[str, str] = {}

    def __enter__(self):
        if self.live:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.fields[count]}"), TextColumn("{task.fields[note]}"),
                                     console=Console(), auto_refresh=True)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def show(self, items: list[ServiceProgress]) -> None:
        for item in items:
            if self.progress is None:
                line = item.line()
                if self.printed.get(item.name) != line:
                    self.printed[item.name] = line
                    click.echo(line)
                continue
            count = f"{item.done}/{item.desired} {item.unit}"
            note = f"[red]FAILED: {item.failure}[/]" if item.failure else ("[green]done[/]" if item.converged
                                                                           else item.note)
            completed = 1 if item.converged and item.desired == 0 else item.done
            fields = dict(total=max(item.desired, 1), completed=completed, count=count, note=note)
            if item.name not in self.rows:
                self.rows[item.name] = self.progress.add_task(item.name, **fields)
            else:
                self.progress.update(self.rows[item.name], **fields)


def wait_converged(snapshot: Callable[[], tuple[list[dict], list[dict]]], what: str | Callable[[], str],
                   timeout: float, pending_timeout: float = 60.0, live: bool | None = None,
                   expect_rollback: bool = False) -> None:
    """Poll ``snapshot() -> (services, tasks)`` until every service converged; raise a
    ClickException (exit 1) with the reasons when one failed or ``timeout`` passed.
    ``what`` names the services in messages (or computes the name after a snapshot)."""
    label = what if callable(what) else (lambda text=what: text)
    assessor = Assessor(pending_timeout=pending_timeout, expect_rollback=expect_rollback)
    live = sys.stdout.isatty() if live is None else live
    deadline = time.monotonic() + timeout
    items: list[ServiceProgress] = []
    with _Display(live) as display:
        while True:
            now = time.monotonic()
            try:
                services, tasks = snapshot()
            except ClusterUnreachable as err:
                if now > deadline:
                    raise click.ClickException(f"{label()}: {err}") from None
                time.sleep(POLL_INTERVAL)
                continue
            if assessor.started is None:
                assessor.begin(tasks, now)
            items = assessor.assess(services, tasks, now)
            display.show(items)
            name = label()
            failures = [i for i in items if i.failure]
            if failures:
                raise click.ClickException(f"{name} failed:\n" + "\n".join(f"  {i.name}: {i.failure}" for i in failures))
            if all(i.converged for i in items):
                held = [i for i in items if i.held]
                for held_as in dict.fromkeys(i.held_as for i in held):
                    click.echo(f"{name}: {held_as}:\n" + "\n".join(f"  {i.line()}" for i in held
                                                                  if i.held_as == held_as))
                if not held:
                    click.echo(f"{name}: converged")
                return
            if now > deadline:
                waiting = [i for i in items if not i.converged]
                raise click.ClickException(f"{name}: not converged after {timeout:.0f}s:\n" + "\n".join(
                    f"  {i.line()}" for i in waiting))
            time.sleep(POLL_INTERVAL)


def wait_gone(list_tasks: Callable[[], list[dict]], what: str, timeout: float) -> None:
    """Poll until ``list_tasks()`` is empty (a removed stack's or service's tasks)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            count = len(list_tasks())
        except ClusterUnreachable:
            count = last
        if count == 0:
            return
        if count != last and count is not None:
            click.echo(f"{what}: waiting for {count} task(s) to stop")
            last = count
        if time.monotonic() > deadline:
            raise click.ClickException(f"{what}: {last} task(s) still there after {timeout:.0f}s")
        time.sleep(POLL_INTERVAL)
