"""Seconds per learner update for impala, stacx (MG, K = 1) and bmg (L = 1, 4),
on the debug (small) and full (deep ResNet) networks, with Atari-shaped fake
data (84x84x4, T = 20), plus the exact learner of the debug program
(`--preset=debug --agent=bmg`: small network, B = 8, L = 2), which the
end-to-end benchmark uses for its time breakdown.
Writes benchmarks/results/learner-<backend>.json.

    python -m benchmarks.learner [--batch 4] [--reps 3] [--networks small,deep]

Timed: the jitted `Learner.update` on one device with the data already on the
device (no Reverb sampling, no host-to-device copy), median of `reps` calls
after the first (compiling) one. In steady state every update reads B new
trajectories (MG/BMG reuse the validation batch as the next inner batch), so
samples/s = B * T / seconds and frames/s = 4 x samples/s.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from agents import builders
from agents.types import Trajectory
from benchmarks.common import load_average, steal_seconds, write_result
from configs import make_config

VARIANTS = [
    ("impala", "impala", []),
    ("stacx", "stacx", ["meta.K=1"]),
    ("bmg_L1", "bmg", ["meta.L=1"]),
    ("bmg_L4", "bmg", ["meta.L=4"]),
]
PRESET = {"small": "debug", "deep": "full"}
DEBUG_PROGRAM = ("debug_program", "bmg")  # the debug preset's own learner (B, T, L as preset)


def fake(num_batches: int, T: int, B: int, num_actions: int = 6) -> Trajectory:
    rng = np.random.default_rng(0)
    lead = (num_batches, T + 1, B)
    return Trajectory(
        observation=rng.integers(0, 256, lead + (84, 84, 4), dtype=np.uint8),
        action=rng.integers(0, num_actions, lead).astype(np.int32),
        reward=rng.uniform(-1, 1, lead).astype(np.float32),
        discount=np.ones(lead, np.float32),
        behaviour_logits=rng.normal(size=lead + (num_actions,)).astype(np.float32),
        first=np.zeros(lead, np.float32),
    )


def variant_config(network: str, agent: str, overrides, batch: int, T: int):
    return make_config(
        PRESET[network],
        agent,
        overrides=list(overrides) + [f"agent.unroll_length={T}", f"learner.batch_size={batch}"],
    )


def time_config(cfg, reps: int) -> dict:
    """Seconds per jitted update of `cfg`'s learner (median of `reps` after the first)."""
    batch, T = cfg.learner.batch_size, cfg.agent.unroll_length
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
    cpu0, steal0 = time.process_time(), steal_seconds()
    for _ in range(reps):
        t0 = time.perf_counter()
        state, _ = update(state, data)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    cores = (time.process_time() - cpu0) / sum(times)  # XLA:CPU runs ops on a thread pool
    steal = (steal_seconds() - steal0) / sum(times)
    sec = float(np.median(times))
    return {
        "seconds_per_update": sec,
        "samples_per_s": batch * T / sec,
        "process_cpu_cores": cores,
        "steal_cores": steal,
        "frames_per_s": batch * T * cfg.env.frame_skip / sec,
        "first_call_s": compile_s,
        "reps": reps,
        "times": times,
        "batch": batch,
        "T": T,
        "batches_per_update": learner.num_batches,
        "network": cfg.network.kind,
        "agent": cfg.agent_name,
        "L": cfg.meta.L,
        "K": cfg.meta.K,
    }


def time_update(network: str, agent: str, overrides, batch: int, T: int, reps: int):
    return time_config(variant_config(network, agent, overrides, batch, T), reps)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--T", type=int, default=20)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--networks", default="small,deep")
    p.add_argument(
        "--no_debug_program",
        action="store_true",
        help="skip the debug program's own learner (small, B=8, L=2)",
    )
    p.add_argument("--out", default=None, help="results folder")
    args = p.parse_args(argv)
    load_start, t_start = load_average(), time.perf_counter()
    results, configs = {}, {}
    for network in args.networks.split(","):
        for name, agent, overrides in VARIANTS:
            cfg = variant_config(network, agent, overrides, args.batch, args.T)
            configs[f"{network}/{name}"] = cfg.to_dict()
            r = time_config(cfg, args.reps)
            results[f"{network}/{name}"] = r
            print(
                f"{network:5s} {name:7s} {r['seconds_per_update']:8.3f} s/update "
                f"{r['samples_per_s']:8.1f} samples/s",
                flush=True,
            )
        base = results[f"{network}/stacx"]["seconds_per_update"]
        for L in (1, 4):
            results[f"{network}/bmg_L{L}"]["ratio_to_stacx"] = (
                results[f"{network}/bmg_L{L}"]["seconds_per_update"] / base
            )
    if not args.no_debug_program:
        name, agent = DEBUG_PROGRAM
        cfg = make_config("debug", agent)
        configs[f"small/{name}"] = cfg.to_dict()
        r = time_config(cfg, max(args.reps, 5))
        results[f"small/{name}"] = r
        print(
            f"small {name} (B={r['batch']}, L={r['L']}) {r['seconds_per_update']:8.3f} "
            f"s/update {r['samples_per_s']:8.1f} samples/s",
            flush=True,
        )
    write_result(
        f"learner-{jax.default_backend()}",
        "learner",
        args,
        load_start,
        t_start,
        setup="jitted Learner.update on one device, fake Atari-shaped data already "
        "on the device; median of reps after the first (compiling) call",
        configs=configs,
        results=results,
    )


if __name__ == "__main__":
    main()
