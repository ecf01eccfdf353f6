"""The sweep's plan: which (game, seed) runs, each with its validated
RunConfig and run folder, and `<out>/sweep.json`, the manifest of every sweep
started on a folder. Both launchers (`launch.sweep.local`,
`launch.sweep.slurm`) and the dry run start from here."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Dict, List, Optional, Sequence

from configs import ConfigError, RunConfig, make_config, parse_count
from configs.presets import CATCH
from configs.games import all_games, get_game, reference_table, suggest_game
from launch.run_folder import Progress, RunFolder, now
from utils.files import read_json, write_json_atomic

MANIFEST = "sweep.json"
LOCK = ".sweep.lock"
MANIFEST_VERSION = 1


class SweepError(ValueError):
    """Bad sweep input (exit code 2)."""


def at_least(args: argparse.Namespace, flag: str, lo: int) -> None:
    """SweepError naming `--flag`, its value and the bound unless it is >= `lo`."""
    value = getattr(args, flag)
    if value < lo:
        raise SweepError(f"--{flag}={value} is not allowed: must be >= {lo}")


# ----------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------
def parse_games(text: str) -> List[str]:
    """'all' -> the 57 games; else comma-separated names (CamelCase, any case, or
    ale ids, or Catch, the built-in check game) -> canonical names, in the
    given order, without repeats."""
    text = (text or "").strip()
    if text.lower() == "all":
        return all_games()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SweepError(
            "--games is empty: give 'all' or comma-separated games, e.g. --games=Pong,Breakout"
        )
    by_lower = {g.lower(): g for g in [*reference_table(), CATCH]}
    games, unknown = [], []
    for name in names:
        if name.lower() in by_lower:
            game = by_lower[name.lower()]
        else:
            try:
                game = get_game(name).game  # an ale id such as ms_pacman
            except ValueError:
                hint = suggest_game(name)
                unknown.append(f"{name!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
                continue
        if game not in games:
            games.append(game)
    if unknown:
        raise SweepError(
            f"--games: unknown game(s) {', '.join(unknown)}; allowed: 'all' or "
            f"comma-separated names of the 57 games, e.g. Pong,Breakout,MsPacman "
            f"(see configs.games.all_games()), or {CATCH}"
        )
    return games


def run_name(game: str, seed: int) -> str:
    return f"{game}-seed{seed}"


@dataclasses.dataclass
class Run:
    """One (game, seed) of the plan and the validated config its program runs."""

    game: str
    seed: int
    cfg: RunConfig  # root = the sweep folder (absolute)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def run_dir(self) -> str:
        return self.cfg.run_dir

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.cfg.run_dir)

    @property
    def config_path(self) -> str:
        return self.folder.config_path

    @property
    def max_frames(self) -> int:
        return self.cfg.max_frames

    @property
    def max_learner_steps(self) -> int:
        return self.cfg.max_learner_steps

    @property
    def num_actors(self) -> int:
        return self.cfg.actors.num_actors

    @property
    def env(self):
        return self.cfg.env

    def progress(self) -> Progress:
        """How far its folder is against this plan's budget."""
        return self.folder.progress_of(self.cfg)

    def write_config(self) -> None:
        """The config its program runs, into its folder (`launch.run --config`)."""
        self.folder.save_config(self.cfg)

    def mark_done(self, counters: Dict, returncode: int) -> None:
        self.folder.write_marker(
            counters,
            game=self.game,
            seed=self.seed,
            max_frames=self.max_frames,
            max_learner_steps=self.max_learner_steps,
            returncode=returncode,
        )


def plan_runs(args: argparse.Namespace, out: str) -> List[Run]:
    """One validated RunConfig per (game, seed); SweepError on any bad value."""
    runs = []
    try:
        frames = parse_count("--frames", args.frames, "200e6") if args.frames else None
        for game in args.games:
            for seed in range(args.seeds):
                cfg = make_config(
                    args.preset,
                    args.agent,
                    game,
                    name=run_name(game, seed),
                    overrides=args.override,
                    root=out,
                    seed=seed,
                    max_frames=frames,
                    max_learner_steps=args.max_learner_steps,
                    num_actors=args.num_actors,
                )
                runs.append(Run(game, seed, cfg))
    except ConfigError as e:
        raise SweepError(str(e)) from None
    return runs


def load_manifest(out: str) -> Optional[Dict]:
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return None
    hint = "; move it away to start the manifest afresh (run folders are kept)"
    return read_json(path, f"sweep manifest {path!r}", SweepError, hint)


class Manifest:
    """`<out>/sweep.json`: the plan (union of every sweep started on this folder)
    and each run's last known status. Informational: finished/resume is decided
    from the run folders."""

    def __init__(self, out: str, args: argparse.Namespace, runs: Sequence[Run]):
        self.path = os.path.join(out, MANIFEST)
        old = load_manifest(out) or {}
        for key in ("agent", "preset"):
            if old.get(key) not in (None, getattr(args, key)):
                raise SweepError(
                    f"--{key}={getattr(args, key)!r} is not allowed for {out!r}: that sweep "
                    f"folder was started with --{key}={old[key]!r}; use another --out"
                )
        games = list(old.get("games", []))
        games += [g for g in args.games if g not in games]
        self.data = {
            "version": MANIFEST_VERSION,
            "agent": args.agent,
            "preset": args.preset,
            "games": games,
            "seeds": sorted(set(old.get("seeds", [])) | set(range(args.seeds))),
            "max_frames": runs[0].max_frames if runs else None,
            "max_learner_steps": runs[0].max_learner_steps if runs else 0,
            "overrides": list(args.override),
            "num_actors": runs[0].num_actors if runs else None,
            "parallel": args.parallel,
            "command": [sys.executable, "-m", "launch.sweep"] + args.argv,
            "created": old.get("created", now()),
            "updated": now(),
            "runs": {r["name"]: r for r in old.get("runs", [])},
        }
        for run in runs:
            entry = self.data["runs"].setdefault(run.name, {"attempts": 0})
            entry.update(
                game=run.game,
                seed=run.seed,
                name=run.name,
                run_dir=os.path.relpath(run.run_dir, out),
                max_frames=run.max_frames,
                max_learner_steps=run.max_learner_steps,
            )
            entry.setdefault("status", "pending")

    def update(self, run: Run, **fields) -> None:
        self.data["runs"][run.name].update(fields)
        self.save()

    def save(self) -> None:
        data = dict(self.data, updated=now(), runs=list(self.data["runs"].values()))
        write_json_atomic(self.path, data)
