"""`launch.sweep --launcher=slurm` against a real one-node Slurm cluster that
the test starts itself (munged, slurmctld and slurmd from Debian's slurm-wlm
and munge packages, every file in a temporary folder): a 2-game sweep is
submitted as a job array, one task is cancelled mid-run, the resubmitted
sweep finishes it without redoing the finished game, and the report lists
both. Skipped, saying what is missing, without root or the Slurm binaries
(`.ci/run` installs them)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from launch import report
from launch.run_folder import RunFolder
from launch.sweep import cli, plan, slurm
from tests.conftest import ROOT
from tests.programs import catch_sweep, learner_step, tree_size, wait_for

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")


def _missing() -> str:
    if os.geteuid() != 0:
        return "not root (slurmd must run as root here)"
    gone = [b for b in BINARIES if shutil.which(b) is None]
    return f"missing {', '.join(gone)} (apt-get install slurm-wlm munge)" if gone else ""


def _checkpointed(run_dir):
    """Learner steps in the run's newest checkpoint (0 before the first)."""
    return (RunFolder(run_dir).checkpoint_counters() or {}).get("learner_steps", 0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _missing()
    if why:
        pytest.skip(f"no Slurm cluster: {why}")
    d = str(tmp_path_factory.mktemp("slurm"))
    for sub in ("state", "spool", "munge", "log"):
        os.makedirs(os.path.join(d, sub))
    key = os.path.join(d, "munge", "munge.key")
    with open(key, "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(key, 0o400)
    sock = os.path.join(d, "munge", "munge.socket")
    host = socket.gethostname()
    ports = (26817, 26818)
    conf = os.path.join(d, "slurm.conf")
    with open(conf, "w") as f:
        f.write(
            "\n".join(
                [
                    "ClusterName=test",
                    f"SlurmctldHost={host}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={sock}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SlurmUser=root",
                    f"SlurmctldPort={ports[0]}",
                    f"SlurmdPort={ports[1]}",
                    f"SlurmctldPidFile={d}/slurmctld.pid",
                    f"SlurmdPidFile={d}/slurmd.pid",
                    f"SlurmdSpoolDir={d}/spool",
                    f"StateSaveLocation={d}/state",
                    f"SlurmctldLogFile={d}/log/slurmctld.log",
                    f"SlurmdLogFile={d}/log/slurmd.log",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "KillWait=30",
                    f"NodeName={host} CPUs={os.cpu_count()} RealMemory=8000 State=UNKNOWN",
                    "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )
    env = dict(os.environ, SLURM_CONF=conf)
    subprocess.run(
        ["munged", f"--key-file={key}", f"--socket={sock}", f"--pid-file={d}/munge/munged.pid",
         f"--log-file={d}/munge/munged.log", f"--seed-file={d}/munge/seed", "--force"],
        check=True,
    )  # fmt: skip
    subprocess.run(["slurmctld", "-f", conf], check=True, env=env)
    subprocess.run(["slurmd", "-f", conf], check=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        info = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        if info.stdout.strip() in ("idle", "mixed", "allocated"):
            break
        time.sleep(1)
    else:
        pytest.fail(f"the test cluster did not come up: {info.stdout} {info.stderr}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield env
    finally:
        subprocess.run(["scancel", "--user=root"], env=env, capture_output=True)
        for name in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            try:
                with open(os.path.join(d, name)) as f:
                    os.kill(int(f.read().strip()), 15)
            except (OSError, ValueError):
                pass
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _queued(env) -> str:
    return subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i %T"], env=env, capture_output=True, text=True
    ).stdout


@pytest.mark.slow
def test_slurm_sweep_cancel_and_resubmit(cluster, tmp_path):
    out = str(tmp_path / "sweep")
    # Learner steps per run (impala, test preset: ~10 steps/s once compiled).
    # A cancel seen at step 2 stopped seed 1 at step 14 on 2 busy cores.
    steps = 60
    cmd = catch_sweep(
        out,
        steps,
        "--launcher=slurm",
        "--slurm_cpus=1",
        "--slurm_mem=2G",
        "--slurm_throttle=1",  # one task at a time on this 2-core machine
    )
    seed0, seed1 = os.path.join(out, "Catch-seed0"), os.path.join(out, "Catch-seed1")
    first = subprocess.run(cmd, cwd=ROOT, env=cluster, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "submitted job array" in first.stdout and "2 task(s)" in first.stdout
    (job,) = [j["job"] for j in slurm.load_jobs(out)]

    def status():
        return subprocess.run(
            cmd + ["--status"], cwd=ROOT, env=cluster, capture_output=True, text=True, timeout=60
        ).stdout

    # While the array runs, --status shows a task RUNNING (seed 0, or seed 1
    # if seed 0 has finished meanwhile).
    moving = lambda: tree_size(out)  # noqa: E731
    wait_for(lambda: learner_step(seed0) >= 1, 120, "seed 0's learner to log updates", None, moving)
    wait_for(lambda: "RUNNING" in status(), 120, "--status to show a running task", None, moving)

    # seed 0 (task 0) finishes; seed 1 (task 1) starts; once its learner has made
    # updates, cancel it (SIGTERM: the program writes a last checkpoint).
    wait_for(lambda: _checkpointed(seed0) >= steps, 120, "seed 0's last checkpoint", None, moving)
    wait_for(lambda: learner_step(seed1) >= 2, 120, "seed 1's learner to log updates", None, moving)
    subprocess.run(["scancel", f"{job}_1"], env=cluster, check=True)
    wait_for(lambda: job not in _queued(cluster), 120, "the cancelled task to leave the queue")
    stopped = RunFolder(seed1).checkpoint_counters()
    assert stopped is not None and 0 < stopped["learner_steps"] < steps, stopped
    rows = {line.split()[0]: line.split()[1] for line in status().splitlines()[1:]}
    assert rows == {"Catch-seed0": "finished", "Catch-seed1": "not"}, rows  # "not queued"
    seed0_ckpt = RunFolder(seed0).checkpoint_counters()["checkpoint"]

    # Resubmitted: only seed 1 is submitted; it resumes from its checkpoint and finishes.
    second = subprocess.run(cmd, cwd=ROOT, env=cluster, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "skip Catch-seed0: finished" in second.stdout and "1 task(s)" in second.stdout
    jobs = slurm.load_jobs(out)
    assert jobs[-1]["runs"] == ["Catch-seed1"]
    wait_for(
        lambda: jobs[-1]["job"] not in _queued(cluster), 120, "the resubmitted task", None, moving
    )
    final = RunFolder(seed1).checkpoint_counters()
    assert final["learner_steps"] >= steps
    assert final["trajectories_consumed"] > stopped["trajectories_consumed"]
    assert final["frames"] >= stopped["frames"]
    log = open(os.path.join(out, "slurm", f"{jobs[-1]['job']}_0.out")).read()
    assert f"resumed from {stopped['checkpoint']}" in log, log[-2000:]
    assert RunFolder(seed0).checkpoint_counters()["checkpoint"] == seed0_ckpt  # not redone

    third = subprocess.run(cmd, cwd=ROOT, env=cluster, capture_output=True, text=True, timeout=60)
    assert "all 2 runs are finished" in third.stdout, third.stdout
    s = report.summarize(out)
    assert s["games_planned"] == 1 and [g["game"] for g in s["per_game"]] == ["Catch"]
    assert json.load(open(os.path.join(out, plan.MANIFEST)))["preset"] == "test"


def test_slurm_flags_are_checked(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert cli.main(["--games=Pong", "--launcher=lsf", f"--out={out}"]) == 2
    assert "--launcher='lsf' is not allowed" in capsys.readouterr().err
    assert cli.main(["--games=Pong", "--status", f"--out={out}"]) == 2
    assert "--status and --cancel are for --launcher=slurm" in capsys.readouterr().err
    args = cli.parse_args(["--launcher=slurm", "--slurm_throttle=2", "--slurm_gpus=1"])
    script = slurm.batch_script(args, "/x/sw", "/x/sw/slurm/tasks-0.txt", 3)
    assert "#SBATCH --array=0-2%2" in script and "#SBATCH --gres=gpu:1" in script
    assert "-m launch.run --config=" in script
