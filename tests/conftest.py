"""Shared fixtures: small fake trajectories for agent-core tests."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from agents.types import Trajectory  # noqa: E402

# One persistent compilation cache for the tests and every program they start
# (launch.program.process_env passes it on): most tests compile what an
# earlier one did. Set before anything imports JAX.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The suite compiles hundreds of small programs and runs most of them for
# moments: with XLA's LLVM optimisation level 0 (its default is 3), eight
# compile-heavy agent-core tests took 85 CPU-s instead of 152 from a cold
# cache, and a 300-step Catch program used 57 CPU-s instead of 59. Added to,
# not instead of, any XLA_FLAGS given; the compilation cache keys on it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()


def pytest_collection_modifyitems(items):
    """Slow tests first, each group in file order. pytest-xdist's work stealing
    can take only queued tests, so a long test near the end of a worker's queue
    leaves the other worker idle for most of its length; with the long ones
    first, the run ends on tests of a second or two."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def fake_batches(num_batches, T, B, obs_shape, num_actions, seed=0, float_obs=False):
    """Random trajectories [N, T + 1, B, ...] with episode ends and rewards in [-2, 2]."""
    rng = np.random.default_rng(seed)
    lead = (num_batches, T + 1, B)
    if float_obs:
        obs = rng.normal(size=lead + tuple(obs_shape))
    else:
        obs = rng.integers(0, 256, size=lead + tuple(obs_shape), dtype=np.uint8)
    return Trajectory(
        observation=obs,
        action=rng.integers(0, num_actions, size=lead).astype(np.int32),
        reward=rng.uniform(-2, 2, size=lead).astype(np.float32),
        discount=(rng.random(lead) > 0.1).astype(np.float32),
        behaviour_logits=rng.normal(size=lead + (num_actions,)).astype(np.float32),
        first=(rng.random(lead) > 0.9).astype(np.float32),
    )


def enable_x64():
    """A `with` block with 64-bit JAX types, on the pinned jax
    (`jax.experimental.enable_x64`) and on newer ones (`jax.enable_x64`)."""
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as x64

    return x64()


@pytest.fixture
def programs():
    """Starts `tests.programs.Program`s; kills what is left of them afterwards."""
    from tests.programs import Program

    started = []
    yield lambda *a, **k: started.append(Program(*a, **k)) or started[-1]
    for p in started:
        p.cleanup()
