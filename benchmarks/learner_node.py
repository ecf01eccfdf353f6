"""Learner node throughput against the update alone: does the node ever wait
on its own input?

    python -m benchmarks.learner_node [--networks small,tiny] [--agents impala,bmg]
        [--seconds 10] [--warmup 5]

For each network and agent (debug preset, B = 8, T = 20, Atari-shaped data):

1. Update alone: `ParallelLearner.update` on one window already on the
   device, called back to back for about `seconds`, then one wait: the rate
   the device can update at. The node is timed over as many updates.
2. Learner node: the real `learner.node.LearnerNode.run` (dataset, input
   pipeline, update, publication, counters) reading a Reverb table in this
   process, pre-filled with random unrolls and never emptied (uniform
   sampler, MinSize(1) limiter: sampling never waits on inserts). The
   counter is an in-process stand-in. Timed from the end of update `warmup`
   to the end of update `warmup + steps` (each waited for): the node's
   timing hook (`timer`) reports each `update` section, the dispatch of an
   update; at those two the timer waits for the updates to have run
   (`LearnerNode.wait_for_updates`) and reads the clock.

On a CPU-only host the "device" is the same 2 cores: the node's sampling
(Reverb decompression, tf.data batching), stacking and copying compete with
the update for them, inline or in a thread alike; the ratio then measures
that CPU cost, not waiting.

The ratio node / alone is reported with the input pipeline on
(`learner.prefetch_windows=2`, the default) and off (0: sample, stack,
shard and copy inline before each update). Writes
benchmarks/results/learner_node-<backend>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple

import jax
import numpy as np

from agents import parallel
from launch.builder import Builder
from agents.types import Trajectory
from benchmarks.common import load_average, write_result
from configs import RunConfig, make_config
from learner.inputs import stack_batches
from learner.node import LearnerNode
from utils.counter import Counter, LocalHandle

if TYPE_CHECKING:  # loaded by `start_server`, after `main` sets TF_CPP_MIN_LOG_LEVEL
    import reverb

GOAL = 0.9  # learner node >= GOAL x the update alone, small network

NETWORKS = {
    "small": [],
    "tiny": ["network.kind=tiny", "network.channels=4", "network.hidden=32"],
}


def node_config(network: str, agent: str, root: str, prefetch: int, max_steps: int) -> RunConfig:
    return make_config(
        "debug",
        agent,
        "Pong",
        name=f"bench-node-{network}-{agent}-{prefetch}",
        overrides=NETWORKS[network]
        + [
            f"learner.prefetch_windows={prefetch}",
            "learner.log_every_seconds=3600",
            "learner.checkpoint_every_minutes=600",
        ],
        root=root,
        max_frames=10**12,
        max_learner_steps=max_steps,
    )


def start_server(cfg: RunConfig, num_actions: int, items: int) -> Tuple[reverb.Server, str]:
    """An in-process Reverb server with one never-emptied table of `items`
    random unrolls; returns (server, address)."""
    # Imported here: TensorFlow reads TF_CPP_MIN_LOG_LEVEL (set by `main`) when it loads.
    import reverb  # noqa: PLC0415 (see above)

    from replay import TrajectoryWriter  # noqa: PLC0415 (see above)
    from replay.tables import TABLE, table_signature  # noqa: PLC0415 (see above)

    T = cfg.agent.unroll_length
    table = reverb.Table(
        name=TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=items,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=table_signature(cfg.env.observation_shape, num_actions, T),
    )
    server = reverb.Server([table])
    address = f"localhost:{server.port}"
    rng = np.random.default_rng(0)
    with TrajectoryWriter(address, 1, T) as writer:
        for _ in range(items * T + 1):
            writer.append(
                Trajectory(
                    observation=rng.integers(0, 256, (1,) + cfg.env.observation_shape, np.uint8),
                    action=rng.integers(0, num_actions, 1).astype(np.int32),
                    reward=rng.uniform(-1, 1, 1).astype(np.float32),
                    discount=np.ones(1, np.float32),
                    behaviour_logits=rng.normal(size=(1, num_actions)).astype(np.float32),
                    first=np.zeros(1, np.float32),
                )
            )
    return server, address


def update_alone(cfg: RunConfig, address: str, num_actions: int, seconds: float) -> float:
    """Updates per second of the learner on one window already on the device."""
    builder = Builder(cfg, cfg.env.observation_shape, num_actions)
    learner = parallel.ParallelLearner(builder.make_learner, parallel.resolve_devices(1))
    state = learner.replicate(learner.learner.init(jax.random.PRNGKey(0)))
    data = builder.make_dataset(address)
    try:
        window = learner.put(
            stack_batches([next(data) for _ in range(learner.learner.num_batches)])
        )
    finally:
        data.close()
    for _ in range(2):  # compile
        state, _ = learner.update(state, window)
    jax.block_until_ready(state)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(5):
            state, _ = learner.update(state, window)
        jax.block_until_ready(state)
        steps += 5
    return steps / (time.perf_counter() - t0)


class _UpdateClock:
    """LearnerNode's timer: the clock when updates `at` (counted from 1) have
    run, not just been dispatched. `node` is set once the node is built."""

    def __init__(self, at: Tuple[int, ...]):
        self.at, self.count = at, 0
        self.marks: Dict[int, float] = {}
        self.node: Optional[LearnerNode] = None

    @contextlib.contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        yield
        if label == "update":
            self.count += 1
            if self.count in self.at:
                assert self.node is not None  # set before the node runs
                self.node.wait_for_updates()
                self.marks[self.count] = time.perf_counter()


def node_rate(
    cfg: RunConfig, address: str, num_actions: int, warmup: int, steps: int
) -> Tuple[float, LearnerNode]:
    """(updates/s of LearnerNode.run between updates `warmup` and `warmup + steps`, node)."""
    clock = _UpdateClock((warmup, warmup + steps))
    builder = Builder(cfg, cfg.env.observation_shape, num_actions)
    node = LearnerNode(builder, address, LocalHandle(Counter({"frames": 0.0})), timer=clock)
    clock.node = node
    node.run()
    return steps / (clock.marks[warmup + steps] - clock.marks[warmup]), node


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", default="small,tiny")
    p.add_argument("--agents", default="impala,bmg")
    p.add_argument("--seconds", type=float, default=10.0, help="timed window per figure")
    p.add_argument("--warmup", type=int, default=5, help="updates before timing (compiles)")
    p.add_argument("--items", type=int, default=64, help="unrolls in the pre-filled table")
    p.add_argument("--out", default=None, help="results folder")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    load_start, t_start = load_average(), time.perf_counter()
    root = tempfile.mkdtemp(prefix="bench-learner-node-")
    results, configs, server = {}, {}, None
    try:
        for network in args.networks.split(","):
            if network not in NETWORKS:
                raise SystemExit(f"--networks: unknown network {network!r} ({', '.join(NETWORKS)})")
            for agent in args.agents.split(","):
                cfg = node_config(network, agent, root, 2, 1)
                if server is None:
                    server, address = start_server(cfg, 6, args.items)
                r = {"alone_updates_per_s": update_alone(cfg, address, 6, args.seconds)}
                r["steps"] = steps = max(5, round(args.seconds * r["alone_updates_per_s"]))
                for prefetch in (2, 0):
                    cfg = node_config(network, agent, root, prefetch, args.warmup + steps)
                    configs[f"{network}/{agent}/prefetch{prefetch}"] = cfg.to_dict()
                    rate, _ = node_rate(cfg, address, 6, args.warmup, steps)
                    r[f"node_prefetch{prefetch}_updates_per_s"] = rate
                for prefetch in (2, 0):
                    r[f"ratio_prefetch{prefetch}"] = (
                        r[f"node_prefetch{prefetch}_updates_per_s"] / r["alone_updates_per_s"]
                    )
                r["frames_per_update"] = (
                    cfg.learner.batch_size * cfg.agent.unroll_length * cfg.env.frame_skip
                )
                results[f"{network}/{agent}"] = r
                print(
                    f"{network:5s} {agent:6s} alone {r['alone_updates_per_s']:7.2f} updates/s, "
                    f"node {r['node_prefetch2_updates_per_s']:7.2f} "
                    f"(ratio {r['ratio_prefetch2']:.2f}; inline input "
                    f"{r['ratio_prefetch0']:.2f})",
                    flush=True,
                )
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    goal = {k: v["ratio_prefetch2"] >= GOAL for k, v in results.items() if k.startswith("small/")}
    write_result(
        f"learner_node-{jax.default_backend()}",
        "learner_node",
        args,
        load_start,
        t_start,
        setup="LearnerNode.run on an in-process Reverb table pre-filled with random "
        "unrolls (uniform, MinSize(1)), in-process counter; against the same "
        "ParallelLearner.update on one device-resident window",
        configs=configs,
        goal_ratio=GOAL,
        goal_met_small=goal,
        results=results,
    )


if __name__ == "__main__":
    main()
