"""The whole pipeline learns: Launchpad + Reverb + learner + actors on the
built-in Catch game. A uniformly random policy scores -0.6 on average
(the ball lands in the paddle's column 1 time in 5); a solved game scores +1.
The test preset's learning rate decays linearly to 0 over the run's budget,
so a shorter budget also learns less per step. Measured on 2 cores, the
evaluator's mean return over its last 200 episodes at the end of a run was
0.95-1.00 with a budget of 600 learner steps (three runs of each agent) and
0.78-0.95 with 400 (five runs); the budget here is 500. The actors' episodes
with the first parameters score about -0.6."""

import glob
import os

import numpy as np
import pytest

from utils.logs import read_csv
from tests.test_program import run_program

pytestmark = pytest.mark.slow

RANDOM_RETURN = -0.6
REQUIRED = 0.5  # clearly better than random: 55 % of the way from -0.6 to 1.0


@pytest.mark.parametrize("agent", ["impala", "bmg"])
def test_pipeline_learns_catch(tmp_path, agent):
    proc = run_program(
        str(tmp_path), "--game=Catch", f"--agent={agent}", "--name=catch", "--max_learner_steps=500"
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    logs = os.path.join(str(tmp_path), "catch", "logs")
    # The start, from the actors' episodes with the first parameters (learner
    # step 10 at most): the evaluator may start late on a loaded machine.
    early = [
        float(r["episode_return"])
        for path in glob.glob(os.path.join(logs, "actor-*.csv"))
        for r in read_csv(path)
        if float(r["params_version"]) <= 10
    ]
    assert len(early) >= 20, len(early)
    first = float(np.mean(early))
    assert first < 0.0, first  # near random play
    returns = np.array([float(r["episode_return"]) for r in read_csv(f"{logs}/evaluator.csv")])
    assert len(returns) >= 200, len(returns)
    last = returns[-200:].mean()
    assert last >= REQUIRED, (first, last)
