"""What a node last found (or made) true, taken on trust for a while.

The agent side reads its state back from the kernel and the engine (level-triggered),
but during a deploy the same question comes many times a second: every task that
starts makes a new network plane for every node, and the tasks of a service arrive
together. A `Trusted` remembers, per key, the value last found and when, and answers
"still so" until ``seconds`` have passed; then the caller looks again. Whoever changes
or removes the thing forgets it at once.
"""
from __future__ import annotations

import time
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Trusted(Generic[K, V]):
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._found: dict[K, tuple[V, float]] = {}

    def get(self, key: K) -> V | None:
        """The value last found for ``key``, if found less than ``seconds`` ago."""
        found = self._found.get(key)
        if found is None or time.monotonic() - found[1] >= self.seconds:
            return None
        return found[0]

    def holds(self, key: K, value: V) -> bool:
        """``value`` was found for ``key`` less than ``seconds`` ago."""
        found = self._found.get(key)
        return found is not None and found[0] == value and time.monotonic() - found[1] < self.seconds

    def note(self, key: K, value: V) -> None:
        self._found[key] = (value, time.monotonic())

    def forget(self, key: K | None = None) -> None:
        """Look again next time: for ``key``, or for every key when None."""
        if key is None:
            self._found.clear()
        else:
            self._found.pop(key, None)
