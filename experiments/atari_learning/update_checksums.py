"""Checksums of three learner updates on fixed random Atari-shaped batches, to
compare the agent's update across commits (same inputs, same seed):

    git worktree add /tmp/old 0180936
    (cd /tmp/old && PYTHONPATH=. python /path/to/this/file --out=old.json)
    PYTHONPATH=. python experiments/atari_learning/update_checksums.py --out=new.json

Runs on any commit whose `configs.make_config`, `agents.builders` and
`agents.types.Trajectory` have today's shape (0180936 on); a config field the
commit lacks is left out of the overrides. Writes the sum of |params|, the
first head's meta-parameter logits and the outer metrics after each update.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np

from agents import builders
from agents.types import Trajectory
from configs import make_config


def batches(rng, n: int, T: int, B: int) -> Trajectory:
    """n batches of B unrolls of T + 1 random Pong-shaped steps."""
    shape = (n, T + 1, B)
    return Trajectory(
        observation=rng.integers(0, 255, shape + (84, 84, 4)).astype(np.uint8),
        action=rng.integers(0, 6, shape).astype(np.int32),
        reward=rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], shape).astype(np.float32),
        discount=(1 - (rng.random(shape) < 0.02)).astype(np.float32),
        behaviour_logits=rng.normal(size=shape + (6,)).astype(np.float32),
        first=(rng.random(shape) < 0.02).astype(np.float32),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="bmg")
    parser.add_argument("--override", action="append", default=["meta.outer_sample=next"])
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config_text = open(os.path.join("configs", "config.py")).read()
    overrides = [o for o in args.override if o.split("=")[0].split(".")[-1] in config_text]
    cfg = make_config("debug", args.agent, "Pong", overrides=overrides)
    learner = builders.make_learner(cfg, builders.make_networks(cfg, (84, 84, 4), 6))
    state = learner.init(jax.random.PRNGKey(0))
    n = learner.num_batches
    rng = np.random.default_rng(0)
    update = jax.jit(learner.update)
    rows = []
    for i in range(args.updates):
        state, metrics = update(
            state, batches(rng, n, cfg.agent.unroll_length, cfg.learner.batch_size)
        )
        rows.append(
            {
                "update": i + 1,
                "sum_abs_params": float(
                    sum(jnp.sum(jnp.abs(x)) for x in jax.tree_util.tree_leaves(state.params))
                ),
                "meta_logits_h0": np.asarray(state.meta.logits)[0].tolist(),
                "metrics": {
                    k: float(v)
                    for k, v in sorted(metrics.items())
                    if k.startswith(("meta/loss", "meta/grad_norm", "outer/", "inner/loss/h0"))
                },
            }
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    out = {
        "commit": commit,
        "agent": args.agent,
        "overrides": overrides,
        "batches_per_update": n,
        "updates": rows,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out["updates"][-1]))


if __name__ == "__main__":
    main()
