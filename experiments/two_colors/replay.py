"""A prioritised replay of recent rollouts for the Q(lambda) agent.

A FIFO of the last N rollouts (fixed shapes, so it lives inside the training
`lax.scan`); each inner update draws rollouts from it uniformly or in
proportion to priority^exponent, the priority being a rollout's largest TD
error when last learned on (Schaul et al. 2016, without importance weights).
Pure functions of a `Replay` value.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from experiments.two_colors.agents import Rollout

Array = jax.Array


class Replay(NamedTuple):
    """A FIFO of the last N rollouts (leading axis N), filled from slot 0."""

    rollouts: Rollout
    priority: Array  # float32 [N]: largest |G - Q(s, a)| of each rollout when last learned on
    pushed: Array  # int32 []: rollouts pushed so far (not `count`: tuple.count is a method)


def replay_init(first: Rollout, capacity: int) -> Replay:
    """A FIFO of `capacity` slots holding `first` in slot 0."""
    empty = jax.tree_util.tree_map(lambda x: jnp.zeros((capacity,) + x.shape, x.dtype), first)
    return replay_push(
        Replay(empty, jnp.zeros((capacity,), jnp.float32), jnp.zeros((), jnp.int32)), first
    )


def replay_push(replay: Replay, rollout: Rollout) -> Replay:
    """The newest rollout overwrites the oldest once the FIFO is full; it gets
    the largest priority held (1 in an empty FIFO), so it is drawn soon."""
    n = replay.rollouts.action.shape[0]
    slot = replay.pushed % n
    rollouts = jax.tree_util.tree_map(lambda b, x: b.at[slot].set(x), replay.rollouts, rollout)
    top = jnp.where(replay.pushed > 0, jnp.max(replay.priority), 1.0)
    return Replay(rollouts, replay.priority.at[slot].set(top), replay.pushed + 1)


def replay_sample(replay: Replay, size: int, exponent: float, key) -> Array:
    """`size` slot indices, with replacement, from the filled slots: uniformly
    for exponent 0, else with probability proportional to priority^exponent
    (prioritised replay, Schaul et al. 2016, without importance weights)."""
    n = replay.rollouts.action.shape[0]
    filled = jnp.arange(n) < jnp.minimum(replay.pushed, n)
    if exponent == 0:
        logits = jnp.where(filled, 0.0, -jnp.inf)
    else:
        logits = jnp.where(filled, exponent * jnp.log(replay.priority + 1e-6), -jnp.inf)
    return jax.random.categorical(key, logits, shape=(size,))


def replay_batch(replay: Replay, fresh: Rollout, idx: Array) -> Rollout:
    """The fresh rollout plus the rollouts in slots `idx`: transitions
    [1 + len(idx), ...], the fresh rollout's meta input."""

    def join(f: Array, b: Array) -> Array:
        return jnp.concatenate([f[None], b[idx]])

    held = replay.rollouts
    return Rollout(
        join(fresh.observation, held.observation),
        join(fresh.action, held.action),
        join(fresh.reward, held.reward),
        fresh.meta_input,
    )


def replay_reprioritise(replay: Replay, idx: Array, td_max: Array) -> Replay:
    """New priorities of the drawn slots: td_max [1 + len(idx)], fresh rollout first."""
    return replay._replace(priority=replay.priority.at[idx].set(td_max[1:]))
