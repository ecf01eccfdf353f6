"""Seconds per learner update for impala, stacx (MG, K = 1) and bmg (L = 1, 4),
on the debug (small) and full (deep ResNet) networks, with Atari-shaped fake
data (84x84x4, T = 20). Writes benchmarks/results/learner-<backend>.json.

    python -m benchmarks.learner [--batch 4] [--reps 3] [--networks small,deep]

In steady state every update reads B new trajectories (MG/BMG reuse the
validation batch as the next inner batch), so samples/s = B * T / seconds.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from agents import builders
from agents.types import Trajectory
from benchmarks.common import machine_facts, write_json
from configs import make_config

VARIANTS = [("impala", "impala", []), ("stacx", "stacx", ["meta.K=1"]),
            ("bmg_L1", "bmg", ["meta.L=1"]), ("bmg_L4", "bmg", ["meta.L=4"])]
PRESET = {"small": "debug", "deep": "full"}


def fake(num_batches: int, T: int, B: int, num_actions: int = 6) -> Trajectory:
    rng = np.random.default_rng(0)
    lead = (num_batches, T + 1, B)
    return Trajectory(
        observation=rng.integers(0, 256, lead + (84, 84, 4), dtype=np.uint8),
        action=rng.integers(0, num_actions, lead).astype(np.int32),
        reward=rng.uniform(-1, 1, lead).astype(np.float32),
        discount=np.ones(lead, np.float32),
        behaviour_logits=rng.normal(size=lead + (num_actions,)).astype(np.float32),
        first=np.zeros(lead, np.float32))


def time_update(network: str, agent: str, overrides, batch: int, T: int, reps: int):
    cfg = make_config(PRESET[network], agent,
                      overrides=overrides + [f"agent.unroll_length={T}",
                                             f"learner.batch_size={batch}"])
    nets = builders.make_networks(cfg, (84, 84, 4), 6)
    learner = builders.make_learner(cfg, nets)
    state = learner.init(jax.random.PRNGKey(0))
    data = jax.device_put(fake(learner.num_batches, T, batch))
    update = jax.jit(learner.update)
    t0 = time.perf_counter()
    state, _ = update(state, data)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        state, _ = update(state, data)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    return {"seconds_per_update": sec, "samples_per_s": batch * T / sec,
            "first_call_s": compile_s, "reps": reps, "batch": batch, "T": T,
            "batches_per_update": learner.num_batches}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--T", type=int, default=20)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--networks", default="small,deep")
    args = p.parse_args()
    results = {}
    for network in args.networks.split(","):
        for name, agent, overrides in VARIANTS:
            r = time_update(network, agent, overrides, args.batch, args.T, args.reps)
            results[f"{network}/{name}"] = r
            print(f"{network:5s} {name:7s} {r['seconds_per_update']:8.3f} s/update "
                  f"{r['samples_per_s']:8.1f} samples/s", flush=True)
        base = results[f"{network}/stacx"]["seconds_per_update"]
        for L in (1, 4):
            results[f"{network}/bmg_L{L}"]["ratio_to_stacx"] = (
                results[f"{network}/bmg_L{L}"]["seconds_per_update"] / base)
    payload = {"benchmark": "learner", "facts": machine_facts(), "args": vars(args),
               "results": results}
    path = write_json(f"learner-{jax.default_backend()}", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
