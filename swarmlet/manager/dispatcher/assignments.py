"""What the dispatcher sends each node and how it takes back their task statuses (pure).

A node's *assignment set* is every task placed on it (history included, so that the
agent removes a container only once its task is gone from the store), plus the data of
the secrets and configs that its ready/running tasks reference, and nothing else: a
node never receives a secret none of its tasks uses. Secrets are stored sealed
(manager/secrets.py): ``open_secret`` opens the ones a node gets, and only those.

Status updates from a node are accepted only for tasks placed on that node and only
when they move the task forward (Swarm's state order); anything else is dropped.
"""
from __future__ import annotations

import hashlib
from typing import Callable

from swarmlet.api.objects import ACTIVE_DESIRED_STATES, TaskState, is_terminal, state_rank
from swarmlet.api.session import PHASE_ACTIVE, PHASE_ENDED, PHASE_NEW, Assignments, pack
from swarmlet.api.views import Config, Secret, Task


def plain_secret_value(secret: Secret) -> bytes:
    """A secret stored in clear (one written before secrets were sealed); a sealed one
    needs the manager's ``SecretBox.open``."""
    if "data" not in secret.spec:
        raise ValueError(f"secret {secret.name} is sealed: the dispatcher needs the SecretBox to open it")
    return bytes(secret.spec["data"])


def node_assignment(node_id: str, tasks: list[Task], secrets: list[Secret], configs: list[Config],
                    open_secret: Callable[[Secret], bytes] = plain_secret_value) -> Assignments:
    # A task to run is the node's once the scheduler assigned it: a global task names its
    # node from birth, but while pending it has neither passed the filters nor got its
    # addresses. One no longer meant to run still goes, so that the node reports it shut
    # down before it started (what a stack removal or an update waits for).
    mine = sorted((t for t in tasks if t.spec.node_id == node_id and not (
        t.status.state == TaskState.PENDING and t.spec.desired_state in ACTIVE_DESIRED_STATES)), key=lambda t: t.id)
    wanted = {"secrets": set(), "configs": set()}
    for task in mine:
        if task.spec.desired_state in ACTIVE_DESIRED_STATES:
            container = task.spec.raw["container"]
            for kind in wanted:
                wanted[kind].update(ref["source"] for ref in container.get(kind, []))
    files = {"secrets": {s.name: {"data": open_secret(s), "id": s.id} for s in secrets if s.name in wanted["secrets"]},
             "configs": {c.name: {"data": c.spec["data"], "id": c.id} for c in configs if c.name in wanted["configs"]}}
    return Assignments(tasks=[{"id": t.id, "spec": t.spec.raw, "phase": task_phase(t)} for t in mine], **files)


def task_phase(task: Task) -> str:
    """"new" (not yet taken up by its node), "active" or "ended": a restarted agent must
    not start again a task that already ran."""
    current = task.status.state
    if is_terminal(current):
        return PHASE_ENDED
    return PHASE_ACTIVE if state_rank(current) >= state_rank(TaskState.ACCEPTED) else PHASE_NEW


def assignment_digest(message: Assignments) -> str:
    return hashlib.sha256(pack(message)).hexdigest()


def nodes_touched(changes) -> set[str] | None:
    """Nodes whose assignment set a store change may alter; None: maybe all of them."""
    nodes: set[str] = set()
    for change in changes:
        if change.kind in (Secret.kind, Config.kind):
            return None
        if change.kind == Task.kind:
            node_id = Task(change.object).spec.node_id
            if node_id:
                nodes.add(node_id)
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
