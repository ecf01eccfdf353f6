"""The learner's input pipeline (learner/inputs.py): windows in order with the
right count of new batches, made in a background thread at most `depth`
ahead, timeouts passed through as 'nothing yet', errors raised to the caller."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from agents.types import Trajectory
from learner.inputs import Prefetcher, Windows
from replay import ReplayTimeoutError
from tests.programs import wait_for


def _batch(i: int) -> Trajectory:
    return Trajectory(*[np.full((3, 2), i, np.float32) for _ in Trajectory._fields])


class Data:
    """Batches 0, 1, 2, ...; every `stall_every`-th call times out first."""

    def __init__(self, stall_every: int = 0):
        self.calls, self.served, self.stall_every = 0, 0, stall_every

    def __next__(self):
        self.calls += 1
        if self.stall_every and self.calls % self.stall_every == 0:
            raise ReplayTimeoutError("no data yet")
        self.served += 1
        return _batch(self.served - 1)


def _ids(stacked: Trajectory) -> list:
    return [int(x) for x in stacked.reward[:, 0, 0]]


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_windows_arrive_in_order_with_their_new_batches(depth):
    """`meta.outer_sample=next` with K = 2: windows of 3 sharing one batch."""
    data = Data(stall_every=3)
    threads = []

    def put(stacked):
        threads.append(threading.current_thread())
        return stacked

    inputs = Prefetcher(Windows(data, 3, 1, "fake:0", 10_000), put, depth)
    got = []
    try:
        while len(got) < 6:
            item = inputs.get(timeout_s=1.0)
            if item is not None:
                got.append((_ids(item.batches), item.new_batches))
    finally:
        inputs.close()
    # The validation batch of one window is the first inner batch of the next.
    assert got == [([2 * k, 2 * k + 1, 2 * k + 2], 3 if k == 0 else 2) for k in range(6)]
    inline = all(t is threading.current_thread() for t in threads)
    assert inline == (depth == 0)


@pytest.mark.parametrize(
    "outer_sample, K, expected",
    [
        # `same`: K inner batches, none shared, K new per update.
        ("same", 1, [([k], 1) for k in range(4)]),
        ("same", 2, [([2 * k, 2 * k + 1], 2) for k in range(4)]),
        # `next`: K + 1 batches, the last one the next window's first.
        ("next", 1, [([k, k + 1], 2 if k == 0 else 1) for k in range(4)]),
    ],
)
def test_window_length_and_overlap_follow_the_outer_sample(outer_sample, K, expected):
    from configs import MetaConfig

    meta = MetaConfig(objective="mg", K=K, outer_sample=outer_sample)
    windows = Windows(Data(), meta.num_batches, meta.window_overlap, "fake:0", 10_000)
    got = []
    while len(got) < 4:
        window = windows.next()
        if window is not None:
            got.append(([int(b.reward.flat[0]) for b in window], windows.pop_new()))
    assert got == expected


def test_windows_refuse_an_overlap_as_long_as_the_window():
    with pytest.raises(ValueError, match="overlap=1 is not allowed"):
        Windows(Data(), 1, 1, "fake:0", 10_000)


def test_prefetch_is_bounded_by_depth():
    data = Data()
    made = []
    inputs = Prefetcher(Windows(data, 1, 0, "fake:0", 10_000), lambda x: made.append(1) or x, 2)
    try:
        assert inputs.get(timeout_s=5.0) is not None
        # The thread fills the queue, makes one more and waits for room:
        # 1 taken + 2 queued + 1 waiting, and nothing more however long it runs.
        wait_for(lambda: len(made) >= 4, 30, "the prefetch thread to fill its queue")
        time.sleep(0.5)
        assert len(made) == 4 and data.served == 4
    finally:
        inputs.close()


def test_an_error_in_the_thread_is_raised_by_get():
    def put(stacked):
        raise RuntimeError("device out of memory")

    inputs = Prefetcher(Windows(Data(), 1, 0, "fake:0", 10_000), put, 2)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            for _ in range(50):
                inputs.get(timeout_s=0.1)
    finally:
        inputs.close()
    with pytest.raises(ValueError, match="depth=-1"):
        Prefetcher(Windows(Data(), 1, 0, "fake:0", 10_000), put, -1)
