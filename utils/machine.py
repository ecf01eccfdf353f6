"""Facts about the machine a number was measured on: CPU, cores, load,
package versions, commit and (optionally) the JAX backend. Every benchmark
and experiment writes them beside its results."""

from __future__ import annotations

import os
import platform
import resource
import time
from importlib import metadata
from typing import Any, Dict

from utils.version import git_commit


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
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def versions() -> Dict[str, str]:
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
        import jax  # noqa: PLC0415 (only when asked: some callers must not load jax)

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
