"""launch.sweep: game validation, finished/resume detection, the dry run over
all 57 games (in-process environments), and a real 2-game sweep that is
interrupted and started again."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs.games import all_games
from launch import report
from launch.run_folder import DONE_MARKER, RUN_LOG, RunFolder
from launch.sweep import cli, dry_run, local, plan
from learner import checkpoint as ckpt_lib
from tests.conftest import ROOT
from tests.programs import Program, catch_sweep, learner_step, tree_size, wait_for


# ----------------------------------------------------------------------------
# Fast
# ----------------------------------------------------------------------------
def test_parse_games():
    assert plan.parse_games("all") == all_games() and len(all_games()) == 57
    assert plan.parse_games(" pong, Breakout,ms_pacman,Pong ") == ["Pong", "Breakout", "MsPacman"]
    assert plan.parse_games("catch,Pong") == ["Catch", "Pong"]  # the check game, not in 'all'

    with pytest.raises(plan.SweepError, match=r"'Pongg' \(did you mean 'Pong'\?\)"):
        plan.parse_games("Pongg,Breakout")
    with pytest.raises(plan.SweepError, match="empty"):
        plan.parse_games(" , ")


def test_bad_input_exits_2_and_starts_nothing(tmp_path, capsys):
    out = str(tmp_path / "sw")
    assert cli.main(["--games=Pong,Brekout", f"--out={out}"]) == 2
    assert "did you mean 'Breakout'?" in capsys.readouterr().err
    assert cli.main(["--games=Pong", "--override=meta.L=0", f"--out={out}"]) == 2
    assert "MetaConfig.L=0 is not allowed" in capsys.readouterr().err
    assert cli.main(["--games=Pong", "--agent=dqn", f"--out={out}"]) == 2
    assert cli.main(["--games=Pong", "--seeds=0", f"--out={out}"]) == 2
    assert cli.main(["--games=Pong", "--frames=1.5", f"--out={out}"]) == 2
    assert not os.path.exists(out)


def _args(out, *extra):
    args = cli.parse_args(
        ["--games=Pong,Breakout", "--preset=test", "--agent=impala", f"--out={out}", *extra]
    )
    cli.validate(args)
    return args


def _fake_checkpoint(run_dir, step, frames):
    ckpt_lib.save(
        ckpt_lib.checkpoint_dir(run_dir),
        step,
        [np.zeros(2)],
        {"frames": frames, "learner_steps": step},
        {},
    )


def test_finished_detection_marker_and_checkpoint(tmp_path):
    out = str(tmp_path)
    runs = plan.plan_runs(_args(out, "--frames=1000", "--seeds=2"), out)
    assert [r.name for r in runs] == [
        "Pong-seed0",
        "Pong-seed1",
        "Breakout-seed0",
        "Breakout-seed1",
    ]
    pong0, pong1, breakout0, _ = runs
    assert pong0.run_dir == os.path.join(out, "Pong-seed0") and pong0.max_frames == 1000
    assert pong0.progress()._asdict() == {
        "finished": False,
        "frames": 0.0,
        "learner_steps": 0.0,
        "source": "none",
        "counters": None,
    }
    _fake_checkpoint(pong1.run_dir, 3, 400)  # partial: resumes
    state = pong1.progress()._asdict()
    assert not state["finished"] and state["frames"] == 400 and state["source"] == "checkpoint"
    _fake_checkpoint(pong1.run_dir, 9, 1200)  # budget reached, no marker yet: finished
    assert pong1.progress()._asdict()["finished"]
    # A marker counts only if it meets the current budget (a larger --frames resumes).
    os.makedirs(breakout0.run_dir)
    with open(os.path.join(breakout0.run_dir, DONE_MARKER), "w") as f:
        json.dump({"frames": 1000, "learner_steps": 7}, f)
    assert breakout0.progress()._asdict()["finished"]
    bigger = plan.plan_runs(_args(out, "--frames=2000"), out)[1]
    assert bigger.name == "Breakout-seed0" and not bigger.progress()._asdict()["finished"]
    # A learner-step budget finishes a run too (whichever budget comes first).
    steps = plan.plan_runs(_args(out, "--frames=1e9", "--max_learner_steps=9", "--seeds=2"), out)[1]
    assert steps.name == "Pong-seed1" and steps.progress()._asdict()["finished"]
    # Corrupt newest checkpoint: the previous one is used.
    with open(
        os.path.join(ckpt_lib.checkpoint_dir(pong1.run_dir), "ckpt-0000000099.npz"), "w"
    ) as f:
        f.write("junk")
    assert RunFolder(pong1.run_dir).checkpoint_counters()["frames"] == 1200


def test_manifest_refuses_another_agent_and_a_second_sweep(tmp_path, capsys):
    out = str(tmp_path)
    args = _args(out)
    plan.Manifest(out, args, plan.plan_runs(args, out)).save()
    data = json.load(open(os.path.join(out, plan.MANIFEST)))
    assert data["agent"] == "impala" and data["games"] == ["Pong", "Breakout"]
    assert {r["name"]: r["status"] for r in data["runs"]} == {
        "Pong-seed0": "pending",
        "Breakout-seed0": "pending",
    }
    assert cli.main(["--games=Pong", "--preset=test", "--agent=bmg", f"--out={out}"]) == 2
    assert "started with --agent='impala'" in capsys.readouterr().err
    with open(os.path.join(out, plan.LOCK), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cli.main(["--games=Pong", "--preset=test", "--agent=impala", f"--out={out}"]) == 2
        assert "another sweep is running" in capsys.readouterr().err


FAKE_PROGRAM = r"""
import json, os, sys, time
from learner import checkpoint as ckpt_lib
import numpy as np
run_dir, frames, events = sys.argv[1], float(sys.argv[2]), sys.argv[3]
name = os.path.basename(run_dir)
with open(events, "a") as f:
    f.write(json.dumps(["start", name, time.time()]) + "\n")
# The first run in plan order holds until another run starts after it, so
# that two at once is what the scheduler does rather than what the machine's
# speed allows; only a scheduler that never starts a second meets the bound.
deadline = time.time() + 30
while name == "Pong-seed0" and time.time() < deadline:
    lines = [json.loads(line) for line in open(events) if line.endswith("\n")]
    mine = max(i for i, e in enumerate(lines) if e[:2] == ["start", name])
    if any(e[0] == "start" for e in lines[mine + 1:]):
        break
    time.sleep(0.05)
time.sleep(0.6)
failed = "Breakout" in name
if not failed:
    ckpt_lib.save(ckpt_lib.checkpoint_dir(run_dir), 5, [np.zeros(1)],
                  {"frames": frames, "learner_steps": 5}, {})
# Every exit ends its interval, a failed one too: otherwise the next start,
# before a slower run's end, counts three at once.
with open(events, "a") as f:
    f.write(json.dumps(["end", name, time.time()]) + "\n")
sys.exit(1 if failed else 0)
"""


def test_scheduler_parallel_markers_failures(tmp_path, monkeypatch, capsys):
    """--parallel=2 over 3 runs with a stand-in for launch.run: at most 2 at once,
    budget reached -> done + marker, exit 1 -> failed; a restart skips the done ones."""
    out, events = str(tmp_path / "sw"), str(tmp_path / "events.jsonl")
    monkeypatch.setattr(
        local,
        "child_command",
        lambda run: [
            sys.executable,
            "-c",
            FAKE_PROGRAM,
            run.run_dir,
            str(run.max_frames),
            events,
        ],
    )
    argv = [
        "--games=Pong,Breakout,Freeway",
        "--preset=test",
        "--agent=impala",
        "--seeds=1",
        "--frames=1000",
        "--parallel=2",
        "--quiet",
        f"--out={out}",
    ]
    assert cli.main(argv) == 1  # Breakout failed
    text = capsys.readouterr().out
    assert "Breakout-seed0 failed (exit code 1" in text and "2 done, 1 failed" in text, text
    running, peak = 0, 0
    for kind, _, _ in sorted((json.loads(line) for line in open(events)), key=lambda e: e[2]):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    for name in ("Pong-seed0", "Freeway-seed0"):
        marker = RunFolder(os.path.join(out, name)).marker()
        assert marker["frames"] == 1000 and marker["max_frames"] == 1000
    assert RunFolder(os.path.join(out, "Breakout-seed0")).marker() is None
    runs = {r["name"]: r for r in json.load(open(os.path.join(out, plan.MANIFEST)))["runs"]}
    assert (
        runs["Breakout-seed0"]["status"] == "failed" and runs["Breakout-seed0"]["returncode"] == 1
    )
    assert "=== " in open(os.path.join(out, "Breakout-seed0", RUN_LOG)).read()
    # Again: only the failed run starts.
    os.unlink(events)
    assert cli.main(argv) == 1
    starts = [e[1] for e in map(json.loads, open(events)) if e[0] == "start"]
    assert starts == ["Breakout-seed0"]
    text = capsys.readouterr().out
    assert "skip Pong-seed0: finished" in text and "skip Freeway-seed0: finished" in text


@pytest.mark.slow
def test_dry_run_builds_and_steps_all_57_environments(tmp_path, capsys, monkeypatch):
    """The dry run builds each game's environment in this process (1 env), steps
    it, prints the plan and a time estimate, and starts nothing."""
    checked = {}
    real = dry_run.check_environments

    def spy(envs, steps=20, **kw):
        checked.update(real(envs, steps=steps, **kw))
        return checked

    monkeypatch.setattr(dry_run, "check_environments", spy)
    out = str(tmp_path / "sw")
    t0 = time.time()
    rc = cli.main(
        [
            "--games=all",
            "--agent=bmg",
            "--preset=full",
            "--frames=200e6",
            "--seeds=3",
            "--parallel=4",
            "--check_steps=5",
            "--dry_run",
            f"--out={out}",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert sorted(checked) == sorted(all_games())
    for game, r in checked.items():
        assert r["ok"], (game, r)
        assert 2 <= r["num_actions"] <= 18 and r["steps_per_s"] > 0 and r["frames_per_step"] == 4
    assert "57 game(s) x 3 seed(s) = 171 runs" in text
    assert "environments: 57/57 games build and step" in text
    assert "Alien-seed0" in text and "Zaxxon-seed2" in text
    assert "171 run(s) to go, 34,200,000,000 frames in all" in text
    assert "time estimate:" in text and "emulator only" in text and "lower bound" in text
    assert "nothing started" in text
    assert not os.path.exists(out)
    print(f"dry run over 57 games: {time.time() - t0:.1f} s")


# ----------------------------------------------------------------------------
# End to end: a real sweep of 2 games, interrupted and started again
# ----------------------------------------------------------------------------
def _snapshot(folder):
    return {
        os.path.relpath(os.path.join(d, f), folder): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, files in os.walk(folder)
        for f in files
    }


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_sweep_interrupted_and_resumed(tmp_path):
    out = str(tmp_path / "sweep")
    steps = 40  # learner steps per run (impala, test preset: ~10 steps/s once compiled)
    cmd = catch_sweep(out, steps)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    seed0, seed1 = os.path.join(out, "Catch-seed0"), os.path.join(out, "Catch-seed1")
    log1 = tmp_path / "first.log"
    first = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=open(log1, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    child_pgids = set()
    try:
        # seed 0 finishes; seed 1 starts; once its learner has made updates, Ctrl-C.
        moving = lambda: tree_size(out)  # noqa: E731
        wait_for(
            lambda: os.path.exists(os.path.join(seed0, DONE_MARKER)),
            120,
            "seed 0 to finish",
            first,
            progress=moving,
        )
        wait_for(
            lambda: learner_step(seed1) >= 2,
            120,
            "seed 1's learner to log updates",
            first,
            progress=moving,
        )
        manifest = json.load(open(os.path.join(out, plan.MANIFEST)))
        child_pgids = {r["pid"] for r in manifest["runs"] if r.get("pid")}
        assert len(child_pgids) == 1  # seed 1's program, in its own process group
        os.kill(first.pid, signal.SIGINT)
        rc = first.wait(timeout=150)
        text = log1.read_text()
        assert rc == 128 + signal.SIGINT, text
        assert "Catch-seed1 interrupted" in text and "1 done, 1 interrupted" in text
        assert not any(_group_alive(p) for p in child_pgids), "program processes left behind"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        for p in child_pgids:
            if _group_alive(p):
                os.killpg(p, signal.SIGKILL)

    # seed 1 stopped short of its budget with a last checkpoint; seed 0 reached it.
    stopped = RunFolder(seed1).checkpoint_counters()
    assert stopped is not None and 0 < stopped["learner_steps"] < steps, stopped
    assert RunFolder(seed0).checkpoint_counters()["learner_steps"] >= steps
    manifest = json.load(open(os.path.join(out, plan.MANIFEST)))
    assert {r["name"]: r["status"] for r in manifest["runs"]} == {
        "Catch-seed0": "done",
        "Catch-seed1": "interrupted",
    }
    seed0_files = _snapshot(seed0)

    # Started again: seed 0 is skipped untouched, seed 1 resumes and finishes.
    second = Program(str(tmp_path), "sweep", command=cmd[1:])  # run folder: the sweep's
    wait_for(lambda: second.proc.poll() is not None, 120, "the resumed sweep to end", second)
    code, _ = second.wait_exit(10)
    text = second.output()
    assert code == 0, text
    assert "skip Catch-seed0: finished" in text
    assert "start Catch-seed1 (1/1, resuming at" in text
    assert "start Catch-seed0" not in text
    assert _snapshot(seed0) == seed0_files
    assert f"resumed from {stopped['checkpoint']}" in open(os.path.join(seed1, RUN_LOG)).read()
    final = RunFolder(seed1).checkpoint_counters()
    # Counters continue: the learner's exactly; the actors' frames as far as
    # they were reported before each checkpoint.
    assert final["learner_steps"] >= steps
    assert final["trajectories_consumed"] > stopped["trajectories_consumed"]
    assert final["frames"] >= stopped["frames"]
    manifest = json.load(open(os.path.join(out, plan.MANIFEST)))
    runs = {r["name"]: r for r in manifest["runs"]}
    assert runs["Catch-seed0"]["status"] == "done" and runs["Catch-seed0"]["attempts"] == 1
    assert runs["Catch-seed1"]["status"] == "done" and runs["Catch-seed1"]["attempts"] == 2
    assert os.path.exists(os.path.join(seed1, DONE_MARKER))

    # A third start has nothing to do; the report reads the real evaluator logs.
    third = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "2 finished, 0 to run" in third.stdout
    s = report.summarize(out)
    assert s["games_planned"] == 1 and s["per_game"][0]["game"] == "Catch"
    for g in s["per_game"]:  # Catch has no human score: a final score, no HNS
        assert g["status"] == "finished" and g["final_score"] is not None and g["hns"] is None, g
    for run_dir in (seed0, seed1):  # each ended with an evaluation of its final parameters
        folder = RunFolder(run_dir)
        last_step = float(folder.evaluator_rows()[-1]["learner_steps"])
        assert last_step == folder.checkpoint_counters()["learner_steps"], run_dir


def test_progress_table_gives_share_of_budget_and_eta(tmp_path, capsys):
    out = str(tmp_path)
    runs = plan.plan_runs(_args(out, "--frames=1000"), out)
    pong, breakout = runs
    _fake_checkpoint(pong.run_dir, 3, 400)
    os.makedirs(os.path.join(pong.run_dir, "logs"))
    with open(os.path.join(pong.run_dir, "logs", "learner.csv"), "w") as f:
        f.write("time,learner_steps,learner_fps\n1.0,2,50\n2.0,3,100\n")  # median 75 frames/s
    _fake_checkpoint(breakout.run_dir, 9, 1000)
    assert dry_run._print_progress(runs) == [600.0]
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line}
    assert lines["Pong-seed0"][1:] == ["partial", "400", "1,000", "40.0%", "8s"]
    assert lines["Breakout-seed0"][1:] == ["done", "1,000", "1,000", "100.0%", "0s"]
