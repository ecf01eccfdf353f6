"""A program's processes live and die with their launcher, and one program
at a time holds a run folder.

`exit_with_launcher()`: a node process started by a launcher (whose pid is in
`LAUNCHER_PID_ENV`) watches its parent in a daemon thread; once the launcher
is gone, however it died (SIGKILL, the OOM killer, a job timeout), the node
is reparented, sends itself SIGTERM (a clean stop where the node has one) and
exits hard `grace_s` later. The parent pid is read, not the launcher's
liveness: a killed launcher that nobody has reaped yet still answers
`kill(pid, 0)`, but its children are reparented at once.

`stuck_after_stop()`: a node asked to stop (SIGINT, SIGTERM) that still lives
`STOP_WITHIN_ENV` seconds later prints every thread's stack to its log and,
with `STOP_EXIT_ENV` set (actors and the evaluator: nothing to save), exits at
once. Launchpad's own stop runs as a Python signal handler, which waits for
the main thread to leave native code (a gRPC call, an XLA compile, a flush);
this one does not: the signal is read from a wakeup fd in a thread, and the
deadline is faulthandler's native watchdog.

`RunFolderLock`: an advisory `flock` on `<run>/run.lock`. A launcher takes
it only if no process holds it (an exclusive lock, at once turned into a
shared one), writes its pid, host and start time into the file, and keeps
it while its program runs; each node process takes a shared lock too. The
kernel drops a process's lock when it dies, so a crash never leaves a stale
lock, and a new launcher is refused, with the holder named, until the old
launcher and the last of its nodes have exited.
"""

from __future__ import annotations

import faulthandler
import fcntl
import json
import os
import signal
import socket
import threading
import time
from typing import List, Optional

from utils import procfs

LAUNCHER_PID_ENV = "STACX_LAUNCHER_PID"
RUN_DIR_ENV = "STACX_RUN_DIR"
STOP_WITHIN_ENV = "STACX_STOP_WITHIN_S"
STOP_EXIT_ENV = "STACX_STOP_EXIT"
STOP_GRACE_ENV = "STACX_STOP_GRACE_S"  # the launcher's kill, seconds after a stop
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
LOCK_FILE = "run.lock"


class RunFolderBusyError(RuntimeError):
    """Another live program holds the run folder."""


def _describe(path: str) -> str:
    try:
        with open(path) as f:
            holder = json.load(f)
        return (
            f"pid {holder.get('pid')} on {holder.get('host')} "
            f"since {holder.get('started')} ({holder.get('command', '?')})"
        )
    except (OSError, ValueError):
        return "a process whose details are not written yet (or a node of one that died)"


def lock_holders(path: str) -> List[int]:
    """Pids holding a `flock` on `path`, from /proc/locks (Linux; [] where
    unreadable). The kernel lists the pid that took each lock."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  READ 9869 fe:00:2483522 0 EOF"; waiters have "->"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key:
            pids.append(int(fields[4]))
    return sorted(set(pids))


def _process(pid: int) -> str:
    return f"pid {pid} ({procfs.command(pid)[:200] or '?'})"


def lower_priority(nice: int, pid: int = 0) -> None:
    """Raise the nice value of `pid` (0: this process) to at least `nice`.
    Absolute, not an increment, so the launcher and the node may both set it;
    threads the process starts afterwards inherit it."""
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (ProcessLookupError, PermissionError):
        pass  # gone already, or another user's


class RunFolderLock:
    """`acquire()` or RunFolderBusyError naming the holder; `release()`."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._fd: Optional[int] = None

    def acquire(self, command: str = "") -> "RunFolderLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else holds it
        except BlockingIOError:
            os.close(fd)
            raise RunFolderBusyError(
                f"run folder {os.path.dirname(self.path)!r} is held by a live program: "
                f"{_describe(self.path)}; holding it now: "
                f"{', '.join(_process(p) for p in lock_holders(self.path)) or '?'}. "
                "Stop it first, or give this run another --name."
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        fcntl.flock(fd, fcntl.LOCK_SH)  # shared with the program's nodes
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None


_node_lock_fd: Optional[int] = None


def hold_shared(run_dir: str) -> None:
    """In a node process: a shared lock on the run folder for as long as the
    process lives (a launcher's exclusive lock waits for it)."""
    global _node_lock_fd
    if _node_lock_fd is not None or not run_dir:
        return
    path = os.path.join(run_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    fcntl.flock(fd, fcntl.LOCK_SH)  # never waits: every holder's lock is shared
    _node_lock_fd = fd


_watching = False


def exit_with_launcher(poll_s: float = 1.0, grace_s: float = 5.0) -> None:
    """Start the watchdog once per process (no-op without `LAUNCHER_PID_ENV`)."""
    global _watching
    pid = os.environ.get(LAUNCHER_PID_ENV)
    if _watching or not pid:
        return
    launcher = int(pid)
    if os.getppid() != launcher:  # not a child of that launcher: nothing to watch
        return
    _watching = True

    def watch():
        while os.getppid() == launcher:
            time.sleep(poll_s)
        print(f"[lifeline] launcher {launcher} is gone: stopping this node", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


_stop_watch = False


def on_stop_signal(callback, signals=STOP_SIGNALS) -> bool:
    """Call `callback(signum)` in a daemon thread when this process gets one
    of `signals` that has a Python handler, at once, even while the main
    thread is in native code. Main thread only, once per process; False (and
    nothing done) if a wakeup fd is already set."""
    global _stop_watch
    if _stop_watch:
        return False
    read, write = os.pipe()
    os.set_blocking(write, False)
    theirs = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    if theirs != -1:
        signal.set_wakeup_fd(theirs)  # someone else's: put it back
        os.close(read)
        os.close(write)
        return False
    _stop_watch = True
    wanted = {int(s) for s in signals}

    def watch():
        while True:
            for signum in os.read(read, 64):
                if signum in wanted:
                    callback(signum)
                    return

    threading.Thread(target=watch, name="stop-watch", daemon=True).start()
    return True


def stuck_after_stop(within_s: float, exit: bool) -> bool:
    """Once a stop signal arrives: if this process still lives `within_s`
    seconds later, dump every thread's stack to stderr and, if `exit`, end
    it (exit code 1) without running Python's shutdown."""
    return on_stop_signal(lambda _: faulthandler.dump_traceback_later(within_s, exit=exit))


def node(constructor, *args, **kwargs):
    """Build a node's object (`constructor(*args, **kwargs)`) in its own
    process after starting the watchdogs and taking the run folder's shared lock."""
    exit_with_launcher()
    if os.environ.get(STOP_WITHIN_ENV):
        stuck_after_stop(float(os.environ[STOP_WITHIN_ENV]), bool(os.environ.get(STOP_EXIT_ENV)))
    hold_shared(os.environ.get(RUN_DIR_ENV, ""))
    return constructor(*args, **kwargs)
