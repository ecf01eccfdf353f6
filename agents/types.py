"""Data that crosses process boundaries: the trajectory an actor writes.

Time index t of a trajectory holds what the actor saw and did at step t:
  observation[t]       obs_t                          uint8  [..., H, W, C]
  action[t]            a_t ~ mu(.|obs_t)              int32
  reward[t]            r_t received after a_t          float32 (unclipped)
  discount[t]          0 if the episode ended after a_t, else 1   float32
  behaviour_logits[t]  logits of mu(.|obs_t)          float32 [..., A]
  first[t]             1 if obs_t starts an episode    float32

An unroll has T + 1 steps; consecutive unrolls of one environment overlap by
one step, so step T (the bootstrap observation) is step 0 of the next unroll.
The learner uses steps 0..T-1 for the loss and obs_T only to bootstrap.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Tuple

import numpy as np


class Trajectory(NamedTuple):
    # Each field holds an array (NumPy on the host, jax on the devices) or,
    # in a spec, an `ArraySpec`.
    observation: Any
    action: Any
    reward: Any
    discount: Any
    behaviour_logits: Any
    first: Any


class ArraySpec(NamedTuple):
    shape: Tuple[int, ...]
    dtype: np.dtype


def step_spec(observation_shape: Tuple[int, ...], num_actions: int) -> Trajectory:
    """Spec of one time step (no time axis)."""
    return Trajectory(
        observation=ArraySpec(tuple(observation_shape), np.dtype(np.uint8)),
        action=ArraySpec((), np.dtype(np.int32)),
        reward=ArraySpec((), np.dtype(np.float32)),
        discount=ArraySpec((), np.dtype(np.float32)),
        behaviour_logits=ArraySpec((num_actions,), np.dtype(np.float32)),
        first=ArraySpec((), np.dtype(np.float32)),
    )


def trajectory_spec(
    observation_shape: Tuple[int, ...], num_actions: int, unroll_length: int
) -> Trajectory:
    """Spec of one unroll: every field gets a leading time axis of T + 1."""
    return Trajectory(
        *[
            ArraySpec((unroll_length + 1,) + s.shape, s.dtype)
            for s in step_spec(observation_shape, num_actions)
        ]
    )


def zeros_like_spec(spec: Trajectory, batch_shape: Tuple[int, ...] = ()) -> Trajectory:
    """A Trajectory of zeros with `batch_shape` prepended to every field."""
    return Trajectory(*[np.zeros(batch_shape + s.shape, s.dtype) for s in spec])
