"""Tests of actors/environments.py against the real ALE and the built-in Catch game."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest

from configs import EnvConfig
from actors.environments import (
    CATCH_COLUMNS,
    CATCH_ROWS,
    AtariVectorEnv,
    CatchVectorEnv,
    StepResult,
    make_vector_env,
    num_actions,
)


def _pong(**kw) -> EnvConfig:
    return EnvConfig(kind="atari", game=kw.pop("game", "Pong"), **kw)


def _catch(**kw) -> EnvConfig:
    return EnvConfig(kind="catch", **kw)


def _check_step_types(res: StepResult, n: int, shape: Tuple[int, int, int]) -> None:
    assert isinstance(res, StepResult)
    assert res.observation.shape == (n,) + shape and res.observation.dtype == np.uint8
    assert res.reward.shape == (n,) and res.reward.dtype == np.float32
    assert res.done.shape == (n,) and res.done.dtype == np.bool_
    assert res.first.shape == (n,) and res.first.dtype == np.bool_
    np.testing.assert_array_equal(res.first, res.done)
    assert isinstance(res.episode_returns, list)


# ----------------------------------------------------------------------------
# Atari
# ----------------------------------------------------------------------------
def test_num_actions():
    assert num_actions(_pong()) == 6  # minimal action set
    assert num_actions(_pong(game="Breakout")) == 4
    assert num_actions(_pong(full_action_space=True)) == 18
    assert num_actions(_catch()) == 3


def test_pong_shapes_dtypes_and_stack_order():
    cfg = _pong()
    with make_vector_env(cfg, num_envs=2, seed=0) as env:
        assert isinstance(env, AtariVectorEnv)
        assert env.num_envs == 2 and env.num_actions == 6 == num_actions(cfg)
        assert env.observation_shape == (84, 84, 4) == cfg.observation_shape
        assert env.frames_per_step == 4
        obs = env.reset()
        assert obs.shape == (2, 84, 84, 4) and obs.dtype == np.uint8
        # Channel-last, newest frame last, older frames zero at an episode's start.
        assert (obs[..., :3] == 0).all() and (obs[..., 3] > 0).any()
        prev = obs
        for _ in range(5):
            res = env.step(np.array([2, 3]))
            _check_step_types(res, 2, (84, 84, 4))
            assert not res.done.any() and res.episode_returns == []
            np.testing.assert_array_equal(res.observation[..., :3], prev[..., 1:])
            prev = res.observation


def test_rewards_are_unclipped():
    """SpaceInvaders pays 5..30 points per alien; random play scores within a few hundred steps."""
    cfg = _pong(game="SpaceInvaders")
    rng = np.random.default_rng(0)
    with make_vector_env(cfg, num_envs=4, seed=0) as env:
        env.reset()
        best = 0.0
        for _ in range(300):
            res = env.step(rng.integers(0, env.num_actions, size=4))
            best = max(best, float(res.reward.max()))
            if best > 1:
                break
    assert best >= 5.0


def test_frame_cap_truncates_with_same_step_reset():
    """Cap 402 frames at 4 frames/step: 100 full steps + 1 step cut short at the cap."""
    cap = 402
    cfg = _pong(max_episode_frames=cap, noop_max=0)
    with make_vector_env(cfg, num_envs=2, seed=1) as env:
        first_obs = env.reset()
        assert (env.episode_frames == 0).all()
        actions = np.array([0, 2])
        for t in range(100):
            res = env.step(actions)
            assert not res.done.any(), t
        assert (env.episode_frames == 400).all()
        res = env.step(actions)
        _check_step_types(res, 2, (84, 84, 4))
        assert res.done.all() and res.first.all()
        assert sorted(i for i, _, _ in res.episode_returns) == [0, 1]
        for _, ret, frames in res.episode_returns:
            assert frames == cap
            assert (
                ret <= 0.0
            )  # Pong only pays +-1; nobody scores a point in 402 frames of this play
        # Same-step reset: with no no-ops, Pong's new episode starts exactly like the first one.
        np.testing.assert_array_equal(res.observation, first_obs)
        assert (env.episode_frames == 0).all()
        res = env.step(actions)  # no dummy step after the terminal one
        assert not res.done.any() and res.episode_returns == []
        assert (env.episode_frames == 4).all()


def test_noop_max_is_passed_through():
    with make_vector_env(_pong(noop_max=0), num_envs=2, seed=0) as env:
        env.reset()
        assert (env.episode_frames == 0).all()
    # Capped episodes report the no-op frames too: cap <= frames <= cap + noop_max.
    cfg = _pong(noop_max=30, max_episode_frames=40)
    with make_vector_env(cfg, num_envs=4, seed=0) as env:
        env.reset()
        noops = env.episode_frames
        assert ((noops >= 0) & (noops <= 30)).all() and len(set(noops.tolist())) > 1
        finished = []
        for _ in range(12):
            finished += env.step(np.zeros(4, np.int64)).episode_returns
        assert len(finished) >= 4
        assert all(40 <= frames <= 70 for _, _, frames in finished)


def test_sticky_actions_are_passed_through():
    """With repeat probability 1 the initial NOOP repeats forever: random actions have no effect."""
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 6, size=(30, 1))

    def run(cfg: EnvConfig, acts: np.ndarray) -> np.ndarray:
        with make_vector_env(cfg, num_envs=1, seed=0) as env:
            env.reset()
            return np.stack([env.step(a).observation for a in acts])

    noop_run = run(_pong(noop_max=0), np.zeros_like(actions))
    assert not np.array_equal(run(_pong(noop_max=0, sticky_action_prob=0.0), actions), noop_run)
    np.testing.assert_array_equal(run(_pong(noop_max=0, sticky_action_prob=1.0), actions), noop_run)


def test_atari_determinism_under_seed():
    cfg = _pong(noop_max=30, sticky_action_prob=0.25, max_episode_frames=200)
    actions = np.random.default_rng(1).integers(0, 6, size=(70, 2))

    def rollout(seed: int, num_threads: int) -> List[np.ndarray]:
        with make_vector_env(cfg, num_envs=2, seed=seed, num_threads=num_threads) as env:
            out = [env.reset()]
            for a in actions:
                res = env.step(a)
                out += [res.observation, res.reward, res.done]
            return out

    a, b = rollout(7, 1), rollout(7, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = rollout(8, 1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


# ----------------------------------------------------------------------------
# Catch
# ----------------------------------------------------------------------------
def _ball_and_paddle_x(frame: np.ndarray) -> Tuple[float, float]:
    """Mean pixel column of the ball (any lit pixel above the paddle's rows) and of the
    paddle (lit pixels in the bottom pixel row) in one [H, W] frame."""
    h = frame.shape[0]
    paddle_top = -(-(CATCH_ROWS - 1) * h // CATCH_ROWS)  # first pixel row showing grid row 9
    ball = np.nonzero(frame[:paddle_top])
    paddle = np.nonzero(frame[-1])
    ball_x = float(ball[1].mean()) if ball[1].size else float(paddle[0].mean())
    return ball_x, float(paddle[0].mean())


def _span(index: int, cells: int, size: int) -> Tuple[int, int]:
    """First and last pixel (inclusive) showing grid cell `index` of `cells` at `size` pixels."""
    return -(-index * size // cells), -(-(index + 1) * size // cells) - 1


MIDDLE = _span(CATCH_COLUMNS // 2, CATCH_COLUMNS, 84)  # paddle's starting pixel columns


def _blocks(frame: np.ndarray) -> List[Tuple[int, int, int, int]]:
    """Bounding boxes (top, bottom, left, right; inclusive) of the lit-pixel groups, split
    by empty pixel rows. Asserts the frame is binary and each group is a solid rectangle."""
    assert set(np.unique(frame).tolist()) <= {0, 255}
    lit_rows = np.flatnonzero(frame.any(axis=1))
    groups = np.split(lit_rows, np.flatnonzero(np.diff(lit_rows) > 1) + 1) if lit_rows.size else []
    boxes = []
    for rows in groups:
        cols = np.flatnonzero(frame[rows].any(axis=0))
        top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
        assert (frame[top : bottom + 1, left : right + 1] == 255).all()  # solid
        boxes.append((int(top), int(bottom), int(left), int(right)))
    assert frame.astype(bool).sum() == sum((b - t + 1) * (r - left + 1) for t, b, left, r in boxes)
    return boxes


def test_catch_shapes_and_stack():
    cfg = _catch(frame_size=84, frame_stack=4)
    with make_vector_env(cfg, num_envs=3, seed=0) as env:
        assert isinstance(env, CatchVectorEnv)
        assert env.num_actions == 3 and env.frames_per_step == 1
        assert env.observation_shape == (84, 84, 4)
        obs = env.reset()
        assert obs.shape == (3, 84, 84, 4) and obs.dtype == np.uint8
        assert (obs[..., :3] == 0).all()
        res = env.step(np.ones(3, np.int64))
        _check_step_types(res, 3, (84, 84, 4))
        np.testing.assert_array_equal(res.observation[..., :3], obs[..., 1:])
    with make_vector_env(_catch(frame_size=20, frame_stack=1), num_envs=2, seed=0) as env:
        assert env.reset().shape == (2, 20, 20, 1)


def test_catch_rendering_one_ball_one_paddle():
    cfg = _catch(frame_size=84, frame_stack=1)
    with make_vector_env(cfg, num_envs=16, seed=3) as env:
        obs = env.reset()
        ball_cols = set()
        for i in range(16):
            boxes = _blocks(obs[i, :, :, 0])
            assert len(boxes) == 2
            (bt, bb, bl, br), (pt, pb, pl, pr) = boxes
            assert (bt, bb) == _span(0, CATCH_ROWS, 84)  # ball in grid row 0
            assert (pt, pb) == _span(CATCH_ROWS - 1, CATCH_ROWS, 84)  # paddle in the last grid row
            assert (pl, pr) == MIDDLE  # middle column
            assert br - bl + 1 in (16, 17) and pr - pl + 1 in (16, 17)
            ball_cols.add(bl)
        assert len(ball_cols) > 1  # ball column is random
        for step in range(1, 8):  # ball falls one grid row per step; stays separate from the paddle
            obs = env.step(np.full(16, step % 3)).observation
            for i in range(16):
                boxes = _blocks(obs[i, :, :, 0])
                assert len(boxes) == 2
                assert boxes[0][:2] == _span(step, CATCH_ROWS, 84)


def test_catch_reward_and_termination_timing():
    with make_vector_env(_catch(frame_stack=1), num_envs=32, seed=0) as env:
        env.reset()
        rng = np.random.default_rng(0)
        for episode in range(3):
            for t in range(1, CATCH_ROWS):
                res = env.step(rng.integers(0, 3, size=32))
                if t < CATCH_ROWS - 1:
                    assert not res.done.any() and (res.reward == 0).all()
                    assert (env.episode_frames == t).all()
                else:
                    assert res.done.all() and res.first.all()
                    assert set(res.reward.tolist()) <= {-1.0, 1.0}
                    assert [i for i, _, _ in res.episode_returns] == list(range(32))
                    for i, ret, frames in res.episode_returns:
                        assert ret == res.reward[i] and frames == CATCH_ROWS - 1
                    assert (env.episode_frames == 0).all()


def test_catch_same_step_reset():
    with make_vector_env(_catch(frame_size=84, frame_stack=4), num_envs=8, seed=5) as env:
        env.reset()
        for _ in range(CATCH_ROWS - 1):
            res = env.step(np.zeros(8, np.int64))
        assert res.done.all()
        obs = res.observation
        assert (obs[..., :3] == 0).all()  # a fresh stack
        for i in range(8):
            (bt, _, _, _), (_, _, pl, pr) = _blocks(obs[i, :, :, 3])
            assert bt == 0 and (pl, pr) == MIDDLE
        res = env.step(np.ones(8, np.int64))
        assert not res.done.any()


def test_catch_oracle_policy_always_catches():
    n = 64
    with make_vector_env(_catch(frame_size=84, frame_stack=2), num_envs=n, seed=1) as env:
        obs = env.reset()
        returns = []
        for _ in range(3 * (CATCH_ROWS - 1)):
            xs = [_ball_and_paddle_x(obs[i, :, :, -1]) for i in range(n)]
            actions = np.array([1 + int(np.sign(round(b - p))) for b, p in xs])
            res = env.step(actions)
            returns += [r for _, r, _ in res.episode_returns]
            obs = res.observation
    assert len(returns) == 3 * n and all(r == 1.0 for r in returns)


def test_catch_random_policy_return():
    """Random play catches with probability 1/5: mean return -0.6, std 0.8 per episode.
    With ~5,000 episodes the standard error is ~0.011; the band is over 4 standard errors."""
    n = 600
    with make_vector_env(_catch(frame_size=10, frame_stack=1), num_envs=n, seed=123) as env:
        env.reset()
        rng = np.random.default_rng(0)
        returns = []
        for _ in range(9 * (CATCH_ROWS - 1)):
            returns += [r for _, r, _ in env.step(rng.integers(0, 3, size=n)).episode_returns]
    assert len(returns) == 9 * n
    assert -0.65 <= float(np.mean(returns)) <= -0.55


def test_catch_determinism_under_seed():
    actions = np.random.default_rng(2).integers(0, 3, size=(30, 4))

    def rollout(seed: int) -> List[np.ndarray]:
        with make_vector_env(_catch(frame_size=12), num_envs=4, seed=seed) as env:
            out = [env.reset()]
            for a in actions:
                res = env.step(a)
                out += [res.observation, res.reward]
            return out

    a, b, c = rollout(11), rollout(11), rollout(12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_action_and_config_validation():
    with make_vector_env(_catch(frame_size=10), num_envs=2, seed=0) as env:
        env.reset()
        with pytest.raises(ValueError):
            env.step(np.array([0, 3]))
        with pytest.raises(ValueError):
            env.step(np.array([0, 1, 2]))
        with pytest.raises(ValueError):
            env.step(np.array([0.0, 1.0]))
    with pytest.raises(ValueError):
        make_vector_env(_catch(frame_size=8), num_envs=1, seed=0)
    with pytest.raises(ValueError):
        make_vector_env(_catch(), num_envs=0, seed=0)


# ----------------------------------------------------------------------------
# Asynchronous API (the overlapped actor)
# ----------------------------------------------------------------------------
def _async_rollout(env, actions: np.ndarray):
    """Per env: its first observation, then (obs, reward, done, first) of its
    steps, the t-th taken with actions[t, env]; and its finished episodes."""
    n, steps = env.num_envs, len(actions)
    first_obs, out = [None] * n, [[] for _ in range(n)]
    episodes = [[] for _ in range(n)]
    env.start()
    while min(len(o) for o in out) < steps:
        ids, res = env.recv()
        for j, i in enumerate(ids):
            if first_obs[i] is None:
                assert res.first[j] and not res.done[j] and res.reward[j] == 0
                first_obs[i] = res.observation[j]
            else:
                out[i].append((res.observation[j], res.reward[j], res.done[j], res.first[j]))
        for i, ret, frames in res.episode_returns:
            episodes[i].append((ret, frames))
        env.send(np.array([actions[min(len(out[i]), steps - 1), i] for i in ids]))
    return first_obs, [o[:steps] for o in out], episodes


def test_atari_async_steps_each_env_as_the_synchronous_env_does():
    """Same seed and the same actions per env: recv/send in batches of 2 of 4
    envs (2 threads, so batches arrive in any order) gives every env the
    frames, rewards, episode ends and returns that reset/step gives it."""
    cfg = _pong(noop_max=30, sticky_action_prob=0.25, max_episode_frames=200)
    actions = np.random.default_rng(3).integers(0, 6, size=(70, 4))
    with make_vector_env(cfg, num_envs=4, seed=5) as env:
        first_obs = list(env.reset())
        out, episodes = [[] for _ in range(4)], [[] for _ in range(4)]
        for a in actions:
            res = env.step(a)
            for i in range(4):
                out[i].append((res.observation[i], res.reward[i], res.done[i], res.first[i]))
            for i, ret, frames in res.episode_returns:
                episodes[i].append((ret, frames))
    with make_vector_env(cfg, num_envs=4, seed=5, num_threads=2, batch_size=2) as env:
        a_first, a_out, a_episodes = _async_rollout(env, actions)
    for i in range(4):
        np.testing.assert_array_equal(a_first[i], first_obs[i])
        for t, (x, y) in enumerate(zip(a_out[i], out[i])):
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v, err_msg=f"env {i} step {t}")
        n = len(episodes[i])
        assert n >= 1 and a_episodes[i][:n] == episodes[i]


def test_catch_async_batches_keep_each_env_consistent():
    """Batches of 2 of 4 envs under the oracle policy: each env's episodes last
    9 steps and end caught, and its frame stack shifts by one frame per step."""
    cfg = _catch(frame_size=10, frame_stack=2)
    with make_vector_env(cfg, num_envs=4, seed=0, batch_size=2) as env:
        env.start()
        last, lengths, returns = {}, {i: 0 for i in range(4)}, []
        for _ in range(80):
            ids, res = env.recv()
            assert res.observation.shape == (2, 10, 10, 2)
            for j, i in enumerate(ids):
                if i in last and not res.first[j]:
                    np.testing.assert_array_equal(res.observation[j][..., 0], last[i][..., 1])
                lengths[i] = 0 if res.first[j] else lengths[i] + 1
                last[i] = res.observation[j]
            for i, ret, frames in res.episode_returns:
                returns.append(ret)
                assert frames == CATCH_ROWS - 1
            ball, paddle = zip(*(_ball_and_paddle_x(o[..., -1]) for o in res.observation))
            env.send(np.sign(np.array(ball) - np.array(paddle)).astype(np.int64) + 1)
        assert len(returns) >= 12 and all(r == 1.0 for r in returns)


def test_async_api_misuse_is_refused():
    with make_vector_env(_pong(), num_envs=4, seed=0, batch_size=2) as env:
        with pytest.raises(RuntimeError, match="asynchronous"):
            env.reset()
        with pytest.raises(RuntimeError, match="no envs in flight"):
            env.recv()
        env.start()
        with pytest.raises(RuntimeError, match="must follow a recv"):
            env.send(np.zeros(2, np.int64))
        env.recv()
        with pytest.raises(ValueError, match=r"shape \(2,\)"):
            env.send(np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="batch_size=3 must be .* divides num_envs=4"):
        make_vector_env(_catch(), num_envs=4, seed=0, batch_size=3)
