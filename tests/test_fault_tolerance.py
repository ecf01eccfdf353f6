"""Faults, end to end with the real local_mp program (Catch: it starts and
learns in seconds). Each test asserts what was kept: checkpoint steps and
counters, log rows, parameter checksums, and that no process outlives the run.

1. actor killed -> restarted, learner keeps learning; Ctrl-C -> final
   checkpoint, bounded exit, no orphans; listening sockets are documented.
2. learner SIGKILLed -> the program stops; the next start resumes from the
   newest complete checkpoint (a corrupt newer file is skipped, named),
   counters continue, logs are appended; SIGTERM to that launcher -> final
   checkpoint, bounded exit, no orphans.
"""

import hashlib
import os
import signal

import numpy as np
import pytest

from launch import network
from launch.run_folder import RunFolder
from learner import checkpoint as ckpt_lib
from utils.logs import read_csv
from tests.programs import STOP_BOUND_S, learner_rows, learner_step, wait_for, wait_gone

pytestmark = pytest.mark.slow


def checksum(leaves):
    h = hashlib.sha256()
    for x in leaves:
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def test_actor_crash_is_restarted_and_ctrl_c_checkpoints(tmp_path, programs):
    p = programs(str(tmp_path), "crash", "--max_learner_steps=100000", "--network=host")
    wait_for(lambda: learner_step(p.run_dir) >= 5, 240, "learner steps", p)
    nodes = p.nodes()
    assert sorted(nodes) == ["actor", "counter", "evaluator", "learner", "replay"], nodes

    # Network exposure: every listener is on loopback or a documented one. A
    # courier node serves once its object is built, and on a loaded host the
    # evaluator may still be building after 5 learner steps: wait for each
    # group's listener to appear.
    def listening():
        nodes = p.nodes()
        groups = {pid: g for g, pids in nodes.items() for pid in pids}
        found = [s for pid in groups for s in network.listening_sockets(pid)]
        return found, groups

    def serving():
        found, groups = listening()
        return {groups[s.pid] for s in found} >= set(network.KNOWN_LISTENERS)

    wait_for(serving, 60, "every node's server", p)
    listeners, groups = listening()
    assert network.unexpected_listeners(listeners, groups) == []
    assert {groups[s.pid] for s in listeners} == set(network.KNOWN_LISTENERS)

    # Kill one actor: it is restarted, counted, and the learner keeps learning.
    victim = nodes["actor"][0]
    os.kill(victim, signal.SIGKILL)
    events = os.path.join(p.run_dir, "logs", "events.csv")
    wait_for(lambda: os.path.exists(events) and read_csv(events), 60, "restart event", p)
    row = read_csv(events)[0]
    assert (row["event"], row["exit_code"], row["restarts"]) == ("restart", "-9", "1")
    assert row["node"] in ("actor/0", "actor/1")
    step_at_kill = learner_step(p.run_dir)
    wait_for(lambda: len(p.nodes().get("actor", [])) == 2, 60, "the restarted actor", p)
    wait_for(
        lambda: learner_step(p.run_dir) >= step_at_kill + 20,
        120,
        "learning after the actor crash",
        p,
    )
    assert victim not in p.nodes()["actor"]
    # The restarted actor counts itself, under this host, once it is built.
    hosts = os.path.join(p.run_dir, "logs", "hosts.csv")
    wait_for(lambda: read_csv(hosts)[-1]["restarts"] == "1", 120, "the restart counted", p)
    assert {r["host"] for r in read_csv(hosts)} == {"local"}
    # The learner reads the counter about once a second, and a stopping
    # counter may not answer the final checkpoint's read: stop once a
    # periodic checkpoint holds the restart, so the final one does too.
    folder = RunFolder(p.run_dir)
    wait_for(
        lambda: (folder.checkpoint_counters() or {}).get("restarts") == 1,
        60,
        "a checkpoint that counts the restart",
        p,
    )

    # Ctrl-C: a final checkpoint, every process gone within the bound.
    p.nodes()
    p.interrupt()
    p.wait_stopped()
    wait_gone(p.seen_pids, "the program's processes")
    assert "restarted processes: {'actor/" in p.output()
    last = ckpt_lib.latest(ckpt_lib.checkpoint_dir(p.run_dir))
    assert last is not None
    final_logged = learner_step(p.run_dir)
    assert last.step >= final_logged >= step_at_kill + 20
    assert last.counters["learner_steps"] == last.step
    assert last.counters["restarts"] == 1
    assert (
        "[learner] checkpoint"
        in open(
            p.run_dir + "/launchpad/" + os.listdir(p.run_dir + "/launchpad")[0] + "/learner/0"
        ).read()
    )


def test_learner_sigkill_then_resume_continues_and_sigterm_checkpoints(tmp_path, programs):
    root = str(tmp_path)
    p = programs(root, "kill", "--max_learner_steps=100000")
    ckpts = ckpt_lib.checkpoint_dir(p.run_dir)
    wait_for(
        lambda: len(ckpt_lib.list_checkpoints(ckpts)) >= 2 if os.path.isdir(ckpts) else False,
        240,
        "two periodic checkpoints",
        p,
    )
    nodes = p.nodes()
    if "network isolated" in p.output():  # auto: the kernel allowed a private namespace
        assert all(network.interfaces(pid) == ["lo"] for pids in nodes.values() for pid in pids)
    os.kill(nodes["learner"][0], signal.SIGKILL)
    code, _ = p.wait_exit(STOP_BOUND_S)
    assert code != 0
    wait_gone(p.seen_pids, "the program's processes")

    good = ckpt_lib.latest(ckpts)
    assert good is not None and good.step > 0
    rows_before = learner_rows(p.run_dir)
    assert rows_before
    # A half-written newer checkpoint (as if the kill came mid-write without
    # the atomic rename): it must be named, skipped, and left alone.
    bad = os.path.join(ckpts, f"ckpt-{good.step + 1000:010d}.npz")
    with open(good.path, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])
    good_sum = checksum(good.leaves)

    # Past the last logged step, which may be ahead of the checkpoint the kill left.
    target = max(good.step, int(float(rows_before[-1]["learner_steps"]))) + 15
    q = programs(root, "kill", "--max_learner_steps=100000")
    wait_for(lambda: learner_step(q.run_dir) >= target, 240, f"learner step {target}", q)
    out = q.output()
    assert bad in out and f"resumed from {good.path}" in out

    # SIGTERM (a scheduler's stop): a final checkpoint, every process gone
    # within the bound.
    q.nodes()
    q.proc.send_signal(signal.SIGTERM)
    q.wait_stopped()
    wait_gone(q.seen_pids, "the program's processes")
    final = ckpt_lib.latest(ckpts)
    assert final.step >= learner_step(q.run_dir) >= target
    # Counters continue from the checkpoint: the learner's exactly; the actors'
    # as reported (frames at their first step, episodes once a second).
    for key in ("frames", "trajectories_consumed"):
        assert final.counters[key] > good.counters[key] > 0, key
    assert final.counters["episodes"] >= good.counters["episodes"]
    # Logs were appended: the first run's rows are still there, in order.
    rows_after = learner_rows(p.run_dir)
    assert rows_after[: len(rows_before)] == rows_before
    assert int(float(rows_after[-1]["learner_steps"])) > int(
        float(rows_before[-1]["learner_steps"])
    )
    # The good checkpoint the resume started from is unchanged on disk.
    assert not os.path.exists(good.path) or checksum(ckpt_lib.load(good.path).leaves) == good_sum
