"""`python -m launch.sweep --dry_run`: build and step every game's
environment in this process, print the plan with each run's progress, and
estimate the time it needs; nothing starts."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from actors.environments import make_vector_env
from launch.sweep.plan import Run
from utils.progress import format_duration


def check_environments(
    envs: Dict[str, Any], steps: int = 20, seed: int = 0, log=print
) -> Dict[str, Dict]:
    """Build one environment of each game in this process, reset it and take
    `steps` random actions. {game: {ok, num_actions, steps_per_s, frames_per_step, error}}."""
    rng = np.random.default_rng(seed)
    results: Dict[str, Dict[str, Any]] = {}
    for game, env_cfg in envs.items():
        try:
            with make_vector_env(env_cfg, num_envs=1, seed=seed) as env:
                obs = env.reset()
                if obs.shape != (1,) + tuple(env.observation_shape):
                    raise RuntimeError(f"reset returned shape {obs.shape}")
                t0 = time.perf_counter()
                for _ in range(steps):
                    res = env.step(rng.integers(0, env.num_actions, size=1))
                dt = time.perf_counter() - t0
                if res.observation.shape != obs.shape:
                    raise RuntimeError(f"step returned shape {res.observation.shape}")
                results[game] = {
                    "ok": True,
                    "num_actions": env.num_actions,
                    "steps_per_s": steps / max(dt, 1e-9),
                    "frames_per_step": env.frames_per_step,
                }
        except Exception as e:  # report every failing game, not just the first
            results[game] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            log(f"  {game}: FAILED {type(e).__name__}: {e}")
    return results


def measured_program_fps(runs: Sequence[Run]) -> Optional[float]:
    """Median over this sweep's runs of their recent learner throughput
    (`RunFolder.learner_fps`): the real speed of the program on this host."""
    per_run = [fps for fps in (run.folder.learner_fps() for run in runs) if fps]
    return statistics.median(per_run) if per_run else None


def _print_progress(runs: List[Run]) -> List[float]:
    """Each run's status, frames, share of its budget and time to go at its
    own measured speed; returns the frames still to go of each unfinished run."""
    print(f"\n{'run':<28} {'status':<9} {'frames done':>14} {'budget':>14} {'done':>6} {'eta':>9}")
    remaining = []
    for run in runs:
        state = run.progress()
        status = "done" if state.finished else ("partial" if state.source != "none" else "pending")
        share = 1.0 if state.finished else run.cfg.budget_share(state.frames, state.learner_steps)
        fps = run.folder.learner_fps()
        left = max(0.0, run.max_frames - state.frames)
        eta = 0.0 if state.finished else (left / fps if fps else None)
        print(
            f"{run.name:<28} {status:<9} {state.frames:>14,.0f} {run.max_frames:>14,} "
            f"{100 * share:>5.1f}% {format_duration(eta):>9}"
        )
        if not state.finished:
            remaining.append(left)
    print(f"\n{len(remaining)} run(s) to go, {sum(remaining):,.0f} frames in all")
    return remaining


def _estimate_fps(args: argparse.Namespace, runs: List[Run], ok: List[Dict]) -> tuple:
    """(frames/s per run, where that figure comes from): the best measurement available."""
    program_fps = measured_program_fps(runs)
    if args.fps:
        return float(args.fps), "given with --fps"
    if program_fps:
        return program_fps, (
            "median learner_fps in logs/learner.csv of this sweep's "
            "runs (the whole program on this host)"
        )
    if ok:
        env_fps = statistics.median(r["steps_per_s"] * r["frames_per_step"] for r in ok)
        cores = os.cpu_count() or 1
        workers = min(runs[0].num_actors, cores)
        return env_fps * workers, (
            f"emulator only: {env_fps:,.0f} frames/s per env measured here (median over "
            f"games, one env, random actions) x {workers} actor(s) on {cores} core(s). "
            f"This ignores the policy network and the learner, which are usually the "
            f"bottleneck, so the time is a lower bound; run one game for a few minutes "
            f"and dry-run again (it then uses the measured learner_fps) or pass --fps"
        )
    return float("nan"), "nothing measured"


def _print_estimate(
    args: argparse.Namespace, remaining: List[float], fps: float, source: str
) -> None:
    per_run = [f / fps for f in remaining]
    waves = math.ceil(len(remaining) / args.parallel)
    slots = [0.0] * min(args.parallel, len(remaining))  # list scheduling, in plan order
    for t in per_run:
        slots[slots.index(min(slots))] += t
    print(f"time estimate: {fps:,.0f} frames/s per run ({source}).")
    print(
        f"  one run ~{format_duration(max(per_run))}; "
        f"all {len(remaining)} ~{format_duration(max(slots))} "
        + (
            "one after another"
            if args.parallel == 1
            else f"with {args.parallel} at a time ({waves} waves; assumes each of the "
            f"{args.parallel} concurrent runs gets that speed, i.e. {args.parallel}x the "
            f"hardware)"
        )
    )


def dry_run(args: argparse.Namespace, out: str, runs: List[Run]) -> int:
    games: Dict[str, Any] = {}
    for run in runs:
        games.setdefault(run.game, run.env)
    print(
        f"dry run: {len(games)} game(s) x {args.seeds} seed(s) = {len(runs)} runs, agent "
        f"{args.agent}, preset {args.preset}, {runs[0].max_frames:,} frames per run"
        + (f" or {runs[0].max_learner_steps:,} learner steps" if runs[0].max_learner_steps else "")
        + f", {runs[0].num_actors} actor(s) per run, {args.parallel} run(s) at a time",
        flush=True,
    )
    print(
        f"checking environments: one env per game, reset + {args.check_steps} random steps, "
        f"in this process",
        flush=True,
    )
    t0 = time.time()
    checks = check_environments(games, steps=args.check_steps)
    failed = [g for g, r in checks.items() if not r["ok"]]
    ok = [r for r in checks.values() if r["ok"]]
    print(
        f"environments: {len(ok)}/{len(checks)} games build and step ({time.time() - t0:.1f} s)"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        flush=True,
    )

    remaining = _print_progress(runs)
    fps, source = _estimate_fps(args, runs, ok)
    if remaining and math.isfinite(fps) and fps > 0:
        _print_estimate(args, remaining, fps, source)
    print("dry run: nothing started.")
    return 1 if failed else 0
