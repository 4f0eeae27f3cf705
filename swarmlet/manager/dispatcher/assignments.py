"""What the dispatcher sends each node and how it takes back their task statuses (pure).

A node's *assignment set* is every task placed on it (history included, so that the
agent removes a container only once its task is gone from the store), plus the data of
the secrets and configs that its ready/running tasks reference, and nothing else: a
node never receives a secret none of its tasks uses. Secrets are stored sealed
(manager/secrets.py): ``open_secret`` opens the ones a node gets, and only those.

After the first whole set a node of session protocol 2 gets only what changed
(``task_changes``: work that grows with the tasks a store change touched, not with the
node's tasks; ``AssignmentSet.changes_to`` when anything may have changed: a secret, a
snapshot).

Status updates from a node are accepted only for tasks placed on that node and only
when they move the task forward (Swarm's state order); anything else is dropped.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable

from swarmlet.api.objects import ACTIVE_DESIRED_STATES, TaskState, is_terminal, state_rank
from swarmlet.api.session import (PHASE_ACTIVE, PHASE_ENDED, PHASE_NEW, AssignedTask, AssignmentChanges,
                                  Assignments, AssignmentSet, pack)
from swarmlet.api.views import Config, Secret, Task

FILE_KINDS = ("secrets", "configs")

def plain_secret_value(secret: Secret) -> bytes:
    """A secret stored in clear (one written before secrets were sealed); a sealed one
    needs the manager's ``SecretBox.open``."""
    if "data" not in secret.spec:
        raise ValueError(f"secret {secret.name} is sealed: the dispatcher needs the SecretBox to open it")
    return bytes(secret.spec["data"])



def is_assigned(node_id: str, task: Task) -> bool:
    # A task to run is the node's once the scheduler assigned it: a global task names its
    # node from birth, but while pending it has neither passed the filters nor got its
    # addresses. One no longer meant to run still goes, so that the node reports it shut
    # down before it started (what a stack removal or an update waits for).
    return task.spec.node_id == node_id and not (
        task.status.state == TaskState.PENDING and task.spec.desired_state in ACTIVE_DESIRED_STATES)


def assigned_entry(task: Task) -> AssignedTask:
    return {"id": task.id, "spec": task.spec.raw, "phase": task_phase(task)}


def node_assignment(node_id: str, tasks: list[Task], secrets: list[Secret], configs: list[Config],
                    sequence: int = 0, open_secret: Callable[[Secret], bytes] = plain_secret_value) -> Assignments:
    mine = sorted((t for t in tasks if is_assigned(node_id, t)), key=lambda t: t.id)
    entries = [assigned_entry(t) for t in mine]
    return Assignments(tasks=entries, **files_for(entries, secrets, configs, open_secret), sequence=sequence)


def files_used(entry: AssignedTask) -> dict[str, list[str]]:
    """The secrets and configs (by name) a task entry needs on its node: those of a task
    meant to run."""
    if entry["spec"].get("desired_state") not in ACTIVE_DESIRED_STATES:
        return {}
    container = entry["spec"].get("container") or {}
    return {kind: [ref["source"] for ref in container.get(kind, [])] for kind in FILE_KINDS if container.get(kind)}


def files_for(entries, secrets: list[Secret], configs: list[Config],
              open_secret: Callable[[Secret], bytes] = plain_secret_value) -> dict[str, dict]:
    """The secrets (opened: they are sealed in the store) and configs the entries use."""
    wanted = {kind: set() for kind in FILE_KINDS}
    for entry in entries:
        for kind, names in files_used(entry).items():
            wanted[kind].update(names)
    return {"secrets": {s.spec["name"]: {"data": open_secret(s), "id": s.id} for s in secrets
                        if s.spec["name"] in wanted["secrets"]},
            "configs": {c.spec["name"]: {"data": c.spec["data"], "id": c.id} for c in configs
                        if c.spec["name"] in wanted["configs"]}}


FileSource = Callable[[Iterable[AssignedTask]], "tuple[list[Secret], list[Config]]"]


def task_changes(node_id: str, held: AssignmentSet, tasks: dict[str, Task | None], files_of: FileSource,
                 open_secret: Callable[[Secret], bytes] = plain_secret_value) -> AssignmentChanges:
    """The changes to ``held`` (what the node was last sent) that ``tasks`` (the touched
    ones by ID as the store has them now, None if deleted) make. Only these tasks are
    read, and the node's whole set, and its secrets and configs (``files_of(entries)``:
    those the entries name), only when one of them needs or needed a secret or a config
    (the files a node gets follow its tasks). Looking the files up for every change read
    every task the node holds: at 100 tasks a node, a fifth of a 100,000-task deploy's
    leader loop."""
    updated, removed, files_touched = [], [], False
    for task_id in sorted(tasks):
        task = tasks[task_id]
        entry = assigned_entry(task) if task is not None and is_assigned(node_id, task) else None
        before = held.tasks.get(task_id)
        if entry == before or (entry is not None and before is not None and taken_up(before, entry)):
            continue
        files_touched = files_touched or bool((entry and files_used(entry)) or (before and files_used(before)))
        if entry is None:
            removed.append(task_id)
        else:
            updated.append(entry)
    files = {kind: {} for kind in FILE_KINDS}
    gone = {kind: [] for kind in FILE_KINDS}
    if files_touched:
        after = dict(held.tasks)
        for task_id in removed:
            del after[task_id]
        after.update((e["id"], e) for e in updated)
        secrets, configs = files_of(list(after.values()))
        wanted = files_for(after.values(), secrets, configs, open_secret)
        for kind, before in (("secrets", held.secrets), ("configs", held.configs)):
            files[kind] = {k: v for k, v in wanted[kind].items() if before.get(k) != v}
            gone[kind] = sorted(set(before) - set(wanted[kind]))
    return AssignmentChanges(sequence=held.sequence + 1, applies_to=held.sequence, tasks=updated, removed=removed,
                             secrets=files["secrets"], removed_secrets=gone["secrets"],
                             configs=files["configs"], removed_configs=gone["configs"])


def taken_up(before: AssignedTask, entry: AssignedTask) -> bool:
    """Whether the only change from ``before`` to ``entry`` is the node taking the task
    up (phase new -> active). The node's own report did that (only the task's node moves
    it to accepted and on), and a running agent reads the phase only when the task first
    arrives, so sending the entry again would tell the session nothing: it was half of
    all assignment messages in a large deploy, each a whole task spec. Whole sets, as a
    new session gets them, carry the phase as it is."""
    return before["phase"] == PHASE_NEW and entry["phase"] == PHASE_ACTIVE and before["spec"] == entry["spec"]


def task_phase(task: Task) -> str:
    """"new" (not yet taken up by its node), "active" or "ended": a restarted agent must
    not start again a task that already ran."""
    current = task.status.state
    if is_terminal(current):
        return PHASE_ENDED
    return PHASE_ACTIVE if state_rank(current) >= state_rank(TaskState.ACCEPTED) else PHASE_NEW


def assignment_digest(message: Assignments) -> str:
    return hashlib.sha256(pack(message)).hexdigest()


def files_named(entries) -> dict[str, set[str]]:
    """The names of the secrets and configs that task entries need ("secrets"/"configs")."""
    names: dict[str, set[str]] = {kind: set() for kind in FILE_KINDS}
    for entry in entries:
        for kind, used in files_used(entry).items():
            names[kind].update(used)
    return names


def files_touched(changes) -> dict[str, set[str]]:
    """The names of the secrets and configs a store change created, changed or removed."""
    names: dict[str, set[str]] = {kind: set() for kind in FILE_KINDS}
    for change in changes:
        if change.kind in (Secret.kind, Config.kind):
            kind = "secrets" if change.kind == Secret.kind else "configs"
            for obj in (change.object, change.previous):
                if obj:
                    names[kind].add(obj["spec"].get("name"))
    return names


def uses_any(held: AssignmentSet, names: dict[str, set[str]]) -> bool:
    """Whether a node's set holds, or its tasks need, one of ``names`` (a node whose tasks
    use none of them has nothing to be sent when they change)."""
    if any(names[kind] & set(getattr(held, kind)) for kind in FILE_KINDS):
        return True
    needed = files_named(held.tasks.values())
    return any(names[kind] & needed[kind] for kind in FILE_KINDS)


def tasks_touched(changes) -> dict[str, set[str]]:
    """The tasks a store change touched, by the node they are on (secrets and configs:
    ``files_touched``)."""
    nodes: dict[str, set[str]] = {}
    for change in changes:
        if change.kind == Task.kind:
            node_id = Task(change.object).spec.node_id
            if node_id:
                nodes.setdefault(node_id, set()).add(change.id)
    return nodes


def accepted_status(task: Task | None, node_id: str, status: dict) -> dict | None:
    """The status to write for a node's report on ``task``, or None to drop it."""
    if task is None or task.spec.node_id != node_id or not isinstance(status, dict):
        return None
    current = task.status
    reported = status.get("state", "")
    if is_terminal(current.state) and reported != current.state:
        return None  # an ended task stays ended
    if state_rank(reported) < state_rank(current.state):
        return None
    merged = current.replace(**{k: v for k, v in status.items() if k in _STATUS_FIELDS})
    return None if merged == current.raw else merged


_STATUS_FIELDS = ("state", "timestamp", "message", "err", "exit_code", "container_id", "started_at")
