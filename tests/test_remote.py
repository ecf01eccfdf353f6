"""Actors on other hosts (`launch.run --serve`, `launch.actors`).

Unit tests of the endpoints file, the join check and the host tallies, and
one end-to-end test across two network namespaces joined by a veth pair: a
learner host with no local actors learns from frames that only the other
namespace's actor host produced; that host is killed and started again and
the learner carries on; the learner host stops and the actor host follows,
cleanly, leaving no process behind.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from configs import make_config, shared_config
from launch import network, remote
from tests.conftest import ROOT
from tests.programs import FAST, learner_rows, wait_for, wait_gone
from utils import version
from utils.counter import Counter, summarize_hosts
from utils.logs import read_csv


def _cfg(**actors):
    cfg = make_config("test", "impala", "Catch")
    return dataclasses.replace(cfg, actors=dataclasses.replace(cfg.actors, **actors))


def _counter(cfg, code="abc", local=2, initial=None):
    identity = dict(code_version=code, commit="1234567", config=shared_config(cfg))
    return Counter(initial, dict(identity, local_actors=local))


# ---------------------------------------------------------------- join check
def test_join_hands_out_actor_ids_unique_over_the_run_and_its_checkpoints():
    cfg = _cfg()
    c = _counter(cfg, local=2)
    assert c.join("a", 3, "abc", shared_config(cfg)) == {"first_actor_id": 2}
    assert c.join("b", 1, "abc", shared_config(cfg)) == {"first_actor_id": 5}
    # A resumed run's counter starts from the checkpointed counts.
    resumed = _counter(cfg, local=2, initial=c.get_counts())
    assert resumed.join("a", 1, "abc", shared_config(cfg)) == {"first_actor_id": 6}


def test_join_refuses_other_code_and_names_each_config_difference():
    cfg = _cfg()
    c = _counter(cfg)
    answer = c.join("a", 1, "abd", shared_config(cfg))
    assert "code version abd differs" in answer["error"] and "1234567" in answer["error"]
    other = dataclasses.replace(
        cfg,
        seed=3,
        agent=dataclasses.replace(cfg.agent, unroll_length=cfg.agent.unroll_length + 1),
    )
    error = c.join("a", 1, "abc", shared_config(other))["error"]
    assert f"agent.unroll_length is {cfg.agent.unroll_length + 1} here" in error
    assert "seed is 3 here, 0 there" in error
    assert c.get_counts() == {"frames": 0, "episodes": 0}  # a refused host gets no ids


def test_join_accepts_host_local_fields():
    """Each host chooses its root and how it acts (actors.*)."""
    cfg = _cfg()
    c = _counter(cfg)
    mine = dataclasses.replace(_cfg(num_actors=7, envs_per_actor=2, env_batches=1), root="/x")
    assert c.join("a", 7, "abc", shared_config(mine)) == {"first_actor_id": 2}


def test_host_tallies_frames_restarts_and_silence():
    cfg = _cfg()
    c = _counter(cfg, local=2)
    c.join("b 10.0.0.2", 4, "abc", shared_config(cfg))
    c.increment(host="local", frames=100, episodes=1)
    c.increment(host="b 10.0.0.2", frames=40)
    c.increment(host="b 10.0.0.2", restarts=1)
    hosts = c.get_hosts()
    assert c.get_counts()["frames"] == 140 and c.get_counts()["restarts"] == 1
    assert {k: hosts["local"][k] for k in ("actors", "frames", "episodes")} == dict(
        actors=2, frames=100, episodes=1
    )
    assert hosts["b 10.0.0.2"]["frames"] == 40 and hosts["b 10.0.0.2"]["restarts"] == 1
    assert summarize_hosts(hosts) == (
        "local: 2 actor(s), 0.00M frames; b 10.0.0.2: 4 actor(s), 0.00M frames, 1 restart(s)"
    )
    hosts["b 10.0.0.2"]["silent_s"] = 31.0
    assert summarize_hosts(hosts).endswith("1 restart(s), silent for 31 s")


def test_a_host_that_rejoins_after_silence_counts_its_new_actors_only(monkeypatch):
    cfg = _cfg()
    c = _counter(cfg)
    c.join("a", 2, "abc", shared_config(cfg))
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 60)
    c.join("a", 3, "abc", shared_config(cfg))
    assert c.get_hosts()["a"]["actors"] == 3


# ---------------------------------------------------------------- code version
def test_code_version_covers_every_source_file_and_nothing_else(tmp_path):
    for package in version.CODE_PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("x = 1\n")
    root = str(tmp_path)
    before = version.code_version(root)
    (tmp_path / "agents" / "notes.txt").write_text("not code")
    os.makedirs(tmp_path / "agents" / "__pycache__")
    (tmp_path / "agents" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    version.code_version.cache_clear()
    assert version.code_version(root) == before
    (tmp_path / "launch" / "__init__.py").write_text("x = 2\n")
    version.code_version.cache_clear()
    assert version.code_version(root) != before


# ---------------------------------------------------------------- endpoints
def test_endpoints_round_trip_and_each_bad_file_is_named(tmp_path):
    cfg = _cfg()
    data = remote.endpoints("10.0.0.1", {"replay": 5, "counter": 6, "learner": 7}, "eth0", cfg)
    path = str(tmp_path / "endpoints.json")
    remote.write_endpoints(path, data)
    back = remote.read_endpoints(path)
    assert back["counter"] == "10.0.0.1:6" and back["config"] == cfg.to_dict()
    assert back["code_version"] == version.code_version()

    def error(text):
        with open(path, "w") as f:
            f.write(text)
        with pytest.raises(remote.EndpointsError) as e:
            remote.read_endpoints(path)
        return str(e.value)

    assert "not JSON" in error("{")
    assert "not an endpoints file" in error(json.dumps({"format": 99}))
    assert "has no 'learner'" in error(
        json.dumps({k: v for k, v in data.items() if k != "learner"})
    )
    assert "replay='nowhere' is not host:port" in error(json.dumps({**data, "replay": "nowhere"}))
    with pytest.raises(remote.EndpointsError, match="cannot read it"):
        remote.read_endpoints(str(tmp_path / "missing.json"))


def test_interface_and_port_checks_name_the_value():
    assert remote.interface_address("lo") == "127.0.0.1"
    with pytest.raises(remote.EndpointsError, match=r"--serve='nosuch0'.*choose one of .*lo"):
        remote.interface_address("nosuch0")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(remote.EndpointsError, match=f"port {busy} is in use"):
            remote.pick_ports(busy - 1)
    with pytest.raises(remote.EndpointsError, match="--serve_port=80 is not allowed"):
        remote.pick_ports(80)
    assert len(set(remote.pick_ports(0).values())) == 3


def test_firewall_rules_open_the_served_ports_to_the_given_hosts_only():
    rules = remote.allow_rules("eth0", [7000, 7001, 7002], ["10.0.0.7", "10.0.1.0/24"])
    assert rules == [
        f"iptables -A INPUT -i eth0 -p tcp -s {h} -m multiport --dports 7000,7001,7002 -j ACCEPT"
        for h in ("10.0.0.7", "10.0.1.0/24")
    ] + [
        "iptables -A INPUT -i eth0 -p tcp --dport 1024:65535 -m conntrack --ctstate NEW -j DROP",
    ]
    with pytest.raises(remote.EndpointsError, match="--serve_allow='host-b' is not allowed"):
        remote.allow_rules("eth0", [1, 2, 3], ["host-b"])


# ---------------------------------------------------------------- command lines
def _run(*args, timeout=120):
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


def test_an_unreachable_or_missing_endpoints_file_exits_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg = _cfg()
    data = remote.endpoints(
        "127.0.0.1", {"replay": port, "counter": port, "learner": port}, "lo", cfg
    )
    path = str(tmp_path / "endpoints.json")
    remote.write_endpoints(path, data)
    r = _run("-m", "launch.actors", f"--endpoints={path}", "--join_timeout_s=2")
    assert r.returncode == 2, r.stderr
    assert f"nothing answers at the learner host's counter 127.0.0.1:{port}" in r.stderr
    r = _run("-m", "launch.actors", f"--endpoints={tmp_path}/none.json")
    assert r.returncode == 2 and "cannot read it" in r.stderr


def test_serving_needs_a_real_interface_and_no_local_actors_needs_serving(tmp_path):
    base = ["-m", "launch.run", *FAST, f"--root={tmp_path}"]
    r = _run(*base, "--serve=nosuch0")
    assert r.returncode == 2 and "--serve='nosuch0' is not allowed" in r.stderr
    r = _run(*base, "--num_actors=0")
    assert r.returncode == 2 and "actors.num_actors=0 is not allowed without --serve" in r.stderr
    r = _run(*base, "--serve=lo", "--network=isolated")
    assert r.returncode == 2 and "not allowed with --network=isolated" in r.stderr
    assert not os.listdir(tmp_path)  # bad input leaves nothing behind


# ---------------------------------------------------------------- two hosts
@pytest.fixture
def two_hosts():
    """Namespaces L (learner host) and A (actor host) joined by a veth pair."""
    try:
        with network.veth_namespaces(str(os.getpid() % 100000), subnet=os.getpid() % 250) as pair:
            yield pair
    except network.NetworkIsolationError as e:
        pytest.skip(f"two-namespace test skipped: {e.strerror}")


def _host_rows(run_dir):
    path = os.path.join(run_dir, "logs", "hosts.csv")
    return read_csv(path) if os.path.exists(path) else []


def _last_frames(run_dir, host):
    rows = [r for r in _host_rows(run_dir) if r["host"] == host]
    return float(rows[-1]["frames"]) if rows else 0.0


@pytest.mark.slow
def test_a_learner_host_fed_only_by_another_namespace(tmp_path, two_hosts, programs):
    exec_l, veth_l, addr_l = two_hosts.exec_prefix["L"], two_hosts.veth["L"], two_hosts.address["L"]
    exec_a, addr_a = two_hosts.exec_prefix["A"], two_hosts.address["A"]
    learner = programs(
        str(tmp_path),
        "remote",
        "--num_actors=0",
        f"--serve={veth_l}",
        f"--serve_allow={addr_a}",
        prefix=exec_l,
    )
    endpoints = os.path.join(learner.run_dir, remote.ENDPOINTS_FILE)
    wait_for(lambda: os.path.exists(endpoints), 120, "the endpoints file", learner)
    data = remote.read_endpoints(endpoints)
    assert data["learner"].startswith(f"{addr_l}:") and data["address"] == addr_l
    assert f"-s {addr_a} -m multiport" in learner.output()

    actor_root = str(tmp_path / "actor-host")
    os.makedirs(actor_root)

    def actor_host(*extra, name="actors"):
        command = ["-m", "launch.actors", f"--endpoints={endpoints}", f"--root={actor_root}"]
        return programs(actor_root, name, command=[*command, *extra], prefix=exec_a, out=None)

    # Another config is refused, and the run is untouched.
    refused = actor_host("--override=agent.unroll_length=3", "--join_timeout_s=60", name="bad")
    code, _ = refused.wait_exit(120)
    assert code == 2, refused.output()
    assert "refused this actor host: config differs" in refused.output()
    assert "agent.unroll_length is 3 here" in refused.output()

    # Frames from namespace A only: the learner steps on them.
    first = actor_host("--num_actors=1", "--label=host-a", "--learner_timeout_s=10")
    wait_for(
        lambda: _last_frames(learner.run_dir, "host-a") > 0, 240, "frames from host-a", learner
    )
    wait_for(lambda: len(learner_rows(learner.run_dir)) >= 2, 120, "learner steps", learner)
    assert {r["host"] for r in _host_rows(learner.run_dir)} == {"host-a"}  # no local actors
    assert "[learner] actor hosts: host-a: 1 actor(s)" in learner.output()

    # The actor host dies (every process in its namespace); the learner waits
    # and carries on when it is back.
    first.nodes()
    for pid in network.namespace_pids(two_hosts.namespace["A"]):
        os.kill(pid, signal.SIGKILL)
    first.wait_exit(30)
    assert first.seen_pids
    wait_gone(first.seen_pids, "the killed host's processes", 30)
    frames_then = _last_frames(learner.run_dir, "host-a")
    time.sleep(5)
    assert learner.proc.poll() is None
    second = actor_host("--num_actors=1", "--label=host-a", "--learner_timeout_s=10")
    wait_for(
        lambda: _last_frames(learner.run_dir, "host-a") > frames_then + 2000,
        240,
        "frames from host-a after its restart",
        learner,
    )
    # New ids, so new seeds (the refused host got none).
    assert "actors 0..0" in first.output() and "actors 1..1" in second.output()
    rows = learner_rows(learner.run_dir)
    steps, frames = float(rows[-1]["learner_steps"]), float(rows[-1]["actor_frames"])
    cfg = data["config"]
    B, T = cfg["learner"]["batch_size"], cfg["agent"]["unroll_length"]
    learned = steps * B * T
    # Queue replay, actors waiting while it is full: no frame is dropped, so
    # a frame counted and not learned from is in the table (at most 10 B
    # unrolls) or on its way to the learner (the dataset's prefetch and the
    # samples in flight, the puller's slot and the learner's windows made
    # ahead). Before the back-off, the FIFO remover dropped what a lagging
    # learner (compiling on a loaded machine) did not take: 17 steps learned
    # against 23,920 frames. The counter hears of frames once a second per
    # actor, and the killed host's last second is lost, so a few more frames
    # may be learned than were counted: no lower bound but progress.
    on_the_way = (
        10 + cfg["replay"]["prefetch_batches"] + 2 + 1 + cfg["learner"]["prefetch_windows"]
    ) * (B * T)
    assert learned > 0 and frames - learned <= on_the_way, (steps, frames, on_the_way)

    # The learner host stops; the actor host notices, stops and leaves nothing.
    second.nodes()
    os.killpg(learner.proc.pid, signal.SIGTERM)
    assert learner.wait_exit(60)[0] == 0
    code, _ = second.wait_exit(60)
    second.nodes()
    assert code == 0, second.output()
    assert "has not answered for" in second.output() and "stopped 1 actor(s)" in second.output()
    wait_gone(second.seen_pids, "the actor host's processes")
