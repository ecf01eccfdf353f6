"""Reverb replay for trajectories: tables, the actor-side writer, the learner dataset.

This is the only place in the project that imports TensorFlow (through Reverb).
GPUs are hidden from TensorFlow at import, before anything touches a device, so
that TF never grabs accelerator memory that JAX needs (docs/design.md section 7).

Data layout (see `agents/types.py`): one item = one unroll of T + 1 consecutive
steps of one environment; consecutive items of an environment overlap by one
step (item k covers steps kT .. kT + T). Items are sampled as `Trajectory`
batches, time-major: every field is [T + 1, B, ...].

Every wait is bounded by a timeout and a stall becomes a `ReplayTimeoutError`
(a `TimeoutError`) naming the table, the address and the timeout; nothing here
can hang silently.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf


def _hide_gpus_from_tensorflow() -> None:
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError) as e:  # devices were initialised before us
        logging.warning("replay: could not hide GPUs from TensorFlow (%s)", e)


_hide_gpus_from_tensorflow()

import reverb  # noqa: E402  (after the GPUs are hidden)

from agents.types import Trajectory, step_spec, trajectory_spec  # noqa: E402
from configs import ReplayConfig  # noqa: E402

TABLE = "trajectories"

# dtypes of the Trajectory fields; they do not depend on shapes.
_FIELD_DTYPES: Tuple[np.dtype, ...] = tuple(s.dtype for s in step_spec((1,), 1))
_NUM_FIELDS = len(Trajectory._fields)


class ReplayError(RuntimeError):
    """The replay server could not be used (unreachable, wrong table, ...)."""


class ReplayTimeoutError(ReplayError, TimeoutError):
    """A bounded wait on the replay server ran out."""


# ----------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------
def table_signature(observation_shape: Sequence[int], num_actions: int,
                    unroll_length: int) -> Trajectory:
    """`Trajectory` of `tf.TensorSpec`, every field with a leading T + 1 axis."""
    spec = trajectory_spec(tuple(observation_shape), num_actions, unroll_length)
    return Trajectory(*[tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=name)
                        for name, s in zip(Trajectory._fields, spec)])


def resolve_max_size(cfg: ReplayConfig, batch_size: int) -> int:
    """`cfg.max_size`, or 10 x batch when it is 0; checked against the batch."""
    max_size = cfg.max_size or 10 * batch_size
    if max_size <= batch_size + 1:
        # Acme's rule (docs/design.md section 7): with reverb's queue rate limiter a queue of
        # at most batch + 1 items deadlocks sampling. Our MinSize table would not
        # deadlock, but it would drop unrolls as soon as the learner is one batch
        # behind, so the check stays as a guard against a mis-set config.
        raise ValueError(
            f"replay max_size={max_size} is too small: it must be > batch_size + 1 = "
            f"{batch_size + 1} (batch_size={batch_size}); set ReplayConfig.max_size to "
            f"at least {batch_size + 2}, or 0 for 10 x batch = {10 * batch_size}")
    if cfg.min_size > max_size:
        raise ValueError(
            f"replay min_size={cfg.min_size} is larger than max_size={max_size}: the "
            f"table could never hold enough items to allow sampling")
    return max_size


def make_tables(cfg: ReplayConfig, batch_size: int, observation_shape: Sequence[int],
                num_actions: int, unroll_length: int) -> List[reverb.Table]:
    """The replay tables (one, named `TABLE`) for `cfg.mode`.

    queue (IMPALA, as Acme builds it; not `Table.queue`): uniform sampler,
    FIFO remover, each item sampled at most once, size `max_size`, rate
    limiter `MinSize(min_size)`.
      Why MinSize and not SampleToInsertRatio: with MinSize an insert never
      waits, so actors never depend on the learner; when the learner lags (JIT
      compile, checkpoint) the FIFO remover drops the oldest unsampled unrolls
      (bounded staleness, which V-trace corrects). The only wait left is the
      learner waiting for data while the table holds fewer than `min_size`
      items, bounded by the dataset's `rate_limiter_timeout_ms`; as soon as
      any actor inserts, it ends. Nothing can deadlock because nothing on the
      insert side ever waits. A ratio limiter would put actors in lockstep with
      the learner (every learner pause becomes an insert timeout in every
      actor), and its accounting drifts in a queue: reverb's limiter counts an
      item dropped by the remover as an insert still owed a sample (deletes do
      not enter inserts * spi - samples), after which the table only refills to
      `min_size`.
    uniform: uniform sampler, FIFO remover, no limit on times sampled, rate
    limiter SampleToInsertRatio(samples_per_insert, min_size, error_buffer)
    with error_buffer = max(2 * max(1, spi), 2 * batch_size) samples: wide
    enough for the learner to draw a whole batch (plus one in flight) in one go
    and for actors to keep inserting for a learner step's worth of items
    (batch / spi) while the learner computes, and at least the minimum reverb
    accepts (2 * max(1, spi)) so neither side can be blocked with the other
    unable to move.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    max_size = resolve_max_size(cfg, batch_size)
    signature = table_signature(observation_shape, num_actions, unroll_length)
    if cfg.mode == "queue":
        return [reverb.Table(
            name=TABLE,
            sampler=reverb.selectors.Uniform(),
            remover=reverb.selectors.Fifo(),
            max_size=max_size,
            max_times_sampled=1,
            rate_limiter=reverb.rate_limiters.MinSize(cfg.min_size),
            signature=signature)]
    if cfg.mode == "uniform":
        spi = float(cfg.samples_per_insert)
        error_buffer = max(2.0 * max(1.0, spi), 2.0 * batch_size)
        return [reverb.Table(
            name=TABLE,
            sampler=reverb.selectors.Uniform(),
            remover=reverb.selectors.Fifo(),
            max_size=max_size,
            max_times_sampled=0,  # unlimited
            rate_limiter=reverb.rate_limiters.SampleToInsertRatio(
                samples_per_insert=spi, min_size_to_sample=cfg.min_size,
                error_buffer=error_buffer),
            signature=signature)]
    raise ValueError(f"replay mode={cfg.mode!r} must be 'queue' or 'uniform'")


def server_address(server: reverb.Server) -> str:
    """'localhost:PORT' of a server running in this process (or on this host)."""
    return f"localhost:{server.port}"


def address_of(server: Union[str, reverb.Client]) -> str:
    """'host:port' of a `reverb.Client` (what a Launchpad replay handle
    dereferences to) or of an address string."""
    return server.server_address if isinstance(server, reverb.Client) else str(server)


def table_size(address_or_client: Union[str, reverb.Client], table: str = TABLE,
               timeout_s: int = 10) -> int:
    """Current number of items in `table` (bounded by `timeout_s`)."""
    client = _as_client(address_or_client)
    info = _server_info(client, table, timeout_s)
    return int(info[table].current_size)


def _as_client(address_or_client: Union[str, reverb.Client]) -> reverb.Client:
    if isinstance(address_or_client, reverb.Client):
        return address_or_client
    if not isinstance(address_or_client, str) or not address_or_client:
        raise TypeError(f"expected a reverb.Client or a 'host:port' address, "
                        f"got {address_or_client!r}")
    return reverb.Client(address_or_client)


def _server_info(client: reverb.Client, table: str, timeout_s: int):
    try:
        info = client.server_info(max(1, int(timeout_s)))
    except reverb.DeadlineExceededError as e:
        raise ReplayTimeoutError(
            f"reverb server at {client.server_address} did not answer within "
            f"{timeout_s} s (is it running?)") from e
    if table not in info:
        raise ReplayError(f"reverb server at {client.server_address} has no table "
                          f"{table!r}; it has {sorted(info)}")
    return info


# ----------------------------------------------------------------------------
# Actor side
# ----------------------------------------------------------------------------
class TrajectoryWriter:
    """Writes the unrolls of N environments that one actor steps together.

    `append(step)` takes one time step of all N environments (every field has
    a leading axis N and no time axis). After the (T + 1)-th step, and then
    every T steps, it creates one item per environment from that
    environment's last T + 1 steps, so consecutive items overlap by one step.

    One reverb TrajectoryWriter (one gRPC stream, one background thread)
    serves all N environments: each (environment, field) is its own column,
    and an item references only its environment's columns. Measured on the
    2-core box (84x84x4 frames, T=20, N=8 and 16, server in another process):
    one writer and N one-env writers both write 5-8k env steps/s, within
    noise of each other and well above what the envs produce; one writer
    keeps one stream and one thread per actor instead of N, waits once per
    round of items instead of N times in a row, and has no ordering between
    writers that could block.

    Back-pressure: `create_item` never blocks; after each round of items the
    writer waits until at most `max_in_flight_items` items are unconfirmed,
    for at most `timeout_ms`. In queue mode inserts never wait on the rate
    limiter, so this only waits for the network; in uniform mode it also waits
    while the learner is behind the samples-per-insert ratio. A wait that runs
    out raises `ReplayTimeoutError`; the step *has* been recorded and the
    pending items keep going in the background, so the caller may log, check
    for a stop request and simply go on appending (or call `flush()` again).
    Do not append the same step again.
    """

    def __init__(self, client_or_address: Union[str, reverb.Client], num_envs: int,
                 unroll_length: int, table: str = TABLE, timeout_ms: int = 30_000,
                 max_in_flight_items: Optional[int] = None):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be a positive integer")
        if not isinstance(unroll_length, int) or unroll_length < 1:
            raise ValueError(f"unroll_length={unroll_length!r} must be a positive integer")
        if not isinstance(timeout_ms, int) or timeout_ms < 1:
            raise ValueError(f"timeout_ms={timeout_ms!r} must be a positive integer")
        self._client = _as_client(client_or_address)
        self._address = self._client.server_address
        self._num_envs = num_envs
        self._T = unroll_length
        self._table = table
        self._timeout_ms = timeout_ms
        # Default: one round of items (one per env) may stay unconfirmed, so the
        # actor does not wait for a round trip after every round.
        self._max_in_flight = num_envs if max_in_flight_items is None else int(max_in_flight_items)
        if self._max_in_flight < 0:
            raise ValueError(f"max_in_flight_items={max_in_flight_items!r} must be >= 0")
        _server_info(self._client, table, max(1, math.ceil(timeout_ms / 1000)))
        self._writer = self._client.trajectory_writer(
            num_keep_alive_refs=unroll_length + 1, get_signature_timeout_ms=timeout_ms)
        self._steps = 0
        self._closed = False
        self.items_written = 0

    @property
    def num_envs(self) -> int:
        return self._num_envs

    @property
    def address(self) -> str:
        return self._address

    @property
    def client(self) -> reverb.Client:
        return self._client

    @property
    def steps(self) -> int:
        """Steps appended so far (per environment)."""
        return self._steps

    def append(self, step: Trajectory) -> int:
        """Appends one step of every environment; returns the items created (0 or N)."""
        if self._closed:
            raise ReplayError("TrajectoryWriter.append called after close()")
        flat = self._flatten(step)
        self._writer.append(flat)
        self._steps += 1
        T = self._T
        if self._steps < T + 1 or (self._steps - 1) % T != 0:
            return 0
        history = self._writer.history  # flat tuple of N * num_fields columns
        for e in range(self._num_envs):
            cols = history[e * _NUM_FIELDS:(e + 1) * _NUM_FIELDS]
            self._writer.create_item(
                table=self._table, priority=1.0,
                trajectory=Trajectory(*[c[-(T + 1):] for c in cols]))
        self.items_written += self._num_envs
        self._flush(self._max_in_flight)
        return self._num_envs

    def flush(self) -> None:
        """Waits (at most timeout_ms) until every created item is in the table."""
        if not self._closed:
            self._flush(0)

    def close(self) -> None:
        """Flushes (bounded; a timeout is logged, not raised) and closes. Idempotent."""
        if self._closed:
            return
        try:
            self._flush(0)
        except ReplayError as e:
            logging.warning("TrajectoryWriter.close: %s; pending items may be lost", e)
        finally:
            self._closed = True
            self._writer.close()

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _flush(self, block_until_num_items: int) -> None:
        try:
            self._writer.flush(block_until_num_items, timeout_ms=self._timeout_ms)
        except reverb.DeadlineExceededError as e:
            raise ReplayTimeoutError(
                f"replay insert into table {self._table!r} at {self._address} not "
                f"confirmed within timeout_ms={self._timeout_ms} ({block_until_num_items} "
                f"items may stay in flight); the server is unreachable or its rate limiter "
                f"is blocking inserts (learner behind?). The step was recorded; keep "
                f"appending or call flush() again") from e
        except RuntimeError as e:
            raise ReplayError(f"replay insert into table {self._table!r} at "
                              f"{self._address} failed: {e}") from e

    def _flatten(self, step: Trajectory) -> tuple:
        if len(step) != _NUM_FIELDS:
            raise TypeError(f"expected a Trajectory with {_NUM_FIELDS} fields, got {type(step)}")
        n = self._num_envs
        fields = []
        for name, value, dtype in zip(Trajectory._fields, step, _FIELD_DTYPES):
            arr = np.asarray(value)
            if arr.ndim == 0 or arr.shape[0] != n:
                raise ValueError(f"Trajectory.{name} has shape {arr.shape}: the leading "
                                 f"axis must be num_envs={n} (one step, no time axis)")
            if arr.dtype != dtype:
                if not np.can_cast(arr.dtype, dtype, casting="same_kind"):
                    raise TypeError(f"Trajectory.{name} has dtype {arr.dtype}, "
                                    f"expected {dtype}")
                arr = arr.astype(dtype)
            fields.append(arr)
        # env-major flat tuple: column e * num_fields + f is field f of env e.
        return tuple(fields[f][e] for e in range(n) for f in range(_NUM_FIELDS))


def server_reachable(client: reverb.Client, timeout_s: int = 1) -> bool:
    """True if the server answers `server_info` within `timeout_s`."""
    try:
        client.server_info(max(1, int(timeout_s)))
        return True
    except Exception:  # noqa: BLE001 -- any failure means "not now"
        return False


class _Backoff:
    """Waits of 1 s doubling up to `max_s`, cut short by a stop request."""

    def __init__(self, max_s: float):
        self.delay, self._max_s = 1.0, max_s

    def wait(self, should_stop: Callable[[], bool]) -> bool:
        """Sleeps `delay` in 0.2 s slices, then doubles it; False if stopped."""
        deadline = time.monotonic() + self.delay
        self.delay = min(2 * self.delay, self._max_s)
        while time.monotonic() < deadline:
            if should_stop():
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return not should_stop()


def connect_writer(make_writer: Callable[[], "TrajectoryWriter"], should_stop: Callable[[], bool],
                   name: str, address: str, log: Callable[[str], None] = print,
                   max_backoff_s: float = 30.0) -> Optional["TrajectoryWriter"]:
    """`make_writer()`, retried with exponential backoff (1 s doubling to
    `max_backoff_s`) while the server does not answer; None if stopped."""
    backoff, attempt = _Backoff(max_backoff_s), 0
    while not should_stop():
        try:
            return make_writer()
        except ReplayTimeoutError as e:
            attempt += 1
            log(f"[{name}] replay server at {address} unreachable ({e}); "
                f"retry {attempt} in {backoff.delay:.0f} s")
            if not backoff.wait(should_stop):
                return None
    return None


def wait_until_taken(writer: "TrajectoryWriter", should_stop: Callable[[], bool], name: str,
                     log: Callable[[str], None] = print,
                     max_backoff_s: float = 30.0) -> Optional[float]:
    """After an insert timed out: flush until Reverb holds every pending item.

    While the server answers, the wait is the rate limiter throttling this
    actor, so it just flushes again. While it does not answer, it logs a line
    and backs off (1 s doubling to `max_backoff_s`) before trying again; the
    writer's gRPC stream reconnects by itself once the server is back.
    Returns the seconds the server was unreachable (0.0 if never), or None if
    a stop was requested first.
    """
    backoff, down_since = _Backoff(max_backoff_s), None
    while not should_stop():
        try:
            writer.flush()
            if down_since is not None:
                outage = time.monotonic() - down_since
                log(f"[{name}] replay server at {writer.address} is back after "
                    f"{outage:.0f} s; carrying on")
                return outage
            return 0.0
        except ReplayTimeoutError:
            if server_reachable(writer.client):
                continue  # rate limited: keep waiting for the learner
            if down_since is None:
                down_since = time.monotonic()
            log(f"[{name}] replay server at {writer.address} unreachable for "
                f"{time.monotonic() - down_since:.0f} s; retrying in {backoff.delay:.0f} s")
            if not backoff.wait(should_stop):
                return None
    return None


# ----------------------------------------------------------------------------
# Learner side
# ----------------------------------------------------------------------------
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
            except Exception as e:  # noqa: BLE001 -- handed to the consumer
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

    def __init__(self, dataset: tf.data.Dataset, address: str, table: str,
                 batch_size: int, timeout_ms: int):
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
            self._thread = threading.Thread(target=self._puller.run, daemon=True,
                                            name=f"replay-sampler-{self._table}")
            self._thread.start()
        try:
            kind, value = self._puller.queue.get(timeout=self._timeout_ms / 1000.0)
        except queue.Empty:
            raise ReplayTimeoutError(self._timeout_message()) from None
        if kind == "batch":
            self.batches += 1
            return value
        raise ReplayError(f"sampling replay table {self._table!r} at {self._address} failed: "
                          f"{type(value).__name__}: {getattr(value, 'message', value)}") from value

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
        head = (f"no batch of {self._batch_size} trajectories from replay table "
                f"{self._table!r} at {self._address} within timeout_ms={self._timeout_ms}")
        since = time.monotonic() - self._puller.last_rate_limited
        if since < 2 * self._timeout_ms / 1000.0 + 1.0:
            why = ("reverb's rate limiter blocked sampling: the table holds fewer than "
                   "min_size items (actors not writing yet?) or, in uniform mode, the "
                   "samples-per-insert ratio is ahead of the inserts")
        else:
            why = ("the sample stream made no progress: server unreachable, or items "
                   "arrive slower than one batch per timeout")
        return f"{head}: {why}. Call next() again to keep waiting."


def make_dataset(server_address: Union[str, reverb.Client], batch_size: int, cfg: ReplayConfig,
                 table: str = TABLE, *, max_in_flight_samples_per_worker: Optional[int] = None,
                 num_workers_per_iterator: int = -1,
                 next_timeout_ms: Optional[int] = None) -> TrajectoryIterator:
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
            server_address=server_address, table=table,
            max_in_flight_samples_per_worker=in_flight,
            num_workers_per_iterator=num_workers_per_iterator,
            rate_limiter_timeout_ms=cfg.timeout_ms,
            get_signature_timeout_secs=timeout_s)
    except reverb.DeadlineExceededError as e:
        raise ReplayTimeoutError(f"reverb server at {server_address} did not send the "
                                 f"signature of {table!r} within {timeout_s} s") from e
    except ValueError as e:
        raise ReplayError(str(e)) from e

    def to_trajectory(sample):
        data = sample.data
        return tuple(getattr(data, name) for name in Trajectory._fields)

    ds = ds.map(to_trajectory)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda *fields: tuple(_time_major(x) for x in fields))
    ds = ds.prefetch(cfg.prefetch_batches)
    return TrajectoryIterator(ds, server_address, table, batch_size,
                              next_timeout_ms or cfg.timeout_ms)


__all__ = [
    "TABLE", "ReplayError", "ReplayTimeoutError", "TrajectoryIterator", "TrajectoryWriter",
    "address_of", "connect_writer", "make_dataset", "make_tables", "resolve_max_size",
    "server_address", "server_reachable", "table_signature", "table_size", "wait_until_taken",
]
