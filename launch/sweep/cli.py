"""The sweep's command line: `python -m launch.sweep`; its flags are read
here once and handed to the plan, a launcher or the dry run."""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import sys
from typing import Optional, Sequence

from configs import AGENTS, PRESETS
from launch import sweep as sweep_package
from launch.sweep import slurm
from launch.sweep.dry_run import dry_run
from launch.sweep.local import Sweep
from launch.sweep.plan import LOCK, Manifest, SweepError, at_least, parse_games, plan_runs


# The package docstring is the user guide; --help prints it.
USAGE = sweep_package.__doc__ or ""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m launch.sweep",
        description=USAGE.split("\n")[0],
        epilog=USAGE.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--games", default="all", help="'all' (the 57) or comma-separated, e.g. Pong,Breakout"
    )
    p.add_argument("--agent", default="bmg", help="impala | stacx | bmg")
    p.add_argument("--preset", default="full", help="debug | full | test")
    p.add_argument(
        "--frames",
        default=None,
        help="frame budget per run, e.g. 200e6 (default: the preset's max_frames)",
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds per game: 0 .. N-1")
    p.add_argument("--out", default="runs/sweep", help="sweep folder (run folders go inside)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once")
    p.add_argument(
        "--max_learner_steps",
        type=int,
        default=None,
        help="learner step budget per run, besides --frames (whichever comes first)",
    )
    p.add_argument("--num_actors", type=int, default=None, help="actor processes per run")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="section.field=value for every run (repeatable), e.g. meta.L=4",
    )
    p.add_argument(
        "--dry_run",
        action="store_true",
        help="check every environment, print the plan and a time estimate; start nothing",
    )
    p.add_argument("--check_steps", type=int, default=20, help="dry run: random steps per game")
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="dry run: frames/s per run for the estimate (default: measured)",
    )
    p.add_argument(
        "--stop_timeout",
        type=float,
        default=90.0,
        help="seconds to wait for programs to stop after Ctrl-C before SIGKILL",
    )
    p.add_argument("--quiet", action="store_true", help="do not echo the learner's progress lines")
    p.add_argument(
        "--launcher",
        default="local",
        help="local: programs on this machine, --parallel at a time; slurm: one job array "
        "on a Slurm cluster (see the Slurm flags)",
    )
    slurm.add_flags(p)
    args = p.parse_args(argv)
    args.argv = list(argv)
    return args


def validate(args: argparse.Namespace) -> None:
    if args.agent not in AGENTS:
        raise SweepError(f"--agent={args.agent!r} is not allowed: one of {list(AGENTS)}")
    if args.preset not in PRESETS:
        raise SweepError(f"--preset={args.preset!r} is not allowed: one of {list(PRESETS)}")
    for flag in ("seeds", "parallel", "check_steps"):
        at_least(args, flag, 1)
    if args.fps is not None and not (args.fps > 0 and math.isfinite(args.fps)):
        raise SweepError(f"--fps={args.fps} is not allowed: must be a positive number")
    if args.launcher not in ("local", "slurm"):
        raise SweepError(f"--launcher={args.launcher!r} is not allowed: one of ['local', 'slurm']")
    if args.launcher == "local" and (args.status or args.cancel):
        raise SweepError("--status and --cancel are for --launcher=slurm")
    args.games = parse_games(args.games)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = os.path.abspath(args.out)
    try:
        validate(args)
        runs = plan_runs(args, out)
        if args.dry_run:
            return dry_run(args, out, runs)
        os.makedirs(out, exist_ok=True)
        lock = open(os.path.join(out, LOCK), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(
                f"another sweep is running on {out!r} (it holds {LOCK}); "
                f"wait for it or stop it first"
            ) from None
        manifest = Manifest(out, args, runs)
        if args.launcher == "slurm":
            try:
                if not (args.status or args.cancel):
                    manifest.save()
                return slurm.main_slurm(args, out, runs)
            finally:
                lock.close()
    except (SweepError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return Sweep(args, out, runs, manifest).run()
    finally:
        lock.close()
