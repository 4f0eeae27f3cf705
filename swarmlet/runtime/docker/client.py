"""One node's connection to the Docker engine: the SDK's clients and the thread pool.

The docker SDK is blocking, so every call runs in a bounded thread pool on one shared
client, and a stream (events, followed logs) is read by a thread of its own that hands
its items to the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

from swarmlet.runtime.base import TaskRuntimeError

DEFAULT_MAX_WORKERS = 16
DEFAULT_CALL_TIMEOUT = 60.0  # seconds, one engine call
# The SDK keeps this many pooled connections unless told otherwise, and reconnects beyond.
_SDK_POOL_SIZE = 10


def make_client(base_url: str | None, timeout: float | None, pool_size: int = _SDK_POOL_SIZE) -> docker.DockerClient:
    """`base_url` None: the engine from the environment (DOCKER_HOST or the local socket).
    The API version is negotiated: pinning a newer one fails on older engines."""
    if base_url is None:
        return docker.from_env(version="auto", timeout=timeout, max_pool_size=pool_size)
    return docker.DockerClient(base_url=base_url, version="auto", timeout=timeout, max_pool_size=pool_size)


class Engine:
    """The SDK's low-level API for one node, called off the event loop."""

    def __init__(
        self,
        node_id: str,
        base_url: str | None = None,
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ):
        # As many pooled connections as pool threads.
        self._client = make_client(base_url, timeout=call_timeout, pool_size=max(_SDK_POOL_SIZE, max_workers))
        # Followed logs and events can stay silent for longer than any sensible call timeout.
        self._stream_client = make_client(base_url, timeout=None)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"docker-{node_id}")
        self.closed = False

    @property
    def api(self) -> docker.APIClient:
        """For blocking calls: only inside `call`, or in a function `call` runs."""
        return self._client.api

    @property
    def stream_api(self) -> docker.APIClient:
        """For opening streams, without a read timeout (see `StreamPump`)."""
        return self._stream_client.api

    @property
    def api_version(self) -> str:
        return self._client.api.api_version

    async def call(self, fn: Callable, *args, **kwargs):
        if self.closed:
            raise TaskRuntimeError("runtime is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        self._stream_client.close()


class StreamPump:
    """Reads a blocking SDK stream in its own thread and hands items to the event loop.

    A dedicated thread rather than the pool: a followed stream blocks for as long as the
    container lives and must not starve ordinary calls.
    """

    _END = object()

    def __init__(
        self,
        open_stream: Callable[[], Any],
        loop: asyncio.AbstractEventLoop,
        thread_name: str,
        on_arrival: Callable[[Any], None] | None = None,
    ):
        """`on_arrival` sees each item on the loop as soon as it arrives, before the reader."""
        self._open_stream = open_stream
        self._on_arrival = on_arrival
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stream = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._stream = self._open_stream()
            if self._closed.is_set():
                close_quietly(self._stream)
            for item in self._stream:
                self._loop.call_soon_threadsafe(self._deliver, item)
        except Exception as exc:  # handed to the reader, raised there
            if not self._closed.is_set():
                self._loop.call_soon_threadsafe(self._queue.put_nowait, exc)
        finally:
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, self._END)
            except RuntimeError:  # the loop is already closed
                pass

    def _deliver(self, item) -> None:
        if self._on_arrival is not None:
            self._on_arrival(item)
        self._queue.put_nowait(item)

    async def items(self) -> AsyncIterator[Any]:
        try:
            while True:
                item = await self._queue.get()
                if item is self._END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._closed.set()
        if self._stream is not None:
            close_quietly(self._stream)


def close_quietly(stream) -> None:
    # Called from another thread than the reader's: the socket may already be gone.
    try:
        stream.close()
    except OSError:
        pass
