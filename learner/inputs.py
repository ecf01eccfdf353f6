"""The learner's input pipeline: windows of consecutive batches from the
replay dataset, stacked, sharded over the learner devices and put there by a
background thread, `depth` windows ahead of the update that consumes them
(the input of step k + 1 is on the devices while step k runs)."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, List, NamedTuple, Optional

import numpy as np

from agents.types import Trajectory


def stack_batches(window: List[Trajectory]) -> Trajectory:
    """[T + 1, B, ...] x N -> Trajectory with fields [N, T + 1, B, ...]."""
    return Trajectory(*[np.stack(fields) for fields in zip(*window)])


class Windows:
    """Windows of `num_batches` consecutive batches, each sharing its first
    `overlap` batches with the end of the one before (MG/BMG with
    `meta.outer_sample = next`: the validation batch of one update is the
    first inner batch of the next), so each update after the first takes
    `num_batches - overlap` new batches (`pop_new` counts them)."""

    def __init__(self, data, num_batches: int, overlap: int, address: str, timeout_ms: int):
        if not 0 <= overlap < num_batches:
            raise ValueError(
                f"overlap={overlap!r} is not allowed: must be in [0, num_batches={num_batches})"
            )
        self._data, self.num_batches, self.overlap = data, num_batches, overlap
        self._address, self._timeout_s = address, timeout_ms / 1000
        self._window: List[Trajectory] = []
        self._waited_s = 0.0
        self._new = 0

    def pop_new(self) -> int:
        """Batches taken from the dataset since the last call."""
        new, self._new = self._new, 0
        return new

    def next(self) -> Optional[List[Trajectory]]:
        """The next full window, or None after a 1 s wait without data (it says
        so once per replay timeout: actors may be down or throttled)."""
        from replay import ReplayTimeoutError  # noqa: PLC0415 (TensorFlow: tested without it)

        if len(self._window) == self.num_batches:  # the last one was used
            self._window = self._window[len(self._window) - self.overlap :]
        while len(self._window) < self.num_batches:
            try:
                self._window.append(next(self._data))
            except ReplayTimeoutError:
                self._waited_s += 1.0
                if self._waited_s >= self._timeout_s:
                    print(
                        f"[learner] no data from replay at {self._address} for "
                        f"{self._waited_s:.0f} s (actors down or throttled?); still waiting",
                        flush=True,
                    )
                    self._waited_s = 0.0
                return None
            self._waited_s = 0.0
            self._new += 1
        return self._window


class Input(NamedTuple):
    """One update's input: the window on the devices, and how many of its
    batches are new (not shared with the previous window)."""

    batches: Any
    new_batches: int


class Prefetcher:
    """`Windows` -> stack -> `put` (shard and copy to the devices), in a
    daemon thread that keeps up to `depth` inputs ready; `depth` 0 does it
    inline in `get()` (for debugging).

    `get(timeout_s)` returns the next `Input`, or None if none is ready in
    time (the caller checks for a stop request and asks again). An error in
    the thread is raised by the next `get()`. `close()` stops the thread."""

    def __init__(self, windows: Windows, put: Callable[[Trajectory], Any], depth: int = 2):
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth={depth!r} must be an integer >= 0")
        self._windows, self._put, self.depth = windows, put, depth
        self._queue: "queue.Queue[tuple]" = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _make(self) -> Optional[Input]:
        window = self._windows.next()
        if window is None:
            return None
        return Input(self._put(stack_batches(window)), self._windows.pop_new())

    def _offer(self, item: tuple) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._make()
                if item is not None:
                    self._offer(("input", item))
        except BaseException as e:  # handed to the consumer, which raises it
            self._offer(("error", e))

    def get(self, timeout_s: float = 1.0) -> Optional[Input]:
        if self.depth == 0:
            return self._make()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="learner-input")
            self._thread.start()
        try:
            kind, value = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if kind == "error":
            raise value
        return value

    def close(self, join_timeout_s: float = 5.0) -> None:
        """Stops the thread (it finishes the input it is making). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(join_timeout_s)
