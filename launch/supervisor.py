"""Waits on a `local_mp` program and restarts crashed actors.

Launchpad 0.5's `WorkerManager.wait()` stops the whole program as soon as any
worker exits with an error. For an actor or the evaluator that is too strict:
they hold no state worth keeping, so `supervise` starts a crashed one again
(same command and environment, appending to the same log file), up to
`max_restarts` times per process, and records each restart in
`<run>/logs/events.csv`. A crash of the learner, replay or counter (or an
actor past its restart budget) still stops the program, and the run resumes
from its newest checkpoint when started again.

This reads WorkerManager internals of the pinned dm-launchpad 0.5.2
(`_mutex`, `_active_workers`, `_stop_event`, `_check_workers`,
`_first_failure`); tests/test_fault_tolerance.py covers it end to end.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from utils.lifeline import STOP_EXIT_ENV, STOP_GRACE_ENV, STOP_WITHIN_ENV, lower_priority
from utils.logs import CsvLog

RESTARTABLE = ("actor", "evaluator")


def launch_supervised(
    program,
    resources: Mapping,
    log_dir: str,
    events_path: str,
    max_restarts: int,
    on_launch: Optional[Callable[[], None]] = None,
    stop_grace_s: float = 30.0,
    nice: int = 0,
) -> Tuple[Dict[str, int], Optional[RuntimeError]]:
    """Launch `program` as local processes, each node's stdout/stderr in
    `log_dir/<group>/<task>` (with output_to_files a crashing node stops the
    program; current_terminal would not notice), call `on_launch` once it
    runs, and `supervise` it until it ends. After a stop request the nodes
    get `stop_grace_s` seconds before Launchpad kills them (unless
    --lp_termination_notice_secs was given). Actors and the evaluator run at
    nice value `nice` from their first instruction: set here as soon as they
    are spawned, before they import JAX and TensorFlow, which 48 processes
    would otherwise do at the learner's priority. Returns (restarts per
    process, the failure that stopped it or None)."""
    import launchpad as lp
    from absl import flags
    from launchpad.launch.run_locally import launch_local_output_to_files as to_files

    notice = flags.FLAGS["lp_termination_notice_secs"]
    if not notice.present:
        notice.value = int(math.ceil(stop_grace_s))
    grace = int(notice.value or 0)
    resources = {g: with_stop_deadline(r, g, grace) for g, r in resources.items()}
    to_files._LOGGING_DIR = log_dir
    manager = lp.launch(
        program, launch_type="local_mp", terminal="output_to_files", local_resources=resources
    )
    with manager._mutex:
        for label, workers in manager._active_workers.items():
            if label.split("/")[0] in RESTARTABLE:
                for worker in workers:
                    lower_priority(nice, worker.pid)
    if on_launch is not None:
        on_launch()
    events = CsvLog(events_path)
    try:
        restarts = supervise(
            manager, log_dir, lambda g: resources[g].env, events, max_restarts, nice=nice
        )
        return restarts, None
    except RuntimeError as e:  # a node exited with an error
        return {}, e


def with_stop_deadline(resource, group: str, grace_s: int):
    """`resource` (a PythonProcess) for a node of `group` under a launcher that
    kills its nodes `grace_s` seconds after a stop. Each node's own Launchpad
    countdown gets the same grace (`launch.program.node`). An actor or the
    evaluator still alive 8 s (at most half the grace) after the stop exits,
    printing its stacks; any other node prints its stacks 3 s before the
    launcher's kill (`utils.lifeline`)."""
    if grace_s <= 0:  # killed at once: nothing to watch
        return resource
    stateless = group in RESTARTABLE
    within = min(8.0, grace_s / 2) if stateless else max(grace_s - 3.0, grace_s / 2)
    env = {**resource.env, STOP_WITHIN_ENV: f"{within:g}", STOP_GRACE_ENV: str(grace_s)}
    if stateless:
        env[STOP_EXIT_ENV] = "1"
    return dataclasses.replace(resource, env=env)


def exit_on_failure(failure: Optional[BaseException], log_dir: str) -> None:
    """Print the failure and each node's last exception line, then exit 1."""
    if failure is None:
        return
    print(f"error: {failure} (see {log_dir})", file=sys.stderr)
    for node, line in node_errors(log_dir):
        print(f"  {node}: {line}", file=sys.stderr)
    sys.exit(1)


def node_errors(log_dir: str) -> List[Tuple[str, str]]:
    """(node, last exception line) for each node log that ends in a traceback."""
    found = []
    for group in sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []:
        for task in sorted(os.listdir(os.path.join(log_dir, group))):
            with open(os.path.join(log_dir, group, task), errors="replace") as f:
                lines = f.read().splitlines()
            errors = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", ln)]
            if errors and any(ln.startswith("Traceback") for ln in lines):
                found.append((f"{group}/{task}", errors[-1].strip()))
    return found


def task_id(args) -> str:
    args = list(args)
    return args[args.index("--lp_task_id") + 1] if "--lp_task_id" in args else "0"


def supervise(
    manager,
    log_dir: str,
    env_for_group: Callable[[str], Mapping[str, str]],
    events: Optional[CsvLog] = None,
    max_restarts: int = 3,
    poll_s: float = 0.5,
    nice: int = 0,
) -> Dict[str, int]:
    """Blocks until every worker has exited; returns restarts per 'group/task'.
    Raises RuntimeError (as `manager.wait()` does) if the program failed."""
    restarts: Dict[str, int] = {}
    while True:
        with manager._mutex:
            if not manager._stop_event.is_set():
                for label, workers in manager._active_workers.items():
                    group = label.split("/")[0]  # labels are 'actor/0', ...
                    if group not in RESTARTABLE:
                        continue
                    for i, worker in enumerate(workers):
                        if not isinstance(worker, subprocess.Popen):
                            continue
                        code = worker.poll()
                        name = f"{group}/{task_id(worker.args)}"
                        if code in (None, 0) or restarts.get(name, 0) >= max_restarts:
                            continue
                        restarts[name] = restarts.get(name, 0) + 1
                        workers[i] = _restart(
                            worker, group, log_dir, env_for_group(group), code, restarts[name]
                        )
                        lower_priority(nice, workers[i].pid)
                        print(
                            f"[launcher] {name} exited with code {code}; restarted "
                            f"({restarts[name]} of at most {max_restarts})",
                            flush=True,
                        )
                        if events is not None:
                            events.write(
                                {
                                    "time": time.time(),
                                    "event": "restart",
                                    "node": name,
                                    "exit_code": code,
                                    "restarts": restarts[name],
                                }
                            )
            manager._check_workers()
            failure, manager._first_failure = manager._first_failure, None
            active = any(manager._active_workers.values())
        if failure is not None:
            raise failure
        if not active:
            return restarts
        time.sleep(poll_s)


def _restart(
    worker: subprocess.Popen,
    group: str,
    log_dir: str,
    env: Mapping[str, str],
    code: int,
    count: int,
) -> subprocess.Popen:
    path = os.path.join(log_dir, group, task_id(worker.args))
    with open(path, "a") as out:
        out.write(f"\n[launcher] exited with code {code}; restart {count}\n")
        out.flush()
        # STACX_RESTART lets the actor reseed, so it does not replay its first life.
        env = {**os.environ, **env, "STACX_RESTART": str(count)}
        return subprocess.Popen(worker.args, env=env, stdout=out, stderr=out)
