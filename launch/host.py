"""What one host can hold: the memory a local run needs, and its actors
packed into fewer processes where the host has too few cores or too little
memory for one process per actor.

Packing keeps every environment: the full preset's 48 actors of one env each
become, on a 2-core machine, 4 actor processes of 12 envs, stepped in 2
batches by the overlapped loop (while the emulators run one batch, the policy
acts on the other). A host with 24 or more cores and the memory keeps 48
processes, as the design card has them. `actors.fit_host=false` turns packing
off.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

# Measured on the 2-core development machine (benchmarks/results/full_preset-*.json):
# the memory one actor process adds (48 actors, small network: 12.8 GB in all),
# and the learner's peak while it compiles BMG on the deep network (13.2 GB,
# XLA on CPU) or IMPALA on the small one (1.2 GB). ENV_GB, one more emulator
# and its frame stack in an actor process: a packed process of 12 envs held
# 606 MB resident (full_preset-bmg-steps2-packed), one of 4 envs 529 MB
# (actor_processes-cpu), so at most 77 MB / 8 envs.
ACTOR_GB = 0.27
ENV_GB = 0.01
LEARNER_GB = {"deep": 13.2}
OTHER_GB = 1.2  # replay, counter, evaluator, launcher
PROCESSES_PER_CORE = 2  # an actor process waits on Reverb and the policy part of the time


def learner_gb(cfg) -> float:
    return LEARNER_GB.get(cfg.network.kind, 1.2)


def actors_gb(processes: int, envs: int) -> float:
    """Memory of `envs` environments in `processes` actor processes."""
    return processes * ACTOR_GB + (envs - processes) * ENV_GB


def memory_needed_gb(cfg) -> float:
    """Rough peak memory of a local run: its actor processes and its learner."""
    a = cfg.actors
    return actors_gb(a.num_actors, a.num_actors * a.envs_per_actor) + learner_gb(cfg) + OTHER_GB


def memory_warning(cfg, available_gb: float) -> str:
    """A line saying the run may not fit in `available_gb`, or ''."""
    need = memory_needed_gb(cfg)
    if need <= available_gb:
        return ""
    spare = available_gb - learner_gb(cfg) - OTHER_GB
    fit = max(1, int(spare / ACTOR_GB))
    return (
        f"warning: this run may need about {need:.0f} GB ({cfg.actors.num_actors} actor "
        f"processes x {ACTOR_GB} GB + the learner's compile); {available_gb:.0f} GB is "
        f"available, and the kernel kills a process that does not fit. Fewer actor "
        f"processes fit: --num_actors={fit} (with --override=actors.envs_per_actor=N "
        f"to keep the number of envs)"
    )


def available_gb() -> float:
    """MemAvailable of /proc/meminfo in GB (inf where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fit_actors(cfg, cores: int, available_gb: float):
    """`cfg` with its actors packed into the most processes, one per actor at
    most, that `cores` (PROCESSES_PER_CORE each) and `available_gb` hold,
    every env kept; `cfg` itself if they already fit, if packing is off, or
    if there is nothing to gain (a process count must divide the envs)."""
    actors = cfg.actors
    if not actors.fit_host or actors.num_actors <= 1:
        return cfg
    envs = actors.num_actors * actors.envs_per_actor
    spare_gb = available_gb - learner_gb(cfg) - OTHER_GB
    limit = min(actors.num_actors, PROCESSES_PER_CORE * cores)
    while limit > 1 and actors_gb(limit, envs) > spare_gb:
        limit -= 1
    processes = max(p for p in range(1, limit + 1) if envs % p == 0)
    if processes >= actors.num_actors:
        return cfg
    per_process = envs // processes
    packed = dataclasses.replace(
        actors,
        num_actors=processes,
        envs_per_actor=per_process,
        env_batches=2 if per_process % 2 == 0 else 1,
    )
    return dataclasses.replace(cfg, actors=packed)


def packing_line(before, after, cores: int, available_gb: float) -> Optional[str]:
    """What `fit_actors` did, for the launcher's output (None: nothing)."""
    a, b = before.actors, after.actors
    if (a.num_actors, a.envs_per_actor) == (b.num_actors, b.envs_per_actor):
        return None
    return (
        f"{a.num_actors} actors of {a.envs_per_actor} env(s) packed into {b.num_actors} "
        f"processes of {b.envs_per_actor} envs ({b.env_batches} batch(es)): this host has "
        f"{cores} cores and {available_gb:.0f} GB available "
        f"(--override=actors.fit_host=false keeps one process per actor)"
    )
