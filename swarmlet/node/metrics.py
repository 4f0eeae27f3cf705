"""Prometheus metrics of a node (every node: workers too), and the plain-HTTP
``--metrics-addr`` endpoint (off by default, like dockerd's).

Each node process has its own ``CollectorRegistry`` (never prometheus_client's global
one): a manager adds its cluster figures (swarmlet/manager/metrics.py) to the same
registry, so one scrape of a manager gives both. Figures are read from the agent when
scraped; nothing is counted twice. The names are documented in docs/operations.md.
"""
from __future__ import annotations

import gc
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from swarmlet.node import gcwatch

log = logging.getLogger("swarmlet.metrics")

METRICS_PATH = "/metrics"
# Heartbeat round trips are ~1 ms on a LAN; the top buckets catch a stalled leader.
HEARTBEAT_RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class NodeMetrics:
    """The node's registry and its figures: tasks on the node by state, the dispatcher
    session, heartbeat round trips."""

    def __init__(self, node_id: str, role: str):
        self.registry = CollectorRegistry(auto_describe=True)
        self.node_id, self.role = node_id, role
        self.agent = None  # set once the agent exists (run.py)
        self.heartbeat_rtt = Histogram(
            "swarmlet_node_heartbeat_rtt_seconds", "Round trip of a heartbeat to the leader and its ack.",
            buckets=HEARTBEAT_RTT_BUCKETS, registry=self.registry)
        self.registry.register(_AgentCollector(self))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _AgentCollector:
    def __init__(self, metrics: NodeMetrics):
        self._metrics = metrics

    def describe(self):
        return []  # collected only when scraped (the agent may not exist yet)

    def collect(self):
        metrics, agent = self._metrics, self._metrics.agent
        info = GaugeMetricFamily("swarmlet_node_info", "This node (always 1).", labels=["node_id", "role"])
        info.add_metric([metrics.node_id, metrics.role], 1)
        yield info
        session = GaugeMetricFamily("swarmlet_node_session_connected",
                                    "1 while the node's dispatcher session with the leader is up.")
        session.add_metric([], 1 if agent is not None and agent.connected.is_set() else 0)
        yield session
        sessions = GaugeMetricFamily("swarmlet_node_sessions_established_total",
                                     "Dispatcher sessions this node has established since it started.")
        sessions.add_metric([], agent.sessions_established if agent is not None else 0)
        yield sessions
        tasks = GaugeMetricFamily("swarmlet_node_tasks", "Tasks the node's runtime holds, by state.",
                                  labels=["state"])
        counts: dict[str, int] = {}
        executor = agent.executor if agent is not None else None
        for status in (executor.statuses.values() if executor is not None else ()):
            state = str(status.get("state", "unknown"))
            counts[state] = counts.get(state, 0) + 1
        for state, count in sorted(counts.items()):
            tasks.add_metric([state], count)
        yield tasks
        yield from _gc_metrics()


def _gc_metrics():
    """The garbage collector of this process (swarmlet/node/gcwatch.py)."""
    watch = gcwatch.installed()
    if watch is not None:
        times = watch.times
        count = GaugeMetricFamily("swarmlet_gc_collections_total", "Collections by generation.",
                                  labels=["generation"])
        seconds = GaugeMetricFamily("swarmlet_gc_pause_seconds_total",
                                    "Time collections held the interpreter, by generation.", labels=["generation"])
        longest = GaugeMetricFamily("swarmlet_gc_longest_pause_seconds",
                                    "The longest collection, by generation.", labels=["generation"])
        for generation in range(3):
            count.add_metric([str(generation)], times.count[generation])
            seconds.add_metric([str(generation)], times.total[generation])
            longest.add_metric([str(generation)], times.longest[generation])
        yield count
        yield seconds
        yield longest
    frozen = GaugeMetricFamily("swarmlet_gc_frozen_objects",
                               "Objects in the permanent generation (survivors of full collections).")
    frozen.add_metric([], gc.get_freeze_count())
    yield frozen


async def serve_metrics(address: str, exposition) -> web.AppRunner:
    """Plain HTTP ``GET /metrics`` on ``address`` (HOST:PORT), answered by ``exposition()``."""
    host, _, port = address.rpartition(":")

    async def metrics(request):
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get(METRICS_PATH, metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True).start()
    log.info("metrics on http://%s%s", address, METRICS_PATH)
    return runner
