"""Data-parallel learner: the pure update under `jax.pmap` over local devices.

The global batch [N, T + 1, B, ...] is split along B into D equal shards
(one per device); inside the update, gradients and meta-gradients are averaged
with `lax.pmean` over `AXIS`, so every device holds the same parameters.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import jax
import numpy as np

from agents.learning import Learner, TrainingState
from agents.types import Trajectory

AXIS = "devices"


def resolve_devices(num_devices: int = 0) -> list:
    """The first `num_devices` local devices (0 = all), with a clear error."""
    local = jax.local_devices()
    if num_devices == 0:
        return list(local)
    if num_devices > len(local):
        raise ValueError(
            f"LearnerConfig.num_devices={num_devices} is not allowed: only "
            f"{len(local)} local device(s) ({local[0].platform}); use 0 for all"
        )
    return list(local[:num_devices])


def check_divisible(batch_size: int, num_devices: int) -> None:
    if batch_size % num_devices:
        raise ValueError(
            f"LearnerConfig.batch_size={batch_size} is not allowed with {num_devices} devices: "
            f"the global batch must divide by the device count (e.g. "
            f"{num_devices * max(1, round(batch_size / num_devices))})"
        )


def shard(batches: Trajectory, num_devices: int) -> Trajectory:
    """[N, T + 1, B, ...] -> [D, N, T + 1, B / D, ...] (numpy, on the host)."""
    batch_size = batches.action.shape[2]
    check_divisible(batch_size, num_devices)

    def split(x):
        x = np.asarray(x)
        n, t, b = x.shape[:3]
        x = x.reshape((n, t, num_devices, b // num_devices) + x.shape[3:])
        return np.moveaxis(x, 2, 0)

    return jax.tree_util.tree_map(split, batches)


class ParallelLearner:
    """Holds a replicated TrainingState and applies the pmapped update.

    `make_learner_fn(axis_name)` must return a `Learner` whose update averages
    over `axis_name` (see `agents.learning.make_learner`).
    """

    def __init__(
        self,
        make_learner_fn: Callable[[Optional[str]], Learner],
        devices: Sequence,
        donate: bool = True,
    ):
        self.devices = list(devices)
        self.learner = make_learner_fn(AXIS)
        self._update = jax.pmap(
            self.learner.update,
            axis_name=AXIS,
            devices=self.devices,
            donate_argnums=(0,) if donate else (),
        )

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def replicate(self, state: TrainingState) -> TrainingState:
        return jax.device_put_replicated(state, self.devices)

    @staticmethod
    def unreplicate(state):
        return jax.tree_util.tree_map(lambda x: x[0], state)

    def update(
        self, replicated_state: TrainingState, batches: Trajectory
    ) -> Tuple[TrainingState, dict]:
        """One update on a global batch; returns the replicated state and host metrics."""
        state, metrics = self._update(replicated_state, shard(batches, self.num_devices))
        return state, jax.tree_util.tree_map(lambda x: x[0], metrics)
