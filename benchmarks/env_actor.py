"""Environment limit and actor throughput, measured in the same run.

    python -m benchmarks.env_actor [--envs 1,4,8] [--networks small,deep]
        [--loops overlapped,serial] [--seconds 5]

For each env count N (environments stepped together in one actor process):

1. Environment limit: `make_vector_env` (the debug preset's EnvConfig: Pong,
   84x84 grayscale, frame skip 4 with max-pool, stack 4, no-op starts; ale-py's
   C++ AtariVectorEnv, `actors.env_threads` threads) stepped with uniformly
   random actions and nothing else. Measured before and after the actor runs
   of that N; the limit is their mean (both are kept, to show drift).
2. Actor: the real `actors.actor.ActorNode` loop (jitted CPU policy from
   `agents.builders.make_policy`, `replay.TrajectoryWriter` writing T + 1 step
   unrolls), for the debug (small) and the deep (IMPALA ResNet) network, in
   both loops: `overlapped` (the default: the N envs in 2 batches, 1 for
   N = 1, stepping in ale-py's thread while the policy acts on and the writer
   takes the other batch) and `serial` (`actors.overlap=false`). The
   Reverb server runs in a separate process, as in the Launchpad program. The
   learner and counter are in-process stand-ins that answer at once (the real
   parameter pull is asynchronous courier and does not block the loop).
   The node's timing hook (`timer`, `utils.timing.Timer`) splits each loop
   iteration, in ms per iteration: `env` is `env.step` (serial) or
   `env.recv` (overlapped: the wait for a batch), `inference` the policy
   acting on a batch (jitted call and copy of actions and logits to numpy),
   `write` `TrajectoryWriter.append`, and `other` the rest of the iteration
   (parameter refresh, `env.send`, gathering rows, counting).

Reverb table: the replay module's tables in `queue` mode (MinSize limiter, FIFO
remover), so an insert never waits for a sampler; nothing samples in this
benchmark. (The debug preset's `uniform` table has a samples-per-insert
limiter that would block inserts without a learner.)

Steps/s count agent steps summed over the N environments (frames/s = 4x).
Writes benchmarks/results/env_actor-<backend>.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import psutil

from actors.actor import ActorNode
from actors.environments import make_vector_env, num_actions
from benchmarks.common import load_average, steal_seconds, write_result
from configs import EnvConfig, ReplayConfig, RunConfig, make_config
from utils.timing import Timer

GOAL = 0.8  # actor steps/s >= GOAL x environment limit, debug network


def _done(value: Any = None) -> concurrent.futures.Future[Any]:
    f: concurrent.futures.Future[Any] = concurrent.futures.Future()
    f.set_result(value)
    return f


class FakeLearner:
    """Answers `get_params()` and `futures.get_params()` at once with fixed
    numpy parameters (what courier delivers to a real actor)."""

    def __init__(self, published: tuple):
        self.published = published
        self.futures = SimpleNamespace(get_params=lambda: _done(self.published))

    def get_params(self) -> tuple:
        return self.published


class FakeCounter:
    def __init__(self) -> None:
        self.futures = SimpleNamespace(
            increment=lambda **kw: _done(), record=lambda **kw: _done(), set=lambda **kw: _done()
        )


# ----------------------------------------------------------------------------
# Reverb server process
# ----------------------------------------------------------------------------
def serve(obs_shape: Tuple[int, ...], num_actions: int, T: int, max_size: int) -> None:
    """Child process: a Reverb server with the replay module's queue table."""
    # Imported here: `replay` loads TensorFlow, Reverb and JAX (seconds), and
    # only this child serves; the parent sets JAX_PLATFORMS before JAX loads.
    import reverb  # noqa: PLC0415 (see above)

    from replay import make_tables  # noqa: PLC0415 (see above)

    tables = make_tables(
        ReplayConfig(mode="queue", max_size=max_size), 8, obs_shape, num_actions, T
    )
    # reverb's default checkpointer makes a temp folder; use (and remove) our own.
    ckpt_dir = tempfile.mkdtemp(prefix="bench-reverb-")
    try:
        server = reverb.Server(
            tables, checkpointer=reverb.checkpointers.DefaultCheckpointer(path=ckpt_dir)
        )
        print(f"PORT {server.port}", flush=True)
        sys.stdin.read()  # until the parent closes our stdin
        server.stop()
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)


def start_server(
    obs_shape: Tuple[int, ...], num_actions: int, T: int, max_size: int
) -> Tuple[subprocess.Popen, str]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.env_actor",
        "--serve",
        "--obs",
        ",".join(map(str, obs_shape)),
        "--actions",
        str(num_actions),
        "--T",
        str(T),
        "--max_size",
        str(max_size),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None  # stdout=PIPE
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the reverb server process exited before it printed its port")
        if line.startswith("PORT "):
            return proc, f"localhost:{int(line.split()[1])}"
    proc.kill()
    raise RuntimeError("the reverb server did not start within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        assert proc.stdin is not None  # stdin=PIPE
        proc.stdin.close()
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


# ----------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------
def env_limit(
    env_cfg: EnvConfig, num_envs: int, threads: int, seconds: float, warmup: int = 20
) -> dict:
    """Steps/s (summed over envs) of the vector env alone, random actions."""
    env = make_vector_env(env_cfg, num_envs, seed=1234, num_threads=threads)
    rng = np.random.default_rng(0)
    try:
        env.reset()
        for _ in range(warmup):
            env.step(rng.integers(0, env.num_actions, num_envs))
        steal0 = steal_seconds()
        steps, cpu0, t0 = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            env.step(rng.integers(0, env.num_actions, num_envs))
            steps += 1
        dt = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        steal = steal_seconds() - steal0
    finally:
        env.close()
    return {
        "steps_per_s": steps * num_envs / dt,
        "vector_steps": steps,
        "seconds": dt,
        "ms_per_vector_step": 1000 * dt / steps,
        "process_cpu_cores": cpu / dt,
        "steal_cores": steal / dt,
    }


def least_stolen(measure: Callable[[], dict], max_steal: float, tries: int, label: str) -> dict:
    """`measure()` until a window's steal (CPU the hypervisor took from this VM,
    which slows everything here) is at most `max_steal` cores, at most `tries`
    times; returns the least-stolen result, with `tries` recorded."""
    best: Optional[dict] = None
    for i in range(tries):
        r = measure()
        r["tries"] = i + 1
        if best is None or r["steal_cores"] < best["steal_cores"]:
            best = r
        if r["steal_cores"] <= max_steal:
            break
        print(
            f"  {label}: steal {r['steal_cores']:.2f} cores > {max_steal}; measuring again",
            flush=True,
        )
    if best is None:
        raise ValueError(f"--tries must be at least 1, not {tries}")
    return best


@dataclasses.dataclass
class _Clocks:
    """Wall, process CPU, Reverb server CPU and steal seconds at one moment."""

    wall: float
    cpu: float
    server_cpu: float
    steal: float

    @staticmethod
    def now(server_pid: int) -> _Clocks:
        return _Clocks(
            time.perf_counter(), time.process_time(), process_cpu_s(server_pid), steal_seconds()
        )


class _StopAfter:
    """`should_stop` for ActorNode: starts the measured window after `warmup`
    env steps (the first includes jit compilation) by resetting `timer`, and
    stops `seconds` later, keeping the timer's sums of that window."""

    def __init__(self, timer: Timer, warmup: int, seconds: float, server_pid: int):
        self.timer, self.warmup, self.seconds, self.server_pid = timer, warmup, seconds, server_pid
        self.start: Optional[_Clocks] = None
        self.end: Optional[_Clocks] = None
        self.calls: Dict[str, int] = {}
        self.stage_s: Dict[str, float] = {}

    def __call__(self) -> bool:
        if self.start is None:
            if self.timer.calls.get("env", 0) >= self.warmup:
                self.timer.reset()
                self.start = _Clocks.now(self.server_pid)
            return False
        if self.end is None and time.perf_counter() - self.start.wall >= self.seconds:
            self.end = _Clocks.now(self.server_pid)
            self.calls = dict(self.timer.calls)
            self.stage_s = dict(self.timer.seconds)
        return self.end is not None


def actor_run(cfg: RunConfig, address: str, server_pid: int, seconds: float, warmup: int) -> dict:
    """Steps/s of one ActorNode loop with stage timings."""
    # Imported here: JAX reads JAX_PLATFORMS (set by `main`) when it loads.
    import jax  # noqa: PLC0415 (see above)

    from agents import builders  # noqa: PLC0415 (see above)
    from launch.builder import Builder  # noqa: PLC0415 (see above)

    nets = builders.make_networks(cfg, cfg.env.observation_shape, num_actions(cfg.env))
    state = builders.make_learner(cfg, nets).init(jax.random.PRNGKey(0))
    host = jax.device_get(state)
    published = (0, host.params, np.asarray(host.meta.logits), 0.0)
    n_params = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(host.params))

    timer = Timer()
    stop = _StopAfter(timer, warmup, seconds, server_pid)
    node = ActorNode(
        Builder(cfg, cfg.env.observation_shape, num_actions(cfg.env)),
        0,
        address,
        FakeLearner(published),
        FakeCounter(),
        should_stop=stop,
        timer=timer,
    )
    t_build = time.perf_counter()
    node.run()
    if stop.start is None or stop.end is None:
        raise RuntimeError("the actor stopped before the measured window ended")
    start, end = stop.start, stop.end
    warmup_s = start.wall - t_build
    N = cfg.actors.env_batch_size  # envs per loop iteration
    dt = end.wall - start.wall
    steps = stop.calls.get("env", 0)
    per_step_ms = {k: 1000 * v / max(steps, 1) for k, v in stop.stage_s.items()}
    per_step_ms["other"] = 1000 * dt / max(steps, 1) - sum(per_step_ms.values())
    return {
        "steps_per_s": steps * N / dt,
        "vector_steps": steps,
        "seconds": dt,
        "ms_per_vector_step": 1000 * dt / max(steps, 1),
        "stage_ms_per_vector_step": per_step_ms,
        "stage_share": {k: v / (1000 * dt / max(steps, 1)) for k, v in per_step_ms.items()},
        "env_steps_per_s_inside_actor": (
            N * 1000 / per_step_ms["env"] if per_step_ms.get("env") else None
        ),
        "process_cpu_cores": (end.cpu - start.cpu) / dt,
        "reverb_server_cpu_cores": (end.server_cpu - start.server_cpu) / dt,
        "steal_cores": (end.steal - start.steal) / dt,
        "warmup_steps": warmup,
        "warmup_s_incl_compile": warmup_s,
        "network_params": n_params,
    }


LOOPS = ("overlapped", "serial")


def actor_config(
    network: str, agent: str, num_envs: int, root: str, loop: str = "overlapped"
) -> RunConfig:
    if loop not in LOOPS:
        raise ValueError(f"--loops: unknown loop {loop!r} ({', '.join(LOOPS)})")
    batches = 2 if loop == "overlapped" and num_envs % 2 == 0 else 1
    cfg = make_config(
        "debug",
        agent,
        "Pong",
        name=f"bench-actor-{network}-{num_envs}-{loop}",
        overrides=[
            f"actors.envs_per_actor={num_envs}",
            f"actors.overlap={loop == 'overlapped'}",
            f"actors.env_batches={batches}",
            f"root={root}",
        ],
    )
    if network == "deep":  # the full preset's IMPALA ResNet on the same debug program
        cfg = dataclasses.replace(cfg, network=make_config("full", agent).network)
    elif network != "small":
        raise ValueError(f"--networks: unknown network {network!r} (small, deep)")
    return cfg


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", default="1,4,8", help="env counts per actor process")
    p.add_argument("--networks", default="small,deep")
    p.add_argument("--loops", default="overlapped,serial", help="actor loops to measure")
    p.add_argument("--agent", default="bmg", help="network heads/conditioning of this agent")
    p.add_argument("--seconds", type=float, default=5.0, help="measured window per figure")
    p.add_argument("--warmup", type=int, default=30, help="actor loop steps before measuring")
    p.add_argument("--max_size", type=int, default=200, help="reverb table size (items)")
    p.add_argument(
        "--max_steal",
        type=float,
        default=0.1,
        help="measure a figure again when the hypervisor took more CPU than this",
    )
    p.add_argument("--tries", type=int, default=3, help="at most this many measurements per figure")
    p.add_argument("--out", default=None, help="results folder")
    # child mode: the reverb server
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--obs", default="84,84,4", help=argparse.SUPPRESS)
    p.add_argument("--actions", type=int, default=6, help=argparse.SUPPRESS)
    p.add_argument("--T", type=int, default=20, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def measure_envs(N: int, args, base, address: str, server_pid: int, root: str, configs) -> dict:
    """The env limit at N envs (before and after, averaged) and each loop's and
    network's actor at N envs against it; the actors' configs go into `configs`."""

    def limit_once() -> dict:
        return env_limit(base.env, N, base.actors.env_threads, args.seconds)

    before = least_stolen(limit_once, args.max_steal, args.tries, f"N={N} env limit")
    print(f"N={N:2d} env limit (before) {before['steps_per_s']:7.0f} steps/s", flush=True)
    actors: Dict[str, Dict[str, dict]] = {loop: {} for loop in args.loops.split(",")}
    for loop in actors:
        for network in args.networks.split(","):
            cfg = actor_config(network, args.agent, N, root, loop)
            configs[f"{network}-{loop}"] = cfg.to_dict()
            r = least_stolen(
                lambda: actor_run(cfg, address, server_pid, args.seconds, args.warmup),
                args.max_steal,
                args.tries,
                f"N={N} actor {network} {loop}",
            )
            actors[loop][network] = r
            st = r["stage_ms_per_vector_step"]
            print(
                f"N={N:2d} actor {network:5s} {loop:10s} {r['steps_per_s']:7.0f} steps/s  "
                + "  ".join(f"{k} {v:.2f}" for k, v in st.items())
                + " ms/iteration",
                flush=True,
            )
    after = least_stolen(limit_once, args.max_steal, args.tries, f"N={N} env limit")
    print(f"N={N:2d} env limit (after)  {after['steps_per_s']:7.0f} steps/s", flush=True)
    limit = 0.5 * (before["steps_per_s"] + after["steps_per_s"])
    for loop, by_net in actors.items():
        for network, r in by_net.items():
            r["ratio_to_env_limit"] = r["steps_per_s"] / limit
            print(
                f"N={N:2d} {network:5s} {loop:10s} ratio {r['ratio_to_env_limit']:.2f}", flush=True
            )
    return {
        "env_limit_steps_per_s": limit,
        "env_before": before,
        "env_after": after,
        "actor": actors,
    }


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.serve:
        serve(tuple(int(x) for x in args.obs.split(",")), args.actions, args.T, args.max_size)
        return

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["JAX_PLATFORMS"] = "cpu"  # actors run JAX on CPU (launch.program.process_env)
    # Imported here: JAX reads JAX_PLATFORMS when it loads, and the server child needs no JAX.
    import jax  # noqa: PLC0415 (see above)

    load_start = load_average()
    t_start = time.perf_counter()
    base = actor_config("small", args.agent, 1, "/tmp")
    server, address = start_server(
        base.env.observation_shape, num_actions(base.env), base.agent.unroll_length, args.max_size
    )
    root = tempfile.mkdtemp(prefix="bench-env-actor-")
    results: Dict[str, dict] = {}
    configs: Dict[str, dict] = {}
    try:
        for N in [int(x) for x in args.envs.split(",")]:
            results[str(N)] = measure_envs(N, args, base, address, server.pid, root, configs)
    finally:
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)

    goal: Dict[str, bool] = {}
    if "small" in args.networks.split(",") and "overlapped" in args.loops.split(","):
        for key, r in results.items():
            goal[key] = r["actor"]["overlapped"]["small"]["ratio_to_env_limit"] >= GOAL
    write_result(
        f"env_actor-{jax.default_backend()}",
        "env_actor",
        args,
        load_start,
        t_start,
        setup={
            "env": "actors.environments.make_vector_env (ale-py AtariVectorEnv), debug preset "
            "EnvConfig, random actions",
            "actor": "actors.actor.ActorNode.run, in this process; learner/counter stand-ins; "
            "results[N]['actor'][loop][network]",
            "reverb": "reverb.Server in a subprocess (replay.make_tables, queue mode: MinSize "
            "limiter, inserts never wait; nothing samples)",
            "steps": "agent steps summed over the N envs (x4 = frames)",
        },
        configs=configs,
        goal_ratio=GOAL,
        goal_met_small=goal,
        results=results,
    )


if __name__ == "__main__":
    main()
