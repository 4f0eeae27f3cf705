"""Limits on a real cluster (issue 8): requests past a limit are refused naming it and
change nothing, and `node ls` (GET /v1/nodes) answers within a second throughout, while
the refused requests are made and while a large scale within the limits (5,000
replicas that stay pending) is reconciled.

The latency is measured call by call from a thread that asks GET /v1/nodes over and
over; every wait polls a condition with a deadline."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from swarmlet.cli.client import ApiError
from swarmlet.api.limits import DEFAULT_REQUEST_BODY_BYTES
from swarmlet.api.paging import MAX_PAGE_ITEMS

from .conftest import wait_until
from .test_services import SLEEPER, Stacks

pytestmark = pytest.mark.cluster

RESPONSIVE = 1.0  # seconds within which `node ls` must answer
LARGE_SCALE = 5000


class LatencyProbe:
    """GET /v1/nodes in a loop on its own client, each call timed."""

    def __init__(self, cluster):
        self.api = cluster.client(timeout=10)
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.api.call("GET", "/v1/nodes")
            except Exception as err:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(err))
            self.latencies.append(time.monotonic() - started)

    def __enter__(self) -> "LatencyProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def check(self, what: str) -> None:
        slowest = max(self.latencies, default=None)
        assert not self.errors, f"node ls failed while {what}: {self.errors[:3]}"
        assert self.latencies, f"node ls was never answered while {what}"
        assert slowest < RESPONSIVE, (f"node ls took {slowest:.2f}s while {what} "
                                      f"({len(self.latencies)} calls, {sum(l >= RESPONSIVE for l in self.latencies)} slow)")


def state(s: Stacks) -> dict:
    """What the cluster's store holds, through the API: stacks, services with their
    versions and specs, tasks, the cluster settings, and the Raft commit index."""
    return {"nodes": [(n["id"], n["version"], n["status"]["state"]) for n in s.api.call("GET", "/v1/nodes")],
            "stacks": s.api.call("GET", "/v1/stacks"),
            "services": [(v["id"], v["version"], v["spec"]) for v in s.api.call("GET", "/v1/services")],
            "tasks": [(t["id"], t["desired_state"], t["state"], t["timestamp"]) for t in s.tasks()],
            "settings": s.api.call("GET", "/v1/cluster/settings"),
            "index": s.api.call("GET", "/v1/cluster/status")["commit_index"]}


def settled(s: Stacks) -> dict:
    """The state once nothing writes any more (a task status batch may still be in flight
    when the tasks are seen running): two reads in a row, 0.5 s apart, agree."""
    seen = [None]

    def same_as_last_time():
        current = state(s)
        previous, seen[0] = seen[0], current
        return current if current == previous else None
    return wait_until(same_as_last_time, 30, "the cluster to settle", interval=0.5)


def refused(call, status: int, limit: str) -> str:
    with pytest.raises(ApiError) as error:
        call()
    assert error.value.status == status and f"(cluster setting {limit})" in str(error.value), str(error.value)
    return str(error.value)


def services_yaml(count: int, replicas: int = 1) -> str:
    lines = ["services:"]
    lines += [f"  s{i}: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: {replicas}}}}}" for i in range(count)]
    return "\n".join(lines) + "\n"


def test_requests_past_the_limits_are_refused_and_the_api_stays_responsive(make_cluster, tmp_path):
    cluster = make_cluster(managers=3, workers=1, extra=["--limit", "services_per_stack=20"])
    s = Stacks(cluster, tmp_path)
    settings = json.loads(cluster.cli("cluster", "settings", "--format", "json").stdout)
    assert settings["limits"]["services_per_stack"] == 20  # set at init
    assert settings["limits"]["replicas_per_service"] == 10000 and "ca_key" not in settings

    s.deploy("hello", f"""
        services:
          web: {{image: busybox, command: {SLEEPER}, deploy: {{replicas: 2}}}}
    """)
    s.running("hello_web", 2)
    before = settled(s)

    with LatencyProbe(cluster) as probe:
        # The new user's request, through the CLI: refused at once, naming the limit.
        scale = cluster.cli("service", "scale", "hello_web=100000000", "--detach", check=False)
        assert scale.returncode != 0
        assert ("service hello_web: replicas 100000000 is over the limit of 10000 per service "
                "(cluster setting limits.replicas_per_service); nothing was changed") in scale.stderr, scale.stderr
        refused(lambda: s.api.call("POST", "/v1/services/hello_web/scale", {"replicas": 100_000_000}),
                400, "limits.replicas_per_service")
        message = refused(lambda: s.deploy("wide", services_yaml(21)), 400, "limits.services_per_stack")
        assert "stack wide: services 21 is over the limit of 20 per stack" in message
        refused(lambda: s.deploy("tall", services_yaml(1, replicas=50_000)), 400, "limits.replicas_per_service")
        # Many services each within the limit, together past the cluster's desired tasks.
        refused(lambda: s.deploy("many", services_yaml(3, replicas=9000)), 400, "limits.tasks_per_cluster")
        body = {"stack": {"services": {}}, "padding": "x" * DEFAULT_REQUEST_BODY_BYTES}
        refused(lambda: s.api.call("POST", "/v1/stacks/fat", body), 413, "limits.request_body_bytes")
        after = state(s)
    probe.check("refused requests were made")
    assert {k: v for k, v in after.items() if v != before[k]} == {}, {k: v for k, v in before.items() if v != after[k]}

    # A limit changed through the CLI is in force at once.
    updated = json.loads(cluster.cli("cluster", "update", "--limit", "services_per_stack=25", "--format", "json").stdout)
    assert updated["limits"]["services_per_stack"] == 25

    # Within the limits but large: 5,000 replicas no node can take, reconciled while node ls answers.
    with LatencyProbe(cluster) as probe:
        s.deploy("big", f"""
            services:
              idle:
                image: busybox
                command: {SLEEPER}
                deploy: {{replicas: {LARGE_SCALE}, placement: {{constraints: ["node.labels.zone==nowhere"]}}}}
        """)

        seen: Counter = Counter()

        def all_pending_and_explained():
            tasks = s.tasks("big_idle")
            seen.clear()
            seen.update((t["state"], t["message"].split(":")[0]) for t in tasks)
            return seen == Counter({("pending", "no suitable node"): LARGE_SCALE})
        try:
            wait_until(all_pending_and_explained, 120, f"{LARGE_SCALE} pending tasks, each explained", interval=0.5)
        except AssertionError as err:
            raise AssertionError(f"{err}; tasks by (state, message): {dict(seen)}") from None
    probe.check(f"{LARGE_SCALE} replicas were reconciled")
    assert len(s.running("hello_web", 2)) == 2  # the rest of the cluster is untouched

    # Listings page (api/paging.py): every task once, no page over the limit; a bigger page is refused.
    whole = {t["id"] for t in s.api.call("GET", "/v1/tasks")}
    first = s.api.call("GET", f"/v1/tasks?limit={MAX_PAGE_ITEMS}")
    assert len(first["items"]) == MAX_PAGE_ITEMS and first["next"] == first["items"][-1]["id"]
    paged = [t["id"] for t in s.api.list_all("/v1/tasks")]
    assert len(paged) == len(whole) == LARGE_SCALE + 2 and set(paged) == whole and paged == sorted(paged)
    assert [n["id"] for n in s.api.list_all("/v1/nodes")] == sorted(n["id"] for n in s.api.call("GET", "/v1/nodes"))
    with pytest.raises(ApiError, match=f"limit must be a whole number from 1 to {MAX_PAGE_ITEMS}") as error:
        s.api.call("GET", f"/v1/tasks?limit={MAX_PAGE_ITEMS + 1}")
    assert error.value.status == 400
