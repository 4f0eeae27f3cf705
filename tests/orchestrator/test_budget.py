"""A decision touches at most ``budget`` tasks; reconciling again goes on from there, and
the parts add up to what one unbounded decision would have done."""
from __future__ import annotations

import time

from swarmlet.api.views import Service
from swarmlet.manager.orchestrator.reconcile import reconcile_service
from swarmlet.store.state import freeze

from .conftest import World, make_node, make_service, task_views


def step(world: World, budget: int):
    decision = reconcile_service(world.service_view(), task_views(world.tasks.values()),
                                 {n.id: n for n in world.node_views()}, world.now, budget=budget)
    world.apply(decision)
    return decision


def test_a_large_scale_up_is_made_in_parts_of_the_budget():
    world = World(make_service(replicas=1200), [make_node("n1")])
    sizes = []
    while True:
        decision = step(world, budget=500)
        if decision.empty:
            break
        sizes.append((len(decision.creates), decision.truncated))
    assert sizes == [(500, True), (500, True), (200, False)]
    assert sorted(t["spec"]["slot"] for t in world.tasks.values()) == list(range(1, 1201))


def test_scale_down_and_removal_are_bounded_too():
    world = World(make_service(replicas=30), [make_node("n1")])
    world.step()
    world.service = make_service(replicas=0)
    first = step(world, budget=10)
    assert len(first.updates) == 10 and first.truncated
    while not step(world, budget=10).empty:
        pass
    assert all(t["spec"]["desired_state"] == "remove" for t in world.tasks.values())
    world.service = None
    while not step(world, budget=10).empty:
        pass
    assert world.tasks == {}  # never placed: deleted, ten at a time


def test_an_absurd_service_costs_one_budget_per_pass():
    """A service stored before limits existed (or past them) cannot make one pass build
    100,000,000 tasks: the leader grew by 40 MB/s doing that and answered nothing."""
    service = Service(freeze(make_service(replicas=100_000_000)))
    started = time.monotonic()
    decision = reconcile_service(service, [], {"n1": World(None, [make_node("n1")]).node_views()[0]}, 1000.0,
                                 budget=500)
    assert len(decision.creates) == 500 and decision.truncated
    assert time.monotonic() - started < 1.0


def test_without_a_budget_nothing_is_truncated():
    world = World(make_service(replicas=700), [make_node("n1")])
    decision = world.step()
    assert len(decision.creates) == 700 and not decision.truncated
