"""Real programs for end-to-end tests: `launch.run` (or another module) in
its own session, its node processes, and waits that fail with its output."""

import os
import signal
import subprocess
import sys
import time

import pytest

from launch import network
from tests.conftest import ROOT
from utils.logs import read_csv

STOP_BOUND_S = 30  # Launchpad's stop notice is 10 s; generous for a loaded CI box
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
        for pid in network.descendants(self.proc.pid):
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
            pytest.fail(f"launcher still running {timeout} s later:\n{self.output()[-3000:]}")
        self._out.close()
        return code, time.time() - t0

    def interrupt(self):
        os.killpg(self.proc.pid, signal.SIGINT)

    def cleanup(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for pid in alive(self.seen_pids):
            os.kill(pid, signal.SIGKILL)


def alive(pids):
    """Pids that still run (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(pid)
        except OSError:
            pass
    return out


def wait_for(cond, timeout, what, program=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        if program is not None and program.proc.poll() is not None:
            break
        time.sleep(0.5)
    tail = program.output()[-3000:] if program is not None else ""
    pytest.fail(f"timed out waiting for {what}\n{tail}")


def learner_rows(run_dir):
    path = os.path.join(run_dir, "logs", "learner.csv")
    return read_csv(path) if os.path.exists(path) else []


def learner_step(run_dir):
    rows = learner_rows(run_dir)
    return int(float(rows[-1]["learner_steps"])) if rows else 0
