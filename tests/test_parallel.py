"""pmap over forced host devices gives the same update as one device.

Planted bug caught: gradients or meta-gradients averaged (pmean) over
devices instead of summed (each device's loss is its shard's part of the sum).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from agents import parallel
from tests.conftest import ROOT, fake_batches

SCRIPT = textwrap.dedent("""
    import json, os, sys
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = flags + " --xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {root!r})
    from agents import builders, parallel
    from configs import make_config
    from tests.conftest import fake_batches
    assert len(jax.local_devices()) == 4, jax.local_devices()
    out = {{}}
    variants = {{"impala": ("impala", []), "stacx": ("stacx", []),
                "bmg": ("bmg", ["meta.matching=kl_v", "meta.target_step=rms"]),
                "bmg_l2": ("bmg", ["meta.matching=l2"])}}
    for name, (agent, extra) in variants.items():
        cfg = make_config("test", agent, overrides=["meta.L=2", "learner.batch_size=8"] + extra)
        net = builders.make_networks(cfg, (12, 12, 2), 4)
        single = builders.make_learner(cfg, net)
        state = single.init(jax.random.PRNGKey(1))
        batches = fake_batches(single.num_batches, 6, 8, (12, 12, 2), 4, seed=3)
        s1, m1 = jax.jit(single.update)(state, batches)
        s1, m1 = jax.jit(single.update)(s1, batches)
        pl = parallel.ParallelLearner(lambda ax: builders.make_learner(cfg, net, ax),
                                      jax.local_devices())
        rs = pl.replicate(state)
        rs, m4 = pl.update(rs, batches)
        rs, m4 = pl.update(rs, batches)
        s4 = pl.unreplicate(rs)
        # all devices hold the same parameters
        spread = max(float(jnp.abs(x - x[0]).max()) for x in jax.tree_util.tree_leaves(rs.params))
        diff = max(float(jnp.abs(a - b).max()) for a, b in zip(
            jax.tree_util.tree_leaves((s1.params, s1.meta.logits)),
            jax.tree_util.tree_leaves((s4.params, s4.meta.logits))))
        moved = max(float(jnp.abs(a - b).max()) for a, b in zip(
            jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(s4.params)))
        # every logged number (losses, meta-loss, norms) is the same too
        loss_diff = max(abs(float(m1[k]) - float(m4[k])) / (1.0 + abs(float(m1[k]))) for k in m1)
        out[name] = dict(diff=diff, spread=spread, moved=moved, loss_diff=loss_diff,
                          step=int(s4.step))
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_pmap_four_devices_matches_one_device():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=ROOT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for agent, r in result.items():
        assert r["step"] == 2, (agent, r)
        assert r["moved"] > 1e-4, (agent, r)  # the update did something
        assert r["spread"] == 0.0, (agent, r)  # replicas agree exactly
        assert r["diff"] < 1e-5, (agent, r)  # same new parameters as one device
        assert r["loss_diff"] < 1e-4, (agent, r)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    batches = fake_batches(1, 3, 6, (4, 4, 1), 2)
    with pytest.raises(
        ValueError,
        match=r"LearnerConfig.batch_size=6 is not allowed with 4 "
        r"devices: the global batch must divide",
    ):
        parallel.shard(batches, 4)
    sharded = parallel.shard(batches, 3)
    assert sharded.observation.shape == (3, 1, 4, 2, 4, 4, 1)
    np.testing.assert_array_equal(sharded.action[1, 0, :, 0], batches.action[0, :, 2])


def test_more_devices_than_available_is_a_clear_error():
    with pytest.raises(ValueError, match=r"LearnerConfig.num_devices=64 is not allowed"):
        parallel.resolve_devices(64)
