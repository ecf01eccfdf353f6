"""Timing hook of the actor and learner nodes.

A node given a timer runs each of its timed sections inside
`with timer(label):` (the labels are listed where the node is defined).
`null_timer`, the default, times nothing; `Timer` adds up wall seconds and
calls per label. Benchmarks pass their own to split a loop's time.
"""

from __future__ import annotations

import contextlib
import time
from typing import ContextManager, Dict, Iterator, Protocol


class SectionTimer(Protocol):
    """What a node times its sections with: `with timer("env"): ...`."""

    def __call__(self, label: str) -> ContextManager[None]: ...


class NullTimer:
    """Times nothing: one shared, reusable context that does nothing."""

    _nothing: ContextManager[None] = contextlib.nullcontext()

    def __call__(self, label: str) -> ContextManager[None]:
        return self._nothing


null_timer = NullTimer()


class Timer:
    """Wall seconds (`time.perf_counter`) and calls per label; a section that
    raises is counted too. `reset()` starts a new measured window."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self.calls: Dict[str, int] = {}

    @contextlib.contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0
            self.calls[label] = self.calls.get(label, 0) + 1

    def reset(self) -> None:
        self.seconds, self.calls = {}, {}
