"""`make bench`: every benchmark, one subprocess each, then the tables of docs/benchmarks.md.

    python -m benchmarks [--only env_actor,learner,learner_node,pmap_scaling,
                                 actor_processes,end_to_end]
                         [--out DIR] [--no_docs] [--quick]

Writes benchmarks/results/<benchmark>-<backend>.json, bench-run.json (wall
time and load average of this whole run) and rewrites the generated block of
docs/benchmarks.md (`benchmarks.report --write`). `--quick` is a
smoke test with tiny settings: its results go to --out (default: a new
temporary folder) and docs/benchmarks.md is left alone.
Timings taken while other work loads the machine are contaminated: check the
load averages recorded in every JSON.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from benchmarks.common import (
    RESULTS_DIR,
    children_cpu_seconds,
    cpu_seconds,
    load_average,
    machine_facts,
    write_json,
)

from benchmarks.report import ORDER

QUICK = {
    "env_actor": ["--envs", "1", "--networks", "small", "--seconds", "1", "--warmup", "5"],
    "learner": ["--networks", "small", "--reps", "1", "--no_debug_program"],
    "learner_node": ["--networks", "tiny", "--agents", "impala", "--seconds", "1", "--warmup", "2"],
    "actor_processes": ["--actors", "2", "--settle", "1"],
    "pmap_scaling": ["--devices", "1,2", "--agents", "impala", "--reps", "1"],
    "end_to_end": ["--variants", "debug", "--frames", "20000"],
}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--only", default=",".join(ORDER))
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--no_docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(ORDER)
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {sorted(unknown)}; choose from {ORDER}")
    if args.quick and not args.out:
        args.out = tempfile.mkdtemp(prefix="bench-quick-")
        print(f"quick run: results in {args.out}", flush=True)
    load_start, t0 = load_average(), time.perf_counter()
    seconds, foreign, steal, failed = {}, {}, {}, []
    for name in [n for n in ORDER if n in names]:
        cmd = [sys.executable, "-m", f"benchmarks.{name}"]
        cmd += QUICK[name] if args.quick else []
        cmd += ["--out", args.out] if args.out else []
        print(f"== {' '.join(cmd[1:])} (load {load_average()})", flush=True)
        t, (busy, stolen), mine = time.perf_counter(), cpu_seconds(), children_cpu_seconds()
        rc = subprocess.call(cmd)
        seconds[name] = time.perf_counter() - t
        # The load average counts the benchmark's own processes; this is what
        # everything else on the machine used meanwhile (cores, averaged), and
        # what the hypervisor took (steal).
        busy1, stolen1 = cpu_seconds()
        foreign[name] = max(0.0, (busy1 - busy) - (children_cpu_seconds() - mine)) / seconds[name]
        steal[name] = (stolen1 - stolen) / seconds[name]
        print(
            f"== {name}: {seconds[name]:.0f} s, exit {rc}, other processes used "
            f"{foreign[name]:.2f} cores meanwhile, steal {steal[name]:.2f}",
            flush=True,
        )
        if rc != 0:
            failed.append(name)
    wall = time.perf_counter() - t0
    if not args.quick:
        write_json(
            "bench-run",
            {
                "benchmark": "bench-run",
                "facts": machine_facts(False),
                "wall_s": wall,
                "seconds": seconds,
                "failed": failed,
                "foreign_cpu_cores": foreign,
                "steal_cores": steal,
                "load_average_start": load_start,
                "load_average_end": load_average(),
                "only": names,
            },
            args.out,
        )
    print(f"== all: {wall / 60:.1f} min, load {load_start} -> {load_average()}", flush=True)
    if not args.no_docs and not args.quick and (args.out in (None, RESULTS_DIR)):
        subprocess.call([sys.executable, "-m", "benchmarks.report", "--write"])
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
