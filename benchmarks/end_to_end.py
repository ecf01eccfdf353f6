"""End-to-end: the debug program (`launch.run --preset=debug`) on this machine.

    python -m benchmarks.end_to_end [--frames 100000] [--agent bmg] [--actors 2]

Runs `python -m launch.run --preset=debug --game=Pong --agent=<agent>
--max_frames=<frames> --num_actors=<actors>` (Launchpad local_mp: Reverb,
counter, learner, actors, evaluator, one process each) in a fresh run folder
under a temporary directory, and measures:

- frames/s the learner consumes (`learner_fps` in logs/learner.csv: B x T x 4
  frames per sampled batch) and frames/s the actors produce (the slope of
  `actor_frames` in the same rows), over the steady window (the first log row,
  which holds start-up and compilation, and the last, cut short by the stop,
  are left out); their ratio;
- where the time goes: wall time of start-up / steady state / shut-down, and
  the CPU time of every process of the program, by node group (sampled once
  a second from /proc with psutil; a node's group is its STACX_NODE
  environment variable), as cores used during the steady window;
- a stage budget: the CPU milliseconds each stage costs per 1,000 frames,
  from the isolated measurements in env_actor-<backend>.json (env step,
  policy inference, Reverb write, Reverb server) and learner-<backend>.json
  (the debug program's own learner update), and the frames/s each stage could
  sustain alone on one core. The stage with the highest cost is the slowest.

Writes benchmarks/results/end_to_end-<backend>.json (backend of the learner: cpu here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import psutil

from benchmarks.common import (
    debug_program,
    load_average,
    read_json,
    steal_seconds,
    stop_program,
    write_result,
)
from configs import make_config
from utils.logs import read_csv

GROUPS = ("learner", "actor", "replay", "evaluator", "counter")


class CpuSampler:
    """CPU seconds (user + system) of a process tree, by STACX_NODE group."""

    def __init__(self, root_pid: int):
        self.root = psutil.Process(root_pid)
        self.group: Dict[int, str] = {}
        self.cpu: Dict[int, float] = {}
        self.samples: List[tuple] = []  # (time, {group: cpu seconds so far})

    def _group_of(self, p) -> str:
        if p.pid not in self.group:
            try:
                g = p.environ().get("STACX_NODE")
            except (psutil.Error, OSError):
                g = None
            if g is None and p.pid == self.root.pid:
                g = "launcher"
            self.group[p.pid] = g or "other"
        return self.group[p.pid]

    def sample(self) -> None:
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return
        for p in procs:
            try:
                t = p.cpu_times()
                g = self._group_of(p)
            except psutil.Error:
                continue
            self.cpu[p.pid] = t.user + t.system
        totals: Dict[str, float] = {}
        for pid, s in self.cpu.items():
            g = self.group.get(pid, "other")
            totals[g] = totals.get(g, 0.0) + s
        totals["steal"] = steal_seconds()  # the hypervisor's share, not a process group
        self.samples.append((time.time(), totals))

    def between(self, t0: float, t1: float) -> Dict[str, float]:
        """Cores used per group between wall times t0 and t1 (nearest samples)."""
        if not self.samples:
            return {}
        a = min(self.samples, key=lambda s: abs(s[0] - t0))
        b = min(self.samples, key=lambda s: abs(s[0] - t1))
        dt = b[0] - a[0]
        if dt <= 0:
            return {}
        groups = set(a[1]) | set(b[1])
        return {g: (b[1].get(g, 0.0) - a[1].get(g, 0.0)) / dt for g in sorted(groups)}


def run_program(args, root: str, name: str, overrides: List[str]) -> dict:
    cmd = debug_program(args.agent, args.actors, name, root, [f"--override={o}" for o in overrides])
    log_path = os.path.join(root, f"{name}.out")
    t_start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = CpuSampler(proc.pid)
        csv_path = os.path.join(root, name, "logs", "learner.csv")
        row_times: List[float] = []
        timed_out = False
        try:
            while proc.poll() is None:
                sampler.sample()
                n = count_rows(csv_path)
                row_times += [time.time()] * (n - len(row_times))
                if time.time() - t_start > args.timeout:
                    timed_out = True
                    break
                time.sleep(1.0)
        finally:
            stop_program(proc)
    row_times += [time.time()] * (count_rows(csv_path) - len(row_times))
    t_end = time.time()
    with open(log_path, errors="replace") as f:
        out = f.read()
    return {
        "cmd": cmd,
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "t_start": t_start,
        "t_end": t_end,
        "sampler": sampler,
        "output": out,
        "row_times": row_times,
        "run_dir": os.path.join(root, name),
    }


def count_rows(path: str) -> int:
    """Data rows in a CSV file written so far (0 if it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            return max(0, f.read().count(b"\n") - 1)
    except OSError:
        return 0


def steady_window(rows: List[dict], row_times: List[float]) -> dict:
    """Learner vs actor frames/s over rows lo+1 .. hi (lo = 1, hi = n - 2; see module doc).

    learner.csv stores `time` with 6 significant digits (useless for
    intervals), so each row's interval is rebuilt as its learner steps /
    `steps_per_s`; `row_times` (when this process saw each row appear, 1 s
    resolution) bound the window for the CPU samples.
    """
    f = lambda r, k: float(r.get(k) or 0.0)  # noqa: E731
    lo, hi = (1, len(rows) - 2) if len(rows) >= 4 else (0, len(rows) - 1)
    if hi <= lo:
        return {}
    dt = consumed = 0.0
    for prev, r in zip(rows[lo:hi], rows[lo + 1 : hi + 1]):
        steps, rate = f(r, "learner_steps") - f(prev, "learner_steps"), f(r, "steps_per_s")
        if steps <= 0 or rate <= 0:
            return {}
        dt += steps / rate
        consumed += f(r, "learner_fps") * steps / rate
    actor_frames = f(rows[hi], "actor_frames") - f(rows[lo], "actor_frames")
    steps = f(rows[hi], "learner_steps") - f(rows[lo], "learner_steps")
    t0 = row_times[lo] if lo < len(row_times) else None
    t1 = row_times[hi] if hi < len(row_times) else None
    return {
        "t0": t0,
        "t1": t1,
        "seconds": dt,
        "rows": hi - lo,
        "learner_frames": consumed,
        "actor_frames": actor_frames,
        "learner_fps": consumed / dt,
        "actor_fps": actor_frames / dt,
        "ratio": (consumed / actor_frames) if actor_frames else None,
        "learner_steps_per_s": steps / dt,
    }


def stage_budget(cfg, window: dict, backend: str, out_dir: Optional[str] = None) -> dict:
    """Wall ms per 1,000 frames of each stage run alone (one process, the
    whole machine), from the isolated benchmarks' JSON."""
    env_actor = read_json(f"env_actor-{backend}", out_dir)
    learner = read_json(f"learner-{backend}", out_dir)
    stages: Dict[str, float] = {}  # wall ms per 1,000 frames
    out: Dict[str, Any] = {"sources": {}, "stages": stages, "process_cpu_cores": {}}
    N = cfg.actors.envs_per_actor
    frames_per_step = cfg.env.frame_skip
    r = (env_actor or {}).get("results", {}).get(str(N))
    loop = "overlapped" if cfg.actors.overlap else "serial"
    a = ((r or {}).get("actor") or {}).get(loop, {}).get("small")
    if a:
        out["sources"]["env_actor"] = env_actor["facts"]["time"]
        per_vec = a["stage_ms_per_vector_step"]
        frames_per_vec = cfg.actors.env_batch_size * frames_per_step
        # The env limit measured alone (not the env time inside the actor loop).
        out["stages"]["env step (ALE + preprocessing)"] = 1e6 / (
            r["env_limit_steps_per_s"] * frames_per_step
        )
        out["stages"]["policy inference (actor)"] = 1000 * per_vec["inference"] / frames_per_vec
        out["stages"]["Reverb write (actor side)"] = 1000 * per_vec["write"] / frames_per_vec
        out["stages"]["actor loop bookkeeping"] = (
            1000 * max(per_vec.get("other", 0.0), 0.0) / frames_per_vec
        )
        out["stages"]["Reverb server (insert), CPU"] = (
            1e6 * a["reverb_server_cpu_cores"] / (a["steps_per_s"] * frames_per_step)
        )
        out["process_cpu_cores"]["actor"] = a["process_cpu_cores"]
    if learner and "small/debug_program" in learner["results"]:
        lr = learner["results"]["small/debug_program"]
        out["sources"]["learner"] = learner["facts"]["time"]
        frames_per_update = lr["batch"] * lr["T"] * frames_per_step
        out["stages"]["learner update (bmg)"] = 1e6 * lr["seconds_per_update"] / frames_per_update
        out["learner_seconds_per_update"] = lr["seconds_per_update"]
        out["learner_capacity_fps"] = frames_per_update / lr["seconds_per_update"]
        if "process_cpu_cores" in lr:
            out["process_cpu_cores"]["learner"] = lr["process_cpu_cores"]
        if window.get("learner_steps_per_s"):
            out["learner_busy_fraction_if_alone"] = (
                window["learner_steps_per_s"] * lr["seconds_per_update"]
            )
            out["program_fraction_of_learner_capacity"] = (
                window["learner_fps"] / out["learner_capacity_fps"]
            )
    if out["stages"]:
        out["frames_per_s_alone"] = {k: 1e6 / v for k, v in out["stages"].items()}
        total = sum(out["stages"].values())
        out["total_ms_per_1000_frames"] = total
        out["share"] = {k: v / total for k, v in out["stages"].items()}
        out["slowest_stage"] = max(stages, key=stages.__getitem__)
    return out


VARIANTS = {
    # the debug program as shipped: uniform replay, samples-per-insert 1
    "debug": [],
    # the same with IMPALA's queue replay: actors never wait for the learner,
    # unsampled unrolls are dropped by the FIFO remover. Budgeted in learner
    # steps: free-running actors use up a frame budget while the learner compiles.
    "queue": ["replay.mode=queue"],
}


def variant_overrides(args, variant: str) -> List[str]:
    budget = (
        [f"max_frames={args.frames}"]
        if variant == "debug"
        else ["max_frames=1e9", f"max_learner_steps={args.queue_steps}"]
    )
    return VARIANTS[variant] + budget


def measure(args, root: str, variant: str) -> dict:
    overrides = variant_overrides(args, variant)
    run = run_program(args, root, f"bench-e2e-{variant}", overrides)
    csv_path = os.path.join(run["run_dir"], "logs", "learner.csv")
    rows = read_csv(csv_path) if os.path.exists(csv_path) else []
    events = os.path.join(run["run_dir"], "logs", "events.csv")
    restarts = read_csv(events) if os.path.exists(events) else []
    if run["returncode"] != 0 or not rows:
        print(run["output"][-3000:], file=sys.stderr)
        raise SystemExit(
            f"the debug program ({variant}) failed (exit {run['returncode']}, "
            f"{len(rows)} learner log rows)"
        )
    window = steady_window(rows, run["row_times"])
    sampler = run["sampler"]
    row_times = run["row_times"]
    cores = (
        sampler.between(window["t0"], window["t1"]) if window.get("t0") and window.get("t1") else {}
    )
    steal = cores.pop("steal", None)
    # CPU time per 1,000 frames inside the program: the learner per frame it
    # consumed, everything else per frame the actors produced.
    cpu_ms = {}
    for g, c in cores.items():
        fps = window.get("learner_fps") if g == "learner" else window.get("actor_fps")
        if fps and c > 0.005:
            cpu_ms[g] = 1e6 * c / fps
    return {
        "overrides": overrides,
        "command": " ".join(run["cmd"][1:]),
        "timed_out": run["timed_out"],
        "restarts": restarts,
        "frames": float(rows[-1].get("actor_frames") or 0.0),
        "learner_steps": float(rows[-1].get("learner_steps") or 0.0),
        "phases": {
            "startup_to_first_log_row_s": row_times[0] - run["t_start"],
            "logged_s": row_times[-1] - row_times[0],
            "after_last_log_row_s": run["t_end"] - row_times[-1],
            "total_s": run["t_end"] - run["t_start"],
        },
        "steady": window,
        "cores_used_steady": cores,
        "cores_used_steady_total": sum(cores.values()),
        "steal_cores_steady": steal,
        "cpu_ms_per_1000_frames_steady": cpu_ms,
        "cpu_seconds_total": (
            {g: c for g, c in sampler.samples[-1][1].items() if g != "steal"}
            if sampler.samples
            else {}
        ),
        "learner_rows": [
            {k: r.get(k) for k in ("actor_frames", "learner_steps", "learner_fps", "steps_per_s")}
            for r in rows
        ],
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=100_000, help="frame budget, debug variant")
    p.add_argument("--queue_steps", type=int, default=60, help="learner steps, queue variant")
    p.add_argument("--variants", default="debug,queue", help=f"of {sorted(VARIANTS)}")
    p.add_argument("--agent", default="bmg")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--timeout", type=int, default=420, help="seconds before a run is stopped")
    p.add_argument("--keep", action="store_true", help="keep the run folders (path printed)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    load_start, t_start = load_average(), time.perf_counter()
    runs, configs = {}, {}
    root = tempfile.mkdtemp(prefix="bench-e2e-")
    try:
        for variant in args.variants.split(","):
            configs[variant] = make_config(
                "debug",
                args.agent,
                "Pong",
                overrides=[f"actors.num_actors={args.actors}"] + variant_overrides(args, variant),
            ).to_dict()
            r = runs[variant] = measure(args, root, variant)
            w = r["steady"]
            print(
                f"{variant}: steady {w.get('seconds', 0):.0f} s: learner "
                f"{w.get('learner_fps', 0):.0f} frames/s, actors {w.get('actor_fps', 0):.0f} "
                f"frames/s, ratio {w.get('ratio') or float('nan'):.2f}; cores used: "
                + ", ".join(f"{g} {c:.2f}" for g, c in r["cores_used_steady"].items()),
                flush=True,
            )
    finally:
        if args.keep:
            print(f"run folders kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    base = make_config("debug", args.agent, "Pong", overrides=[f"actors.num_actors={args.actors}"])
    budget = stage_budget(base, runs.get("debug", {}).get("steady", {}), "cpu", args.out)
    if budget.get("stages"):
        print(
            "ms per 1000 frames, each stage alone: "
            + ", ".join(f"{k} {v:.0f}" for k, v in budget["stages"].items())
            + f"; slowest: {budget['slowest_stage']}"
        )
    write_result(
        "end_to_end-cpu",
        "end_to_end",
        args,
        load_start,
        t_start,
        jax_facts=False,
        configs=configs,
        runs=runs,
        stage_budget=budget,
    )


if __name__ == "__main__":
    main()
