"""A manager's Prometheus metrics: the cluster's figures, added to its node's registry
(swarmlet/node/metrics.py) and served at ``/metrics`` on the API (certificate
authentication, ``METRICS_ROLES`` in controlapi/server.py) and on ``--metrics-addr``.

Gauges are read from the store and the Raft view when scraped, through the same code
the API answers with (``cluster status``: Membership; ``service ls``: the stack API),
so a scrape and the CLI agree. Histograms are observed as things happen:

- ``swarmlet_raft_apply_seconds``: applying one entry to the state machine, on the
  Raft thread (every manager applies every entry);
- ``swarmlet_store_commit_seconds``: a commit made by this manager, from proposal to
  applied here (API writes, and the leader's loops on the leader);
- ``swarmlet_scheduling_latency_seconds``: a task's time from ``pending`` to
  ``assigned``, from the times stamped in the log (so every manager observes the same);
- ``swarmlet_api_request_seconds``: API requests by method, route template and status.

Names and labels are listed in docs/operations.md ("Metrics").
"""
from __future__ import annotations

import asyncio

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily

from swarmlet.api.objects import TaskState
from swarmlet.api.views import Node, Task
from swarmlet.node.metrics import NodeMetrics

# An entry applies in ~0.1 ms to ~25 ms (2,000 task creates); commits take ~1 ms to seconds in a failover.
APPLY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ManagerMetrics:
    def __init__(self, manager, node: NodeMetrics):
        self.manager = manager
        self.node = node
        registry = node.registry
        self.apply_seconds = Histogram("swarmlet_raft_apply_seconds",
                                       "Applying one Raft entry to the state machine on this manager.",
                                       buckets=APPLY_BUCKETS, registry=registry)
        self.commit_seconds = Histogram("swarmlet_store_commit_seconds",
                                        "A commit from this manager, proposal to applied here, by outcome.",
                                        ["outcome"], buckets=LATENCY_BUCKETS, registry=registry)
        self.scheduling_seconds = Histogram("swarmlet_scheduling_latency_seconds",
                                            "A task's time from pending to assigned (the scheduler's delay).",
                                            buckets=LATENCY_BUCKETS, registry=registry)
        self.api_seconds = Histogram("swarmlet_api_request_seconds", "API requests, by route template.",
                                     ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=registry)
        registry.register(_ClusterCollector(manager))
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    # -- observed as it happens ---------------------------------------------------------------------------
    def start(self) -> None:
        """Before the store starts (as the event log): the scheduling latency comes from the log."""
        self._queue = self.manager.store.subscribe()
        self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self.manager.store.unsubscribe(self._queue)
            self._task = None

    async def _watch(self) -> None:
        while True:
            event = await self._queue.get()
            for change in event.changes:
                delay = scheduling_delay(change)
                if delay is not None:
                    self.scheduling_seconds.observe(delay)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.api_seconds.labels(method, route, str(status)).observe(seconds)


def scheduling_delay(change) -> float | None:
    """Seconds from pending to assigned, for a task change that assigned it (else None)."""
    if change.kind != Task.kind or change.action != "update" or change.previous is None:
        return None
    before, after = change.previous.get("status") or {}, change.object.get("status") or {}
    if before.get("state") != TaskState.PENDING.value or after.get("state") != TaskState.ASSIGNED.value:
        return None
    pending_at = before.get("timestamp") or change.previous.get("updated_at")
    assigned_at = after.get("timestamp") or change.object.get("updated_at")
    if not pending_at or not assigned_at:
        return None
    return max(0.0, float(assigned_at) - float(pending_at))


class _ClusterCollector:
    """The gauges, read when scraped."""

    def __init__(self, manager):
        self._manager = manager

    def describe(self):
        return []

    def collect(self):
        manager = self._manager
        store = manager.store
        view = store.view
        yield _gauge("swarmlet_raft_term", "The Raft term this manager is in.", view.term if view else 0)
        yield _gauge("swarmlet_raft_commit_index", "The highest log index known committed.",
                     view.commit_index if view else 0)
        yield _gauge("swarmlet_raft_applied_index", "The store index applied on this manager.", store.index)
        yield _gauge("swarmlet_raft_is_leader", "1 on the leader (fenced: Raft says so and a majority is reachable).",
                     1 if store.is_leader else 0)
        yield _gauge("swarmlet_raft_members", "Managers in the Raft configuration.", len(store.members))
        yield _gauge("swarmlet_raft_reachable_members", "Managers this one reaches, itself included.",
                     manager.membership.reachable_without(None))
        status = manager.membership.local_status()
        leader = GaugeMetricFamily("swarmlet_raft_leader", "The leader this manager knows of (1; none: no sample).",
                                   labels=["node_id", "address"])
        if status["leader_address"]:
            leader.add_metric([status["leader"] or "", status["leader_address"]], 1)
        yield leader

        nodes = GaugeMetricFamily("swarmlet_nodes", "Nodes by state, role and availability.",
                                  labels=["state", "role", "availability"])
        counts: dict[tuple, int] = {}
        for node in store.list(Node):
            key = (node.status.state.value, node.spec.role, node.spec.availability.value)
            counts[key] = counts.get(key, 0) + 1
        for key, count in sorted(counts.items()):
            nodes.add_metric(list(key), count)
        yield nodes

        services = manager.stacks.services()  # what `service ls` shows
        names = {s["id"]: s["name"] for s in services}
        tasks = GaugeMetricFamily("swarmlet_tasks", "Tasks by service and state.", labels=["service", "state"])
        by_key: dict[tuple, int] = {}
        for task in store.list(Task):
            key = (names.get(task.spec.service_id, task.spec.service_name), task.status.state.value)
            by_key[key] = by_key.get(key, 0) + 1
        for key, count in sorted(by_key.items()):
            tasks.add_metric(list(key), count)
        yield tasks
        desired = GaugeMetricFamily("swarmlet_service_replicas_desired", "Replicas a service asks for (service ls).",
                                    labels=["service"])
        running = GaugeMetricFamily("swarmlet_service_replicas_running", "Replicas running (service ls).",
                                    labels=["service"])
        for service in services:
            desired.add_metric([service["name"]], service["replicas"] or 0)
            running.add_metric([service["name"]], service["running"])
        yield desired
        yield running

        yield _gauge("swarmlet_dispatcher_sessions", "Node sessions open on this manager (the leader's).",
                     manager.dispatcher.session_count)
        yield _gauge("swarmlet_events_held_changes", "Store changes this manager holds for GET /v1/events.",
                     manager.events.ring.held_changes)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
