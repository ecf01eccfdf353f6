"""launch/report.py on hand-written run folders: final scores, per-game seed
averages, median / mean across games, a missing game, CSV / Markdown / PNG."""

import csv
import json
import os

import pytest

from configs.games import get_game
from launch import report

HEADER = "time,frames,game,episode_return,hns,episode_frames,learner_steps\n"


def write_eval(sweep, name, game, returns, frames_step=1000):
    logs = os.path.join(sweep, name, "logs")
    os.makedirs(logs, exist_ok=True)
    with open(os.path.join(logs, "evaluator.csv"), "w") as f:
        f.write(HEADER)
        for i, r in enumerate(returns):
            f.write(f"0,{(i + 1) * frames_step},{game},{r},0,100,{i}\n")


def hns_of(game, score):
    s = get_game(game)
    return 100.0 * (score - s.random) / (s.human - s.random)


@pytest.fixture
def sweep(tmp_path):
    """Plan: Pong (2 seeds), Breakout (1 seed), Freeway (1 seed), Boxing (no results)."""
    root = str(tmp_path / "sweep")
    runs = []
    for game, seeds in (("Pong", 2), ("Breakout", 1), ("Freeway", 1), ("Boxing", 1)):
        for seed in range(seeds):
            runs.append(
                dict(
                    game=game,
                    seed=seed,
                    name=f"{game}-seed{seed}",
                    run_dir=f"{game}-seed{seed}",
                    max_frames=10_000,
                    max_learner_steps=0,
                )
            )
    os.makedirs(root)
    with open(os.path.join(root, "sweep.json"), "w") as f:
        json.dump(
            dict(
                agent="bmg",
                preset="full",
                max_frames=10_000,
                max_learner_steps=0,
                games=["Pong", "Breakout", "Freeway", "Boxing"],
                runs=runs,
            ),
            f,
        )
    # Last 5 episodes count: Pong seed 0 -> mean(10, 10, 10, 10, 10) = 10 (the -21s are older).
    write_eval(root, "Pong-seed0", "Pong", [-21, -21, -21, 10, 10, 10, 10, 10])
    write_eval(root, "Pong-seed1", "Pong", [0, 0, 0, 0, 0])  # 0
    write_eval(root, "Breakout-seed0", "Breakout", [30, 40])  # fewer than 5: mean 35
    write_eval(root, "Freeway-seed0", "Freeway", [20, 21, 22, 23, 24, 25])  # last 5: 23
    os.makedirs(os.path.join(root, "Boxing-seed0", "logs"))  # folder, no episodes
    with open(os.path.join(root, "Pong-seed0", "sweep-done.json"), "w") as f:
        json.dump({"frames": 10_000, "learner_steps": 5}, f)
    return root


def test_summary_matches_hand_computation(sweep):
    s = report.summarize(sweep, last=5)
    games = {g["game"]: g for g in s["per_game"]}
    pong = (hns_of("Pong", 10) + hns_of("Pong", 0)) / 2  # seeds averaged first
    breakout, freeway = hns_of("Breakout", 35), hns_of("Freeway", 23)
    assert games["Pong"]["final_score"] == pytest.approx(5.0)
    assert games["Pong"]["hns"] == pytest.approx(pong)
    assert games["Breakout"]["hns"] == pytest.approx(breakout)
    assert games["Freeway"]["hns"] == pytest.approx(freeway)
    # By hand (random / human): Pong (-20.7 / 14.6): 10 -> 86.97 %, 0 -> 58.64 %, seeds
    # averaged 72.80 %; Breakout (1.7 / 30.5): 35 -> 115.63 %; Freeway (0 / 29.6):
    # 23 -> 77.70 %. Median of (72.80, 77.70, 115.63) = 77.70 %, mean 88.71 %.
    vals = sorted([pong, breakout, freeway])
    assert s["median"] == pytest.approx(vals[1])
    assert s["mean"] == pytest.approx(sum(vals) / 3)
    assert s["median"] == pytest.approx(77.70, abs=0.01)
    assert s["mean"] == pytest.approx(88.71, abs=0.01)
    # Boxing has no results: missing, not zero, and not in the median / mean.
    assert games["Boxing"]["status"] == "missing" and games["Boxing"]["hns"] is None
    assert s["missing"] == ["Boxing"]
    assert s["games_with_results"] == 3 and s["games_planned"] == 4
    assert games["Pong"]["seeds_with_results"] == 2 and games["Pong"]["frames"] == 6500
    # Pong seed 0 has its done marker, seed 1 not: in progress.
    assert games["Pong"]["seeds_finished"] == 1 and games["Pong"]["status"] == "in progress"
    # The seed aggregate: the first 1 seed of every scored game (Breakout and
    # Freeway have one): Pong seed 0 86.97, Breakout 115.63, Freeway 77.70 %.
    # IQM of 3 trims int(0.25 * 3) = 0 from each end, so it is their mean;
    # with one run per game every stratified draw is the same, so is the CI.
    a = s["aggregate"]
    three = [hns_of("Pong", 10), breakout, freeway]
    assert (a["runs"], a["games"]) == (1, 3)
    assert a["iqm"] == pytest.approx(sum(three) / 3) and a["mean"] == pytest.approx(sum(three) / 3)
    assert a["median"] == pytest.approx(hns_of("Pong", 10))
    assert a["iqm_ci"] == pytest.approx([a["iqm"]] * 2)
    # --last changes the window: last 1 episode.
    s1 = report.summarize(sweep, last=1)
    assert {g["game"]: g["final_score"] for g in s1["per_game"]}["Freeway"] == 25


def test_files_tables_and_plots(sweep, tmp_path):
    out = str(tmp_path / "rep")
    assert report.main([sweep, f"--out={out}"]) == 0
    for name in (
        "report.md",
        "per_game.csv",
        "per_run.csv",
        "hns_per_game.png",
        "learning_curves.png",
    ):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "hns_per_game.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = {r["game"]: r for r in csv.DictReader(open(os.path.join(out, "per_game.csv")))}
    assert rows["Boxing"]["status"] == "missing" and rows["Boxing"]["hns"] == ""
    assert float(rows["Breakout"]["hns"]) == pytest.approx(hns_of("Breakout", 35), rel=1e-5)
    runs = list(csv.DictReader(open(os.path.join(out, "per_run.csv"))))
    assert len(runs) == 5
    md = open(os.path.join(out, "report.md")).read()
    assert "**Median HNS 77.7 %**, mean HNS 88.7 %, over 3 of 4 games (1 missing: Boxing)" in md
    assert "| Boxing | missing | 0/1 | missing | missing |" in md
    assert "IMPALA 191.8 %" in md and "STACX 364 %" in md
    assert "last 5 evaluator episodes" in md
    assert "Over 1 seed(s) x 3 game(s), 95 % bootstrap CIs: iqm HNS 93.4 % [93.4, 93.4]" in md


def test_seed_aggregate_bootstrap_by_hand():
    """Two seeds of one game, scores 0 and 10: every statistic of the pair is
    5; the bootstrap draws (0, 0), (0, 10), (10, 10) give 0, 5, 10, so the
    95 % CI is [0, 10]; a bad array is refused with its name and shape."""
    from launch.aggregate import interval_estimates

    a = interval_estimates({"x": [[0.0], [10.0]]}, reps=2000)["x"]
    assert a["iqm"] == a["median"] == a["mean"] == 5.0
    assert a["iqm_ci"] == [0.0, 10.0] and a["mean_ci"] == [0.0, 10.0]
    with pytest.raises(ValueError, match=r"scores\['x'\] has shape \(3,\)"):
        interval_estimates({"x": [1.0, 2.0, 3.0]})


def test_without_manifest_and_bad_input(tmp_path, capsys):
    root = str(tmp_path / "loose")
    write_eval(root, "Pong-seed3", "Pong", [1, 2, 3])
    write_eval(root, "my-breakout-run", "Breakout", [5])  # game read from the csv
    s = report.summarize(root)
    assert [g["game"] for g in s["per_game"]] == ["Breakout", "Pong"]
    assert s["missing"] == [] and s["median"] == pytest.approx(
        (hns_of("Pong", 2) + hns_of("Breakout", 5)) / 2
    )
    assert report.main([str(tmp_path / "nope")]) == 2
    os.makedirs(tmp_path / "empty")
    assert report.main([str(tmp_path / "empty")]) == 2
    assert report.main([root, "--last=0"]) == 2
    assert "no sweep.json" in capsys.readouterr().err
