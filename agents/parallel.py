"""Data-parallel learner: the pure update under `jax.pmap` over local devices.

The global batch [N, T + 1, B, ...] is split along B into D equal shards
(one per device); inside the update, gradients and meta-gradients are averaged
with `lax.pmean` over `AXIS`, so every device holds the same parameters.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

try:  # jax 0.12 has no PmapSharding (pmap is jit + shard_map there)
    from jax.sharding import PmapSharding as pmap_sharding
except ImportError:
    pmap_sharding = None  # type: ignore[assignment, misc]

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


def pmap_layout(devices: Sequence) -> Callable:
    """shape -> the sharding pmap takes without copying: `PmapSharding` for the
    original pmap; since jax 0.8 pmap is jit + shard_map, which takes arrays
    split over a 1-D mesh of the devices (and jax 0.12 has no PmapSharding)."""
    if pmap_sharding is not None and not getattr(jax.config, "jax_pmap_shmap_merge", False):
        return lambda shape: pmap_sharding.default(shape, 0, devices)
    layout = NamedSharding(Mesh(np.asarray(devices), (AXIS,)), PartitionSpec(AXIS))
    return lambda shape: layout


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
        self._layout = pmap_layout(self.devices)
        self._update = jax.pmap(
            self.learner.update,
            axis_name=AXIS,
            devices=self.devices,
            donate_argnums=(0,) if donate else (),
        )

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def _put_sharded(self, tree):
        """Arrays [D, ...] on the host -> one slice on each device."""
        return jax.tree_util.tree_map(lambda x: jax.device_put(x, self._layout(x.shape)), tree)

    def replicate(self, state: TrainingState) -> TrainingState:
        """A copy of `state` on every device (jax.device_put_replicated, which
        newer jax removed)."""
        d = self.num_devices
        return self._put_sharded(
            jax.tree_util.tree_map(
                lambda x: np.broadcast_to(np.asarray(x), (d,) + np.shape(x)), state
            )
        )

    @staticmethod
    def unreplicate(state):
        return jax.tree_util.tree_map(lambda x: x[0], state)

    def put(self, batches: Trajectory) -> Trajectory:
        """[N, T + 1, B, ...] numpy -> [D, N, T + 1, B / D, ...] on the devices,
        one shard each (what the pmapped update takes without copying)."""
        return self._put_sharded(shard(batches, self.num_devices))

    def update(
        self, replicated_state: TrainingState, batches: Trajectory
    ) -> Tuple[TrainingState, dict]:
        """One update on a global batch (numpy, or already `put` on the
        devices); returns the replicated state and the first device's metrics.
        Both are device arrays: nothing here waits for the update to finish."""
        if isinstance(jax.tree_util.tree_leaves(batches)[0], np.ndarray):
            batches = self.put(batches)
        state, metrics = self._update(replicated_state, batches)
        return state, jax.tree_util.tree_map(lambda x: x[0], metrics)
