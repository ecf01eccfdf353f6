"""Acme-style builder: the one place that makes a run's replay tables, the
actors' trajectory writer, the learner's dataset, the learner and the policy
from its RunConfig and the environment's facts.

The agent's JAX pieces come from `agents.builders`. The replay methods import
`replay` (TensorFlow and Reverb) when called, so a process that never touches
the replay, such as the evaluator, does not load them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

from agents import builders, learning, networks as networks_lib
from configs import RunConfig


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
        return builders.make_networks(self.cfg, self.observation_shape, self.num_actions)

    def make_learner(self, axis_name: Optional[str] = None) -> learning.Learner:
        return builders.make_learner(self.cfg, self.networks, axis_name)

    def make_policy(self, greedy: bool = False) -> Callable:
        return builders.make_policy(self.networks, greedy)

    def make_tables(self) -> list:
        """The Reverb tables (the replay node calls this in its own process)."""
        from replay import make_tables  # noqa: PLC0415 (TensorFlow: see the module docstring)

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
        from replay import TrajectoryWriter  # noqa: PLC0415 (TensorFlow: see the module docstring)

        return TrajectoryWriter(
            replay, num_envs, self.cfg.agent.unroll_length, timeout_ms=timeout_ms
        )

    def make_dataset(self, replay: Any, next_timeout_ms: Optional[int] = None):
        """The learner's time-major iterator of `Trajectory` batches of B."""
        from replay import make_dataset  # noqa: PLC0415 (TensorFlow: see the module docstring)

        return make_dataset(
            replay, self.cfg.learner.batch_size, self.cfg.replay, next_timeout_ms=next_timeout_ms
        )
