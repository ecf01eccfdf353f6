"""Data-parallel learner scaling: `agents.parallel.ParallelLearner` update time
on 1, 2 and 4 devices at the same global batch.

    python -m benchmarks.pmap_scaling [--devices 1,2,4] [--agents impala,bmg]
                                      [--network small] [--batch 8] [--platform auto]

Each device count runs in its own subprocess, because the device count is
fixed when jax starts. On CPU (no accelerator, or `--platform cpu`) the
child gets `XLA_FLAGS=--xla_force_host_platform_device_count=N`: N "devices"
that share this machine's cores, so the figure shows pmap's overhead (per-
device dispatch, gradient all-reduce, smaller per-device batches), not a
speed-up. On a GPU/TPU host the same script uses the first N real devices
(counts above the number of local devices are skipped).

Timed: `ParallelLearner.update(replicated_state, batches)` on a host numpy
global batch [num_batches, T + 1, B, 84, 84, 4] (so the host-side shard and
host-to-device copy are included, as in the learner node), median of `reps`
after the first (compiling) call. Writes benchmarks/results/pmap-<backend>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import load_average, steal_seconds, write_result
from configs import make_config


def child(args) -> None:
    """One device count: prints one JSON line `RESULT {...}`."""
    # Imported here: this process only starts the children, and must not
    # load JAX (it would take the accelerator they measure).
    import jax  # noqa: PLC0415 (see above)

    from agents import builders, parallel  # noqa: PLC0415 (see above)
    from benchmarks.learner import fake  # noqa: PLC0415 (see above)

    n = args.child
    devices = parallel.resolve_devices(n)
    out = {
        "num_devices": n,
        "devices": [str(d) for d in devices],
        "backend": jax.default_backend(),
        "local_device_count": jax.local_device_count(),
        "agents": {},
    }
    for agent in args.agents.split(","):
        preset = "debug" if args.network == "small" else "full"
        cfg = make_config(
            preset,
            agent,
            overrides=[f"learner.batch_size={args.batch}", f"learner.num_devices={n}"],
        )
        nets = builders.make_networks(cfg, (84, 84, 4), 6)
        pl = parallel.ParallelLearner(lambda axis: builders.make_learner(cfg, nets, axis), devices)
        state = pl.replicate(pl.learner.init(jax.random.PRNGKey(0)))
        data = fake(pl.learner.num_batches, cfg.agent.unroll_length, cfg.learner.batch_size)
        t0 = time.perf_counter()
        state, _ = pl.update(state, data)
        jax.block_until_ready(state)
        first = time.perf_counter() - t0
        times, steal0 = [], steal_seconds()
        for _ in range(args.reps):
            t0 = time.perf_counter()
            state, _ = pl.update(state, data)
            jax.block_until_ready(state)
            times.append(time.perf_counter() - t0)
        sec = float(np.median(times))
        steal = (steal_seconds() - steal0) / sum(times)
        B, T = cfg.learner.batch_size, cfg.agent.unroll_length
        out["agents"][agent] = {
            "seconds_per_update": sec,
            "samples_per_s": B * T / sec,
            "first_call_s": first,
            "steal_cores": steal,
            "times": times,
            "global_batch": B,
            "per_device_batch": B // n,
            "T": T,
            "batches_per_update": pl.learner.num_batches,
            "config": cfg.to_dict(),
        }
    print("RESULT " + json.dumps(out), flush=True)


def detect_backend() -> tuple:
    """(default jax backend, local device count), found in a subprocess (this
    process stays jax-free)."""
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import jax; print(jax.default_backend(), jax.local_device_count())",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    parts = r.stdout.split()
    return (parts[0], int(parts[1])) if len(parts) == 2 else ("cpu", 1)


def run_child(n: int, args, forced: bool):
    """(result, None) of one device count's child process, or (None, why) if it failed."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if forced:
        env["JAX_PLATFORMS"] = "cpu"
        flags = [
            f
            for f in env.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")
        ]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
    cmd = [sys.executable, "-m", "benchmarks.pmap_scaling", "--child", str(n)]
    for flag in ("agents", "network", "batch", "reps"):
        cmd += [f"--{flag}", str(getattr(args, flag))]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        return None, " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
    return json.loads(lines[-1][len("RESULT ") :]), None


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--agents", default="impala,bmg")
    p.add_argument("--network", default="small", choices=["small", "deep"])
    p.add_argument("--batch", type=int, default=8, help="global batch (the debug preset's)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument(
        "--platform",
        default="auto",
        choices=["auto", "cpu"],
        help="auto: real devices when jax finds an accelerator, else forced "
        "host devices; cpu: always forced host devices",
    )
    p.add_argument("--timeout", type=int, default=600, help="seconds per device count")
    p.add_argument("--out", default=None)
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return

    load_start, t_start = load_average(), time.perf_counter()
    backend, local = ("cpu", 0) if args.platform == "cpu" else detect_backend()
    forced = backend == "cpu"
    runs, skipped = {}, {}
    for n in [int(x) for x in args.devices.split(",")]:
        res, why = (
            (None, f"only {local} local {backend} device(s)")
            if not forced and n > local
            else run_child(n, args, forced)
        )
        if res is None:
            skipped[str(n)] = why
            print(f"{n} device(s): skipped ({why})", flush=True)
            continue
        runs[str(n)] = res
        for agent, a in res["agents"].items():
            print(
                f"{n} device(s) {agent:6s} {a['seconds_per_update']:7.3f} s/update "
                f"(per-device batch {a['per_device_batch']})",
                flush=True,
            )
    if "1" in runs:
        for n, res in runs.items():
            for agent, a in res["agents"].items():
                a["relative_to_1_device"] = (
                    a["seconds_per_update"] / runs["1"]["agents"][agent]["seconds_per_update"]
                )
    write_result(
        f"pmap-{backend}",
        "pmap_scaling",
        args,
        load_start,
        t_start,
        jax_facts=False,
        backend=backend,
        forced_host_devices=forced,
        note=(
            "forced host devices share this machine's CPU cores: the figures "
            "show pmap overhead, not speed-up"
        )
        if forced
        else "real devices",
        results=runs,
        skipped=skipped,
    )


if __name__ == "__main__":
    main()
