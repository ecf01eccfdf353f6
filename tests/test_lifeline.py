"""A program's nodes die with their launcher, and a live program's run
folder refuses a second one (utils/lifeline.py); the process readings and
waits the end-to-end tests rely on (utils/procfs.py, tests/programs.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.programs import Program, alive, learner_step, process_facts, wait_for, wait_gone
from utils import procfs
from utils.lifeline import LOCK_FILE, RunFolderBusyError, RunFolderLock, lock_holders


def test_run_folder_lock_names_its_holder_and_dies_with_it(tmp_path):
    run_dir = str(tmp_path / "run")
    held = RunFolderLock(run_dir).acquire("python -m launch.run --name=run")
    me = os.getpid()
    # The holder the lock file names, and the one the kernel lists.
    named = rf"live program: pid {me} on .* holding it now: pid {me} "
    with pytest.raises(RunFolderBusyError, match=named):
        RunFolderLock(run_dir).acquire()
    held.release()
    RunFolderLock(run_dir).acquire().release()  # free again: nothing stale


@pytest.mark.slow
def test_sigkilled_launcher_leaves_no_node_and_a_live_folder_refuses_a_second_program(
    tmp_path,
):
    root = str(tmp_path)
    first = Program(root, "held")
    try:
        wait_for(lambda: learner_step(first.run_dir) >= 1, 240, "a learner update", first)
        nodes = [pid for pids in first.nodes().values() for pid in pids]
        assert len(nodes) >= 5, first.nodes()  # replay, counter, learner, 2 actors, evaluator
        second = Program(root, "held")
        code, _ = second.wait_exit(120)
        assert code == 2, second.output()[-2000:]
        assert f"held by a live program: pid {first.proc.pid}" in second.output()
        # SIGKILL reaches the launcher alone, as the OOM killer or `kill -9` would.
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        wait_gone(nodes, "the nodes, after the launcher")
        holders = lock_holders(os.path.join(first.run_dir, LOCK_FILE))
        if holders:
            pytest.fail(f"the run folder is still held by {[process_facts(p) for p in holders]}")
        RunFolderLock(first.run_dir).acquire().release()
    finally:
        first.cleanup()


LEADER_EXITS = """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
print("ready", flush=True)
ctypes.CDLL(None).syscall({nr}, 0)  # SYS_exit: the main thread alone
"""


def test_a_process_counts_as_alive_until_its_last_thread_exits():
    # A process whose main thread is gone shows as a zombie while its other
    # threads still run and hold its files, a run folder's lock among them.
    nr = {"x86_64": 60, "aarch64": 93}.get(os.uname().machine)
    if nr is None:
        pytest.skip(f"SYS_exit not known here ({os.uname().machine})")
    proc = subprocess.Popen(
        [sys.executable, "-c", LEADER_EXITS.format(nr=nr)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        wait_for(lambda: process_facts(proc.pid).get("state") == "Z", 30, "the main thread's exit")
        assert list(process_facts(proc.pid)["threads"].values()).count("Z") == 1
        assert alive([proc.pid]) == [proc.pid]
    finally:
        proc.kill()
        proc.wait(30)
    assert alive([proc.pid]) == []


ODD_NAME = "a) b (c"


def test_procfs_reads_a_process_whose_name_holds_parentheses_and_spaces():
    # The kernel puts a process's name in parentheses inside its stat line;
    # a name may hold both, so the fields after it are found from the last ')'.
    code = (
        f"import time; open('/proc/self/comm', 'w').write({ODD_NAME!r})\n"
        "while time.process_time() < 0.5: pass\n"
        "print('ready', flush=True); input()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        s = procfs.stat(proc.pid)
        assert s.name == ODD_NAME
        assert int(s.fields[procfs.PARENT]) == os.getpid()
        assert s.fields[procfs.STATE] in "RSD"  # running, or waiting for its input
        assert set(procfs.thread_states(proc.pid)) == set(procfs.threads(proc.pid)) >= {proc.pid}
        assert proc.pid in procfs.descendants(os.getpid())
        assert procfs.command(proc.pid).endswith("input()")
        assert procfs.cpu_seconds(proc.pid) >= 0.4  # it spun 0.5 s; the kernel counts in ticks
    finally:
        proc.kill()
        proc.wait(30)
    # Once gone, every reader answers empty rather than raising.
    assert procfs.stat(proc.pid) is None and procfs.threads(proc.pid) == []
    assert procfs.command(proc.pid) == "" and procfs.cpu_seconds(proc.pid) == 0
    assert proc.pid not in procfs.descendants(os.getpid())


STUCK_NODE = """
import signal, sys, time
from utils.lifeline import stuck_after_stop
signal.signal(signal.SIGTERM, lambda *_: None)  # a stop nobody acts on
assert stuck_after_stop({within}, exit={exit})
print("ready", flush=True)
def busy_in_a_native_call():
    while True:
        time.sleep(60)
busy_in_a_native_call()
"""


@pytest.mark.parametrize("exit", [True, False])
def test_a_node_stuck_after_a_stop_signal_prints_its_stacks_and_exits_if_stateless(exit):
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_NODE.format(within=1.0, exit=exit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        if exit:
            assert proc.wait(timeout=30) == 1
        else:
            time.sleep(3)
            assert proc.poll() is None  # stacks printed, still running: the launcher decides
            proc.kill()
            proc.wait()
        err = proc.stderr.read()
        assert "most recent call first" in err and "busy_in_a_native_call" in err, err
    finally:
        proc.kill()


class _ExitsBetweenTwoLooks:
    """A program that exits just after a wait asked its condition."""

    returncode = 0

    def poll(self):
        return 0


def test_a_wait_asks_its_condition_again_once_the_program_has_exited():
    # A wait for a program's end (or for what it writes last) must not fail
    # because the exit fell between asking the condition and seeing the exit.
    asked = []

    def ended():
        asked.append(1)
        return len(asked) >= 2  # false when first asked, true ever after

    assert wait_for(ended, 5, "the end", program=_ExitsBetweenTwoLooks(), progress=lambda: 0)
    assert len(asked) == 2
