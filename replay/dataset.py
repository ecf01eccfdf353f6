"""The learner side of the replay: a time-major `Trajectory` dataset whose
every wait is bounded (`make_dataset`, `TrajectoryIterator`)."""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Optional, Union

from agents.types import Trajectory
from configs import ReplayConfig
from replay.tables import (
    TABLE,
    ReplayError,
    ReplayTimeoutError,
    _as_client,
    _server_info,
    address_of,
    reverb,
    tf,
)


def _time_major(x: tf.Tensor) -> tf.Tensor:
    perm = [1, 0] + list(range(2, x.shape.rank))
    return tf.transpose(x, perm)


class _Puller:
    """The state shared with the puller thread (it holds no reference to the
    `TrajectoryIterator`, so dropping the iterator stops the thread)."""

    def __init__(self, dataset: tf.data.Dataset):
        self.dataset = dataset
        self.queue: "queue.Queue[tuple]" = queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.last_rate_limited = -math.inf  # monotonic time reverb last ended a stream

    def put(self, item: tuple) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                it = self.dataset.as_numpy_iterator()
                while not self.stop.is_set():
                    batch = next(it)
                    if not self.put(("batch", Trajectory(*batch))):
                        return
            except StopIteration:
                # reverb ended the stream: its rate limiter timed out. Reopen.
                self.last_rate_limited = time.monotonic()
            except Exception as e:
                if not self.put(("error", e)):
                    return
                self.stop.wait(1.0)  # do not spin on a persistent error


class TrajectoryIterator:
    """Yields numpy `Trajectory` batches, time-major ([T + 1, B, ...]).

    Every `next()` waits at most `timeout_ms` and then raises
    `ReplayTimeoutError` naming the table, the address and the timeout. The
    iterator stays usable after the error: a learner can catch it, check for
    a stop request and call `next()` again; the error loses no data.

    Why a thread: reverb's own bound (`rate_limiter_timeout_ms`) only covers
    waiting on the table's rate limiter, which ends the sample stream (seen
    here as the end of the tf.data iterator; it is reopened at once). When the
    server dies, the stream retries forever and `next()` on the tf.data
    iterator never returns (measured with reverb 0.7.3). So one daemon thread
    pulls batches from tf.data into a one-slot queue and `next()` waits on that
    queue with the timeout. A batch that was only partly sampled when reverb's
    stream timed out is dropped (in queue mode those items were consumed).
    Call `close()` (or drop the iterator) to stop the thread.
    """

    def __init__(
        self, dataset: tf.data.Dataset, address: str, table: str, batch_size: int, timeout_ms: int
    ):
        self._address = address
        self._table = table
        self._batch_size = batch_size
        self._timeout_ms = timeout_ms
        self._puller = _Puller(dataset)
        self._thread: Optional[threading.Thread] = None
        self.batches = 0  # batches handed out

    @property
    def dataset(self) -> tf.data.Dataset:
        return self._puller.dataset

    def __iter__(self) -> "TrajectoryIterator":
        return self

    def __next__(self) -> Trajectory:
        if self._puller.stop.is_set():
            raise ReplayError("TrajectoryIterator used after close()")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._puller.run, daemon=True, name=f"replay-sampler-{self._table}"
            )
            self._thread.start()
        try:
            kind, value = self._puller.queue.get(timeout=self._timeout_ms / 1000.0)
        except queue.Empty:
            raise ReplayTimeoutError(self._timeout_message()) from None
        if kind == "batch":
            self.batches += 1
            return value
        raise ReplayError(
            f"sampling replay table {self._table!r} at {self._address} failed: "
            f"{type(value).__name__}: {getattr(value, 'message', value)}"
        ) from value

    def close(self, join_timeout_s: float = 1.0) -> None:
        """Stops the puller thread (waits at most `join_timeout_s`). Idempotent.

        A thread blocked inside reverb (dead server) cannot be interrupted; it
        is a daemon thread and ends with the process or when the stream ends.
        """
        self._puller.stop.set()
        if self._thread is not None:
            self._thread.join(join_timeout_s)

    def __del__(self):
        self._puller.stop.set()

    def _timeout_message(self) -> str:
        head = (
            f"no batch of {self._batch_size} trajectories from replay table "
            f"{self._table!r} at {self._address} within timeout_ms={self._timeout_ms}"
        )
        since = time.monotonic() - self._puller.last_rate_limited
        if since < 2 * self._timeout_ms / 1000.0 + 1.0:
            why = (
                "reverb's rate limiter blocked sampling: the table holds fewer than "
                "min_size items (actors not writing yet?) or, in uniform mode, the "
                "samples-per-insert ratio is ahead of the inserts"
            )
        else:
            why = (
                "the sample stream made no progress: server unreachable, or items "
                "arrive slower than one batch per timeout"
            )
        return f"{head}: {why}. Call next() again to keep waiting."


def make_dataset(
    server_address: Union[str, reverb.Client],
    batch_size: int,
    cfg: ReplayConfig,
    table: str = TABLE,
    *,
    max_in_flight_samples_per_worker: Optional[int] = None,
    num_workers_per_iterator: int = -1,
    next_timeout_ms: Optional[int] = None,
) -> TrajectoryIterator:
    """Learner input: an iterator of time-major numpy `Trajectory` batches.

    `server_address` is 'host:port' or a `reverb.Client` (what a Launchpad
    ReverbNode handle dereferences to). `reverb.TrajectoryDataset.
    from_table_signature` with 2 x batch samples in flight per worker and
    `rate_limiter_timeout_ms=cfg.timeout_ms`, batched (drop_remainder),
    transposed to [T + 1, B, ...] inside the tf.data pipeline and prefetched
    `cfg.prefetch_batches` batches ahead. See `TrajectoryIterator` for the
    timeout behaviour; `next_timeout_ms` (default `cfg.timeout_ms`) bounds
    each `next()`, so a learner can wait in short slices and check for a stop.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    server_address = address_of(server_address)
    in_flight = max_in_flight_samples_per_worker or 2 * batch_size
    timeout_s = max(1, math.ceil(cfg.timeout_ms / 1000))
    # Checks the server and table with a bounded wait (from_table_signature's own
    # signature fetch would otherwise block forever on a dead address).
    _server_info(_as_client(server_address), table, timeout_s)
    try:
        ds = reverb.TrajectoryDataset.from_table_signature(
            server_address=server_address,
            table=table,
            max_in_flight_samples_per_worker=in_flight,
            num_workers_per_iterator=num_workers_per_iterator,
            rate_limiter_timeout_ms=cfg.timeout_ms,
            get_signature_timeout_secs=timeout_s,
        )
    except reverb.DeadlineExceededError as e:
        raise ReplayTimeoutError(
            f"reverb server at {server_address} did not send the "
            f"signature of {table!r} within {timeout_s} s"
        ) from e
    except ValueError as e:
        raise ReplayError(str(e)) from e

    def to_trajectory(sample):
        data = sample.data
        return tuple(getattr(data, name) for name in Trajectory._fields)

    ds = ds.map(to_trajectory)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda *fields: tuple(_time_major(x) for x in fields))
    ds = ds.prefetch(cfg.prefetch_batches)
    return TrajectoryIterator(
        ds, server_address, table, batch_size, next_timeout_ms or cfg.timeout_ms
    )
