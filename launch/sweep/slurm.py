"""Sweeps on a Slurm cluster: `python -m launch.sweep --launcher=slurm ...`.

The plan goes to Slurm as one job array, one task per (game, seed) that is
not finished yet; each task runs `python -m launch.run --config=<run>/config.json`
(the config the sweep wrote and validated), so a task that is cancelled or
killed at its time limit (Slurm sends SIGTERM; the program writes its final
checkpoint) resumes from its checkpoint when the sweep is submitted again,
and finished runs are skipped, exactly as with the local launcher: what is
finished is read from the run folders. `--status` reads `squeue` for the
arrays this folder submitted and the run folders; `--cancel` cancels them.

Files in `<out>/slurm/`: `array-<n>.sh` (the batch script of submission n),
`tasks-<n>.txt` (its config files, one per array index), `jobs.json` (the
submissions: job id, time, runs) and `<job>_<index>.out` (each task's log).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Sequence

from launch.run_folder import now
from launch.sweep.plan import Run, SweepError, at_least
from utils.files import read_json_or, write_json_atomic
from utils.progress import format_duration

SLURM_DIR = "slurm"
JOBS = "jobs.json"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Slurm (--launcher=slurm)")
    g.add_argument("--slurm_cpus", type=int, default=8, help="CPUs per task (--cpus-per-task)")
    g.add_argument("--slurm_mem", default="32G", help="memory per task (--mem), e.g. 32G")
    g.add_argument(
        "--slurm_gpus", type=int, default=0, help="GPUs per task (--gres=gpu:N); 0: none"
    )
    g.add_argument("--slurm_partition", default=None, help="partition (--partition)")
    g.add_argument("--slurm_time", default=None, help="time limit per task, e.g. 1-00:00:00")
    g.add_argument("--slurm_throttle", type=int, default=0, help="tasks at once (%%P); 0: no cap")
    g.add_argument("--status", action="store_true", help="show the submitted arrays and runs")
    g.add_argument("--cancel", action="store_true", help="cancel the arrays this folder submitted")


def validate(args: argparse.Namespace) -> None:
    at_least(args, "slurm_cpus", 1)
    at_least(args, "slurm_gpus", 0)
    at_least(args, "slurm_throttle", 0)
    for tool in ("sbatch", "squeue", "scancel"):
        if shutil.which(tool) is None:
            raise SweepError(
                f"--launcher=slurm needs Slurm's {tool} on PATH (not found); run the sweep "
                f"on a Slurm login node, or use --launcher=local"
            )


def _jobs_path(out: str) -> str:
    return os.path.join(out, SLURM_DIR, JOBS)


def load_jobs(out: str) -> List[Dict]:
    return read_json_or(_jobs_path(out), [])


def batch_script(args: argparse.Namespace, out: str, tasks_file: str, n: int) -> str:
    """The sbatch script of one submission: array index -> config file -> launch.run."""
    opts = [
        f"--job-name=sweep-{os.path.basename(out)}",
        f"--array=0-{n - 1}" + (f"%{args.slurm_throttle}" if args.slurm_throttle else ""),
        "--ntasks=1",
        f"--cpus-per-task={args.slurm_cpus}",
        f"--mem={args.slurm_mem}",
        f"--output={os.path.join(out, SLURM_DIR, '%A_%a.out')}",
        # The program stops cleanly on SIGTERM (final checkpoint); give it
        # time before the time limit's SIGKILL.
        "--signal=TERM@120",
    ]
    if args.slurm_gpus:
        opts.append(f"--gres=gpu:{args.slurm_gpus}")
    if args.slurm_partition:
        opts.append(f"--partition={args.slurm_partition}")
    if args.slurm_time:
        opts.append(f"--time={args.slurm_time}")
    lines = ["#!/bin/bash"] + [f"#SBATCH {o}" for o in opts]
    lines += [
        "set -euo pipefail",
        f"cd {shlex.quote(REPO_ROOT)}",
        f'config=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(tasks_file)})',
        'echo "[slurm] task $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID: $config"',
        f"exec {shlex.quote(sys.executable)} -m launch.run --config=\"$config\"",
    ]
    return "\n".join(lines) + "\n"


def submit(args: argparse.Namespace, out: str, runs: Sequence[Run]) -> int:
    """Submit the unfinished runs as one array; 0 also when nothing is left."""
    todo = []
    for run in runs:
        state = run.progress()
        if state.finished:
            print(f"[sweep] skip {run.name}: finished (frames={state.frames:.0f})")
        else:
            run.write_config()
            todo.append(run)
    if not todo:
        print(f"[sweep] all {len(runs)} runs are finished; nothing to submit")
        return 0
    folder = os.path.join(out, SLURM_DIR)
    os.makedirs(folder, exist_ok=True)
    jobs = load_jobs(out)
    k = len(jobs)
    tasks_file = os.path.join(folder, f"tasks-{k}.txt")
    with open(tasks_file, "w") as f:
        f.write("".join(run.config_path + "\n" for run in todo))
    script = os.path.join(folder, f"array-{k}.sh")
    with open(script, "w") as f:
        f.write(batch_script(args, out, tasks_file, len(todo)))
    proc = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"error: sbatch {script} failed: {proc.stderr.strip()}", file=sys.stderr)
        return 2
    job = proc.stdout.strip().split(";")[0]
    jobs.append(
        {
            "job": job,
            "submitted": now(),
            "script": script,
            "runs": [run.name for run in todo],
        }
    )
    write_json_atomic(_jobs_path(out), jobs)
    print(
        f"[sweep] submitted job array {job}: {len(todo)} task(s) "
        f"({', '.join(r.name for r in todo)}); logs in {folder}; "
        f"`python -m launch.sweep --out={out} --launcher=slurm --status` to follow"
    )
    return 0


def queue_states(jobs: Sequence[Dict]) -> Dict[str, str]:
    """{run name: Slurm state} of the tasks `squeue` still lists."""
    ids = [j["job"] for j in jobs]
    if not ids:
        return {}
    proc = subprocess.run(
        ["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i %T"], capture_output=True, text=True
    )
    states: Dict[str, str] = {}
    by_job = {j["job"]: j["runs"] for j in jobs}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) != 2 or "_" not in parts[0]:
            continue
        job, index = parts[0].split("_", 1)
        if job in by_job and index.isdigit() and int(index) < len(by_job[job]):
            states[by_job[job][int(index)]] = parts[1]
    return states


def status(out: str, runs: Sequence[Run]) -> int:
    jobs = load_jobs(out)
    queued = queue_states(jobs)
    print(f"[sweep] {len(jobs)} submission(s): {', '.join(j['job'] for j in jobs) or 'none'}")
    for run in runs:
        state = run.progress()
        where = "finished" if state.finished else queued.get(run.name, "not queued")
        share = 1.0 if state.finished else run.cfg.budget_share(state.frames, state.learner_steps)
        fps = run.folder.learner_fps()
        eta = 0.0 if state.finished else (run.max_frames - state.frames) / fps if fps else None
        print(
            f"  {run.name:28s} {where:12s} frames={state.frames:.0f} "
            f"learner_steps={state.learner_steps:.0f} ({100 * share:.1f}%, "
            f"eta {format_duration(eta)})"
        )
    return 0


def cancel(out: str) -> int:
    jobs = load_jobs(out)
    if not jobs:
        print(f"[sweep] {out} has submitted no Slurm jobs")
        return 0
    ids = [j["job"] for j in jobs]
    proc = subprocess.run(["scancel"] + ids, capture_output=True, text=True)
    print(f"[sweep] scancel {' '.join(ids)}: exit {proc.returncode} {proc.stderr.strip()}")
    return 0 if proc.returncode == 0 else 2


def main_slurm(args: argparse.Namespace, out: str, runs: Sequence[Run]) -> int:
    """The Slurm launcher's entry from the sweep's command line."""
    validate(args)
    if args.cancel:
        return cancel(out)
    if args.status:
        return status(out, runs)
    return submit(args, out, runs)
