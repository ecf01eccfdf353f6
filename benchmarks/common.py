"""Shared benchmark helpers: machine/version facts, load average, config dumps, JSON output."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Any, Dict

from utils.files import write_json_atomic
from utils.version import REPO_ROOT, git_commit  # noqa: F401 (git_commit: re-exported)

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# Distributions whose versions decide the numbers (read from package metadata,
# so nothing heavy is imported just to report them).
PACKAGES = (
    "jax",
    "jaxlib",
    "dm-haiku",
    "optax",
    "numpy",
    "ale-py",
    "gymnasium",
    "dm-reverb",
    "tensorflow-cpu",
    "dm-launchpad",
)


def load_average() -> list:
    """[1, 5, 15]-minute load averages (other work on the box contaminates timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_seconds() -> tuple:
    """(busy, steal): CPU seconds the whole machine spent running processes
    (user, nice, system, irq, softirq) and seconds the hypervisor took
    (steal), since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    v += [0] * (8 - len(v))
    tick = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / tick, v[7] / tick


def steal_seconds() -> float:
    """CPU seconds the hypervisor has taken from this VM since boot (0 on bare metal)."""
    return cpu_seconds()[1]


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished (waited-for) descendants."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def versions() -> Dict[str, str]:
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine_facts(jax_facts: bool = True) -> Dict[str, Any]:
    """Time, CPU, core count, package versions, git commit, load average and
    (unless `jax_facts=False`, for processes that must not import jax) the JAX
    backend and devices."""
    facts = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": versions(),
        "git_commit": git_commit(),
        "load_average": load_average(),
    }
    if jax_facts:
        import jax

        facts.update(
            jax=jax.__version__,
            backend=jax.default_backend(),
            devices=[str(d) for d in jax.local_devices()],
        )
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        facts["cpu"] = names[0] if names else platform.processor()
    except OSError:
        facts["cpu"] = platform.processor()
    return facts


def write_json(name: str, payload: Dict[str, Any], out_dir: str = None) -> str:
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


def read_json(name: str, out_dir: str = None):
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
