"""Shared benchmark helpers: machine/version facts, load average, config dumps, JSON output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Optional

from utils.files import write_json_atomic
from utils.machine import (  # noqa: F401 (re-exported for the benchmarks)
    children_cpu_seconds,
    cpu_seconds,
    load_average,
    machine_facts,
    steal_seconds,
    versions,
)
from utils.version import REPO_ROOT, git_commit  # noqa: F401 (git_commit: re-exported)

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_json(name: str, payload: Dict[str, Any], out_dir: Optional[str] = None) -> str:
    out_dir = out_dir or RESULTS_DIR
    path = os.path.join(out_dir, f"{name}.json")
    write_json_atomic(path, payload, indent=2)
    return path


def write_result(
    name: str, benchmark: str, args, load_start, t_start: float, jax_facts: bool = True, **fields
) -> str:
    """Write a benchmark's JSON `<name>.json` with what every result carries
    (the machine, versions and commit, the arguments, load average at start
    and end, wall time) plus `fields`; print and return its path."""
    payload = {
        "benchmark": benchmark,
        "facts": machine_facts(jax_facts),
        "args": vars(args),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "wall_s": time.perf_counter() - t_start,
        **fields,
    }
    path = write_json(name, payload, args.out)
    print(f"wrote {path}")
    return path


def read_json(name: str, out_dir: Optional[str] = None):
    path = os.path.join(out_dir or RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def debug_program(agent: str, num_actors: int, name: str, root: str, extra=()) -> list:
    """The command line of the debug program on Pong (`launch.run`, this Python)."""
    return [
        sys.executable,
        "-m",
        "launch.run",
        "--preset=debug",
        "--game=Pong",
        f"--agent={agent}",
        f"--num_actors={num_actors}",
        f"--name={name}",
        f"--root={root}",
    ] + list(extra)


def stop_program(proc, timeout_s: float = 30.0) -> None:
    """SIGTERM the program's whole process group (it was started with
    `start_new_session=True`), SIGKILL it if it outlives `timeout_s`."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
