"""Fan-out of runtime events to any number of subscribers, on the event loop."""

from __future__ import annotations

import asyncio

from swarmlet.runtime.base import RuntimeEvent

_END = object()


class EventSubscription:
    """An async iterator of events published after it was created (not after first use)."""

    def __init__(self, hub: EventHub):
        self._hub = hub
        self._queue: asyncio.Queue = asyncio.Queue()

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> RuntimeEvent:
        event = await self._queue.get()
        if event is _END:
            self._hub._subscribers.discard(self)
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self._hub._subscribers.discard(self)

    def _put(self, item) -> None:
        self._queue.put_nowait(item)


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[EventSubscription] = set()
        self._closed = False

    def subscribe(self) -> EventSubscription:
        subscription = EventSubscription(self)
        if self._closed:
            subscription._put(_END)
        else:
            self._subscribers.add(subscription)
        return subscription

    def publish(self, event: RuntimeEvent) -> None:
        for subscription in list(self._subscribers):
            subscription._put(event)

    def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscribers):
            subscription._put(_END)
        self._subscribers.clear()
