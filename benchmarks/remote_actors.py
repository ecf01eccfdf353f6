"""Local actors against actors on another host: learner steps per frame.

    python -m benchmarks.remote_actors [--preset test --game Catch --agent impala]
                                       [--actors 2] [--frames 2e5]

Runs one preset twice to the same frame budget:

- local: `launch.run` with N actors on this host, as usual;
- remote: two network namespaces joined by a veth pair (`launch.network.
  veth_namespaces`; root and iproute2 needed): `launch.run --num_actors=0
  --serve=<veth>` in one, `launch.actors --num_actors=N` in the other, so
  every frame the learner sees crossed the veth link.

and reads each run's final checkpoint: learner steps, frames, trajectories
consumed, wall time. The remote learner should take the same learner steps
per frame as the local one (the replay's rate limiter or queue sets it, not
where the actors run). Writes benchmarks/results/remote_actors-cpu.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import load_average, stop_program, write_result
from launch import network, remote
from learner import checkpoint as ckpt_lib


def _start(command, out_path, prefix=()):
    with open(out_path, "w") as out:
        return subprocess.Popen(
            [*prefix, sys.executable, *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
        )


def _config_flags(args, name, root):
    return [
        "-m",
        "launch.run",
        f"--preset={args.preset}",
        f"--game={args.game}",
        f"--agent={args.agent}",
        f"--max_frames={args.frames}",
        f"--name={name}",
        f"--root={root}",
    ]


def outcome(run_dir: str, wall_s: float) -> dict:
    ckpt = ckpt_lib.latest(ckpt_lib.checkpoint_dir(run_dir))
    if ckpt is None:
        raise RuntimeError(f"no checkpoint in {run_dir}")
    c = ckpt.counters
    return {
        "learner_steps": c["learner_steps"],
        "frames": c["frames"],
        "trajectories_consumed": c.get("trajectories_consumed"),
        "learner_steps_per_1k_frames": 1000 * c["learner_steps"] / c["frames"],
        "wall_s": wall_s,
    }


def run_local(args, root: str) -> dict:
    t0 = time.time()
    proc = _start(
        [*_config_flags(args, "local", root), f"--num_actors={args.actors}"],
        os.path.join(root, "local.out"),
    )
    try:
        proc.wait(args.timeout)
    finally:
        stop_program(proc)
    return outcome(os.path.join(root, "local"), time.time() - t0)


def run_remote(args, root: str) -> dict:
    with network.veth_namespaces(str(os.getpid() % 100000), subnet=os.getpid() % 250) as pair:
        t0 = time.time()
        learner = _start(
            [*_config_flags(args, "remote", root), "--num_actors=0", f"--serve={pair.veth['L']}"],
            os.path.join(root, "remote-learner.out"),
            pair.exec_prefix["L"],
        )
        endpoints = os.path.join(root, "remote", remote.ENDPOINTS_FILE)
        actors = None
        try:
            while not os.path.exists(endpoints):
                if learner.poll() is not None or time.time() - t0 > 120:
                    raise RuntimeError("the learner host did not serve (see remote-learner.out)")
                time.sleep(0.5)
            actors = _start(
                [
                    "-m",
                    "launch.actors",
                    f"--endpoints={endpoints}",
                    f"--num_actors={args.actors}",
                    f"--root={os.path.join(root, 'actor-host')}",
                    "--learner_timeout_s=10",
                ],
                os.path.join(root, "remote-actors.out"),
                pair.exec_prefix["A"],
            )
            learner.wait(args.timeout)
            wall = time.time() - t0
            actors.wait(60)
        finally:
            stop_program(learner)
            if actors is not None:
                stop_program(actors)
    return outcome(os.path.join(root, "remote"), wall)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="test")
    p.add_argument("--game", default="Catch")
    p.add_argument("--agent", default="impala")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--frames", default="2e5")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run at most")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args()
    t_start, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory(prefix="remote-actors-") as root:
        local = run_local(args, root)
        print(f"local: {local}", flush=True)
        remote_run = run_remote(args, root)
        print(f"remote: {remote_run}", flush=True)
    ratio = remote_run["learner_steps_per_1k_frames"] / local["learner_steps_per_1k_frames"]
    print(f"learner steps per frame, remote / local: {ratio:.3f}")
    write_result(
        "remote_actors-cpu",
        "remote_actors",
        args,
        load_start,
        t_start,
        jax_facts=False,
        local=local,
        remote=remote_run,
        remote_over_local=ratio,
    )


if __name__ == "__main__":
    main()
