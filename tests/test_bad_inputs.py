"""Bad input on the command line: a clear error naming the value and what is
allowed, exit status 2, and no existing file touched."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import make_config
from learner import checkpoint as ckpt_lib
from utils.logs import CsvLog
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    """A run folder with a checkpoint and logs, as a finished test-preset run leaves it."""
    root = str(tmp_path_factory.mktemp("runs"))
    cfg = make_config("test", "impala", "Pong", name="keep", overrides=[f"root={root}"])
    ckpt_lib.save(
        ckpt_lib.checkpoint_dir(cfg.run_dir),
        7,
        [np.arange(3.0)],
        {"frames": 1000.0, "learner_steps": 7.0},
        cfg.to_dict(),
    )
    CsvLog(os.path.join(cfg.run_dir, "logs", "learner.csv")).write({"learner_steps": 7})
    blocker = os.path.join(root, "a-file")
    with open(blocker, "w") as f:
        f.write("not a folder")
    return root


def snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[path] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


CASES = [
    # (arguments, words the error must contain)
    (["--game=Pongg"], ["'Pongg'", "did you mean 'Pong'"]),
    (["--agent=dqn"], ["'dqn'", "impala", "stacx", "bmg"]),
    (["--agent=bmg", "--override=meta.K=0"], ["MetaConfig.K=0", "[1, 64]"]),
    (["--agent=bmg", "--override=meta.L=0"], ["MetaConfig.L=0", "[1, "]),
    (["--override=agent.learning_rate=-0.1"], ["AgentConfig.learning_rate=-0.1"]),
    (["--num_actors=0"], ["actors.num_actors=0", "without --serve"]),
    (["--num_actors=-1"], ["ActorConfig.num_actors=-1", "[0, 4096]"]),
    (["--override=learner.num_devices=3"], ["LearnerConfig.batch_size=4", "num_devices=3"]),
    (["--resume={root}/nowhere"], ["nowhere", "checkpoint file or a run folder"]),
    (["--name=keep", "--override=network.hidden=64"], ["keep", "hidden"]),
    (["--root={root}/a-file"], ["a-file", "writable"]),
    (["--max_frames=-5"], ["--max_frames='-5'", "positive"]),
    (["--max_frames=lots"], ["--max_frames='lots'", "e.g. 2e5"]),
    (["--preset=huge"], ["'huge'", "debug", "full", "test"]),
    (["--network=wifi"], ["--network='wifi'", "auto, isolated, host"]),
    (["--override=replay.mode=lifo"], ["ReplayConfig.mode='lifo'", "queue"]),
    (["--override=agent.gama=0.9"], ["gama"]),
]


@pytest.mark.parametrize("args, words", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_a_clear_error_and_touches_nothing(existing, args, words):
    before = snapshot(existing)
    args = [a.replace("{root}", existing) for a in args]
    cmd = [
        sys.executable,
        "-m",
        "launch.run",
        "--preset=test",
        "--game=Pong",
        f"--root={existing}",
        "--name=keep",
        "--max_learner_steps=1",
        *args,
    ]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ")
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert snapshot(existing) == before
