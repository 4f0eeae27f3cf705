"""What the executor removes, and when (a process runtime that records the calls; no
Docker needed): a task to be removed goes as soon as it has stopped; a stack's networks
go once the node's last task of that stack is removed."""
import asyncio
import uuid

import pytest

from swarmlet.agent.executor import Executor
from swarmlet.api.session import Assignments
from swarmlet.runtime.process import ProcessRuntime


class RecordingRuntime(ProcessRuntime):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.network_removals: list[str] = []
        self.removed_tasks: list[str] = []

    async def remove(self, task_id: str) -> None:
        await super().remove(task_id)
        self.removed_tasks.append(task_id)

    async def remove_unused_networks(self, stack_namespace: str) -> list[str]:
        # Which tasks were already removed when the networks were asked to go.
        self.network_removals.append((stack_namespace, tuple(sorted(self.removed_tasks))))
        return []


def entry(task_id: str, stack: str, desired: str = "running") -> dict:
    service = f"{stack}_web" if stack else "web"
    return {"id": task_id, "phase": "new", "spec": {
        "service_id": "svc-" + service, "service_name": service, "stack": stack, "desired_state": desired,
        "container": {"image": "busybox", "command": ["sleep", "60"], "init": True, "stop_grace_period": 1.0},
        "networks": [{"name": f"{stack}_default"}] if stack else []}}


async def until(condition, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def close_and_clean(executor: Executor) -> None:
    runtime = executor.runtime
    for task in await runtime.list_owned():
        await runtime.shutdown(task.task_id, grace=0)
        await runtime.remove(task.task_id)
    await executor.close()


@pytest.fixture
async def executor(tmp_path):
    runtime = RecordingRuntime(f"node-{uuid.uuid4().hex[:8]}", tmp_path / "data")
    statuses: dict[str, str] = {}
    executor = Executor(runtime, lambda task_id, status: statuses.__setitem__(task_id, status["state"]))
    executor.statuses_seen = statuses
    await executor.start()
    yield executor
    await close_and_clean(executor)


async def test_networks_go_with_the_last_task_of_the_stack_on_the_node(executor):
    runtime, seen = executor.runtime, executor.statuses_seen
    a1, a2, b1 = "a1" + uuid.uuid4().hex, "a2" + uuid.uuid4().hex, "b1" + uuid.uuid4().hex
    executor.assign(Assignments(tasks=[entry(a1, "alpha"), entry(a2, "alpha"), entry(b1, "beta")]))
    await until(lambda: all(seen.get(t) == "running" for t in (a1, a2, b1)))

    first_runner = executor.runners[a1]
    executor.assign(Assignments(tasks=[entry(a2, "alpha"), entry(b1, "beta")]))  # a1 gone: alpha still has a2
    await asyncio.wait_for(first_runner.task, 10)  # the runner's whole life, its tidying included
    assert a1 in runtime.removed_tasks
    assert runtime.network_removals == []

    executor.assign(Assignments(tasks=[entry(b1, "beta")]))  # alpha's last task gone
    await until(lambda: runtime.network_removals)
    assert runtime.network_removals == [("alpha", tuple(sorted((a1, a2))))]

    executor.assign(Assignments(tasks=[]))
    await until(lambda: len(runtime.network_removals) == 2)
    assert runtime.network_removals[1] == ("beta", tuple(sorted((a1, a2, b1))))
    assert executor.runners == {}


async def test_leftover_tasks_removed_at_start_tidy_their_stack(tmp_path):
    node = f"node-{uuid.uuid4().hex[:8]}"
    first = RecordingRuntime(node, tmp_path / "data")
    old = "old" + uuid.uuid4().hex
    seen: dict[str, str] = {}
    before = Executor(first, lambda task_id, status: seen.__setitem__(task_id, status["state"]))
    await before.start()
    before.assign(Assignments(tasks=[entry(old, "gone")]))
    await until(lambda: seen.get(old) == "running")
    await before.close()  # the task keeps running, as after an agent restart

    runtime = RecordingRuntime(node, tmp_path / "data")
    after = Executor(runtime)
    await after.start()
    try:
        after.assign(Assignments(tasks=[]))  # the cluster no longer knows the task: removed, stack tidied
        await until(lambda: runtime.network_removals)
        assert runtime.network_removals == [("gone", (old,))]
        assert await runtime.list_owned() == []
    finally:
        await close_and_clean(after)


async def test_a_task_to_remove_goes_once_stopped_without_waiting_to_be_unassigned(executor):
    runtime, seen = executor.runtime, executor.statuses_seen
    kept, gone = "kept" + uuid.uuid4().hex, "gone" + uuid.uuid4().hex
    executor.assign(Assignments(tasks=[entry(kept, "s"), entry(gone, "s")]))
    await until(lambda: seen.get(kept) == "running" and seen.get(gone) == "running")

    executor.assign(Assignments(tasks=[entry(kept, "s", desired="shutdown"), entry(gone, "s", desired="remove")]))
    await until(lambda: gone in runtime.removed_tasks)
    assert seen[gone] == "shutdown"
    await until(lambda: seen.get(kept) == "shutdown")
    assert kept not in runtime.removed_tasks  # a shut-down task stays, as history
    assert {t.task_id for t in await runtime.list_owned()} == {kept}
    assert set(executor.runners) == {kept, gone}  # both still assigned

    executor.assign(Assignments(tasks=[]))
    await until(lambda: executor.runners == {})
    assert sorted(runtime.removed_tasks) == sorted([kept, gone])  # each removed once
    assert runtime.network_removals == [("s", tuple(sorted(runtime.removed_tasks)))]
