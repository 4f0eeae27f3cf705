"""ProcessRuntime: tasks as local process groups, no Docker."""

import asyncio
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from swarmlet.runtime.base import EventKind, FileReference, HealthCheck, HealthStatus, TaskRuntimeError, ContainerState
from swarmlet.runtime.process import ProcessRuntime
from swarmlet.runtime.taskfiles import DEFAULT_TASK_FILES_ROOT, filesystem_type


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def process_runtimes(data_dir):
    """Factory of ProcessRuntimes; at the end, every task of their nodes is removed."""
    created = []

    def make(node_id: str) -> ProcessRuntime:
        runtime = ProcessRuntime(node_id, data_dir)
        created.append(runtime)
        return runtime

    yield make
    for runtime in created:
        await runtime.close()
    for node_id in {runtime.node_id for runtime in created}:
        cleaner = ProcessRuntime(node_id, data_dir)
        for task in await cleaner.list_owned():
            await _kill_if_running(cleaner, task.task_id)
            await cleaner.remove(task.task_id)
        await cleaner.close()
        shutil.rmtree(DEFAULT_TASK_FILES_ROOT / node_id, ignore_errors=True)


async def _kill_if_running(runtime: ProcessRuntime, task_id: str) -> None:
    """Independent of shutdown(), so a broken shutdown still leaves no stray processes."""
    state = await runtime.inspect(task_id)
    if state is not None and state.state is ContainerState.RUNNING:
        pid = json.loads((runtime._task_dir(task_id) / "task.json").read_text())["pid"]
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def process_runtime(process_runtimes, node_id) -> ProcessRuntime:
    return process_runtimes(node_id)


def shell(script: str) -> dict:
    return {"entrypoint": ["/bin/sh", "-c"], "command": [script]}


def is_gone(pid: int) -> bool:
    """No such process, or only its zombie left for its new parent to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


async def test_runs_the_command_with_env_and_working_dir(process_runtime, node_id, make_config, tmp_path, next_event):
    config = make_config(node_id, **shell('echo "$GREETING from $(pwd)"; exit 4'), env={"GREETING": "hi"},
                         working_dir=str(tmp_path))
    events = process_runtime.events()
    await process_runtime.prepare(config)
    assert (await process_runtime.inspect(config.task_id)).state is ContainerState.CREATED

    await process_runtime.start(config.task_id)
    status = await asyncio.wait_for(process_runtime.wait(config.task_id), 10)

    assert (status.exit_code, status.error) == (4, "exit code 4")
    assert [line async for line in process_runtime.logs(config.task_id)] == [f"hi from {tmp_path}"]
    exited = await next_event(events, lambda e: e.task_id == config.task_id)  # a start is no event
    assert (exited.kind, exited.exit_code, exited.detail) == (EventKind.EXITED, 4, "exit code 4")
    state = await process_runtime.inspect(config.task_id)
    assert (state.state, state.exit_code) == (ContainerState.EXITED, 4)
    assert state.finished_at >= state.started_at


async def test_a_command_is_required_since_the_image_is_ignored(process_runtime, node_id, make_config):
    with pytest.raises(TaskRuntimeError, match="needs an entrypoint or a command"):
        await process_runtime.prepare(make_config(node_id))


async def test_shutdown_kills_the_whole_group_after_the_grace_period(process_runtime, node_id, make_config, tmp_path, eventually):
    # Shell and child both ignore SIGTERM: only the SIGKILL after the grace period ends them.
    config = make_config(node_id, **shell(f'trap "" TERM; sleep 60 & echo $! > {tmp_path}/child.pid; wait'))
    await process_runtime.prepare(config)
    await process_runtime.start(config.task_id)
    child_pid = int(await eventually(lambda: _read(tmp_path / "child.pid")))

    started = time.monotonic()
    await process_runtime.shutdown(config.task_id, grace=0.5)

    assert 0.5 <= time.monotonic() - started < 5
    assert (await process_runtime.wait(config.task_id)).exit_code == 137
    await eventually(lambda: is_gone(child_pid), message="(the task's child survived)")


async def test_shutdown_sends_the_stop_signal_to_the_group(process_runtime, node_id, make_config, tmp_path, eventually):
    script = f'trap "echo got USR1; exit 7" USR1; sleep 60 & echo $! > {tmp_path}/child.pid; wait'
    config = make_config(node_id, **shell(script), stop_signal="SIGUSR1")
    await process_runtime.prepare(config)
    await process_runtime.start(config.task_id)
    child_pid = int(await eventually(lambda: _read(tmp_path / "child.pid")))

    started = time.monotonic()
    await process_runtime.shutdown(config.task_id, grace=10)

    assert time.monotonic() - started < 3
    assert (await process_runtime.wait(config.task_id)).exit_code == 7
    assert [line async for line in process_runtime.logs(config.task_id)] == ["got USR1"]
    await eventually(lambda: is_gone(child_pid))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


async def test_a_new_runtime_adopts_running_processes(process_runtimes, node_id, make_config, next_event):
    first = process_runtimes(node_id)
    config = make_config(node_id, command=["sleep", "60"])
    await first.prepare(config)
    await first.start(config.task_id)
    await first.close()  # the agent goes away; its task keeps running

    second = process_runtimes(node_id)
    owned = await second.list_owned()

    assert [(t.task_id, t.service_id, t.state) for t in owned] == [(config.task_id, config.service_id, ContainerState.RUNNING)]
    events = second.events()
    await second.shutdown(config.task_id, grace=5)
    exited = await next_event(events, lambda e: e.task_id == config.task_id and e.kind is EventKind.EXITED)
    assert exited.exit_code == 143
    assert (await second.wait(config.task_id)).exit_code == 143


async def test_a_recorded_pid_now_used_by_another_process_is_not_adopted(process_runtime, node_id, make_config, data_dir):
    config = make_config(node_id, command=["sleep", "60"])
    await process_runtime.prepare(config)
    record_path = data_dir / node_id / "tasks" / config.task_id / "task.json"
    record = json.loads(record_path.read_text())
    # As if the task's PID had been reused by this very test process since.
    record.update(state="running", pid=os.getpid(), pid_start_time=1)
    record_path.write_text(json.dumps(record))

    owned = await process_runtime.list_owned()

    assert [t.state for t in owned] == [ContainerState.EXITED]
    status = await process_runtime.wait(config.task_id)
    assert status.exit_code == -1 and "exit code unknown" in status.error


async def test_each_runtime_sees_only_its_own_nodes_tasks(process_runtimes, node_id, make_config):
    mine, theirs = process_runtimes(node_id), process_runtimes(node_id + "-other")
    my_task = make_config(node_id, command=["true"])
    await mine.prepare(my_task)
    await theirs.prepare(make_config(node_id + "-other", command=["true"]))

    assert [t.task_id for t in await mine.list_owned()] == [my_task.task_id]
    assert await theirs.inspect(my_task.task_id) is None


async def test_logs_tail_and_follow(process_runtime, node_id, make_config, tmp_path, check_logs_tail_and_follow):
    config = make_config(node_id, **shell(f"seq 1 5; while [ ! -f {tmp_path}/go ]; do sleep 0.05; done; echo last"))
    await process_runtime.prepare(config)
    await process_runtime.start(config.task_id)

    async def release():
        (tmp_path / "go").touch()

    await check_logs_tail_and_follow(process_runtime, config.task_id, release)


async def test_health_check_turns_healthy_then_unhealthy(process_runtime, node_id, make_config, tmp_path, next_event):
    ready = tmp_path / "ready"
    config = make_config(
        node_id,
        **shell(f"touch {ready}; exec sleep 60"),
        healthcheck=HealthCheck(
            test=["CMD-SHELL", f"test -f {ready} || {{ echo ready file missing; exit 1; }}"],
            interval=0.1,
            timeout=2,
            retries=2,
        ),
    )
    events = process_runtime.events()
    await process_runtime.prepare(config)
    await process_runtime.start(config.task_id)

    healthy = await next_event(events, lambda e: e.kind is EventKind.HEALTH)
    assert healthy.detail == "healthy"
    assert (await process_runtime.inspect(config.task_id)).health is HealthStatus.HEALTHY

    ready.unlink()
    unhealthy = await next_event(events, lambda e: e.kind is EventKind.HEALTH)
    assert unhealthy.detail == "container unhealthy: ready file missing"
    assert (await process_runtime.inspect(config.task_id)).error == "container unhealthy: ready file missing"


async def test_secrets_are_on_tmpfs_and_removed_with_the_task(process_runtime, node_id, make_config):
    config = make_config(
        node_id,
        **shell('cat "$SWARMLET_TASK_FILES/run/secrets/token"'),
        secrets=[FileReference(name="token", data=b"t0ken", mode=0o400)],
    )

    await process_runtime.prepare(config)
    await process_runtime.start(config.task_id)
    assert (await asyncio.wait_for(process_runtime.wait(config.task_id), 10)).exit_code == 0

    assert [line async for line in process_runtime.logs(config.task_id)] == ["t0ken"]
    secret_file = DEFAULT_TASK_FILES_ROOT / node_id / config.task_id / "files/run/secrets/token"
    assert filesystem_type(secret_file) == "tmpfs"
    assert oct(secret_file.stat().st_mode & 0o777) == oct(0o400)
    await process_runtime.remove(config.task_id)
    assert not secret_file.exists()
    assert await process_runtime.inspect(config.task_id) is None


async def test_describe_reports_the_host(process_runtime):
    import os
    import platform

    described = await process_runtime.describe()
    assert (described.os, described.architecture) == (platform.system().lower(), platform.machine())
    assert described.cpus == os.cpu_count()
    with open("/proc/meminfo") as meminfo:
        total_kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    assert described.memory_bytes == total_kib * 1024
    assert described.engine_labels == {}


async def test_usage_is_the_whole_groups_cpu_time_and_memory(process_runtime, node_id, make_config, eventually):
    # a child that spins, under a parent that waits: the group's CPU time counts both
    config = make_config(node_id, **shell("sh -c 'while :; do :; done' & wait"))
    assert await process_runtime.usage(config.task_id) is None  # not there
    await process_runtime.prepare(config)
    assert await process_runtime.usage(config.task_id) is None  # not started
    await process_runtime.start(config.task_id)
    first = await process_runtime.usage(config.task_id)
    assert first is not None and first.memory > 0

    async def busier():
        later = await process_runtime.usage(config.task_id)
        return later.cpu_seconds > first.cpu_seconds + 0.05
    await eventually(busier, 20)
    await process_runtime.shutdown(config.task_id, grace=1)
    assert await process_runtime.usage(config.task_id) is None


async def test_the_executor_reports_cpus_busy_between_two_readings_of_tasks_with_a_reservation(process_runtime):
    from swarmlet.agent.executor import Executor
    from swarmlet.api.session import Assignments

    def entry(task_id: str, reservations: dict) -> dict:
        return {"id": task_id, "phase": "new", "spec": {
            "service_id": "svc-web", "service_name": "web", "stack": "", "desired_state": "running",
            "resources": {"reservations": reservations},
            "container": {"image": "none", "command": ["sh", "-c", "while :; do :; done"], "stop_grace_period": 1.0}}}

    executor = Executor(process_runtime)
    await executor.start()
    try:
        executor.assign(Assignments(tasks=[entry("swbg-measured", {"cpus": 0.5}), entry("swbg-unreserved", {})]))
        start = time.monotonic()
        while not all(executor.statuses.get(t, {}).get("state") == "running"
                      for t in ("swbg-measured", "swbg-unreserved")):
            assert time.monotonic() - start < 20, executor.statuses
            await asyncio.sleep(0.05)
        assert await executor.usage(100.0) == []  # the first reading is the baseline
        first = await process_runtime.usage("swbg-measured")
        while (await process_runtime.usage("swbg-measured")).cpu_seconds < first.cpu_seconds + 0.1:
            assert time.monotonic() - start < 30, "the spinning task got no CPU"
            await asyncio.sleep(0.05)
        (sample,) = await executor.usage(100.0 + (time.monotonic() - start))  # no reservation: not measured
        assert sample["task_id"] == "swbg-measured" and sample["cpus"] > 0 and sample["memory"] > 0
        executor.assign(Assignments(tasks=[]))
        while await process_runtime.usage("swbg-measured") is not None:
            assert time.monotonic() - start < 40, "the task did not stop"
            await asyncio.sleep(0.05)
        assert await executor.usage(200.0) == [] and not executor._usage  # stopped tasks drop out
    finally:
        for task in await process_runtime.list_owned():
            await process_runtime.shutdown(task.task_id, grace=0)
            await process_runtime.remove(task.task_id)
        await executor.close()
