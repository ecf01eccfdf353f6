"""Counter node: shared run counters (frames, steps, episodes) and latest scores.

A plain Python object served over courier by Launchpad. It starts from the
counts of the checkpoint being resumed, so counters continue rather than
restart. Thread-safe: courier serves calls from several threads.
"""

from __future__ import annotations

import threading
from typing import Dict, Mapping, Optional


class Counter:
    def __init__(self, initial: Optional[Mapping[str, float]] = None):
        self._lock = threading.Lock()
        self._counts: Dict[str, float] = dict(initial or {})
        self._latest: Dict[str, float] = {}

    def increment(self, **deltas: float) -> Dict[str, float]:
        """Add to counters (e.g. frames=80, episodes=1); returns all counts."""
        with self._lock:
            for k, v in deltas.items():
                self._counts[k] = self._counts.get(k, 0) + v
            return dict(self._counts)

    def set(self, **values: float) -> None:
        with self._lock:
            self._counts.update(values)

    def record(self, **values: float) -> None:
        """Latest values (e.g. train_return=-20, eval_hns=3.1); not checkpointed."""
        with self._lock:
            self._latest.update(values)

    def get_counts(self) -> Dict[str, float]:
        with self._lock:
            return dict(self._counts)

    def get_latest(self) -> Dict[str, float]:
        with self._lock:
            return dict(self._latest)


def await_future(future, should_stop=None, timeout_s: float = 30.0, poll_s: float = 0.2):
    """Result of a courier future, or None if the program is stopping or
    `timeout_s` passed: a peer that is gone must never hang a node's shutdown."""
    import concurrent.futures
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return future.result(timeout=poll_s)
        except concurrent.futures.TimeoutError:
            if (should_stop is not None and should_stop()) or time.monotonic() > deadline:
                return None


class LocalHandle:
    """What a courier handle to `target` offers (direct calls, and `.futures`
    whose calls return finished futures), in-process: the node classes run
    against it in tests and benchmarks without a Launchpad program."""

    def __init__(self, target):
        self._target = target
        self.futures = _LocalFutures(target)

    def __getattr__(self, name):
        return getattr(self._target, name)


class _LocalFutures:
    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        import concurrent.futures

        def call(*args, **kwargs):
            future = concurrent.futures.Future()
            future.set_result(getattr(self._target, name)(*args, **kwargs))
            return future

        return call
