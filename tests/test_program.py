"""End to end: the real Launchpad local_mp program (Reverb, learner, 2 actors,
evaluator) on real Pong with a tiny network and BMG, to its end; its final
checkpoint fits the learner state a resumed run would restore it into. A
resumed program continuing its counters and logs is
`tests/test_fault_tolerance.py::test_learner_sigkill_then_resume_continues_and_sigterm_checkpoints`
(and the sweep's and Slurm's resubmissions)."""

import os
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from learner import checkpoint as ckpt_lib
from tests.programs import Program, wait_for
from utils.logs import read_csv

pytestmark = pytest.mark.slow


def run_program(root, *args, timeout=120):
    """`launch.run` on the test preset, run to its end: (returncode, stdout with
    stderr). The wait is keyed to the program's progress, not to the clock."""
    name = next((a.split("=", 1)[1] for a in args if a.startswith("--name=")), "program")
    command = ["-m", "launch.run", "--preset=test", f"--root={root}", "--max_frames=1e9", *args]
    program = Program(root, name, command=command)
    try:
        wait_for(lambda: program.proc.poll() is not None, timeout, f"{name} to end", program)
    finally:
        program.cleanup()
    code, _ = program.wait_exit(10)
    return SimpleNamespace(returncode=code, stdout=program.output(), stderr="")


def test_program_trains_checkpoints_and_its_checkpoint_restores(tmp_path):
    root = str(tmp_path)
    args = ["--game=Pong", "--agent=bmg", "--name=e2e"]
    first = run_program(root, *args, "--max_learner_steps=3")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    run_dir = os.path.join(root, "e2e")
    ckpt1 = ckpt_lib.latest(ckpt_lib.checkpoint_dir(run_dir))
    assert ckpt1 is not None and ckpt1.step >= 3
    c1 = ckpt1.counters
    assert c1["frames"] > 0 and c1["learner_steps"] == ckpt1.step
    # K = 1 on the inner batch itself (meta.outer_sample=same): one batch of
    # B = 4 per update.
    assert c1["trajectories_consumed"] >= 3 * 4

    # Parameters changed from their initial values (same seed, same config).
    from agents import builders
    from configs import make_config

    cfg = make_config("test", "bmg", "Pong", name="e2e", overrides=[f"root={root}"])
    net = builders.make_networks(cfg, (84, 84, 4), 6)
    init = builders.make_learner(cfg, net).init(jax.random.PRNGKey(cfg.seed))
    init_leaves = jax.tree_util.tree_leaves(init)
    assert len(init_leaves) == len(ckpt1.leaves)
    params_changed = [
        not np.array_equal(np.asarray(a), b)
        for a, b in zip(jax.tree_util.tree_leaves(init.params), ckpt1.leaves)
    ]
    assert all(params_changed)
    meta_index = len(jax.tree_util.tree_leaves((init.params, init.opt_state)))
    assert not np.array_equal(ckpt1.leaves[meta_index], np.asarray(init.meta.logits))

    assert "run folder" in first.stdout
    # The run ended with an evaluation of its final parameters (the learner
    # held the program open for it).
    evaluations = read_csv(os.path.join(run_dir, "logs", "evaluator.csv"))
    assert evaluations and int(evaluations[-1]["learner_steps"]) == ckpt1.step, evaluations[-1:]
    assert "[learner] final evaluation logged" in first.stdout

    # What a resumed learner does with it (learner/node.py): the checkpoint
    # the run folder offers fits this config, and its arrays have the BMG
    # state's shapes and dtypes (parameters, both optimisers' states, meta-parameters).
    found = ckpt_lib.for_run(run_dir, cfg.to_dict())
    assert found.path == ckpt1.path
    ckpt_lib.restore_leaves(found, init_leaves)  # raises on a count, shape or dtype
