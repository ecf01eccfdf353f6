"""The learning-curve runner's bookkeeping (experiments/atari_learning/curves.py):
an unfinished run carried over in git and restored by the same command; seed
aggregates over the main runs only."""

import os

import pytest

from experiments.atari_learning import curves


def _cfg(tmp_path):
    args = curves.parse_args(
        ["--game=Pong", "--agent=stacx", "--seed=1", f"--root={tmp_path / 'runs'}"]
    )
    return curves.make_run_config(args)


def test_unfinished_run_is_carried_over_restored_and_dropped_when_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(curves, "UNFINISHED_DIR", str(tmp_path / "unfinished"))
    cfg = _cfg(tmp_path)
    files = {
        "config.json": "{}",
        "experiment_segments.json": "[]",
        "logs/learner.csv": "time,frames\n1.0,5\n",
        "logs/evaluator.csv": "time,frames\n",
        "checkpoints/ckpt-0000000004.npz": "old",
        "checkpoints/ckpt-0000000012.npz": "new",
        "tb/learner/events": "not carried",
    }
    for name, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(cfg.run_dir, name)), exist_ok=True)
        with open(os.path.join(cfg.run_dir, name), "w") as f:
            f.write(text)
    dest = curves.carry_over(cfg, complete=False)
    assert dest == os.path.join(str(tmp_path / "unfinished"), "Pong-stacx-debug-s1")
    carried = sorted(
        os.path.relpath(os.path.join(d, n), dest) for d, _, ns in os.walk(dest) for n in ns
    )
    assert carried == sorted(set(files) - {"checkpoints/ckpt-0000000004.npz", "tb/learner/events"})
    # A new machine: the run folder is gone; the same command restores it.
    import shutil

    shutil.rmtree(cfg.run_dir)
    assert curves.restore_carried(cfg)
    with open(os.path.join(cfg.run_dir, "checkpoints", "ckpt-0000000012.npz")) as f:
        assert f.read() == "new"
    assert not curves.restore_carried(cfg)  # it has a checkpoint now: left alone
    assert curves.carry_over(cfg, complete=True) is None and not os.path.exists(dest)


def test_seed_aggregate_counts_complete_main_runs_only():
    def run(agent, seed, ret, complete=True, variant="", overrides=()):
        return dict(
            game="Pong",
            agent=agent,
            seed=seed,
            final_eval_return=ret,
            complete=complete,
            variant=variant,
            overrides=list(overrides),
        )

    runs = [
        run("stacx", 0, 2.0),
        run("stacx", 1, 4.0),
        run("stacx", 2, 100.0, complete=False),
        run("stacx", 0, -50.0, variant="kl0", overrides=["meta.kl_weight=0"]),
        run("impala", 1, -1.0),
    ]
    agg = curves.seed_aggregates(runs)["Pong"]
    assert agg["stacx"]["mean"] == pytest.approx(3.0) and agg["stacx"]["seeds"] == [0, 1]
    assert agg["stacx"]["mean_ci"] == pytest.approx([2.0, 4.0])
    assert agg["impala"]["mean"] == -1.0 and agg["impala"]["runs"] == 1
