"""Reverb tables for trajectories, and what every replay user shares: the
table name, the server-address helpers, the errors.

This package is the only place in the project that imports TensorFlow
(through Reverb). GPUs are hidden from TensorFlow here, before anything
touches a device, so that TF never grabs accelerator memory that JAX needs
(docs/design.md section 7); the writer and the dataset import this module first.

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
from typing import List, Sequence, Tuple, Union

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
def table_signature(
    observation_shape: Sequence[int], num_actions: int, unroll_length: int
) -> Trajectory:
    """`Trajectory` of `tf.TensorSpec`, every field with a leading T + 1 axis."""
    spec = trajectory_spec(tuple(observation_shape), num_actions, unroll_length)
    return Trajectory(
        *[
            tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=name)
            for name, s in zip(Trajectory._fields, spec)
        ]
    )


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
            f"at least {batch_size + 2}, or 0 for 10 x batch = {10 * batch_size}"
        )
    if cfg.min_size > max_size:
        raise ValueError(
            f"replay min_size={cfg.min_size} is larger than max_size={max_size}: the "
            f"table could never hold enough items to allow sampling"
        )
    return max_size


def make_tables(
    cfg: ReplayConfig,
    batch_size: int,
    observation_shape: Sequence[int],
    num_actions: int,
    unroll_length: int,
) -> List[reverb.Table]:
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
        max_times_sampled, limiter = 1, reverb.rate_limiters.MinSize(cfg.min_size)
    elif cfg.mode == "uniform":
        spi = float(cfg.samples_per_insert)
        error_buffer = max(2.0 * max(1.0, spi), 2.0 * batch_size)
        max_times_sampled = 0  # unlimited
        limiter = reverb.rate_limiters.SampleToInsertRatio(
            samples_per_insert=spi, min_size_to_sample=cfg.min_size, error_buffer=error_buffer
        )
    else:
        raise ValueError(f"replay mode={cfg.mode!r} must be 'queue' or 'uniform'")
    table = reverb.Table(
        name=TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=max_size,
        max_times_sampled=max_times_sampled,
        rate_limiter=limiter,
        signature=signature,
    )
    return [table]


def server_address(server: reverb.Server) -> str:
    """'localhost:PORT' of a server running in this process (or on this host)."""
    return f"localhost:{server.port}"


def address_of(server: Union[str, reverb.Client]) -> str:
    """'host:port' of a `reverb.Client` (what a Launchpad replay handle
    dereferences to) or of an address string."""
    return server.server_address if isinstance(server, reverb.Client) else str(server)


def table_size(
    address_or_client: Union[str, reverb.Client], table: str = TABLE, timeout_s: int = 10
) -> int:
    """Current number of items in `table` (bounded by `timeout_s`)."""
    client = _as_client(address_or_client)
    info = _server_info(client, table, timeout_s)
    return int(info[table].current_size)


def _as_client(address_or_client: Union[str, reverb.Client]) -> reverb.Client:
    if isinstance(address_or_client, reverb.Client):
        return address_or_client
    if not isinstance(address_or_client, str) or not address_or_client:
        raise TypeError(
            f"expected a reverb.Client or a 'host:port' address, got {address_or_client!r}"
        )
    return reverb.Client(address_or_client)


def _server_info(client: reverb.Client, table: str, timeout_s: int):
    try:
        info = client.server_info(max(1, int(timeout_s)))
    except reverb.DeadlineExceededError as e:
        raise ReplayTimeoutError(
            f"reverb server at {client.server_address} did not answer within "
            f"{timeout_s} s (is it running?)"
        ) from e
    if table not in info:
        raise ReplayError(
            f"reverb server at {client.server_address} has no table "
            f"{table!r}; it has {sorted(info)}"
        )
    return info
