"""The full preset end to end: its 48 actors (packed into fewer processes
on a small host, launch/host.py) and the learner on this host, on Catch. The
learner updates, logs and checkpoints while every actor runs, and Ctrl-C with
the actors busy still ends with a final checkpoint, exit code 0 and no process
left."""

import glob
import os
import re

import pytest

from learner import checkpoint as ckpt_lib
from tests.programs import Program, learner_step, stop_bound_s, wait_for, wait_gone

FULL_ON_CATCH = [
    "-m",
    "launch.run",
    "--preset=full",
    "--game=Catch",
    "--agent=impala",
    "--max_frames=1e9",
    "--override=learner.log_every_seconds=2",
    "--override=learner.checkpoint_every_minutes=0.1",
]


def _checkpoint_steps(run_dir):
    return [step for step, _ in ckpt_lib.list_checkpoints(ckpt_lib.checkpoint_dir(run_dir))]


def _processes(output):
    """Actor processes from the launcher's first line (48 if nothing was packed)."""
    found = re.search(r"packed into (\d+) processes of (\d+) envs", output)
    if found:
        assert int(found[1]) * int(found[2]) == 48, found[0]  # every env kept
        return int(found[1])
    return 48 if re.search(r"starting .*: 48 actor process\(es\) of 1 env", output) else None


@pytest.mark.slow
def test_full_preset_learns_beside_48_actors_and_stops_on_ctrl_c_with_a_checkpoint(tmp_path):
    root = str(tmp_path)
    p = Program(root, "full", command=[*FULL_ON_CATCH, f"--root={root}", "--name=full"])
    nodes = []
    try:
        # As many processes as the launcher says it packed the 48 actors into.
        packed = wait_for(lambda: _processes(p.output()), 120, "the actors' processes", p)
        wait_for(lambda: len(p.nodes().get("actor", [])) == packed, 120, "actor processes", p)
        wait_for(lambda: _checkpoint_steps(p.run_dir), 300, "a first checkpoint", p)
        first = max(_checkpoint_steps(p.run_dir))
        wait_for(lambda: learner_step(p.run_dir) > first, 120, "updates after it", p)
        nodes = [pid for pids in p.nodes().values() for pid in pids]
        assert len(nodes) == packed + 4, p.nodes()  # and learner, replay, counter, evaluator
        p.interrupt()  # Ctrl-C to the whole process group, actors busy
        assert p.wait_stopped(stop_bound_s("full")) == 0, p.report()
        final = max(_checkpoint_steps(p.run_dir))
        assert final >= learner_step(p.run_dir) > first, (final, first)
        wait_gone(nodes, "the program's processes")
        # Each node counts down the launcher's grace, not Launchpad's 10 s default.
        (learner_log,) = glob.glob(os.path.join(p.run_dir, "launchpad", "*", "learner", "0"))
        with open(learner_log) as f:
            assert "Waiting for workers to stop for 60s" in f.read()  # the full preset's
    finally:
        p.cleanup()
