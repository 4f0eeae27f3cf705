"""The engine's container events for one node, as the runtime's events: exits (with the
OOM kill folded in) and health changes. Read from one reconnecting stream, nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import docker
import docker.errors

from swarmlet.runtime.base import (
    LABEL_NODE_ID,
    LABEL_TASK_ID,
    EventKind,
    ExitStatus,
    HealthStatus,
    RuntimeEvent,
    TaskRuntimeError,
    describe_exit,
    describe_unhealthy,
)
from swarmlet.runtime.docker.client import Engine, StreamPump, close_quietly
from swarmlet.runtime.docker.state import exit_status_from_state, last_health_output
from swarmlet.runtime.events import EventHub, EventSubscription

log = logging.getLogger(__name__)

# `start` is not among them: `start()` returning tells the agent; `oom` only marks the
# exit that follows. `exec_*` (every health check run) would be noise.
_WATCHED_ACTIONS = ["die", "oom", "health_status"]
# The engine may report a container's OOM kill just after its exit (seen under load): a
# memory-limited task SIGKILLed waits this long for the news before its exit is reported.
_LATE_OOM_DEADLINE = 3.0  # 1 s was not always enough on a loaded 2-core machine
_RECONNECT_DELAY = 1.0  # seconds between attempts after the engine dropped the stream


def node_filter(node_id: str, **extra_labels: str) -> dict:
    """The engine-side filter that keeps to one node's containers (nodes may share an engine)."""
    labels = [f"{LABEL_NODE_ID}={node_id}"] + [f"{k}={v}" for k, v in extra_labels.items()]
    return {"label": labels}


def docker_timestamp(time_ns: int) -> str:
    """The engine's `since` format, exact to the nanosecond (a float is not)."""
    return f"{time_ns // 1_000_000_000}.{time_ns % 1_000_000_000:09d}"


InspectFn = Callable[[str], Awaitable[dict | None]]


class TaskEvents:
    """Turns one node's engine events into `RuntimeEvent`s and wakes whoever waits for an
    exit. Started lazily, on the loop of the runtime's first use."""

    def __init__(self, engine: Engine, node_id: str, inspect: InspectFn):
        """`inspect(task_id)`: the task's container as the engine inspects it, None if gone."""
        self._engine = engine
        self._node_id = node_id
        self._inspect = inspect
        self._hub = EventHub()
        self._exit_waiters: dict[str, set[asyncio.Future]] = {}
        self._oom_noticed: dict[str, asyncio.Event] = {}
        self._pump: StreamPump | None = None
        self._consumer: asyncio.Task | None = None
        self._closed = False

    def subscribe(self) -> EventSubscription:
        subscription = self._hub.subscribe()
        self.ensure_watching()
        return subscription

    def ensure_watching(self) -> None:
        """Start reading the engine's events the first time the runtime is used on a loop."""
        if self._pump is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        # Replaying from this moment means no event is lost while the stream connects.
        since = docker_timestamp(time.time_ns())
        filters = {"type": ["container"], "event": _WATCHED_ACTIONS, **node_filter(self._node_id)}
        self._pump = StreamPump(
            lambda: ReconnectingEvents(self._engine.stream_api, since, filters),
            loop,
            f"docker-events-{self._node_id}",
            on_arrival=self._notice_oom,
        )
        self._consumer = loop.create_task(self._consume(), name=f"docker-events-{self._node_id}")

    async def _consume(self) -> None:
        # One consumer, in order: an `oom` is noted before its `die` is handled.
        try:
            async for event in self._pump.items():
                try:
                    await self._handle(event)
                except Exception:
                    log.exception("cannot handle docker event %r", event)
        finally:
            self._hub.close()

    def _notice_oom(self, event: dict) -> None:
        # Noted on arrival, not in turn: the `die` being handled may be waiting for it.
        task_id = event.get("Actor", {}).get("Attributes", {}).get(LABEL_TASK_ID)
        if event.get("Action") == "oom" and task_id:
            self._oom_event(task_id).set()

    def _oom_event(self, task_id: str) -> asyncio.Event:
        return self._oom_noticed.setdefault(task_id, asyncio.Event())

    async def _handle(self, event: dict) -> None:
        attributes = event.get("Actor", {}).get("Attributes", {})
        task_id = attributes.get(LABEL_TASK_ID)
        if not task_id or attributes.get(LABEL_NODE_ID) != self._node_id:
            return
        action = event.get("Action", "")
        if action == "die":
            status = await self._exit_status_after_die(task_id, attributes)
            for waiter in self._exit_waiters.pop(task_id, set()):
                if not waiter.done():
                    waiter.set_result(status)
            self._hub.publish(
                RuntimeEvent(
                    task_id,
                    EventKind.EXITED,
                    status.error or f"exit code {status.exit_code}",
                    exit_code=status.exit_code,
                )
            )
        elif action.startswith("health_status"):
            health = action.partition(":")[2].strip()
            detail = health
            if health == HealthStatus.UNHEALTHY.value:
                raw = await self._inspect(task_id)
                detail = describe_unhealthy(last_health_output(raw["State"]) if raw else "")
            self._hub.publish(RuntimeEvent(task_id, EventKind.HEALTH, detail))

    async def _exit_status_after_die(self, task_id: str, attributes: dict) -> ExitStatus:
        raw = await self._inspect(task_id)
        if raw is None:
            # Already removed (e.g. `docker rm -f`): the event still carries the exit code.
            exit_code = int(attributes.get("exitCode", -1))
            status = ExitStatus(exit_code=exit_code, error=describe_exit(exit_code))
        else:
            status = exit_status_from_state(raw["State"])
        memory_limited = raw is not None and bool(raw["HostConfig"].get("Memory"))
        if not status.oom_killed and status.exit_code == 137 and memory_limited:
            try:
                await asyncio.wait_for(self._oom_event(task_id).wait(), _LATE_OOM_DEADLINE)
            except TimeoutError:
                pass
        return self.with_noticed_oom(task_id, status)

    def with_noticed_oom(self, task_id: str, status: ExitStatus) -> ExitStatus:
        """The status, OOM-killed if the engine's event said so though its State did not."""
        noticed = self._oom_noticed.get(task_id)
        if status.oom_killed or noticed is None or not noticed.is_set():
            return status
        return ExitStatus(status.exit_code, oom_killed=True, error=describe_exit(status.exit_code, oom_killed=True))

    def exit_waiter(self, task_id: str) -> asyncio.Future:
        """A future of the task's next exit. Take it before looking at the task, so that an
        exit between the look and the wait is not missed; `forget_waiter` it afterwards."""
        waiter = asyncio.get_running_loop().create_future()
        self._exit_waiters.setdefault(task_id, set()).add(waiter)
        return waiter

    def forget_waiter(self, task_id: str, waiter: asyncio.Future) -> None:
        waiters = self._exit_waiters.get(task_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._exit_waiters[task_id]

    def forget(self, task_id: str) -> None:
        """The task is gone: drop what was noted about it."""
        self._oom_noticed.pop(task_id, None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.close()
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except asyncio.CancelledError:
                pass
        self._hub.close()
        for waiters in self._exit_waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(TaskRuntimeError("runtime closed"))
                    waiter.exception()  # retrieved: no warning when nobody waited
        self._exit_waiters.clear()


class ReconnectingEvents:
    """Docker's event stream as one endless iterator: after the engine drops the connection
    (a restart, say), it reconnects and replays from the last event it saw."""

    def __init__(self, api: docker.APIClient, since: str, filters: dict):
        self._api = api
        self._since = since
        self._filters = filters
        self._stream = None
        self._closed = threading.Event()
        self._last_seen: set[tuple] = set()

    def __iter__(self) -> Iterator[dict]:
        while not self._closed.is_set():
            try:
                self._stream = self._api.events(since=self._since, filters=self._filters, decode=True)
                if self._closed.is_set():
                    close_quietly(self._stream)
                for event in self._stream:
                    key = (event.get("timeNano"), event.get("id"), event.get("Action"))
                    if key in self._last_seen:  # replayed after a reconnect
                        continue
                    if event.get("timeNano"):
                        since = docker_timestamp(event["timeNano"])
                        if since != self._since:
                            self._last_seen.clear()
                        self._since = since
                    self._last_seen.add(key)
                    yield event
            except docker.errors.DockerException as exc:
                log.warning("docker event stream failed: %s; reconnecting", exc)
            except OSError as exc:
                log.warning("docker event stream failed: %s; reconnecting", exc)
            # Back off before reconnecting; close() cuts the wait short.
            self._closed.wait(_RECONNECT_DELAY)

    def close(self) -> None:
        self._closed.set()
        if self._stream is not None:
            close_quietly(self._stream)
