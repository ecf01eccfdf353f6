"""Checkpoints: atomic write, keep-k, corrupt-file fallback, config compatibility."""

import os

import numpy as np
import pytest

from configs import make_config
from learner import checkpoint as ck


def _leaves(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 4)).astype(np.float32), np.array(seed, np.int32)]


def test_save_load_roundtrip_and_keep_k(tmp_path):
    cfg = make_config("test", "bmg").to_dict()
    for step in (1, 2, 3, 4):
        ck.save(str(tmp_path), step, _leaves(step), {"frames": 100.0 * step}, cfg, keep=2)
    assert [s for s, _ in ck.list_checkpoints(str(tmp_path))] == [3, 4]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    c = ck.latest(str(tmp_path))
    assert c.step == 4 and c.counters == {"frames": 400.0}
    np.testing.assert_array_equal(c.leaves[0], _leaves(4)[0])
    assert c.leaves[1].dtype == np.int32 and int(c.leaves[1]) == 4


def test_corrupt_newest_falls_back_and_names_the_file(tmp_path):
    cfg = make_config().to_dict()
    ck.save(str(tmp_path), 1, _leaves(1), {}, cfg)
    newest = ck.save(str(tmp_path), 2, _leaves(2), {}, cfg)
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    with pytest.raises(ck.CheckpointError, match=r"ckpt-0000000002.npz' is corrupt or truncated"):
        ck.load(newest)
    messages = []
    c = ck.latest(str(tmp_path), log=messages.append)
    assert c.step == 1 and "ckpt-0000000002.npz" in messages[0]


def test_incompatible_config_and_shapes_are_refused(tmp_path):
    old = make_config("test", "bmg")
    path = ck.save(str(tmp_path), 1, _leaves(1), {}, old.to_dict())
    c = ck.load(path)
    ck.check_compatible(c, make_config("test", "bmg", overrides=["seed=3"]).to_dict())
    new = make_config("test", "bmg", overrides=["network.hidden=64"])
    with pytest.raises(ck.CheckpointError, match=r"network.hidden: checkpoint 32 vs now 64"):
        ck.check_compatible(c, new.to_dict())
    with pytest.raises(ck.CheckpointError, match=r"array 0 has shape \(3, 4\)"):
        ck.restore_leaves(c, [np.zeros((4, 4), np.float32), np.zeros((), np.int32)])


def test_missing_resume_path_is_a_clear_error(tmp_path):
    with pytest.raises(ck.CheckpointError, match=r"resume path .*nope.* is not allowed"):
        ck.resolve(str(tmp_path / "nope"))
