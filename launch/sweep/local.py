"""The local launcher: the plan's unfinished runs as `launch.run` programs on
this machine, `--parallel` at a time, each in its own process group, with
its output appended to `<run>/sweep.log`. Ctrl-C or SIGTERM stops every
program cleanly (each writes a last checkpoint); a second Ctrl-C kills."""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from launch.run_folder import RUN_LOG, now
from launch.sweep.plan import Manifest, Run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_command(run: Run) -> List[str]:
    """`launch.run` on the config file the sweep wrote into the run folder."""
    return [sys.executable, "-m", "launch.run", f"--config={run.config_path}"]


def _set_parent_death_signal() -> None:
    """Child: get SIGTERM if the sweep dies (Linux), so a killed sweep leaves no
    program behind. Best effort: the kernel clears it when the child changes
    credentials, e.g. when launch.run enters its own user namespace (--network)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Child:
    def __init__(self, run: Run, proc: subprocess.Popen, log, started: float):
        self.run, self.proc, self.log, self.started = run, proc, log, started
        self.done = threading.Event()
        self.echo: Optional[threading.Thread] = None


def _echo(path: str, prefix: str, done: threading.Event, offset: int) -> None:
    """Print the learner's progress lines (and errors) a program writes to its log."""
    try:
        f = open(path, errors="replace")
    except OSError:
        return
    with f:
        f.seek(offset)
        while True:
            line = f.readline()
            if line:
                if line.startswith(("[learner]", "error")):
                    print(f"{prefix} {line.rstrip()}", flush=True)
            elif done.wait(0.5):
                return


class Sweep:
    def __init__(self, args: argparse.Namespace, out: str, runs: List[Run], manifest: Manifest):
        self.args, self.out, self.runs, self.manifest = args, out, runs, manifest
        self.children: Dict[str, _Child] = {}
        self.stop_signal: Optional[int] = None
        self.results: Dict[str, str] = {}

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum, frame) -> None:
        del frame
        if self.stop_signal is None:
            self.stop_signal = signum
            print(
                f"\n[sweep] {signal.Signals(signum).name}: stopping {len(self.children)} running "
                f"program(s) (SIGTERM to each process group; they write a last checkpoint); "
                f"press Ctrl-C again to kill them at once",
                flush=True,
            )
            for child in self.children.values():
                _signal_group(child.proc.pid, signal.SIGTERM)
        else:
            print("[sweep] killing the running program(s) (SIGKILL)", flush=True)
            for child in self.children.values():
                _signal_group(child.proc.pid, signal.SIGKILL)

    # ---------------------------------------------------------------- one run
    def _start(self, run: Run, index: int, total: int) -> None:
        os.makedirs(run.run_dir, exist_ok=True)
        run.folder.clear_marker()  # it met an older, smaller budget only
        state = run.progress()
        run.write_config()
        log_path = os.path.join(run.run_dir, RUN_LOG)
        log = open(log_path, "a")
        offset = log.tell()
        cmd = child_command(run)
        log.write(f"=== {now()} sweep starts: {' '.join(cmd)}\n")
        log.flush()
        resumed = (
            f"resuming at frames={state.frames:.0f} learner_steps={state.learner_steps:.0f}"
            if state.source != "none"
            else "fresh"
        )
        print(f"[sweep] start {run.name} ({index}/{total}, {resumed}); log {log_path}", flush=True)
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_set_parent_death_signal,
        )
        child = _Child(run, proc, log, time.time())
        if not self.args.quiet:
            child.echo = threading.Thread(
                target=_echo, args=(log_path, f"[{run.name}]", child.done, offset), daemon=True
            )
            child.echo.start()
        self.children[run.name] = child
        if self.stop_signal is not None:  # a signal came while it was starting
            _signal_group(proc.pid, signal.SIGTERM)
        entry = self.manifest.data["runs"][run.name]
        self.manifest.update(
            run,
            status="running",
            started=now(),
            pid=proc.pid,
            attempts=int(entry.get("attempts", 0)) + 1,
            log=log_path,
        )

    def _finish(self, child: _Child, returncode: int) -> None:
        run = child.run
        # A Launchpad process left in the program's group (the launcher died
        # before its nodes): stop it, then kill it.
        if _group_alive(child.proc.pid):
            print(
                f"[sweep] {run.name}: processes left in its group after exit; stopping them",
                flush=True,
            )
            _signal_group(child.proc.pid, signal.SIGTERM)
            deadline = time.time() + 15
            while _group_alive(child.proc.pid) and time.time() < deadline:
                time.sleep(0.2)
            _signal_group(child.proc.pid, signal.SIGKILL)
        child.done.set()
        if child.echo is not None:
            child.echo.join(timeout=5)
        child.log.write(f"=== {now()} program exited with code {returncode}\n")
        child.log.close()
        del self.children[run.name]
        state = run.progress()
        counters = state.counters or {}
        finished = state.finished
        elapsed = time.time() - child.started
        progress = (
            f"frames={counters.get('frames', 0):.0f}/{run.max_frames} "
            f"learner_steps={counters.get('learner_steps', 0):.0f}"
            + (f"/{run.max_learner_steps}" if run.max_learner_steps else "")
        )
        if finished:
            status = "done"
            run.mark_done(counters, returncode)
            note = "" if returncode == 0 else f" (exit code {returncode} after reaching its budget)"
        elif self.stop_signal is not None:
            status, note = "interrupted", ""
        elif returncode == 0:
            status, note = "incomplete", " (exited 0 short of its budget)"
        else:
            status, note = (
                "failed",
                f" (exit code {returncode}; see {os.path.join(run.run_dir, RUN_LOG)})",
            )
        self.results[run.name] = status
        print(f"[sweep] {run.name} {status}{note}: {progress}, {elapsed:.0f} s", flush=True)
        self.manifest.update(
            run,
            status=status,
            returncode=returncode,
            ended=now(),
            frames=float(counters.get("frames", 0)),
            learner_steps=float(counters.get("learner_steps", 0)),
            seconds=round(elapsed, 1),
            pid=None,
        )

    def _poll(self) -> None:
        for child in list(self.children.values()):
            rc = child.proc.poll()
            if rc is not None:
                self._finish(child, rc)

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        """Start the unfinished runs, `--parallel` at a time, until all have
        ended or a signal stopped them; 0 if all reached their budget."""
        todo = self._unfinished()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            total, started = len(todo), 0
            while (todo or self.children) and self.stop_signal is None:
                while todo and len(self.children) < self.args.parallel and self.stop_signal is None:
                    started += 1
                    self._start(todo.pop(0), started, total)
                time.sleep(0.5)
                self._poll()
            self._drain()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        for run in todo:
            self.results.setdefault(run.name, "pending")
        return self._summary()

    def _unfinished(self) -> List[Run]:
        """The runs to start; the finished ones are recorded (and marked)."""
        todo = []
        for run in self.runs:
            state = run.progress()
            if not state.finished:
                todo.append(run)
                continue
            self.results[run.name] = "done"
            print(
                f"[sweep] skip {run.name}: finished (frames={state.frames:.0f}, "
                f"learner_steps={state.learner_steps:.0f}; {state.source})",
                flush=True,
            )
            entry = self.manifest.data["runs"][run.name]
            if entry.get("status") != "done":
                entry.update(status="done", frames=state.frames, learner_steps=state.learner_steps)
            if state.source == "checkpoint":  # finished but unmarked: mark it
                run.mark_done(state.counters or {}, entry.get("returncode", 0))
        self.manifest.save()
        print(
            f"[sweep] {len(self.runs)} runs in {self.out}: {len(self.runs) - len(todo)} "
            f"finished, {len(todo)} to run, {self.args.parallel} at a time",
            flush=True,
        )
        return todo

    def _drain(self) -> None:
        """Wait for the running programs to end; SIGKILL after `--stop_timeout`."""
        deadline = time.time() + self.args.stop_timeout
        while self.children:
            if time.time() > deadline:
                print(
                    f"[sweep] still running after {self.args.stop_timeout:.0f} s; "
                    f"killing (SIGKILL)",
                    flush=True,
                )
                for child in self.children.values():
                    _signal_group(child.proc.pid, signal.SIGKILL)
                deadline = math.inf
            time.sleep(0.2)
            self._poll()

    def _summary(self) -> int:
        counts: Dict[str, int] = {}
        for status in self.results.values():
            counts[status] = counts.get(status, 0) + 1
        print(
            f"[sweep] {', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}; "
            f"manifest {self.manifest.path}; report: python -m launch.report {self.out}",
            flush=True,
        )
        if self.stop_signal is not None:
            return 128 + int(self.stop_signal)
        return 0 if all(s == "done" for s in self.results.values()) else 1
