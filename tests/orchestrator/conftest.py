"""A tiny in-memory world for the pure orchestrator: services, tasks and nodes as the
store holds them, and a way to apply a Decision the way the orchestrator loop does."""
from __future__ import annotations

import itertools

import pytest

from swarmlet.api import specs
from swarmlet.api.objects import STACK_NAMESPACE_LABEL, node_object_spec, node_object_status
from swarmlet.api.views import Node, Service, Task
from swarmlet.manager.orchestrator.reconcile import reconcile_service
from swarmlet.store.state import freeze, thaw


def make_service(name="web", replicas=3, mode="replicated", stack="app", **fields) -> dict:
    spec = specs.ServiceSpec(name=f"{stack}_{name}", mode=mode, replicas=None if mode.startswith("global") else replicas,
                             container=specs.ContainerSpec(image="busybox", command=["sleep", "1000"]),
                             labels={STACK_NAMESPACE_LABEL: stack}, **fields)
    return {"id": f"svc-{name}", "kind": "service", "version": 1, "created_at": 0.0, "updated_at": 0.0,
            "spec": spec.to_dict(), "status": {}}


def make_node(node_id, state="ready", availability="active", labels=None) -> dict:
    return {"id": node_id, "kind": "node", "version": 1, "created_at": 0.0, "updated_at": 0.0,
            "spec": node_object_spec("worker", availability, labels),
            "status": node_object_status(addr="127.0.0.1", hostname=node_id, state=state)}


def task_views(tasks) -> list[Task]:
    """Tasks of the world as the store hands them out."""
    return [Task(freeze(t)) for t in tasks]


class World:
    def __init__(self, service: dict | None, nodes: list[dict]):
        self.service = service
        self.nodes = {n["id"]: n for n in nodes}
        self.tasks: dict[str, dict] = {}
        self.now = 1000.0
        self._ids = itertools.count(1)
        self._clock = itertools.count(1)

    def decide(self, waiting_for=None):
        """The reconciler's decision over the world, seen as the store hands it out: frozen
        objects behind typed views (so an in-place edit by the reconciler would fail)."""
        return reconcile_service(self.service_view(), task_views(self.tasks.values()),
                                 {n.id: n for n in self.node_views()}, self.now, waiting_for)

    def node_views(self) -> list[Node]:
        return [Node(freeze(n)) for n in self.nodes.values()]

    def service_view(self) -> Service | None:
        return Service(freeze(self.service)) if self.service else None

    def step(self, waiting_for=None):
        decision = self.decide(waiting_for)
        self.apply(decision)
        return decision

    def apply(self, decision):
        for created in decision.creates:
            task_id = f"t{next(self._ids):03d}"
            self.tasks[task_id] = {"id": task_id, "kind": "task", "version": 1, "created_at": self.now + next(self._clock) * 1e-6,
                                   "updated_at": self.now, "spec": thaw(created["spec"]), "status": thaw(created["status"])}
        for task, spec in decision.updates:
            if task.id in self.tasks:
                self.tasks[task.id] = dict(self.tasks[task.id], spec=thaw(spec))
        for task in decision.deletes:
            self.tasks.pop(task.id, None)
        if decision.service_status is not None and self.service is not None:
            self.service = dict(self.service, status=decision.service_status)
            if decision.rollback is not None:  # as the loop commits it (decision_ops)
                self.service = {k: v for k, v in self.service.items() if k != "previous_spec"}
                self.service["spec"] = thaw(decision.rollback.spec)

    # what the scheduler and agents would do
    def place(self, node_ids=None):
        nodes = itertools.cycle(node_ids or sorted(self.nodes))
        for task in self.tasks.values():
            if not task["spec"]["node_id"]:
                task["spec"]["node_id"] = next(nodes)
            if task["status"]["state"] == "pending":
                task["status"] = dict(task["status"], state="assigned")

    def set_state(self, task, state, exit_code=None, started_at=None):
        task["status"] = dict(task["status"], state=state, timestamp=self.now, exit_code=exit_code,
                              started_at=started_at if started_at is not None else task["status"].get("started_at"))

    def run_all(self):
        """Agents: tasks desired running start; tasks desired shutdown/remove stop."""
        for task in self.tasks.values():
            desired, state = task["spec"]["desired_state"], task["status"]["state"]
            if desired == "running" and state in ("assigned", "pending") and task["spec"]["node_id"]:
                self.set_state(task, "running", started_at=self.now)
            elif desired in ("shutdown", "remove") and state in ("assigned", "running", "ready"):
                self.set_state(task, "shutdown")

    def settle(self, rounds=20):
        """Orchestrate, place and run until nothing changes any more."""
        for _ in range(rounds):
            before = repr(sorted((t["id"], t["spec"]["desired_state"], t["status"]["state"]) for t in self.tasks.values()))
            decision = self.step()
            self.place()
            self.run_all()
            after = repr(sorted((t["id"], t["spec"]["desired_state"], t["status"]["state"]) for t in self.tasks.values()))
            if decision.empty and before == after:
                return
        raise AssertionError("the world did not settle")

    def active(self):
        return [t for t in self.tasks.values() if t["spec"]["desired_state"] in ("ready", "running")]

    def running(self):
        return [t for t in self.active() if t["status"]["state"] == "running"]


@pytest.fixture
def world():
    def make(service=None, nodes=3, **node_fields):
        nodes = [make_node(f"n{i}", **node_fields) for i in range(1, nodes + 1)] if isinstance(nodes, int) else nodes
        return World(service, nodes)
    return make
