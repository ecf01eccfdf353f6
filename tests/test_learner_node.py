"""The learner node on a real Reverb server (in-process, no Launchpad): batches
with a non-finite reward are skipped, counted, logged and checkpointed, and
the parameters stay finite; the good batches still train."""

import dataclasses
import os

import jax
import numpy as np
import portpicker
import pytest

from agents.types import Trajectory
from configs import make_config
from learner import checkpoint as ckpt_lib
from utils.counter import Counter, LocalHandle
from utils.logs import read_csv
from utils.timing import Timer
from launch.builder import Builder
from learner.node import LearnerNode
from replay import TrajectoryWriter, make_tables

import reverb  # after `replay`, which hides GPUs from TensorFlow first


@pytest.mark.slow
def test_non_finite_batches_are_skipped_counted_and_logged(tmp_path, capsys):
    cfg = make_config(
        "test",
        "impala",
        "Catch",
        name="nan",
        overrides=[
            f"root={tmp_path}",
            "learner.batch_size=4",
            "max_learner_steps=4",
            "learner.log_every_seconds=1000",
        ],
    )
    obs_shape, num_actions, B, T = (10, 10, 1), 3, 4, cfg.agent.unroll_length
    rng = np.random.default_rng(0)

    def serve(rounds, reward):
        """A server holding `rounds` batches of B items whose rewards are all `reward`.
        (One per phase: a stopped learner's sampler may still hold a request.)"""
        server = reverb.Server(
            make_tables(cfg.replay, B, obs_shape, num_actions, T),
            port=portpicker.pick_unused_port(),
            checkpointer=reverb.checkpointers.DefaultCheckpointer(str(tmp_path / f"rb{reward}")),
        )
        address = f"localhost:{server.port}"
        with TrajectoryWriter(address, B, T, timeout_ms=5_000) as writer:
            for t in range(rounds * T + 1):
                writer.append(
                    Trajectory(
                        observation=rng.integers(0, 2, (B,) + obs_shape).astype(np.uint8),
                        action=rng.integers(0, num_actions, B).astype(np.int32),
                        reward=np.full(B, reward, np.float32),
                        discount=np.ones(B, np.float32),
                        behaviour_logits=np.zeros((B, num_actions), np.float32),
                        first=np.full(B, float(t == 0), np.float32),
                    )
                )
            writer.flush()
        return server, address

    counter = LocalHandle(Counter({"frames": 0.0}))
    server, address = serve(2, np.nan)  # two batches with NaN rewards: both updates skipped
    try:
        node = LearnerNode(
            Builder(dataclasses.replace(cfg, max_learner_steps=2), obs_shape, num_actions),
            address,
            counter,
        )
        init = node.get_params()[1]
        node.run()
    finally:
        server.stop()
    first = ckpt_lib.latest(ckpt_lib.checkpoint_dir(cfg.run_dir))
    server, address = serve(2, 1.0)  # two good batches, for a learner resumed from `first`
    timer = Timer()
    try:
        node = LearnerNode(
            Builder(cfg, obs_shape, num_actions), address, counter, resume=first.path, timer=timer
        )
        node.run()
        node.wait_for_updates()
    finally:
        server.stop()
    assert timer.calls == {"update": 2}  # learner steps 3 and 4

    assert first.step == 2 and first.counters["skipped_updates"] == 2.0
    for a, b in zip(jax.tree_util.tree_leaves(init), first.leaves):
        np.testing.assert_array_equal(a, b)  # skipped: parameters kept exactly
    printed = capsys.readouterr().out
    assert "[learner] skipped 2 update(s) with a non-finite loss or gradient" in printed
    rows = read_csv(os.path.join(cfg.run_dir, "logs", "learner.csv"))
    assert [(r["learner_steps"], r["skipped_updates"]) for r in rows] == [("2", "2"), ("4", "2")]
    ckpt = ckpt_lib.latest(ckpt_lib.checkpoint_dir(cfg.run_dir))
    assert ckpt.counters["skipped_updates"] == 2.0 and ckpt.counters["learner_steps"] == 4.0
    assert all(np.all(np.isfinite(x)) for x in ckpt.leaves)
    params = jax.tree_util.tree_leaves(init)
    trained = ckpt.leaves[: len(params)]
    assert any(not np.array_equal(a, b) for a, b in zip(params, trained)), (
        "the two finite batches must still update the parameters"
    )
