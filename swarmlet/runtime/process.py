"""Runs tasks as plain local processes, without Docker (in the spirit of Nomad's exec drivers).

What this runtime does with a ContainerConfig:

- runs `entrypoint + command` as the leader of a new process group (session), with a clean
  environment (PATH plus the task's `env`), in `working_dir`, as `user` (needs root);
- **ignores `image`**: there is no image to take a command from, so a task without an
  entrypoint or command is refused;
- sends stdout and stderr to `<data_dir>/<node_id>/tasks/<task_id>/output.log`;
- keeps each task's identity and state in `task.json` next to it, so a new runtime object
  (an agent restart) adopts processes that are still running: the PID must be alive *and*
  have the recorded start time (from /proc/<pid>/stat), or it is a different process;
- writes secrets and configs to tmpfs, never to disk; the process finds them under
  `$SWARMLET_TASK_FILES` + their target (a secret `db` at `$SWARMLET_TASK_FILES/run/secrets/db`);
- runs the health check's test command periodically as a subprocess.

Not applied, for lack of isolation: mounts, ports, networks, resource limits, capabilities,
ulimits, sysctls, DNS and hosts settings, read_only, init. An OOM kill (by the kernel, there
are no limits) is not told apart from any other SIGKILL.

When the group leader exits, what is left of its process group is killed, as Docker kills
every process of a container whose PID 1 exits. Exit codes follow Docker's convention
(128 + signal). A task that exits while no runtime watches it (agent down) is reported with
exit code -1: only a process's parent learns its exit status.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from swarmlet.runtime.base import (
    DEFAULT_STOP_SIGNAL,
    LABEL_NODE_ID,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_STACK_NAMESPACE,
    ContainerConfig,
    EventKind,
    ExitStatus,
    HealthCheck,
    TaskUsage,
    HealthStatus,
    NodeDescription,
    OwnedTask,
    Runtime,
    RuntimeEvent,
    TaskNotFoundError,
    TaskRuntimeError,
    TaskRuntimeState,
    ContainerState,
    describe_exit,
    describe_unhealthy,
    host_description,
)
from swarmlet.runtime.events import EventHub, EventSubscription
from swarmlet.runtime.taskfiles import DEFAULT_TASK_FILES_ROOT, TaskFileStore

UNKNOWN_EXIT_CODE = -1
# The umask a task starts with, as in a Docker container: the node itself runs with an
# owner-only umask (its data dir holds keys), which is no business of the task's.
TASK_UMASK = 0o022
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOG_FOLLOW_INTERVAL = 0.1  # seconds between looks at a followed log file (like `tail -f`)
_SIGKILL_DEADLINE = 10.0

# Every Popen this Python process made, by PID, whichever runtime object made it: a runtime
# re-created in the same process must reap through the same object, or Popen's own cleanup
# could reap the child first and swallow its exit code.
_children: dict[int, subprocess.Popen] = {}


def process_start_time(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields_after_name = stat.rpartition(")")[2].split()
    return int(fields_after_name[19])


def process_group_usage(pgid: int) -> TaskUsage | None:
    """The CPU time (user + system, of every process in the group, and of the children
    they waited for) and resident memory of a process group, from /proc; None when no
    process of the group is left."""
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu, rss, found = 0, 0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rpartition(")")[2].split()  # field 3 (state) onwards
        if int(fields[2]) != pgid:
            continue
        found = True
        cpu += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        rss += int(fields[21]) * page
    return TaskUsage(cpu_seconds=cpu / ticks, memory=rss) if found else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _signal_number(name: str) -> int:
    name = name.upper()
    if name.isdigit():
        return int(name)
    return signal.Signals[name if name.startswith("SIG") else "SIG" + name].value


def _exit_code_from_returncode(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _health_command(test: list[str]) -> list[str] | None:
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    if test[0] == "CMD":
        return test[1:]
    return test  # Compose also allows a bare command


class _Task:
    """What this runtime object knows of one task beyond its record on disk."""

    def __init__(self) -> None:
        self.exit_future: asyncio.Future | None = None
        self.pidfd: int | None = None
        self.health_task: asyncio.Task | None = None
        self.health = HealthStatus.NONE
        self.health_output = ""


class ProcessRuntime(Runtime):
    def __init__(self, node_id: str, data_dir: Path | str, *, task_files_root: Path | str = DEFAULT_TASK_FILES_ROOT):
        self.node_id = node_id
        self._tasks_dir = Path(data_dir) / node_id / "tasks"
        self._task_files = TaskFileStore(node_id, task_files_root)
        self._tasks: dict[str, _Task] = {}
        self._hub = EventHub()
        self._closed = False

    # -- the task record --------------------------------------------------------------

    def _task_dir(self, task_id: str) -> Path:
        return self._tasks_dir / task_id

    def _log_path(self, task_id: str) -> Path:
        return self._task_dir(task_id) / "output.log"

    def _load(self, task_id: str) -> dict | None:
        try:
            record = json.loads((self._task_dir(task_id) / "task.json").read_text())
        except FileNotFoundError:
            return None
        # Only this node's tasks, even if someone points two nodes at one data dir.
        return record if record["labels"].get(LABEL_NODE_ID) == self.node_id else None

    def _require(self, task_id: str) -> dict:
        record = self._load(task_id)
        if record is None:
            raise TaskNotFoundError(f"task {task_id} has no process on node {self.node_id}")
        return record

    def _save(self, record: dict) -> None:
        path = self._task_dir(record["task_id"]) / "task.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=1))
        os.replace(temporary, path)  # a crash never leaves half a record

    def _task(self, task_id: str) -> _Task:
        return self._tasks.setdefault(task_id, _Task())

    # -- lifecycle ----------------------------------------------------------------------

    async def prepare(self, config: ContainerConfig) -> None:
        if config.node_id != self.node_id:
            raise TaskRuntimeError(f"task {config.task_id} is for node {config.node_id}, not {self.node_id}")
        if self._load(config.task_id) is not None:
            return
        argv = [*(config.entrypoint or []), *(config.command or [])]
        if not argv:
            raise TaskRuntimeError(
                f"task {config.task_id}: the process runtime needs an entrypoint or a command (it has no image)"
            )
        env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH), **config.env}
        if self._task_files.write(config):
            env["SWARMLET_TASK_FILES"] = str(self._task_files.files_dir(config.task_id))
        self._task_dir(config.task_id).mkdir(parents=True, exist_ok=True)
        self._save(
            {
                "task_id": config.task_id,
                "labels": config.all_labels(),
                "argv": argv,
                "env": env,
                "working_dir": config.working_dir,
                "user": config.user,
                "stop_signal": config.stop_signal or DEFAULT_STOP_SIGNAL,
                "stop_grace_period": config.stop_grace_period,
                "healthcheck": asdict(config.healthcheck) if config.healthcheck else None,
                "state": ContainerState.CREATED.value,
                "pid": None,
                "pid_start_time": None,
                "started_at": None,
                "finished_at": None,
                "exit_code": None,
                "error": None,
            }
        )

    async def start(self, task_id: str) -> None:
        record = self._require(task_id)
        if record["state"] != ContainerState.CREATED.value:
            return
        user, _, group = (record["user"] or "").partition(":")
        try:
            with open(self._log_path(task_id), "ab") as log_file:
                child = subprocess.Popen(
                    record["argv"],
                    env=record["env"],
                    cwd=record["working_dir"],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: shutdown signals all of it
                    umask=TASK_UMASK,
                    user=(int(user) if user.isdigit() else user) or None,
                    group=(int(group) if group.isdigit() else group) or None,
                )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            record.update(state=ContainerState.EXITED.value, exit_code=UNKNOWN_EXIT_CODE, finished_at=_now(),
                          error=f"cannot start task: {exc}")
            self._save(record)
            raise TaskRuntimeError(f"cannot start task {task_id}: {exc}") from exc
        _children[child.pid] = child
        record.update(
            state=ContainerState.RUNNING.value,
            pid=child.pid,
            pid_start_time=process_start_time(child.pid),
            started_at=_now(),
        )
        self._save(record)
        self._supervise(record)

    def _supervise(self, record: dict) -> None:
        """Watch a running task's exit (through a pidfd: no polling) and its health."""
        task_id, pid = record["task_id"], record["pid"]
        task = self._task(task_id)
        if task.pidfd is not None:
            return
        loop = asyncio.get_running_loop()
        if task.exit_future is None or task.exit_future.done():
            task.exit_future = loop.create_future()
        try:
            task.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._on_exit(task_id)
            return
        loop.add_reader(task.pidfd, self._on_exit, task_id)
        if record["healthcheck"]:
            task.health = HealthStatus.STARTING
            check = HealthCheck(**record["healthcheck"]).with_defaults()  # no image to inherit from
            task.health_task = loop.create_task(self._check_health(record, check))

    def _stop_watching(self, task: _Task) -> None:
        if task.pidfd is not None:
            asyncio.get_running_loop().remove_reader(task.pidfd)
            os.close(task.pidfd)
            task.pidfd = None
        if task.health_task is not None:
            task.health_task.cancel()
            task.health_task = None

    def _on_exit(self, task_id: str) -> None:
        record = self._load(task_id)
        task = self._task(task_id)
        self._stop_watching(task)
        if record is None or record["state"] == ContainerState.EXITED.value:
            return
        pid = record["pid"]
        exit_code = self._reap(pid)
        # Docker kills what is left of a container when its PID 1 exits; so do we.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        unhealthy = task.health_output if task.health is HealthStatus.UNHEALTHY else None
        if exit_code == UNKNOWN_EXIT_CODE:
            error = "the process exited while no runtime watched it; exit code unknown"
        else:
            error = describe_exit(exit_code, unhealthy_output=unhealthy)
        record.update(state=ContainerState.EXITED.value, exit_code=exit_code, finished_at=_now(), error=error)
        self._save(record)
        if task.exit_future is not None and not task.exit_future.done():
            task.exit_future.set_result(ExitStatus(exit_code=exit_code, error=error))
        self._hub.publish(RuntimeEvent(task_id, EventKind.EXITED, error or "exit code 0", exit_code=exit_code))

    @staticmethod
    def _reap(pid: int) -> int:
        child = _children.pop(pid, None)
        if child is not None:
            return _exit_code_from_returncode(child.wait())
        try:
            _, wait_status = os.waitpid(pid, os.WNOHANG)
            return _exit_code_from_returncode(os.waitstatus_to_exitcode(wait_status))
        except ChildProcessError:  # not our child: adopted after a restart
            return UNKNOWN_EXIT_CODE

    def _adopt(self, record: dict) -> dict:
        """Bring a task this object did not start under supervision, or mark it exited."""
        if record["state"] != ContainerState.RUNNING.value or self._task(record["task_id"]).pidfd is not None:
            return record
        if record["pid_start_time"] is not None and process_start_time(record["pid"]) == record["pid_start_time"]:
            self._supervise(record)
            return self._load(record["task_id"])
        # The PID is gone or now belongs to another process: the task ended unseen.
        record.update(
            state=ContainerState.EXITED.value,
            exit_code=UNKNOWN_EXIT_CODE,
            finished_at=_now(),
            error="the process exited while no runtime watched it; exit code unknown",
        )
        self._save(record)
        return record

    async def usage(self, task_id: str) -> TaskUsage | None:
        record = self._load(task_id)
        if not record or not record.get("pid") or process_start_time(record["pid"]) != record.get("pid_start_time"):
            return None
        return await asyncio.to_thread(process_group_usage, record["pid"])

    async def wait(self, task_id: str) -> ExitStatus:
        record = self._adopt(self._require(task_id))
        if record["state"] != ContainerState.EXITED.value:
            task = self._task(task_id)
            if task.exit_future is None:  # created, not started yet
                task.exit_future = asyncio.get_running_loop().create_future()
            return await asyncio.shield(task.exit_future)
        return ExitStatus(exit_code=record["exit_code"], error=record["error"])

    async def shutdown(self, task_id: str, grace: float | None = None) -> None:
        record = self._adopt(self._require(task_id))
        if record["state"] != ContainerState.RUNNING.value:
            return
        exit_future = self._task(task_id).exit_future
        grace = record["stop_grace_period"] if grace is None else grace
        if not self._signal_group(record["pid"], _signal_number(record["stop_signal"])):
            return
        try:
            await asyncio.wait_for(asyncio.shield(exit_future), grace)
            return
        except TimeoutError:
            pass
        if self._signal_group(record["pid"], signal.SIGKILL):
            await asyncio.wait_for(asyncio.shield(exit_future), _SIGKILL_DEADLINE)

    @staticmethod
    def _signal_group(pid: int, signal_number: int) -> bool:
        try:
            os.killpg(pid, signal_number)  # the leader's PID is its group's ID
            return True
        except ProcessLookupError:
            return False

    async def remove(self, task_id: str) -> None:
        record = self._load(task_id)
        if record is None:
            return
        if self._adopt(record)["state"] == ContainerState.RUNNING.value:
            await self.shutdown(task_id, grace=0)
        task = self._tasks.pop(task_id, None)
        if task is not None:
            self._stop_watching(task)
        shutil.rmtree(self._task_dir(task_id), ignore_errors=True)
        self._task_files.remove(task_id)

    async def inspect(self, task_id: str) -> TaskRuntimeState | None:
        record = self._load(task_id)
        if record is None:
            return None
        record = self._adopt(record)
        task = self._task(task_id)
        state = ContainerState(record["state"])
        error = record["error"]
        if state is ContainerState.RUNNING and task.health is HealthStatus.UNHEALTHY:
            error = describe_unhealthy(task.health_output)
        return TaskRuntimeState(
            task_id=task_id,
            state=state,
            health=task.health,
            exit_code=record["exit_code"],
            started_at=datetime.fromisoformat(record["started_at"]) if record["started_at"] else None,
            finished_at=datetime.fromisoformat(record["finished_at"]) if record["finished_at"] else None,
            error=error,
        )

    async def logs(self, task_id: str, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        self._require(task_id)
        path = self._log_path(task_id)
        if not path.exists():
            return
        with open(path, "rb") as log_file:
            lines = log_file.read().split(b"\n")
            pending = lines.pop()  # an unfinished last line
            if tail is not None:
                lines = lines[-tail:] if tail > 0 else []
            for line in lines:
                yield line.decode("utf-8", errors="replace")
            while follow:
                exit_future = self._task(task_id).exit_future
                record = self._adopt(self._require(task_id))
                finished = record["state"] == ContainerState.EXITED.value
                if not finished and exit_future is not None:
                    # Wakes at once when the task exits, else after the interval.
                    await asyncio.wait([exit_future], timeout=_LOG_FOLLOW_INTERVAL)
                elif not finished:
                    await asyncio.sleep(_LOG_FOLLOW_INTERVAL)
                *lines, pending = (pending + log_file.read()).split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace")
                if finished:
                    break
            if pending:
                yield pending.decode("utf-8", errors="replace")

    async def list_owned(self) -> list[OwnedTask]:
        owned = []
        for task_dir in sorted(self._tasks_dir.glob("*")) if self._tasks_dir.exists() else []:
            record = self._load(task_dir.name)
            if record is None:
                continue
            record = self._adopt(record)
            labels = record["labels"]
            owned.append(
                OwnedTask(
                    task_id=record["task_id"],
                    service_id=labels.get(LABEL_SERVICE_ID, ""),
                    service_name=labels.get(LABEL_SERVICE_NAME, ""),
                    stack_namespace=labels.get(LABEL_STACK_NAMESPACE, ""),
                    state=ContainerState(record["state"]),
                    labels=labels,
                )
            )
        return owned

    async def describe(self) -> NodeDescription:
        return host_description()  # tasks run on this machine, as its processes

    def events(self) -> EventSubscription:
        return self._hub.subscribe()

    # -- health checks --------------------------------------------------------------------

    async def _check_health(self, record: dict, check: HealthCheck) -> None:
        command = _health_command(check.test)
        if command is None:
            self._task(record["task_id"]).health = HealthStatus.NONE
            return
        started = time.monotonic()
        failures = 0
        while True:
            await asyncio.sleep(check.interval)  # the check's own period, not a synchronisation
            healthy, output = await self._run_health_command(command, record, check.timeout)
            if healthy:
                failures = 0
                self._set_health(record["task_id"], HealthStatus.HEALTHY, output)
            elif time.monotonic() - started >= check.start_period:
                failures += 1
                if failures >= check.retries:
                    self._set_health(record["task_id"], HealthStatus.UNHEALTHY, output)

    @staticmethod
    async def _run_health_command(command: list[str], record: dict, timeout: float) -> tuple[bool, str]:
        try:
            check = await asyncio.create_subprocess_exec(
                *command,
                env=record["env"],
                cwd=record["working_dir"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                umask=TASK_UMASK,
            )
        except OSError as exc:
            return False, str(exc)
        try:
            output, _ = await asyncio.wait_for(check.communicate(), timeout)
        except TimeoutError:
            check.kill()
            await check.wait()
            return False, f"health check timed out after {timeout:g}s"
        return check.returncode == 0, output.decode("utf-8", errors="replace")

    def _set_health(self, task_id: str, health: HealthStatus, output: str) -> None:
        task = self._task(task_id)
        task.health_output = output
        if task.health is health:
            return
        task.health = health
        detail = describe_unhealthy(output) if health is HealthStatus.UNHEALTHY else health.value
        self._hub.publish(RuntimeEvent(task_id, EventKind.HEALTH, detail))

    async def close(self) -> None:
        """Stop watching; the processes keep running, for the next runtime to adopt."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks.values():
            self._stop_watching(task)
            if task.exit_future is not None and not task.exit_future.done():
                task.exit_future.set_exception(TaskRuntimeError("runtime closed"))
                task.exit_future.exception()  # retrieved: no warning when nobody waited
        self._tasks.clear()
        self._hub.close()
