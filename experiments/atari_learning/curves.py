"""Learning curves on real Atari games: the whole program, one game and agent per call.

    python -m experiments.atari_learning.curves --game=Pong --agent=impala --frames=10e6

Runs `python -m launch.run` (the real Launchpad program: Reverb, actors,
learner, evaluator) as a child process until `--frames` actor frames, in
`runs/atari_learning/<game>-<agent>-<preset>-s<seed>`. A stopped run (Ctrl-C,
a crash, a lost machine) continues its budget from that folder's checkpoint
when the same command is given again. Every call, finished or stopped, then
writes the run's entry into `experiments/atari_learning/results/summary.json`
(replacing the entry of the same run) and redraws `<game>.png` there:

    {"runs": [{"game", "agent", "preset", "seed", "frames", "frames_budget",
               "complete", "final_eval_return", "final_eval_hns", "eval_episodes",
               "curve": [[frames, eval_return], ...],
               "entropy_curve": [[frames, entropy], ...], "meta_curves": {...},
               "wall_s", "segments", "commit", "config", "machine"}]}

`final_eval_return` is the mean of the last 10 evaluation episodes
(unclipped returns, the evaluator samples from the policy); `entropy_curve`
is the acting head's policy entropy (nats per state) on the learner's batches;
`meta_curves` are the meta-parameter values per head (STACX, BMG).
`--report_only` rebuilds entries and plots from the run folders without running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from configs import HYPER_NAMES, ConfigError, RunConfig, make_config, parse_count
from launch.aggregate import interval_estimates
from launch.report import pyplot, rolling_mean
from launch.run_folder import RunFolder
from utils.files import read_json_or, write_json_atomic
from utils.machine import machine_facts
from utils.version import REPO_ROOT, git_commit

OUT_DIR = os.path.join(REPO_ROOT, "experiments", "atari_learning", "results")
SUMMARY = os.path.join(OUT_DIR, "summary.json")
# Runs of earlier settings, kept with the setting they tested ("attempt"): the
# record of how the debug preset was chosen (README.md in OUT_DIR).
ATTEMPTS = os.path.join(OUT_DIR, "attempts.json")
LAST_EPISODES = 10
MAX_POINTS = 400  # per learner-log curve kept in the summary


def run_name(game: str, agent: str, preset: str, seed: int, variant: str = "") -> str:
    return f"{game}-{agent}-{preset}-s{seed}" + (f"-{variant}" if variant else "")


def make_run_config(args: argparse.Namespace) -> RunConfig:
    """The run's RunConfig from the parsed command line; ConfigError on a bad value."""
    return make_config(
        args.preset,
        args.agent,
        args.game,
        name=run_name(args.game, args.agent, args.preset, args.seed, args.variant),
        overrides=args.override,
        root=args.root,
        seed=args.seed,
        max_frames=parse_count("--frames", args.frames, "10e6"),
    )


# A run that outlives a session's machine is carried over in git: its newest
# checkpoint, config, segments and CSV logs under unfinished/<run>/, restored
# into an empty run folder by the same command, removed once the run is complete.
UNFINISHED_DIR = os.path.join(REPO_ROOT, "experiments", "atari_learning", "unfinished")
CARRY_LIMIT_BYTES = 10 * 2**20


def _carry_files(run_dir: str) -> List[str]:
    """The run folder's files a resumption needs (relative paths)."""
    names = ["config.json", "experiment_segments.json"]
    logs = os.path.join(run_dir, "logs")
    if os.path.isdir(logs):
        names += [os.path.join("logs", n) for n in sorted(os.listdir(logs)) if n.endswith(".csv")]
    found = RunFolder(run_dir).checkpoints()
    if found:
        names.append(os.path.relpath(found[-1], run_dir))
    return [n for n in names if os.path.isfile(os.path.join(run_dir, n))]


def carry_over(cfg, complete: bool) -> Optional[str]:
    """unfinished/<run>/ <- the run folder's resumable state (incomplete run),
    or removed (complete run). Returns the folder written, if any."""
    dest = os.path.join(UNFINISHED_DIR, cfg.name)
    if complete:
        shutil.rmtree(dest, ignore_errors=True)
        return None
    files = _carry_files(cfg.run_dir)
    if not any(f.startswith("checkpoints") for f in files):
        return None
    size = sum(os.path.getsize(os.path.join(cfg.run_dir, f)) for f in files)
    if size > CARRY_LIMIT_BYTES:
        print(f"not carried over: {size / 2**20:.1f} MB > 10 MB ({cfg.run_dir})", file=sys.stderr)
        return None
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for f in files:
        os.makedirs(os.path.dirname(os.path.join(tmp, f)), exist_ok=True)
        shutil.copy2(os.path.join(cfg.run_dir, f), os.path.join(tmp, f))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def restore_carried(cfg) -> bool:
    """Copy unfinished/<run>/ into a run folder that has no checkpoint yet."""
    src = os.path.join(UNFINISHED_DIR, cfg.name)
    if not os.path.isdir(src) or RunFolder(cfg.run_dir).checkpoints():
        return False
    for folder, _, names in os.walk(src):
        for n in names:
            rel = os.path.relpath(os.path.join(folder, n), src)
            os.makedirs(os.path.dirname(os.path.join(cfg.run_dir, rel)), exist_ok=True)
            shutil.copy2(os.path.join(folder, n), os.path.join(cfg.run_dir, rel))
    print(f"restored {src} into {cfg.run_dir}", flush=True)
    return True


def _segments_path(run_dir: str) -> str:
    return os.path.join(run_dir, "experiment_segments.json")


def _read_segments(run_dir: str) -> List[dict]:
    return read_json_or(_segments_path(run_dir), [])


def run_program(cfg) -> int:
    """The program as a child process; SIGINT/SIGTERM are passed on to it (it
    stops cleanly and checkpoints). Each call is one segment of the run."""
    folder = RunFolder(cfg.run_dir)
    folder.save_config(cfg)
    cmd = [sys.executable, "-m", "launch.run", f"--config={folder.config_path}"]
    print("running:", " ".join(cmd), flush=True)
    start = time.time()
    child = subprocess.Popen(cmd, cwd=REPO_ROOT)
    forward = lambda signum, _frame: child.send_signal(signum)  # noqa: E731
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    segments = _read_segments(cfg.run_dir)
    segments.append(
        {
            "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
            "wall_s": round(time.time() - start, 1),
            "returncode": rc,
            "commit": git_commit(),
        }
    )
    write_json_atomic(_segments_path(cfg.run_dir), segments)
    return rc


def _thin(points: List[list], limit: int = MAX_POINTS) -> List[list]:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit - 1)] + [points[-1]]


def _float(v: Optional[str]) -> Optional[float]:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


def run_entry(
    cfg, agent: str, preset: str, overrides: Sequence[str] = (), variant: str = ""
) -> Optional[Dict]:
    """The summary entry of a run folder, from its evaluator and learner logs."""
    folder = RunFolder(cfg.run_dir)
    learner = folder.learner_rows()
    if not learner:
        return None
    evals = folder.evaluator_rows()
    # Each episode at the actor frames at which its parameters were published
    # (logs written before the evaluator recorded them: the episode's end).
    curve = [
        [int(_float(r.get("published_frames")) or float(r["frames"])), float(r["episode_return"])]
        for r in evals
    ]
    last = curve[-LAST_EPISODES:]
    hns = [h for h in (_float(r.get("hns")) for r in evals[-LAST_EPISODES:]) if h is not None]
    frames = int(float(learner[-1]["actor_frames"])) if learner else 0
    meta_cols = sorted(
        k
        for k in (learner[0] if learner else {})
        if k.startswith("train/meta/") and k.rsplit("/", 2)[-2] in HYPER_NAMES
    )

    def series(col):
        pts = [[int(float(r["actor_frames"])), _float(r.get(col))] for r in learner]
        return _thin([p for p in pts if p[1] is not None])

    segments = _read_segments(cfg.run_dir)
    return {
        "game": cfg.env.game,
        "agent": agent,
        "preset": preset,
        "seed": cfg.seed,
        "run": cfg.name,
        "overrides": list(overrides),
        "variant": variant,
        "frames": frames,
        "frames_budget": cfg.max_frames,
        "complete": folder.progress_of(cfg).finished,
        "final_eval_return": (sum(r for _, r in last) / len(last)) if last else None,
        "final_eval_hns": (sum(hns) / len(hns)) if hns else None,
        "eval_episodes": len(curve),
        "curve": curve,
        "entropy_curve": series("train/inner/entropy/h0"),
        "learning_rate_curve": series("train/inner/learning_rate"),
        "meta_curves": {c[len("train/meta/") :]: series(c) for c in meta_cols},
        "bmg_curves": {
            c[len("train/outer/") :]: series(c)
            for c in ("train/outer/target_distance", "train/outer/grounded_step_norm")
            if learner and c in learner[0]
        },
        "wall_s": round(sum(s["wall_s"] for s in segments), 1),
        "segments": segments,
        "commit": segments[-1]["commit"] if segments else git_commit(),
        "config": cfg.to_dict(),
        "machine": machine_facts(jax_facts=False),
    }


def _main_runs(runs: List[Dict], game: str) -> List[Dict]:
    """The runs of `game` at the preset's own settings (no --override, no --variant)."""
    return [
        r for r in runs if r["game"] == game and not r.get("overrides") and not r.get("variant")
    ]


def seed_aggregates(runs: List[Dict]) -> Dict[str, Dict[str, Dict]]:
    """{game: {agent: mean final_eval_return over the complete main runs'
    seeds, with its 95 % bootstrap CI, the IQM and median likewise}}."""
    out: Dict[str, Dict[str, Dict]] = {}
    for game in sorted({r["game"] for r in runs}):
        scores: Dict[str, Any] = {}
        seeds: Dict[str, List[int]] = {}
        for r in _main_runs(runs, game):
            if r["complete"] and r["final_eval_return"] is not None:
                scores.setdefault(r["agent"], []).append([r["final_eval_return"]])
                seeds.setdefault(r["agent"], []).append(r["seed"])
        if scores:
            stats = interval_estimates(scores)
            out[game] = {a: dict(stats[a], seeds=sorted(seeds[a])) for a in sorted(stats)}
    return out


def update_summary(entry: Dict) -> str:
    """Write `entry` into summary.json, replacing the entry of the same run,
    and recompute the seed aggregates."""
    summary = read_json_or(SUMMARY, {"runs": []})
    runs = [r for r in summary["runs"] if r.get("run") != entry["run"]] + [entry]
    summary["runs"] = sorted(runs, key=lambda r: (r["game"], r["agent"], r["seed"], r["run"]))
    summary["aggregate"] = seed_aggregates(summary["runs"])
    summary["aggregate_definition"] = (
        "per game and agent, over the seeds of its complete runs without overrides: "
        "final_eval_return's mean, IQM and median with 95 % bootstrap CIs (rliable)"
    )
    write_json_atomic(SUMMARY, summary)
    return SUMMARY


def _mean_curve(curves: List[List[list]], points: int = 200):
    """The mean over runs of their rolling-mean curves, on a common frame grid
    up to the shortest run's last frame."""
    curves = [c for c in curves if len(c) > 1]
    if not curves:
        return None, None
    end = min(c[-1][0] for c in curves)
    grid = np.linspace(0, end, points)
    ys = [
        np.interp(grid, [p[0] for p in c], rolling_mean([p[1] for p in c], LAST_EPISODES))
        for c in curves
    ]
    return grid, np.mean(ys, axis=0)


def _load_runs(source: str, game: str) -> List[Dict]:
    with open(source) as f:
        return [r for r in json.load(f)["runs"] if r["game"] == game]


def plot_game(game: str, source: str = SUMMARY) -> Optional[str]:
    """<game>.png from summary.json: evaluation return (the rolling mean of
    10 episodes; thin: each seed, thick: each agent's mean over seeds) and
    the acting head's policy entropy against frames, for the main runs.
    From attempts.json: <game>-attempts.png, one colour per attempt."""
    plt = pyplot()

    attempts = source == ATTEMPTS
    runs = _load_runs(source, game)
    runs = runs if attempts else _main_runs(runs, game)
    if not runs:
        return None
    fig, (ax, ax_ent) = plt.subplots(
        2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    agents = sorted({r["agent"] for r in runs})
    for i, r in enumerate(runs):
        colour = f"C{i}" if attempts else f"C{agents.index(r['agent'])}"
        if r["curve"]:
            x = [p[0] / 1e6 for p in r["curve"]]
            y = rolling_mean([p[1] for p in r["curve"]], LAST_EPISODES)
            label = f"{r['agent']}: {r['attempt'].split(':')[0]}" if attempts else None
            ax.plot(x, y, color=colour, lw=1.5 if attempts else 0.7, alpha=1 if attempts else 0.6)
            if label:
                ax.lines[-1].set_label(label)
        if r["entropy_curve"]:
            ax_ent.plot(
                [p[0] / 1e6 for p in r["entropy_curve"]],
                [p[1] for p in r["entropy_curve"]],
                color=colour,
                lw=0.7,
            )
    if not attempts:
        for a, agent in enumerate(agents):
            mine = [r for r in runs if r["agent"] == agent]
            grid, mean = _mean_curve([r["curve"] for r in mine])
            if grid is not None:
                seeds = ", ".join(str(r["seed"]) for r in mine)
                ax.plot(grid / 1e6, mean, color=f"C{a}", lw=2.5, label=f"{agent} (seeds {seeds})")
    ax.set_ylabel("evaluation return\n(rolling mean of 10 episodes)")
    ax.set_title(
        f"{game}: the whole program on 2 CPU cores"
        + (" (runs of earlier settings)" if attempts else "; thin: a seed, thick: the mean")
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax_ent.set_ylabel("policy entropy\n(nats per state)")
    ax_ent.set_xlabel(
        "actor frames at each episode's end (millions)"
        if attempts
        else "actor frames when the episode's parameters were published (millions)"
    )
    ax_ent.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(OUT_DIR, f"{game}-attempts.png" if attempts else f"{game}.png")
    os.makedirs(OUT_DIR, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_meta(game: str, source: str = SUMMARY) -> Optional[str]:
    """<game>-meta.png: every meta-parameter per head against frames, one
    panel per meta-parameter; colour: the run, line style: the head. All runs
    that learn meta-parameters, variants included (their overrides in the legend)."""
    plt = pyplot()

    runs = [r for r in _load_runs(source, game) if r.get("meta_curves") and r["agent"] != "impala"]
    if not runs:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    styles = ("-", "--", ":")
    for i, r in enumerate(runs):
        label = f"{r['agent']} s{r['seed']}" + (f" {r['variant']}" if r.get("variant") else "")
        label += "".join(f", {o}" for o in r.get("overrides", []))
        for ax, name in zip(axes.flat, HYPER_NAMES):
            for h, style in enumerate(styles):
                pts = r["meta_curves"].get(f"{name}/h{h}")
                if pts:
                    ax.plot(
                        [p[0] / 1e6 for p in pts],
                        [p[1] for p in pts],
                        color=f"C{i}",
                        ls=style,
                        lw=1,
                        label=label if (name, h) == (HYPER_NAMES[0], 0) else None,
                    )
    for ax, name in zip(axes.flat, HYPER_NAMES):
        ax.set_title(f"{name} (solid h0 acts, dashed h1, dotted h2)", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("actor frames (millions)")
    fig.legend(loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = os.path.join(OUT_DIR, f"{game}-meta.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.atari_learning.curves", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--agent", default="impala", help="impala | stacx | bmg")
    parser.add_argument("--preset", default="debug")
    parser.add_argument("--frames", default="10e6", help="actor frame budget, e.g. 10e6")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--root",
        default=os.path.join("runs", "atari_learning"),
        help="folder holding the run folders",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="section.field=value, passed to the program (repeatable)",
    )
    parser.add_argument(
        "--variant",
        default="",
        help="a name for a run with --override values (e.g. kl0): its own run folder "
        "and summary entry beside the preset's run",
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="only rebuild the summary entry and plot from the run folder",
    )
    parser.add_argument(
        "--merge_from",
        default=None,
        help="only copy the run entries of another summary.json (e.g. one written by a "
        "checkout that ran the curves) into this one and redraw their plots",
    )
    parser.add_argument(
        "--plot_attempts",
        action="store_true",
        help="only draw <game>-attempts.png from attempts.json",
    )
    return parser.parse_args(argv)


def merge_summary(path: str) -> List[Optional[str]]:
    """Copy every run entry of another summary.json into ours (same run name:
    replaced) and redraw the plots of their games."""
    with open(path) as f:
        entries = json.load(f)["runs"]
    for entry in entries:
        update_summary(entry)
    games = sorted({e["game"] for e in entries})
    return [plot_game(g) for g in games] + [plot_meta(g) for g in games]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge_from:
        print("plots:", ", ".join(str(p) for p in merge_summary(args.merge_from)))
        return 0
    try:
        cfg = make_run_config(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.plot_attempts:
        print(f"plot: {plot_game(args.game, ATTEMPTS)}")
        return 0
    if not args.report_only:
        restore_carried(cfg)
    rc = 0 if args.report_only else run_program(cfg)
    entry = run_entry(cfg, args.agent, args.preset, args.override, args.variant)
    if entry is None:
        print(f"no learner log in {cfg.run_dir}: nothing to report", file=sys.stderr)
        return rc or 1
    carried = carry_over(cfg, entry["complete"])
    if carried:
        print(f"unfinished: {carried} (commit it; the same command resumes the run)")
    print(
        f"summary: {update_summary(entry)}; plots: {plot_game(cfg.env.game)}, "
        f"{plot_meta(cfg.env.game)}"
    )
    print(
        f"{entry['run']}: {entry['frames']} of {entry['frames_budget']} frames, "
        f"final_eval_return {entry['final_eval_return']} over the last "
        f"{min(LAST_EPISODES, entry['eval_episodes'])} of {entry['eval_episodes']} "
        f"evaluation episodes, wall {entry['wall_s']:.0f} s",
        flush=True,
    )
    return rc


if __name__ == "__main__":
    sys.exit(main())
