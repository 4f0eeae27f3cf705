"""The hollow runtime: tasks that only pretend to run, behind the same interface, and
the real executor driving it (nothing is executed; no Docker, no processes)."""
import asyncio
import uuid

import pytest

from swarmlet.agent.executor import Executor
from swarmlet.api.netplane import NetworkPlane
from swarmlet.api.session import Assignments
from swarmlet.runtime.base import (ContainerConfig, ContainerState, EventKind, HealthCheck, HealthStatus,
                                   TaskNotFoundError)
from swarmlet.runtime.hollow import HOLLOW_ENGINE_LABEL, STOPPED_EXIT_CODE, HollowRuntime, hollow_description


def config(task_id: str, **extra) -> ContainerConfig:
    return ContainerConfig(task_id=task_id, service_id="svc", service_name="app_web", node_id="node-1",
                           image="busybox", stack_namespace="app", command=["sleep", "600"], **extra)


async def next_event(subscription, timeout: float = 5.0):
    async with asyncio.timeout(timeout):
        return await anext(subscription)


async def test_a_task_runs_after_the_start_delay_and_exits_only_when_stopped():
    runtime = HollowRuntime("node-1", start_delay=0.05)
    events = runtime.events()
    await runtime.prepare(config("t1"))
    await runtime.prepare(config("t1"))  # idempotent
    assert (await runtime.inspect("t1")).state is ContainerState.CREATED
    loop = asyncio.get_running_loop()
    began = loop.time()
    await runtime.start("t1")
    assert loop.time() - began >= 0.05
    state = await runtime.inspect("t1")
    assert state.state is ContainerState.RUNNING and state.started_at is not None and state.exit_code is None
    waiter = asyncio.ensure_future(runtime.wait("t1"))
    await asyncio.sleep(0)
    assert not waiter.done()  # it runs until asked to stop
    await runtime.shutdown("t1")
    exit_status = await asyncio.wait_for(waiter, 5)
    assert exit_status.exit_code == STOPPED_EXIT_CODE and exit_status.error == f"exit code {STOPPED_EXIT_CODE}"
    event = await next_event(events)
    assert (event.task_id, event.kind, event.exit_code) == ("t1", EventKind.EXITED, STOPPED_EXIT_CODE)
    assert (await runtime.inspect("t1")).state is ContainerState.EXITED
    await runtime.shutdown("t1")  # no-op once exited
    await runtime.remove("t1")
    assert await runtime.inspect("t1") is None and await runtime.list_owned() == []
    await runtime.remove("t1")  # no-op once gone
    await runtime.close()


async def test_unknown_tasks_are_refused_and_a_healthcheck_passes_at_start():
    runtime = HollowRuntime("node-1", start_delay=0)
    with pytest.raises(TaskNotFoundError):
        await runtime.start("nope")
    with pytest.raises(TaskNotFoundError):
        await runtime.shutdown("nope")
    events = runtime.events()
    await runtime.prepare(config("t2", healthcheck=HealthCheck(test=["CMD", "true"])))
    await runtime.prepare(config("t3", healthcheck=HealthCheck(test=["NONE"])))
    await runtime.start("t2")
    await runtime.start("t3")
    event = await next_event(events)
    assert (event.task_id, event.kind, event.detail) == ("t2", EventKind.HEALTH, HealthStatus.HEALTHY.value)
    assert (await runtime.inspect("t2")).health is HealthStatus.HEALTHY
    assert (await runtime.inspect("t3")).health is HealthStatus.NONE
    owned = {o.task_id: o for o in await runtime.list_owned()}
    assert owned["t2"].stack_namespace == "app" and owned["t2"].state is ContainerState.RUNNING
    await runtime.close()


async def test_logs_are_empty_and_a_follow_ends_with_the_task():
    runtime = HollowRuntime("node-1", start_delay=0)
    await runtime.prepare(config("t4"))
    await runtime.start("t4")
    assert [line async for line in runtime.logs("t4")] == []

    async def follow():
        return [line async for line in runtime.logs("t4", follow=True)]
    following = asyncio.ensure_future(follow())
    await asyncio.sleep(0)
    assert not following.done()
    await runtime.remove("t4")
    assert await asyncio.wait_for(following, 5) == []
    with pytest.raises(TaskNotFoundError):
        [line async for line in runtime.logs("t4")]


async def test_a_remove_during_the_start_delay_leaves_nothing_running():
    runtime = HollowRuntime("node-1", start_delay=0.2)
    await runtime.prepare(config("t5"))
    starting = asyncio.ensure_future(runtime.start("t5"))
    await asyncio.sleep(0)
    await runtime.remove("t5")
    await asyncio.wait_for(starting, 5)
    assert await runtime.inspect("t5") is None


async def test_the_node_describes_itself_as_hollow_with_the_capacity_asked_for():
    runtime = HollowRuntime("node-1", description=hollow_description(cpus=4, memory_bytes=8 << 30))
    described = await runtime.describe()
    assert (described.cpus, described.memory_bytes) == (4, 8 << 30)
    assert described.engine_labels == {HOLLOW_ENGINE_LABEL: "true"}
    assert (await HollowRuntime("node-2").describe()).cpus >= 1  # the host's, by default


def entry(task_id: str, desired: str = "running") -> dict:
    return {"id": task_id, "phase": "new", "spec": {
        "service_id": "svc-web", "service_name": "app_web", "stack": "app", "desired_state": desired,
        "container": {"image": "busybox", "command": ["sleep", "600"]}, "networks": []}}


async def until(condition, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_the_real_executor_runs_stops_and_removes_hollow_tasks():
    runtime = HollowRuntime("node-1", start_delay=0.01)
    reported: list[tuple[str, str]] = []
    executor = Executor(runtime, sink=lambda task_id, status: reported.append((task_id, status["state"])))
    await executor.start()
    ids = [uuid.uuid4().hex[:12] for _ in range(50)]
    executor.assign(Assignments(tasks=[entry(t) for t in ids]))
    await until(lambda: all(executor.statuses.get(t, {}).get("state") == "running" for t in ids))
    assert [s for t, s in reported if t == ids[0]] == ["accepted", "preparing", "ready", "starting", "running"]
    assert len(await runtime.list_owned()) == 50

    executor.assign(Assignments(tasks=[entry(t, "shutdown") for t in ids[:10]] + [entry(t) for t in ids[10:]]))
    await until(lambda: all(executor.statuses[t]["state"] == "shutdown" for t in ids[:10]))
    assert executor.statuses[ids[0]]["exit_code"] == STOPPED_EXIT_CODE
    assert all(executor.statuses[t]["state"] == "running" for t in ids[10:])

    executor.assign(Assignments(tasks=[entry(t) for t in ids[10:]]))  # the stopped ones are forgotten
    await until(lambda: len(executor.runners) == 40)
    assert {o.task_id for o in await runtime.list_owned()} == set(ids[10:])
    await executor.close()


async def test_a_running_overlay_task_leaves_the_backends_before_it_is_stopped():
    """Its desired state says shutdown: the manager has already taken it out of every
    node's VIP and mesh backends (and answers), but those planes reach the other nodes
    some tens of milliseconds later. Stopped at once, a task that exits on SIGTERM
    refuses the connections still sent to it (moby#26672, found end to end); so the
    executor waits ``backend_drain`` first. A task with no overlay address stops at once."""
    runtime = HollowRuntime("node-1", start_delay=0)
    stopped: dict[str, float] = {}
    shutdown = runtime.shutdown

    async def timed_shutdown(task_id):
        stopped.setdefault(task_id, asyncio.get_running_loop().time())
        await shutdown(task_id)

    runtime.shutdown = timed_shutdown
    executor = Executor(runtime, backend_drain=1.0)
    executor.network_plane = NetworkPlane(node_address="10.9.0.1", version=1)
    await executor.start()
    overlay, plain = entry("overlay"), entry("plain")
    overlay["spec"]["network_addresses"] = {"app_front": "10.0.0.3"}
    executor.assign(Assignments(tasks=[overlay, plain]))
    await until(lambda: all(executor.statuses.get(t, {}).get("state") == "running" for t in ("overlay", "plain")))
    asked = asyncio.get_running_loop().time()
    executor.assign(Assignments(tasks=[entry("overlay", "shutdown") | {"spec": dict(
        entry("overlay", "shutdown")["spec"], network_addresses={"app_front": "10.0.0.3"})}, entry("plain", "shutdown")]))
    await until(lambda: all(executor.statuses[t]["state"] == "shutdown" for t in ("overlay", "plain")))
    assert stopped["overlay"] - asked >= 1.0
    assert stopped["plain"] - asked < 1.0
    await executor.close()
