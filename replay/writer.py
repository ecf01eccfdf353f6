"""The actor side of the replay: `TrajectoryWriter` (T + 1 step items per
environment, overlapping by one step) and the bounded, backing-off waits for
a server that is starting, throttling or gone."""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Optional, Union

import numpy as np

from agents.types import Trajectory
from replay.tables import (
    TABLE,
    ReplayError,
    ReplayTimeoutError,
    _FIELD_DTYPES,
    _NUM_FIELDS,
    _as_client,
    _server_info,
    reverb,
)


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

    def __init__(
        self,
        client_or_address: Union[str, reverb.Client],
        num_envs: int,
        unroll_length: int,
        table: str = TABLE,
        timeout_ms: int = 30_000,
        max_in_flight_items: Optional[int] = None,
    ):
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
            num_keep_alive_refs=unroll_length + 1, get_signature_timeout_ms=timeout_ms
        )
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
            cols = history[e * _NUM_FIELDS : (e + 1) * _NUM_FIELDS]
            self._writer.create_item(
                table=self._table,
                priority=1.0,
                trajectory=Trajectory(*[c[-(T + 1) :] for c in cols]),
            )
        self.items_written += self._num_envs
        self._flush(self._max_in_flight)
        return self._num_envs

    def flush(self) -> None:
        """Waits (at most timeout_ms) until every created item is in the table."""
        if not self._closed:
            self._flush(0)

    def close(self, flush: bool = True) -> bool:
        """Flushes (bounded; a timeout is logged, not raised; skipped with
        `flush=False`) and closes. Idempotent. False if pending items may be
        lost (the flush timed out or was skipped)."""
        if self._closed:
            return True
        flushed = False
        try:
            if flush:
                self._flush(0)
                flushed = True
        except ReplayError as e:
            logging.warning("TrajectoryWriter.close: %s; pending items may be lost", e)
        finally:
            self._closed = True
            self._writer.close()
        return flushed

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
                f"appending or call flush() again"
            ) from e
        except RuntimeError as e:
            raise ReplayError(
                f"replay insert into table {self._table!r} at {self._address} failed: {e}"
            ) from e

    def _flatten(self, step: Trajectory) -> tuple:
        if len(step) != _NUM_FIELDS:
            raise TypeError(f"expected a Trajectory with {_NUM_FIELDS} fields, got {type(step)}")
        n = self._num_envs
        fields = []
        for name, value, dtype in zip(Trajectory._fields, step, _FIELD_DTYPES):
            arr = np.asarray(value)
            if arr.ndim == 0 or arr.shape[0] != n:
                raise ValueError(
                    f"Trajectory.{name} has shape {arr.shape}: the leading "
                    f"axis must be num_envs={n} (one step, no time axis)"
                )
            if arr.dtype != dtype:
                if not np.can_cast(arr.dtype, dtype, casting="same_kind"):
                    raise TypeError(f"Trajectory.{name} has dtype {arr.dtype}, expected {dtype}")
                arr = arr.astype(dtype)
            fields.append(arr)
        # env-major flat tuple: column e * num_fields + f is field f of env e.
        return tuple(fields[f][e] for e in range(n) for f in range(_NUM_FIELDS))


def server_reachable(client: reverb.Client, timeout_s: int = 1) -> bool:
    """True if the server answers `server_info` within `timeout_s`."""
    try:
        client.server_info(max(1, int(timeout_s)))
        return True
    except Exception:
        return False


class _Backoff:
    """Waits of `first_s` doubling up to `max_s`, cut short by a stop request."""

    def __init__(self, max_s: float, first_s: float = 1.0):
        self.delay, self._max_s = first_s, max_s

    def wait(self, should_stop: Callable[[], bool]) -> bool:
        """Sleeps `delay` in 0.2 s slices, then doubles it; False if stopped."""
        deadline = time.monotonic() + self.delay
        self.delay = min(2 * self.delay, self._max_s)
        while time.monotonic() < deadline:
            if should_stop():
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return not should_stop()


def connect_writer(
    make_writer: Callable[[], "TrajectoryWriter"],
    should_stop: Callable[[], bool],
    name: str,
    address: str,
    log: Callable[[str], None] = print,
    max_backoff_s: float = 30.0,
) -> Optional["TrajectoryWriter"]:
    """`make_writer()`, retried with exponential backoff (1 s doubling to
    `max_backoff_s`) while the server does not answer; None if stopped."""
    backoff, attempt = _Backoff(max_backoff_s), 0
    while not should_stop():
        try:
            return make_writer()
        except ReplayTimeoutError as e:
            attempt += 1
            log(
                f"[{name}] replay server at {address} unreachable ({e}); "
                f"retry {attempt} in {backoff.delay:.0f} s"
            )
            if not backoff.wait(should_stop):
                return None
    return None


def wait_while_full(
    client: reverb.Client,
    should_stop: Callable[[], bool],
    room: int = 1,
    table: str = TABLE,
    max_backoff_s: float = 1.0,
) -> float:
    """Wait while `table` has room for fewer than `room` more items (an
    actor's next unroll adds one per env; past `max_size` the FIFO remover
    would drop the oldest), polling 0.05 s doubling to `max_backoff_s`.
    Returns the seconds waited. An unanswered poll ends the wait: the
    writer's own timeouts handle a server that is gone."""
    backoff, start = _Backoff(max_backoff_s, first_s=0.05), time.monotonic()
    while not should_stop():
        try:
            info = _server_info(client, table, 1)[table]
        except ReplayTimeoutError:
            break
        if info.max_size - info.current_size >= room or not backoff.wait(should_stop):
            break
    return time.monotonic() - start


def wait_until_taken(
    writer: "TrajectoryWriter",
    should_stop: Callable[[], bool],
    name: str,
    log: Callable[[str], None] = print,
    max_backoff_s: float = 30.0,
) -> Optional[float]:
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
                log(
                    f"[{name}] replay server at {writer.address} is back after "
                    f"{outage:.0f} s; carrying on"
                )
                return outage
            return 0.0
        except ReplayTimeoutError:
            if server_reachable(writer.client):
                continue  # rate limited: keep waiting for the learner
            if down_since is None:
                down_since = time.monotonic()
            log(
                f"[{name}] replay server at {writer.address} unreachable for "
                f"{time.monotonic() - down_since:.0f} s; retrying in {backoff.delay:.0f} s"
            )
            if not backoff.wait(should_stop):
                return None
    return None
