"""The actor's loops write what each env saw: a deterministic fake env that
records every action it received, a fake policy whose logits name the
observation they were computed from, and recording writers. Every written
step of every env is checked against that env's own history, for the
overlapped loop (batches arriving in random order) and the serial one."""

from __future__ import annotations

import collections
from types import SimpleNamespace
from typing import List

import numpy as np
import pytest

from actors import actor as actor_lib
from actors.environments import StepResult, VectorEnv
from agents.types import Trajectory
from configs import make_config
from utils.timing import SectionTimer, Timer, null_timer

N, BATCH, STEPS = 4, 2, 60


def _episode_length(i: int) -> int:
    return 5 + i  # env i's episodes end after 5 + i steps


class RecordingEnv(VectorEnv):
    """Env i's t-th observation shows (i, t) in its first pixels; its step t
    pays 1000 i + t; its episodes last 5 + i steps. The asynchronous API
    returns any `batch_size` of the envs in flight, in random order."""

    def __init__(self, num_envs: int, batch_size: int, obs_shape, seed: int = 0):
        self.num_envs, self.batch_size = num_envs, batch_size
        self.num_actions, self.observation_shape, self.frames_per_step = 3, obs_shape, 4
        self.t = np.zeros(num_envs, np.int64)  # observations emitted so far - 1
        self.age = np.zeros(num_envs, np.int64)  # steps into the current episode
        self.received: List[List[int]] = [[] for _ in range(num_envs)]
        self.done_at: List[set] = [set() for _ in range(num_envs)]
        self._rng = np.random.default_rng(seed)
        self._flight: collections.OrderedDict = collections.OrderedDict()
        self._last = None
        self.recvs = 0

    def _obs(self, i: int) -> np.ndarray:
        o = np.zeros(self.observation_shape, np.uint8)
        o[0, 0, 0], o[0, 1, 0], o[0, 2, 0] = i, self.t[i] % 256, self.t[i] // 256
        return o

    def _step_env(self, i: int, a: int):
        self.received[i].append(int(a))
        reward = 1000.0 * i + self.t[i]
        self.age[i] += 1
        done = self.age[i] == _episode_length(i)
        if done:
            self.done_at[i].add(int(self.t[i]))
            self.age[i] = 0
        self.t[i] += 1
        return self._obs(i), reward, done

    def reset(self):
        return np.stack([self._obs(i) for i in range(self.num_envs)])

    def step(self, actions):
        out = [self._step_env(i, a) for i, a in enumerate(actions)]
        obs, reward, done = (np.array(x) for x in zip(*out))
        eps = [(i, 0.0, 0) for i in np.flatnonzero(done)]
        return StepResult(obs, reward.astype(np.float32), done, done.copy(), eps)

    def start(self):
        for i in range(self.num_envs):
            self._flight[i] = (self._obs(i), 0.0, False, True)

    def recv(self):
        self.recvs += 1
        ready = list(self._flight)
        ids = np.array(sorted(self._rng.choice(ready, self.batch_size, replace=False)))
        self._rng.shuffle(ids)
        rows = [self._flight.pop(i) for i in ids]
        obs, reward, done, first = (np.array(x) for x in zip(*rows))
        eps = [(int(i), 0.0, 0) for i, d in zip(ids, done) if d]
        self._last = ids
        return ids, StepResult(obs, reward.astype(np.float32), done, first, eps)

    def send(self, actions):
        for i, a in zip(self._last, actions):
            obs, reward, done = self._step_env(i, a)
            self._flight[i] = (obs, reward, done, done)
        self._last = None

    @property
    def episode_frames(self):
        return self.age.copy()

    def close(self):
        pass


class FakeRunner:
    """Acts (i + t) mod 3 at env i's t-th observation; the logits are (i, t, 0)."""

    version = 0

    def __init__(self, *args, **kwargs):
        pass

    def refresh(self):
        pass

    def act(self, obs):
        i, t = obs[:, 0, 0, 0].astype(np.int64), obs[:, 0, 1, 0] + 256 * obs[:, 0, 2, 0]
        logits = np.stack([i, t, np.zeros_like(i)], -1).astype(np.float32)
        return ((i + t) % 3).astype(np.int32), logits


class RecordingWriter:
    def __init__(self, num_envs: int):
        self.num_envs, self.steps = num_envs, []

    def append(self, step: Trajectory):
        assert all(np.shape(f)[0] == self.num_envs for f in step)
        self.steps.append(step)

    def close(self, flush=True):
        return True

    client = None  # the Reverb client `replay.wait_while_full` would poll


def _run(monkeypatch, overlap: bool, tmp_path, timer: SectionTimer = null_timer):
    cfg = make_config(
        "test",
        "impala",
        "Catch",
        overrides=[f"actors.envs_per_actor={N}", f"actors.overlap={str(overlap).lower()}"],
        root=str(tmp_path),
    )
    assert cfg.actors.env_batch_size == (BATCH if overlap else N)
    envs, writers, counted, reports = [], [], collections.Counter(), []

    def make_env(env_cfg, n, seed, threads, batch_size):
        envs.append(RecordingEnv(n, batch_size, env_cfg.observation_shape))
        return envs[-1]

    def make_writer(replay, num_envs, timeout_ms):
        writers.append(RecordingWriter(num_envs))
        return writers[-1]

    monkeypatch.setattr("actors.environments.make_vector_env", make_env)
    monkeypatch.setattr(actor_lib, "_PolicyRunner", FakeRunner)
    # The queue is never full here: count the checks (one per unroll boundary).
    monkeypatch.setattr("replay.wait_while_full", lambda client, should_stop, room: 0.0)
    builder = SimpleNamespace(cfg=cfg, make_writer=make_writer)
    counter = SimpleNamespace(
        futures=SimpleNamespace(
            increment=lambda host=None, **kw: counted.update(kw) or reports.append(kw),
            record=lambda **kw: None,
        )
    )
    stop = lambda: envs[0].recvs >= STEPS * N // BATCH if overlap else sum(envs[0].t) >= STEPS * N  # noqa: E731
    node = actor_lib.ActorNode(builder, 0, "fake:0", None, counter, should_stop=stop, timer=timer)
    node.run()  # what is pending at the stop is reported too
    # The first report goes at the first transitions (a run stopped a second
    # after it started still counts its frames), not a second later.
    assert 0 < reports[0]["frames"] <= 4 * N, reports[:2]
    return envs[0], writers, counted, node


def _per_env_steps(writers):
    """Env i's written steps, as a Trajectory of [num_steps] arrays."""
    (w,) = writers  # both loops: one writer, one append per N env steps
    assert w.num_envs == N
    stacked = Trajectory(*[np.stack(f) for f in zip(*w.steps)])
    return [Trajectory(*[f[:, i] for f in stacked]) for i in range(N)]


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "serial"])
def test_written_steps_are_what_each_env_saw(monkeypatch, tmp_path, overlap):
    env, writers, counted, node = _run(monkeypatch, overlap, tmp_path)
    per_env = _per_env_steps(writers)
    total, ended = 0, 0
    for i, tr in enumerate(per_env):
        k = len(tr.action)
        total += k
        # Every step the env took is written once, in order, but those still in
        # flight or waiting for the other envs' steps to fill a row.
        waiting = node._rows.waiting(i) if overlap else 0
        assert len(env.received[i]) - 1 <= k + waiting <= len(env.received[i]) and k >= 10
        t = np.arange(k)
        np.testing.assert_array_equal(tr.observation[:, 0, 0, 0], i)  # obs_t of env i ...
        np.testing.assert_array_equal(tr.observation[:, 0, 1, 0], t % 256)  # ... its t-th
        np.testing.assert_array_equal(tr.action, env.received[i][:k])  # a_t: what env i got
        np.testing.assert_array_equal(tr.action, (i + t) % 3)  # ... chosen at obs_t
        np.testing.assert_array_equal(tr.behaviour_logits[:, :2], np.stack([0 * t + i, t], -1))
        np.testing.assert_array_equal(tr.reward, 1000.0 * i + t)  # r_t of that transition
        done = np.array([s in env.done_at[i] for s in range(k)])
        np.testing.assert_array_equal(tr.discount, 1.0 - done)
        # Counted: the episodes that ended on a written or waiting step.
        ended += sum(s in env.done_at[i] for s in range(k + waiting))
        np.testing.assert_array_equal(tr.first, np.concatenate([[True], done[:-1]]))
    waiting = sum(node._rows.waiting(i) for i in range(N)) if overlap else 0
    assert counted["frames"] == 4 * (total + waiting)  # every transition counted, x frame skip
    assert counted["episodes"] == ended > 0


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "serial"])
def test_timer_sees_each_env_step_inference_and_write(monkeypatch, tmp_path, overlap):
    timer = Timer()
    env, writers, _, _ = _run(monkeypatch, overlap, tmp_path, timer)
    iterations = env.recvs if overlap else len(env.received[0])
    T = make_config("test", "impala", "Catch").agent.unroll_length
    assert timer.calls == {
        "env": iterations,
        "inference": iterations,
        "write": len(writers[0].steps),
        "full": -(-iterations // (T * (N // BATCH if overlap else 1))),  # each unroll
    }
    assert set(timer.seconds) == {"env", "inference", "write", "full"}
