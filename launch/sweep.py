"""Run many games and seeds: `python -m launch.sweep --games=all --agent=bmg --seeds=3`.

Each (game, seed) is its own `python -m launch.run` program with its own run
folder `<out>/<Game>-seed<k>`, started in its own process group; `--parallel=N`
runs N at once. The sweep writes `<out>/sweep.json` (the plan and every run's
status) and appends each program's output to `<out>/<run>/sweep.log`.

Finished and resumed runs. The truth is on disk: a run is finished when the
counters of its newest readable checkpoint reach the budget (frames >=
max_frames, or learner_steps >= max_learner_steps when that budget is set),
exactly the test the learner uses to stop. When a program reaches its budget
the sweep writes `<run>/sweep-done.json` (the counters and the budget); a run
whose marker, or else whose checkpoint, meets the current budget is skipped.
Anything else is started again and `launch.run` resumes it from its checkpoint
(counters, CSV logs and parameters continue). A larger `--frames` on a later
sweep makes finished runs unfinished again, and they continue.

Ctrl-C (SIGINT) or SIGTERM: the sweep sends SIGTERM to every running program's
process group (the Launchpad launcher and its nodes; the learner writes a last
checkpoint), waits for them (`--stop_timeout`, then SIGKILL; a second Ctrl-C
kills at once), records them as interrupted and exits 130 (SIGINT) / 143.

`--dry_run` builds every game's environment in this process, steps it, measures
the emulator's speed and prints the plan with a time estimate; nothing starts.

`--launcher=slurm` submits the unfinished runs as one Slurm job array instead
(`launch/slurm.py`): same run folders, same skip-and-resume rule;
`--status` and `--cancel` follow and stop it.

Exit codes: 0 every run finished; 1 a run failed or stopped short of its budget
(or a dry-run environment failed); 2 bad input; 128 + signal when interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from utils.files import write_json_atomic

if TYPE_CHECKING:
    from configs import RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = "sweep.json"
DONE_MARKER = "sweep-done.json"
RUN_LOG = "sweep.log"
CONFIG_FILE = "config.json"  # the run's RunConfig; launch.run writes the same file itself
LOCK = ".sweep.lock"
MANIFEST_VERSION = 1


class SweepError(ValueError):
    """Bad sweep input (exit code 2)."""


# ----------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------
def parse_games(text: str) -> List[str]:
    """'all' -> the 57 games; else comma-separated names (CamelCase, any case, or
    ale ids) -> canonical CamelCase names, in the given order, without repeats."""
    from configs.games import all_games, get_game, reference_table, suggest_game

    text = (text or "").strip()
    if text.lower() == "all":
        return all_games()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SweepError(
            "--games is empty: give 'all' or comma-separated games, e.g. --games=Pong,Breakout"
        )
    by_lower = {g.lower(): g for g in reference_table()}
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
            f"(see configs.games.all_games())"
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
    def config_path(self) -> str:
        return os.path.join(self.run_dir, CONFIG_FILE)

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

    def budget_reached(self, counters: Optional[Dict]) -> bool:
        """The learner's own stopping test (`RunConfig.budget_reached`) on saved counters."""
        return counters is not None and self.cfg.budget_reached(
            float(counters.get("frames", 0)), float(counters.get("learner_steps", 0))
        )


def plan_runs(args: argparse.Namespace, out: str) -> List[Run]:
    """One validated RunConfig per (game, seed); SweepError on any bad value."""
    from configs import ConfigError, make_config, parse_count

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


def child_command(args: argparse.Namespace, run: Run, out: str) -> List[str]:
    """`launch.run` on the config file the sweep wrote for this run (`write_config`)."""
    return [sys.executable, "-m", "launch.run", f"--config={run.config_path}"]


def write_config(run: Run) -> None:
    from configs import save_config

    save_config(run.cfg, run.config_path)


# ----------------------------------------------------------------------------
# Progress on disk
# ----------------------------------------------------------------------------
def checkpoint_counters(run_dir: str) -> Optional[Dict[str, float]]:
    """Counters of the newest readable checkpoint (reads only its JSON header)."""
    import numpy as np
    from learner.checkpoint import checkpoint_dir, list_checkpoints

    for step, path in reversed(list_checkpoints(checkpoint_dir(run_dir))):
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
            counters = dict(header.get("counters", {}))
            counters.setdefault("learner_steps", float(header.get("step", step)))
            counters["checkpoint"] = path
            return counters
        except Exception:  # corrupt or half-deleted: try the previous one
            continue
    return None


def read_marker(run_dir: str) -> Optional[Dict]:
    try:
        with open(os.path.join(run_dir, DONE_MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_state(run: Run) -> Dict:
    """{'finished': bool, 'frames': float, 'learner_steps': float, 'source': str}."""
    marker = read_marker(run.run_dir)
    if marker and run.budget_reached(marker):
        return {
            "finished": True,
            "frames": float(marker.get("frames", 0)),
            "learner_steps": float(marker.get("learner_steps", 0)),
            "source": "marker",
        }
    counters = checkpoint_counters(run.run_dir)
    finished = run.budget_reached(counters)
    return {
        "finished": finished,
        "frames": float((counters or {}).get("frames", 0)),
        "learner_steps": float((counters or {}).get("learner_steps", 0)),
        "source": "checkpoint" if counters else "none",
        "counters": counters,
    }


def write_marker(run: Run, counters: Dict, returncode: int) -> None:
    marker = {
        "game": run.game,
        "seed": run.seed,
        "max_frames": run.max_frames,
        "max_learner_steps": run.max_learner_steps,
        "frames": float(counters.get("frames", 0)),
        "learner_steps": float(counters.get("learner_steps", 0)),
        "checkpoint": counters.get("checkpoint"),
        "returncode": returncode,
        "finished_at": _now(),
    }
    write_json_atomic(os.path.join(run.run_dir, DONE_MARKER), marker)


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------
def load_manifest(out: str) -> Optional[Dict]:
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SweepError(
            f"sweep manifest {path!r} is unreadable ({e}); move it away to "
            f"start the manifest afresh (run folders are kept)"
        ) from None


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
            "created": old.get("created", _now()),
            "updated": _now(),
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
        data = dict(self.data, updated=_now(), runs=list(self.data["runs"].values()))
        write_json_atomic(self.path, data)


# ----------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------
def _set_parent_death_signal() -> None:
    """Child: get SIGTERM if the sweep dies (Linux), so a killed sweep leaves no
    program behind. Best effort: the kernel clears it when the child changes
    credentials, e.g. when launch.run enters its own user namespace (--network)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Child:
    def __init__(self, run: Run, proc: subprocess.Popen, log, started: float):
        self.run, self.proc, self.log, self.started = run, proc, log, started
        self.done = threading.Event()
        self.echo: Optional[threading.Thread] = None


def _echo(path: str, prefix: str, done: threading.Event, offset: int) -> None:
    """Print the learner's progress lines (and errors) a program writes to its log."""
    try:
        f = open(path, errors="replace")
    except OSError:
        return
    with f:
        f.seek(offset)
        while True:
            line = f.readline()
            if line:
                if line.startswith(("[learner]", "error")):
                    print(f"{prefix} {line.rstrip()}", flush=True)
            elif done.wait(0.5):
                return


class Sweep:
    def __init__(self, args: argparse.Namespace, out: str, runs: List[Run], manifest: Manifest):
        self.args, self.out, self.runs, self.manifest = args, out, runs, manifest
        self.children: Dict[str, _Child] = {}
        self.stop_signal: Optional[int] = None
        self.results: Dict[str, str] = {}

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum, frame) -> None:
        del frame
        if self.stop_signal is None:
            self.stop_signal = signum
            print(
                f"\n[sweep] {signal.Signals(signum).name}: stopping {len(self.children)} running "
                f"program(s) (SIGTERM to each process group; they write a last checkpoint); "
                f"press Ctrl-C again to kill them at once",
                flush=True,
            )
            for child in self.children.values():
                _signal_group(child.proc.pid, signal.SIGTERM)
        else:
            print("[sweep] killing the running program(s) (SIGKILL)", flush=True)
            for child in self.children.values():
                _signal_group(child.proc.pid, signal.SIGKILL)

    # ---------------------------------------------------------------- one run
    def _start(self, run: Run, index: int, total: int) -> None:
        os.makedirs(run.run_dir, exist_ok=True)
        marker = os.path.join(run.run_dir, DONE_MARKER)
        if os.path.exists(marker):  # met an older, smaller budget only
            os.unlink(marker)
        state = run_state(run)
        write_config(run)
        log_path = os.path.join(run.run_dir, RUN_LOG)
        log = open(log_path, "a")
        offset = log.tell()
        cmd = child_command(self.args, run, self.out)
        log.write(f"=== {_now()} sweep starts: {' '.join(cmd)}\n")
        log.flush()
        resumed = (
            f"resuming at frames={state['frames']:.0f} learner_steps={state['learner_steps']:.0f}"
            if state["source"] != "none"
            else "fresh"
        )
        print(f"[sweep] start {run.name} ({index}/{total}, {resumed}); log {log_path}", flush=True)
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_set_parent_death_signal,
        )
        child = _Child(run, proc, log, time.time())
        if not self.args.quiet:
            child.echo = threading.Thread(
                target=_echo, args=(log_path, f"[{run.name}]", child.done, offset), daemon=True
            )
            child.echo.start()
        self.children[run.name] = child
        if self.stop_signal is not None:  # a signal came while it was starting
            _signal_group(proc.pid, signal.SIGTERM)
        entry = self.manifest.data["runs"][run.name]
        self.manifest.update(
            run,
            status="running",
            started=_now(),
            pid=proc.pid,
            attempts=int(entry.get("attempts", 0)) + 1,
            log=log_path,
        )

    def _finish(self, child: _Child, returncode: int) -> None:
        run = child.run
        # A Launchpad process left in the program's group (the launcher died
        # before its nodes): stop it, then kill it.
        if _group_alive(child.proc.pid):
            print(
                f"[sweep] {run.name}: processes left in its group after exit; stopping them",
                flush=True,
            )
            _signal_group(child.proc.pid, signal.SIGTERM)
            deadline = time.time() + 15
            while _group_alive(child.proc.pid) and time.time() < deadline:
                time.sleep(0.2)
            _signal_group(child.proc.pid, signal.SIGKILL)
        child.done.set()
        if child.echo is not None:
            child.echo.join(timeout=5)
        child.log.write(f"=== {_now()} program exited with code {returncode}\n")
        child.log.close()
        del self.children[run.name]
        counters = checkpoint_counters(run.run_dir) or {}
        finished = run.budget_reached(counters)
        elapsed = time.time() - child.started
        progress = (
            f"frames={counters.get('frames', 0):.0f}/{run.max_frames} "
            f"learner_steps={counters.get('learner_steps', 0):.0f}"
            + (f"/{run.max_learner_steps}" if run.max_learner_steps else "")
        )
        if finished:
            status = "done"
            write_marker(run, counters, returncode)
            note = "" if returncode == 0 else f" (exit code {returncode} after reaching its budget)"
        elif self.stop_signal is not None:
            status, note = "interrupted", ""
        elif returncode == 0:
            status, note = "incomplete", " (exited 0 short of its budget)"
        else:
            status, note = (
                "failed",
                f" (exit code {returncode}; see {os.path.join(run.run_dir, RUN_LOG)})",
            )
        self.results[run.name] = status
        print(f"[sweep] {run.name} {status}{note}: {progress}, {elapsed:.0f} s", flush=True)
        self.manifest.update(
            run,
            status=status,
            returncode=returncode,
            ended=_now(),
            frames=float(counters.get("frames", 0)),
            learner_steps=float(counters.get("learner_steps", 0)),
            seconds=round(elapsed, 1),
            pid=None,
        )

    def _poll(self) -> None:
        for child in list(self.children.values()):
            rc = child.proc.poll()
            if rc is not None:
                self._finish(child, rc)

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        todo = []
        for run in self.runs:
            state = run_state(run)
            if state["finished"]:
                self.results[run.name] = "done"
                print(
                    f"[sweep] skip {run.name}: finished (frames={state['frames']:.0f}, "
                    f"learner_steps={state['learner_steps']:.0f}; {state['source']})",
                    flush=True,
                )
                entry = self.manifest.data["runs"][run.name]
                if entry.get("status") != "done":
                    entry.update(
                        status="done", frames=state["frames"], learner_steps=state["learner_steps"]
                    )
                if state["source"] == "checkpoint":  # finished but unmarked: mark it
                    write_marker(run, state["counters"], entry.get("returncode", 0))
            else:
                todo.append(run)
        self.manifest.save()
        print(
            f"[sweep] {len(self.runs)} runs in {self.out}: {len(self.runs) - len(todo)} "
            f"finished, {len(todo)} to run, {self.args.parallel} at a time",
            flush=True,
        )
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            total, started = len(todo), 0
            while (todo or self.children) and self.stop_signal is None:
                while todo and len(self.children) < self.args.parallel and self.stop_signal is None:
                    started += 1
                    self._start(todo.pop(0), started, total)
                time.sleep(0.5)
                self._poll()
            deadline = time.time() + self.args.stop_timeout
            while self.children:
                if time.time() > deadline:
                    print(
                        f"[sweep] still running after {self.args.stop_timeout:.0f} s; "
                        f"killing (SIGKILL)",
                        flush=True,
                    )
                    for child in self.children.values():
                        _signal_group(child.proc.pid, signal.SIGKILL)
                    deadline = math.inf
                time.sleep(0.2)
                self._poll()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        for run in todo:
            self.results.setdefault(run.name, "pending")
        counts: Dict[str, int] = {}
        for status in self.results.values():
            counts[status] = counts.get(status, 0) + 1
        print(
            f"[sweep] {', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}; "
            f"manifest {self.manifest.path}; report: python -m launch.report {self.out}",
            flush=True,
        )
        if self.stop_signal is not None:
            return 128 + int(self.stop_signal)
        return 0 if all(s == "done" for s in self.results.values()) else 1


# ----------------------------------------------------------------------------
# Dry run
# ----------------------------------------------------------------------------
def check_environments(
    envs: Dict[str, Any], steps: int = 20, seed: int = 0, log=print
) -> Dict[str, Dict]:
    """Build one environment of each game in this process, reset it and take
    `steps` random actions. {game: {ok, num_actions, steps_per_s, frames_per_step, error}}."""
    import numpy as np
    from actors.environments import make_vector_env

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
    """Median learner throughput (frames/s, column learner_fps of logs/learner.csv)
    of this sweep's runs so far: the real speed of the program on this host."""
    from utils.logs import read_csv

    per_run = []
    for run in runs:
        path = os.path.join(run.run_dir, "logs", "learner.csv")
        if not os.path.exists(path):
            continue
        try:
            values = [
                float(r["learner_fps"])
                for r in read_csv(path)[-10:]
                if r.get("learner_fps") not in (None, "")
            ]
        except (OSError, ValueError, KeyError):
            continue
        values = [v for v in values if math.isfinite(v) and v > 0]
        if values:
            per_run.append(statistics.median(values))
    return statistics.median(per_run) if per_run else None


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _print_progress(runs: List[Run]) -> List[float]:
    """Each run's status and frames; the frames still to go of each unfinished run."""
    print(f"\n{'run':<28} {'status':<9} {'frames done':>14} {'budget':>14}")
    remaining = []
    for run in runs:
        state = run_state(run)
        status = (
            "done" if state["finished"] else ("partial" if state["source"] != "none" else "pending")
        )
        print(f"{run.name:<28} {status:<9} {state['frames']:>14,.0f} {run.max_frames:>14,}")
        if not state["finished"]:
            remaining.append(max(0.0, run.max_frames - state["frames"]))
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
        f"  one run ~{_duration(max(per_run))}; all {len(remaining)} ~{_duration(max(slots))} "
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


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m launch.sweep",
        description=__doc__.split("\n")[0],
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
    from launch import slurm

    slurm.add_flags(p)
    args = p.parse_args(argv)
    args.argv = list(argv)
    return args


def validate(args: argparse.Namespace) -> None:
    from configs import AGENTS, PRESETS

    if args.agent not in AGENTS:
        raise SweepError(f"--agent={args.agent!r} is not allowed: one of {list(AGENTS)}")
    if args.preset not in PRESETS:
        raise SweepError(f"--preset={args.preset!r} is not allowed: one of {list(PRESETS)}")
    if args.seeds < 1:
        raise SweepError(f"--seeds={args.seeds} is not allowed: must be >= 1")
    if args.parallel < 1:
        raise SweepError(f"--parallel={args.parallel} is not allowed: must be >= 1")
    if args.check_steps < 1:
        raise SweepError(f"--check_steps={args.check_steps} is not allowed: must be >= 1")
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
        import fcntl

        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(
                f"another sweep is running on {out!r} (it holds {LOCK}); "
                f"wait for it or stop it first"
            ) from None
        manifest = Manifest(out, args, runs)
        if args.launcher == "slurm":
            from launch import slurm

            try:
                if not (args.status or args.cancel):
                    manifest.save()
                return slurm.main_slurm(args, out, runs, run_state, write_config, SweepError)
            finally:
                lock.close()
    except (SweepError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return Sweep(args, out, runs, manifest).run()
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
