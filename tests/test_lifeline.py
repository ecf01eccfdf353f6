"""A program's nodes die with their launcher, and a live program's run
folder refuses a second one (utils/lifeline.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.programs import Program, alive, learner_step, wait_for
from utils.lifeline import RunFolderBusyError, RunFolderLock


def test_run_folder_lock_names_its_holder_and_dies_with_it(tmp_path):
    run_dir = str(tmp_path / "run")
    held = RunFolderLock(run_dir).acquire("python -m launch.run --name=run")
    with pytest.raises(RunFolderBusyError, match=rf"held by a live program: pid {os.getpid()} on"):
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
        wait_for(lambda: not alive(nodes), 12, f"nodes {alive(nodes)} to exit after the launcher")
        RunFolderLock(first.run_dir).acquire().release()
    finally:
        first.cleanup()


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
