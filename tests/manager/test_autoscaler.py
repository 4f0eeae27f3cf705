"""The autoscaler's loop over a store (manager/autoscaler.py): usage believed only from
the node a task is on, a decision written as a replicas change with its reason in
``status.autoscale``, no write when nothing changes, stale samples dropped; and the
Docker runtime's translation of the engine's stats."""
from __future__ import annotations

from swarmlet.api import specs
from swarmlet.api.views import Service, Task
from swarmlet.manager.autoscaler import Autoscaler
from swarmlet.manager.autoscale import SAMPLE_WINDOW
from swarmlet.manager.stacks import StackApi
from swarmlet.runtime.base import TaskUsage
from swarmlet.runtime.docker.runtime import usage_from_stats

from .test_netalloc import add_node, converge


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def stack(replicas: int = 2) -> dict:
    web = specs.ServiceSpec(
        name="web", container=specs.ContainerSpec(image="busybox"), replicas=replicas,
        resources=specs.ResourceRequirements(reservations=specs.Resources(cpus=0.5)),
        autoscale=specs.Autoscale(min_replicas=1, max_replicas=4, target_cpu_percent=50, scale_down_window=0.0))
    return specs.StackSpec(services={"web": web}).to_dict()


async def running_web(store) -> list[Task]:
    await converge(store)
    for task in store.list(Task):
        current = store.get(Task, task.id)
        await store.commit([{"op": "update", "kind": "task", "id": task.id, "version": current.version,
                             "status": current.status.replace(state="running")}])
    return store.list(Task)


def web(store) -> Service:
    return next(s for s in store.list(Service) if s.name == "app_web")


async def test_usage_scales_up_and_down_with_the_reason_and_only_a_tasks_own_node_is_believed(store):
    await add_node(store, "node-1")
    await StackApi(store).deploy("app", stack(), {}, prune=False)
    tasks = await running_web(store)
    clock = Clock()
    autoscaler = Autoscaler(store, clock=clock)
    busy = [{"task_id": t.id, "at": 0.0, "cpus": 0.5, "memory": 1 << 20} for t in tasks]  # 200% of target
    autoscaler.record("node-2", busy)  # not where they run: ignored
    before = len(store.commits)
    await autoscaler.pass_once()
    assert len(store.commits) == before and web(store).raw_spec["replicas"] == 2  # no usage: no change

    autoscaler.record("node-1", busy)
    await autoscaler.pass_once()
    service = web(store)
    assert service.raw_spec["replicas"] == 4 and len(store.commits) == before + 1  # ceil(2 × 2)
    scaled = service.status["autoscale"]
    assert (scaled["replicas"], scaled["previous"], scaled["at"]) == (4, 2, clock.now)
    assert scaled["reason"].startswith("cpu at 100% of the reservation (target 50%)")

    await autoscaler.pass_once()  # the same samples: at max already, nothing written
    assert len(store.commits) == before + 1

    clock.now += 5
    autoscaler.record("node-1", [dict(b, cpus=0.0) for b in busy])
    await autoscaler.pass_once()
    assert web(store).raw_spec["replicas"] == 1  # idle: down to min (no scale-down window here)

    clock.now += SAMPLE_WINDOW + 1
    await autoscaler.pass_once()  # every sample is stale: forgotten, the count stays
    assert web(store).raw_spec["replicas"] == 1 and not autoscaler._samples


def test_docker_stats_give_cpu_time_and_memory_without_the_page_cache():
    v2 = {"cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
          "memory_stats": {"usage": 10 << 20, "stats": {"inactive_file": 4 << 20}}}
    assert usage_from_stats(v2) == TaskUsage(cpu_seconds=2.5, memory=6 << 20)
    v1 = {"cpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}},
          "memory_stats": {"usage": 10 << 20, "stats": {"total_inactive_file": 1 << 20, "cache": 3 << 20}}}
    assert usage_from_stats(v1) == TaskUsage(cpu_seconds=1.0, memory=9 << 20)
    assert usage_from_stats({"cpu_stats": {}, "memory_stats": {}}) is None  # not running: the engine answers zeros
