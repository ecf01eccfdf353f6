"""The full preset on this host: what its 48 actors (in as many processes as
the launcher packs them into here, launch/host.py) and the learner need, how
fast the learner updates beside them, and how it stops.

    python -m benchmarks.full_preset --agent=bmg --max_learner_steps=2
    python -m benchmarks.full_preset --agent=bmg --interrupt
    python -m benchmarks.full_preset --agent=impala --override=network.kind=small \\
        --window_s=180 --alone

Starts `python -m launch.run --preset=full` (the actor processes, the learner,
replay, counter and evaluator) in its own session and samples every second:
the live processes of each node group and their resident memory, and the
machine's used memory. It records when all actor processes run, when the learner
logs its first update, when its first checkpoint lands, then either waits for
the budget (`--max_learner_steps`) or, with `--interrupt`, sends SIGINT to the
whole process group (a terminal's Ctrl-C) once the first checkpoint exists.
After the launcher exits it checks, 10 s later, that no process of the
program is left, and reads the newest checkpoint.

`--window_s`: the learner's updates per second over that window of its log
(after its first update), and with `--alone` the same learner's jitted update
alone on fake data (`benchmarks.learner.time_config`): the ratio says how much
of the learner the actors leave it.

Writes benchmarks/results/full_preset-<name>.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import psutil

from benchmarks.common import load_average, write_result
from benchmarks.learner import time_config
from configs import make_config
from launch import host
from launch.network import node_group
from launch.run_folder import RunFolder
from utils.procfs import descendants

NAME = "full"


def command(args: argparse.Namespace, root: str) -> List[str]:
    budget = (
        [f"--max_learner_steps={args.max_learner_steps}"]
        if args.max_learner_steps
        else ["--max_frames=1e9"]
    )
    return [
        sys.executable,
        "-m",
        "launch.run",
        "--preset=full",
        f"--game={args.game}",
        f"--agent={args.agent}",
        f"--root={root}",
        f"--name={NAME}",
        *budget,
        *[f"--override={o}" for o in args.override],
    ]


def sample(pid: int, seen: Dict[int, str]) -> Dict[str, float]:
    """Live processes and resident GB per node group; remembers every pid seen."""
    groups: Dict[str, List[float]] = {}
    for child in descendants(pid):
        group = node_group(child) or "launcher"
        seen[child] = group
        try:
            rss = psutil.Process(child).memory_info().rss / 2**30
        except psutil.NoSuchProcess:
            continue
        groups.setdefault(group, []).append(rss)
    out: Dict[str, float] = {f"{g}_processes": len(v) for g, v in groups.items()}
    out.update({f"{g}_rss_gb": sum(v) for g, v in groups.items()})
    out["used_gb"] = psutil.virtual_memory().used / 2**30
    return out


def learner_rate(rows: List[Dict[str, str]], window_s: float) -> Optional[Dict[str, float]]:
    """Updates per second over the last `window_s` of the learner's log rows."""
    rows = [r for r in rows if float(r["learner_steps"]) >= 1]
    if len(rows) < 2:
        return None
    end = float(rows[-1]["time"])
    window = [r for r in rows if float(r["time"]) >= end - window_s]
    if len(window) < 2:
        window = rows[-2:]
    steps = float(window[-1]["learner_steps"]) - float(window[0]["learner_steps"])
    seconds = float(window[-1]["time"]) - float(window[0]["time"])
    return {"updates_per_s": steps / seconds, "steps": steps, "seconds": seconds}


def run(args: argparse.Namespace, root: str, processes: int) -> Dict:
    """The program's marks, peaks and stop; `processes`: the actor processes
    the launcher will start."""
    folder = RunFolder(os.path.join(root, NAME))
    log_path = os.path.join(root, "launcher.out")
    t0 = time.time()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            command(args, root), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    seen: Dict[int, str] = {}
    marks: Dict[str, float] = {}
    peak: Dict[str, float] = {}
    interrupted_at_step = None
    while proc.poll() is None:
        now = sample(proc.pid, seen)
        for key, value in now.items():
            peak[key] = max(peak.get(key, 0.0), value)
        if "all_actors" not in marks and now.get("actor_processes", 0) >= processes:
            marks["all_actors"] = time.time() - t0
        if "first_update" not in marks and folder.learner_steps_logged() >= 1:
            marks["first_update"] = time.time() - t0
        if "first_checkpoint" not in marks and folder.checkpoints():
            marks["first_checkpoint"] = time.time() - t0
            if args.interrupt:
                interrupted_at_step = (folder.checkpoint_counters() or {}).get("learner_steps")
                marks["interrupt"] = time.time() - t0
                os.killpg(proc.pid, signal.SIGINT)
        if args.window_s and "first_update" in marks and "interrupt" not in marks:
            if time.time() - t0 - marks["first_update"] >= args.window_s:
                marks["interrupt"] = time.time() - t0
                os.killpg(proc.pid, signal.SIGINT)
        if time.time() - t0 > args.timeout_s:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(1.0)
    rc = proc.wait()
    marks["exit"] = time.time() - t0
    time.sleep(10)
    left = [
        pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    with open(log_path) as f:
        launcher = f.read()
    counters = folder.checkpoint_counters() or {}
    actors = max(1.0, peak.get("actor_processes", 0))
    return {
        "command": command(args, root),
        "actor_processes": processes,
        "returncode": rc,
        "seconds": marks,
        "peak": peak,
        "actor_rss_gb_each": peak.get("actor_rss_gb", 0.0) / actors,
        "processes_left_10s_after_exit": left,
        "killed_by_launchpad": "Killing entire runtime" in launcher,
        "interrupted_after_checkpoint_step": interrupted_at_step,
        "final_checkpoint": counters,
        "learner": learner_rate(folder.learner_rows(), args.rate_window_s),
        "launcher_tail": launcher[-2000:],
    }


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--game", default="Pong")
    p.add_argument("--agent", default="bmg")
    p.add_argument("--override", action="append", default=[], help="section.field=value")
    p.add_argument("--max_learner_steps", type=int, default=0, help="0: no step budget")
    p.add_argument("--interrupt", action="store_true", help="SIGINT after the first checkpoint")
    p.add_argument("--window_s", type=float, default=0.0, help="SIGINT this long after update 1")
    p.add_argument("--rate_window_s", type=float, default=120.0, help="updates/s over this")
    p.add_argument("--alone", action="store_true", help="also time the learner alone")
    p.add_argument("--timeout_s", type=float, default=1800.0, help="SIGKILL after this")
    p.add_argument("--name", default="", help="result name (default from the settings)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    t_start, load_start = time.perf_counter(), load_average()
    name = args.name or (
        f"{args.agent}-" + ("interrupt" if args.interrupt else f"steps{args.max_learner_steps}")
    )
    cfg = make_config("full", args.agent, args.game, overrides=args.override)
    processes = host.fit_actors(cfg, host.cores(), host.available_gb()).actors.num_actors
    with tempfile.TemporaryDirectory(prefix="full-preset-") as root:
        result = run(args, root, processes)
    print(
        f"rc {result['returncode']}, seconds {result['seconds']}, "
        f"peak used {result['peak'].get('used_gb', 0):.1f} GB, "
        f"actor {result['actor_rss_gb_each']:.2f} GB each, "
        f"left {result['processes_left_10s_after_exit']}, "
        f"learner {result['learner']}"
    )
    if args.alone:
        alone = time_config(cfg, reps=5)
        result["learner_alone"] = {"updates_per_s": 1.0 / alone["seconds_per_update"], **alone}
        if result["learner"]:
            result["ratio"] = (
                result["learner"]["updates_per_s"] / result["learner_alone"]["updates_per_s"]
            )
        print(
            f"alone {result['learner_alone']['updates_per_s']:.2f} updates/s, "
            f"ratio {result.get('ratio')}"
        )
    write_result(f"full_preset-{name}", "full_preset", args, load_start, t_start, **result)


if __name__ == "__main__":
    main()
