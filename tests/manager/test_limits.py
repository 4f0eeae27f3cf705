"""The cluster's limits: named once (swarmlet.api.limits), kept in the cluster object,
checked by the stack API before anything is committed; a refusal names the limit and
leaves the store as it was. And the orchestrator, given a large scale within the
limits, reconciles it in parts while the event loop keeps running."""
from __future__ import annotations

import asyncio
import time

import pytest

from swarmlet.api import errors, specs
from swarmlet.api.limits import DEFAULT_REPLICAS_PER_SERVICE, Limits, limits_from, parse_limit
from swarmlet.api.objects import CLUSTER_ID, cluster_object_spec
from swarmlet.api.views import Cluster, Task
from swarmlet.manager.orchestrator.loop import ALL, Orchestrator
from swarmlet.manager.retry import WRITE_BATCH, WRITE_WINDOW
from swarmlet.manager.settings import ClusterSettings
from swarmlet.manager.stacks import StackApi

from .conftest import MemoryStore


def stack(replicas: int = 1, services: int = 1, mode: str = "replicated") -> dict:
    return specs.StackSpec(services={
        f"s{i}": specs.ServiceSpec(name=f"s{i}", mode=mode, replicas=None if mode == "global" else replicas,
                                   container=specs.ContainerSpec(image="busybox"),
                                   placement=specs.Placement(constraints=["node.labels.zone==nowhere"]))
        for i in range(services)}).to_dict()


def snapshot(store: MemoryStore) -> tuple:
    """Everything the store holds, and its index: what a refusal must leave alone."""
    return store.index, {kind: store.raw_list(kind) for kind in ("cluster", "node", "service", "task")}


@pytest.fixture
async def cluster(store):
    """A store with limits in its cluster object, the settings and the stack API over it."""
    settings = ClusterSettings(store)
    await settings.update_limits({"replicas_per_service": 100, "services_per_stack": 3, "objects_per_request": 5,
                                  "tasks_per_cluster": 150})
    await store.add_node("n1", state="ready")
    api = StackApi(store, settings.limits)
    await api.deploy("app", stack(replicas=2), {}, prune=False)
    return store, settings, api


# -- the limits themselves ---------------------------------------------------------------------

def test_defaults_fill_what_the_cluster_object_does_not_say():
    assert Limits.from_spec(None) == Limits()
    assert Limits.from_spec({"replicas_per_service": 5, "from_a_newer_version": 1}).replicas_per_service == 5
    spec = cluster_object_spec(name="c", ca_cert=b"", ca_key=b"", worker_secret="w", manager_secret="m",
                               limits=limits_from({"services_per_stack": 7}).to_dict())
    assert Cluster({"spec": spec}).limits == Limits(services_per_stack=7)


@pytest.mark.parametrize("changes, complaint", [
    ({"replica_per_service": 5}, "no limit named 'replica_per_service'"),
    ({"replicas_per_service": 0}, "must be an integer of at least 1"),
    ({"replicas_per_service": "10"}, "must be an integer"),
    ({"replicas_per_service": True}, "must be an integer"),
    ({"request_body_bytes": 1000}, "at least 65536"),  # lower would lock the operator out
])
def test_a_bad_limit_is_refused_naming_it(changes, complaint):
    with pytest.raises(errors.Invalid, match=complaint):
        Limits().changed(changes)


def test_the_cli_spelling_of_a_limit():
    assert parse_limit("replicas_per_service=20000") == ("replicas_per_service", 20000)
    assert parse_limit("limits.tasks_per_cluster=5") == ("tasks_per_cluster", 5)
    for bad in ("replicas_per_service", "nothing=1", "replicas_per_service=many"):
        with pytest.raises(ValueError):
            parse_limit(bad)


def test_a_refusal_names_the_limit_and_shrinking_is_always_allowed():
    limits = Limits()
    with pytest.raises(errors.OverLimit) as refused:
        limits.check("replicas_per_service", "service app_web: replicas", 100_000_000)
    assert str(refused.value) == (f"service app_web: replicas 100000000 is over the limit of "
                                  f"{DEFAULT_REPLICAS_PER_SERVICE} per service (cluster setting "
                                  f"limits.replicas_per_service); nothing was changed")
    assert refused.value.limit == "limits.replicas_per_service"
    limits.check("replicas_per_service", "r", 20_000, current=30_000)  # a lowered limit: scaling down is fine
    limits.check("replicas_per_service", "r", DEFAULT_REPLICAS_PER_SERVICE)


# -- settings -------------------------------------------------------------------------------------

async def test_settings_show_the_limits_but_never_the_ca_key(store):
    await store.commit([{"op": "update", "kind": "cluster", "id": CLUSTER_ID, "version": store.index,
                         "spec": {"name": "c", "ca_key": b"secret", "heartbeat_period": 0.2}}])
    settings = ClusterSettings(store)
    shown = await settings.update_limits({"tasks_per_cluster": 7})
    assert shown["limits"] == Limits(tasks_per_cluster=7).to_dict() and shown["heartbeat_period"] == 0.2
    assert "ca_key" not in shown and b"secret" not in repr(shown).encode()
    assert store.get(Cluster, CLUSTER_ID).spec["ca_key"] == b"secret"  # the rest of the spec kept
    with pytest.raises(errors.Invalid, match="no limit named"):
        await settings.update_limits({"bogus": 1})


# -- the stack API refuses and changes nothing ----------------------------------------------------------

async def test_scaling_past_the_limit_is_refused_and_changes_nothing(cluster):
    store, _, api = cluster
    before = snapshot(store)
    with pytest.raises(errors.OverLimit, match=r"service app_s0: replicas 100000000 is over the limit of 100 per "
                                               r"service \(cluster setting limits.replicas_per_service\)"):
        await api.scale("app_s0", 100_000_000)
    assert snapshot(store) == before
    assert (await api.scale("app_s0", 100))["replicas"] == 100  # at the limit is fine


@pytest.mark.parametrize("spec, limit", [
    (stack(services=4), "limits.services_per_stack"),
    (stack(replicas=101), "limits.replicas_per_service"),
    (stack(replicas=60, services=3), "limits.tasks_per_cluster"),  # 180 desired tasks, limit 150
])
async def test_a_stack_past_a_limit_is_refused_whole(cluster, spec, limit):
    store, _, api = cluster
    before = snapshot(store)
    with pytest.raises(errors.OverLimit, match=f"is over the limit of .*cluster setting {limit}") as refused:
        await api.deploy("big", spec, {}, prune=False)
    assert refused.value.limit == limit
    assert snapshot(store) == before


async def test_objects_in_one_deploy_are_bounded(cluster):
    store, settings, api = cluster
    await settings.update_limits({"services_per_stack": 10})
    before = snapshot(store)
    with pytest.raises(errors.OverLimit, match="stack big: objects in one transaction 6 is over the limit of 5 "
                                               "per request"):
        await api.deploy("big", stack(services=6), {}, prune=False)
    assert snapshot(store) == before


async def test_a_stack_grows_past_the_limit_across_deploys_only_if_pruned_away(cluster):
    """Without --prune a deploy keeps the stack's other services: they count."""
    store, _, api = cluster
    two = stack(services=2)
    await api.deploy("web", two, {}, prune=False)
    renamed = {"services": {f"t{i}": dict(s, name=f"t{i}") for i, s in enumerate(two["services"].values())}}
    with pytest.raises(errors.OverLimit, match="stack web: services 4 is over the limit of 3"):
        await api.deploy("web", dict(two, **renamed), {}, prune=False)
    await api.deploy("web", dict(two, **renamed), {}, prune=True)  # replaces them: 2 services


async def test_global_services_count_one_task_per_node(cluster):
    store, settings, api = cluster
    await settings.update_limits({"tasks_per_cluster": 3})  # app_s0 wants 2; one node
    await api.deploy("g", stack(mode="global"), {}, prune=False)
    with pytest.raises(errors.OverLimit, match="desired tasks 4 is over the limit of 3 in the cluster"):
        await api.deploy("g2", stack(mode="global"), {}, prune=False)


async def test_what_is_over_a_lowered_limit_may_shrink_but_not_grow(cluster):
    store, settings, api = cluster
    await api.scale("app_s0", 80)
    await settings.update_limits({"replicas_per_service": 10})
    await api.scale("app_s0", 50)
    with pytest.raises(errors.OverLimit, match="limits.replicas_per_service"):
        await api.scale("app_s0", 51)
    await api.deploy("app", stack(replicas=50), {}, prune=False)  # a redeploy that keeps it as it is


# -- a large scale within the limits: the event loop keeps running ----------------------------------------

async def test_a_large_scale_is_reconciled_in_parts_while_the_loop_keeps_running(store):
    await store.add_node("n1", state="ready")
    api = StackApi(store)
    await api.deploy("big", stack(replicas=5000), {}, prune=False)
    orchestrator = Orchestrator(store)
    gaps, done = [], asyncio.Event()

    async def ticker():  # what an API request waits for: its turn on the loop
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    watcher = asyncio.ensure_future(ticker())
    commits_before = len(store.commits)
    dirty = {ALL}
    while dirty:
        _, dirty = await orchestrator.reconcile(dirty)
    done.set()
    await watcher
    transactions = store.commits[commits_before:]
    assert len(store.list(Task)) == 5000
    assert len(transactions) == 5000 // WRITE_BATCH and all(len(t) <= WRITE_BATCH + 1 for t in transactions)
    # Each part is one pure decision plus its commits, WRITE_WINDOW transactions in flight at once
    # (~0.1 s on 2 busy cores): the loop runs between, within the API's 1 s.
    assert len(gaps) >= len(transactions) // WRITE_WINDOW and max(gaps) < 1.0, max(gaps)


def test_a_big_service_gets_a_budget_that_bounds_its_passes():
    from swarmlet.api.views import Service
    from swarmlet.manager.orchestrator.loop import DECISION_BUDGET, SERVICE_PASSES, decision_budget
    from swarmlet.store.state import freeze

    def service(replicas):
        return Service(freeze({"id": "s", "spec": {"name": "s", "mode": "replicated", "replicas": replicas}}))

    assert decision_budget(service(10), 0) == decision_budget(None, 10) == DECISION_BUDGET
    assert decision_budget(service(100_000), 0) == 100_000 // SERVICE_PASSES  # sized by what it is to have
    assert decision_budget(service(10), 100_000) == 100_000 // SERVICE_PASSES  # or by what it has (scaling down)
    global_service = Service(freeze({"id": "g", "spec": {"name": "g", "mode": "global"}}))
    assert decision_budget(global_service, 30_001) == 7_501


async def test_a_service_of_30000_replicas_is_created_in_about_service_passes(store):
    """With a fixed 5,000 a pass, six passes, each reading every task made so far (a
    100,000-replica deploy: twenty, 73 s until the last task existed)."""
    from swarmlet.manager.orchestrator.loop import SERVICE_PASSES
    await store.add_node("n1", state="ready")
    api = StackApi(store, limits=lambda: Limits(replicas_per_service=30_000, tasks_per_cluster=40_000))
    await api.deploy("big", stack(replicas=30_000), {}, prune=False)
    orchestrator = Orchestrator(store)
    passes, dirty = 0, {ALL}
    while dirty:
        _, dirty = await orchestrator.reconcile(dirty)
        passes += 1
    # SERVICE_PASSES that create, and one that finds the service whole (the last used up its budget)
    assert len(store.list(Task)) == 30_000 and passes == SERVICE_PASSES + 1
