"""Real programs for end-to-end tests: `launch.run` (or another module) in
its own session, its node processes, and waits that fail with its output."""

import ast
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from configs import make_config
from launch import network
from launch.run_folder import RunFolder
from tests.conftest import ROOT
from utils import procfs

PROGRESS_EVERY_S = 1.0


def stop_bound_s(preset):
    """A stop ends within the nodes' grace (`learner.stop_grace_s`: a node still
    running then is killed) plus the launcher's teardown: a bound that only a
    hung stop reaches, not one that uses its whole grace on a loaded host."""
    return make_config(preset, "impala").learner.stop_grace_s + 30


STOP_BOUND_S = stop_bound_s("test")
FAST = [
    "--preset=test",
    "--game=Catch",
    "--agent=impala",
    "--max_frames=1e9",
    "--override=learner.log_every_seconds=1",
    "--override=learner.checkpoint_every_minutes=0.05",
]


class Program:
    """`python -m launch.run` in its own session (a terminal's Ctrl-C reaches
    the whole process group; here `interrupt()` does the same)."""

    def __init__(self, root, name, *extra, out=None, command=None, prefix=()):
        """`launch.run` with FAST and `extra` flags, or `command` (an argv after
        the Python executable); `prefix` goes first (e.g. `ip netns exec NS`)."""
        self.run_dir = os.path.join(root, name)
        self.out_path = out or os.path.join(root, f"{name}-{time.time_ns()}.out")
        self._out = open(self.out_path, "w")
        if command is None:
            command = ["-m", "launch.run", *FAST, f"--root={root}", f"--name={name}", *extra]
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, *command],
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
        )
        self.seen_pids = set()

    def output(self):
        with open(self.out_path) as f:
            return f.read()

    def nodes(self):
        """{group: [pid, ...]} of the program's live node processes."""
        found = {}
        for pid in procfs.descendants(self.proc.pid):
            group = network.node_group(pid)
            if group:
                found.setdefault(group, []).append(pid)
                self.seen_pids.add(pid)
        return found

    def wait_exit(self, timeout):
        t0 = time.time()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"launcher still running {timeout} s later:\n{self.report()}")
        self._out.close()
        return code, time.time() - t0

    def wait_stopped(self, bound=STOP_BOUND_S):
        """After a stop signal: the launcher exits within `bound` (a bound that
        only a hang reaches) and no node outlived its grace (Launchpad then
        kills the runtime and says so). Returns the exit code."""
        code, _ = self.wait_exit(bound)
        assert "Killing entire runtime" not in self.output(), self.report()
        return code

    def report(self, chars=3000):
        """The output's tail, and the log tail of each node Launchpad named
        as not stopping in time (a stuck node prints its stacks there)."""
        out = self.output()
        text = out[-chars:]
        found = re.findall(r"did not terminate in time: (\[.*?\])", out)
        for label in ast.literal_eval(found[-1]) if found else []:
            for path in glob.glob(os.path.join(self.run_dir, "launchpad", "*", label)):
                with open(path, errors="replace") as f:
                    text += f"\n--- {path}:\n" + f.read()[-chars:]
        return text

    def interrupt(self):
        os.killpg(self.proc.pid, signal.SIGINT)

    def cleanup(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for pid in alive(self.seen_pids):
            os.kill(pid, signal.SIGKILL)


def alive(pids):
    """Pids that still run. A process counts until its last thread has
    exited: its main thread shows as a zombie while another thread still
    tears the process down (unmapping a large address space takes a while on
    a loaded machine), and until then it holds its files and locks."""
    return [
        pid
        for pid in pids
        if any(state not in ("Z", "X") for state in procfs.thread_states(pid).values())
    ]


def wait_gone(pids, what, timeout=15):
    """Wait until every process in `pids` has exited, last thread included; the
    bound counts from the last exit, so only a process that never goes hits it."""
    pids = sorted(pids)
    wait_for(
        lambda: not alive(pids),
        timeout,
        f"{what} ({pids}) to exit",
        progress=lambda: len(alive(pids)),
    )


def process_facts(pid):
    """What /proc says of `pid`: its state, parent, node group, command and
    each thread's state (for a failure message)."""
    facts = {"pid": pid, "group": network.node_group(pid)}
    s = procfs.stat(pid)
    if s is None:
        return dict(facts, error="gone")
    facts.update(state=s.fields[procfs.STATE], ppid=int(s.fields[procfs.PARENT]))
    facts["command"] = procfs.command(pid)[:300]
    facts["threads"] = {
        f"{tid} {t.name}": t.fields[procfs.STATE]
        for tid in procfs.threads(pid)
        if (t := procfs.stat(pid, tid)) is not None
    }
    return facts


def wait_for(cond, timeout, what, program=None, progress=None, cap=5.0):
    """Poll `cond` until it returns something truthy, and return that.

    The wait is keyed to progress, not to the clock alone, so a loaded
    machine slows it down without failing it: `timeout` seconds count from
    the last change of `progress()` (default, when there is a program: its
    output, run folder and CPU time, `_activity`), up to `cap` x `timeout`
    in all. It fails at once, with the program's output, if `program` (a
    `Program` or a `subprocess.Popen`) exits first."""
    proc = getattr(program, "proc", program)
    if progress is None and program is not None:
        progress = lambda: _activity(program)  # noqa: E731
    start = last_move = last_look = time.time()
    seen = progress() if progress else None
    while True:
        value = cond()
        if value:
            return value
        now = time.time()
        # Progress walks /proc and a run folder: once a second is enough.
        if progress is not None and now - last_look >= PROGRESS_EVERY_S:
            last_look = now
            moved = progress()
            if moved != seen:
                seen, last_move = moved, now
        if proc is not None and proc.poll() is not None:
            # It may have exited after `cond` was last asked; what it left
            # then decides (a wait for the exit itself is met just so).
            value = cond()
            if value:
                return value
            reason = f"the program exited ({proc.returncode})"
            break
        if now - last_move > timeout or now - start > cap * timeout:
            reason = f"no progress for {now - last_move:.0f} s ({now - start:.0f} s in all)"
            break
        time.sleep(0.2)
    tail = program.output()[-3000:] if hasattr(program, "output") else ""
    pytest.fail(f"{reason} while waiting for {what}\n{tail}")


def _activity(program):
    """What shows a program moving: its output, everything under its run
    folder (node logs, CSV logs, checkpoints) and the CPU seconds its
    processes have used. The last counts while nothing is written: on a
    loaded machine a program can import and compile for minutes in silence."""
    proc = getattr(program, "proc", program)
    out = getattr(program, "out_path", None)
    run_dir = getattr(program, "run_dir", None)
    return (
        os.path.getsize(out) if out and os.path.exists(out) else 0,
        tree_size(run_dir) if run_dir else 0,
        cpu_seconds(proc.pid) if proc is not None else 0,
    )


def cpu_seconds(pid):
    """Whole CPU seconds (user and system) used by `pid` and its live descendants."""
    return int(sum(procfs.cpu_seconds(p) for p in [pid, *procfs.descendants(pid)]))


def catch_sweep(out, steps, *extra):
    """`launch.sweep` over 2 seeds of Catch, impala on the test preset, one
    actor each, `steps` learner steps per run, into `out`."""
    return [
        sys.executable,
        "-m",
        "launch.sweep",
        *extra,
        "--games=Catch",
        "--seeds=2",
        "--agent=impala",
        "--preset=test",
        "--frames=1e9",
        f"--max_learner_steps={steps}",
        "--num_actors=1",
        "--override=learner.log_every_seconds=0.1",
        f"--out={out}",
    ]


def tree_size(folder):
    """Bytes in all files under `folder`: a wait's progress for a sweep (its
    run folders' logs and checkpoints grow while any program moves)."""
    total = 0
    for d, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except OSError:
                pass
    return total


def learner_rows(run_dir):
    return RunFolder(run_dir).learner_rows()


def learner_step(run_dir):
    return RunFolder(run_dir).learner_steps_logged()
