"""Acme-style builder: the one place that makes a run's replay tables, the
actors' trajectory writer, the learner's dataset, the learner and the policy
from its RunConfig and the environment's facts.

`make_networks`, `make_learner` and `make_policy` are the JAX pieces (also
used alone by tests and benchmarks). The `Builder`'s replay methods import
TensorFlow/Reverb when called, in the processes that need them; importing
this module imports neither.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from agents import learning, networks as networks_lib
from configs import RunConfig


def make_networks(
    cfg: RunConfig, observation_shape: Sequence[int], num_actions: int
) -> networks_lib.Networks:
    return networks_lib.make_networks(
        cfg.network, observation_shape, num_actions, cfg.agent.num_heads, cfg.agent.meta_dim
    )


def make_learner(
    cfg: RunConfig, networks: networks_lib.Networks, axis_name: Optional[str] = None
) -> learning.Learner:
    return learning.make_learner(
        networks,
        cfg.agent,
        cfg.meta,
        cfg.env.clip_reward,
        axis_name,
        decay_steps=cfg.inner_steps_budget,
    )


def make_policy(networks: networks_lib.Networks, greedy: bool = False) -> Callable:
    """(params, meta_logits [H, 6], obs [N, ...], key) -> (actions [N], logits [N, A]).

    Acts with the first head; `greedy` takes the argmax (evaluation)."""

    def policy(params, meta_logits, obs, key):
        eta = networks_lib.meta_conditioning(meta_logits, networks.meta_dim)
        logits, _ = networks.apply(params, obs, eta)
        logits = logits[..., 0, :]
        if greedy:
            actions = jnp.argmax(logits, axis=-1)
        else:
            actions = jax.random.categorical(key, logits)
        return actions.astype(jnp.int32), logits.astype(jnp.float32)

    return policy


class Builder:
    """Everything the nodes of one run build, from `cfg`, the observation
    shape and the number of actions. Picklable (Launchpad ships it to every
    node process); the networks are built on first use in each process."""

    def __init__(self, cfg: RunConfig, observation_shape: Sequence[int], num_actions: int):
        self.cfg = cfg
        self.observation_shape: Tuple[int, ...] = tuple(observation_shape)
        self.num_actions = int(num_actions)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "networks"}

    @functools.cached_property
    def networks(self) -> networks_lib.Networks:
        return make_networks(self.cfg, self.observation_shape, self.num_actions)

    def make_learner(self, axis_name: Optional[str] = None) -> learning.Learner:
        return make_learner(self.cfg, self.networks, axis_name)

    def make_policy(self, greedy: bool = False) -> Callable:
        return make_policy(self.networks, greedy)

    def make_tables(self) -> list:
        """The Reverb tables (the replay node calls this in its own process)."""
        from replay import make_tables

        cfg = self.cfg
        return make_tables(
            cfg.replay,
            cfg.learner.batch_size,
            self.observation_shape,
            self.num_actions,
            cfg.agent.unroll_length,
        )

    def make_writer(self, replay: Any, num_envs: int, timeout_ms: int):
        """An actor's `TrajectoryWriter`: T + 1 step items for each of its `num_envs`."""
        from replay import TrajectoryWriter

        return TrajectoryWriter(
            replay, num_envs, self.cfg.agent.unroll_length, timeout_ms=timeout_ms
        )

    def make_dataset(self, replay: Any, next_timeout_ms: Optional[int] = None):
        """The learner's time-major iterator of `Trajectory` batches of B."""
        from replay import make_dataset

        return make_dataset(
            replay, self.cfg.learner.batch_size, self.cfg.replay, next_timeout_ms=next_timeout_ms
        )
