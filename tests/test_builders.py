"""The Acme-style Builder: one place makes tables, writer, dataset, learner, policy."""

import pickle

import jax
import numpy as np

from launch.builder import Builder
from configs import make_config


def test_builder_is_picklable_and_rebuilds_its_networks_in_each_process():
    """Launchpad pickles the builder into every node; the networks (functions
    holding compiled state) stay out of the pickle and are built again."""
    b = Builder(make_config("test", "stacx"), (12, 12, 1), 3)
    state = b.make_learner().init(jax.random.PRNGKey(0))
    assert "networks" in b.__dict__
    copy = pickle.loads(pickle.dumps(b))
    assert "networks" not in copy.__dict__
    assert (copy.cfg, copy.observation_shape, copy.num_actions) == (b.cfg, (12, 12, 1), 3)
    again = copy.make_learner().init(jax.random.PRNGKey(0))
    for x, y in zip(
        jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(again.params)
    ):
        np.testing.assert_array_equal(x, y)
    actions, logits = copy.make_policy()(
        state.params, state.meta.logits, np.zeros((5, 12, 12, 1), np.uint8), jax.random.PRNGKey(1)
    )
    assert actions.shape == (5,) and logits.shape == (5, 3)


def test_builder_tables_follow_the_config():
    from replay import TABLE

    cfg = make_config("test", "impala", overrides=["replay.mode=uniform", "replay.max_size=40"])
    (table,) = Builder(cfg, (12, 12, 1), 3).make_tables()
    assert table.name == TABLE and table.info.max_size == 40


def test_nodes_share_one_compilation_cache_under_the_runs_root(monkeypatch, tmp_path):
    from launch.program import COMPILE_CACHE_ENV, process_env

    run_dir = str(tmp_path / "runs" / "pong")
    monkeypatch.delenv(COMPILE_CACHE_ENV, raising=False)
    env = process_env("actor", "cpu", run_dir)
    assert env[COMPILE_CACHE_ENV] == str(tmp_path / "runs" / ".jax_cache")
    assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    monkeypatch.setenv(COMPILE_CACHE_ENV, "")  # the user's choice (here: none) stands
    assert COMPILE_CACHE_ENV not in process_env("learner", None, run_dir)
