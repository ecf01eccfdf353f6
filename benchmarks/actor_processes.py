"""What N actor processes cost: start-up time and resident memory each.

    python -m benchmarks.actor_processes [--actors 2,8] [--settle 15]

For each N, runs the debug program (`launch.run --preset=debug --game=Pong
--agent=impala --num_actors=N`, Launchpad local_mp, one process per node) in
a fresh run folder and measures:

- start-up: wall seconds from starting `launch.run` until each actor's
  process log (Launchpad's `<run>/launchpad/<time>/actor/<i>`) says it is
  acting (its first env step is done: imports, Reverb writer, the first
  parameter pull and the policy's compilation are behind it); the first,
  median and last actor;
- memory: `settle` seconds after the last actor started, every actor
  process's resident set (RSS) and unique set (USS: the pages no other
  process shares, what each further actor adds), and the other node groups'.

The N actor processes share the machine's cores, so start-up grows with N on
a small host. Writes benchmarks/results/actor_processes-<backend>.json.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np
import psutil

from benchmarks.common import debug_program, load_average, stop_program, write_result
from launch.network import node_group
from utils.procfs import descendants

ACTING = re.compile(r"\[actor-(\d+)\] acting:")


def acting_actors(run_dir: str) -> list:
    """Ids of the actors whose process log says they are acting."""
    found = []
    for path in glob.glob(os.path.join(run_dir, "launchpad", "*", "actor", "*")):
        with open(path, errors="replace") as f:
            found += [int(m.group(1)) for m in ACTING.finditer(f.read())]
    return found


def memory_by_group(root_pid: int) -> dict:
    """{group: [{'pid', 'rss_mb', 'uss_mb'}]} of the program's processes."""
    out: dict = {}
    for pid in descendants(root_pid):
        group = node_group(pid)
        if not group:
            continue
        try:
            mem = psutil.Process(pid).memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out.setdefault(group, []).append(
            {"pid": pid, "rss_mb": mem.rss / 2**20, "uss_mb": mem.uss / 2**20}
        )
    return out


def measure(n: int, args, root: str) -> dict:
    name = f"actors-{n}"
    cmd = debug_program("impala", n, name, root, ["--max_frames=1e9"])
    log_path = os.path.join(root, f"{name}.out")
    started: dict = {}
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while len(started) < n and time.time() - t0 < args.timeout and proc.poll() is None:
                for i in acting_actors(os.path.join(root, name)):
                    started.setdefault(i, time.time() - t0)
                time.sleep(0.2)
            time.sleep(args.settle)
            memory = memory_by_group(proc.pid)
        finally:
            stop_program(proc, timeout_s=60)
    times = sorted(started.values())
    actors = memory.get("actor", [])
    result = {
        "cmd": cmd,
        "actors_started": len(started),
        "startup_s": {
            "first": times[0] if times else None,
            "median": float(np.median(times)) if times else None,
            "last": times[-1] if len(times) == n else None,
        },
        "startup_s_by_actor": {str(k): v for k, v in sorted(started.items())},
        "actor_rss_mb_mean": float(np.mean([a["rss_mb"] for a in actors])) if actors else None,
        "actor_uss_mb_mean": float(np.mean([a["uss_mb"] for a in actors])) if actors else None,
        "memory_mb_by_group": memory,
    }
    if len(started) < n:
        with open(log_path, errors="replace") as f:
            result["output_tail"] = f.read()[-3000:]
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--actors", default="2,8", help="actor counts")
    p.add_argument("--settle", type=float, default=15.0, help="seconds before reading memory")
    p.add_argument("--timeout", type=float, default=600.0, help="at most this long to start")
    p.add_argument("--out", default=None, help="results folder")
    args = p.parse_args(argv)
    load_start, t_start = load_average(), time.perf_counter()
    root = tempfile.mkdtemp(prefix="bench-actor-processes-")
    results = {}
    try:
        for n in (int(x) for x in args.actors.split(",")):
            r = measure(n, args, root)
            results[str(n)] = r
            s = r["startup_s"]
            print(
                f"N={n}: {r['actors_started']} acting; start-up first {s['first']} s, "
                f"last {s['last']} s; per actor RSS {r['actor_rss_mb_mean']} MB, "
                f"USS {r['actor_uss_mb_mean']} MB",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_result(
        "actor_processes-cpu",
        "actor_processes",
        args,
        load_start,
        t_start,
        jax_facts=False,
        setup="launch.run --preset=debug --game=Pong --agent=impala --num_actors=N "
        "(Launchpad local_mp); start-up from the '[actor-i] acting' lines; memory "
        "from psutil memory_full_info by STACX_NODE group",
        results=results,
    )


if __name__ == "__main__":
    main()
