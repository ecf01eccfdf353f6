"""Actor and evaluator nodes.

An actor steps N environments together (one vector env per process), acts with
a jitted policy on CPU, pulls parameters from the learner every
`param_refresh_steps` steps (asynchronously, over courier), and writes T + 1
step unrolls with Reverb's trajectory writer. It counts frames and reports
unclipped episode returns. The evaluator runs the current policy on its own
environments and logs return and human-normalised score per game.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from agents.types import Trajectory
from configs.games import hns
from utils.counter import await_future
from utils.logs import Logger

if TYPE_CHECKING:  # the node processes import JAX when they build, not at import
    from agents.builders import Builder


def trajectory_step(obs, actions, logits, res, first) -> Trajectory:
    """One written step: obs_t, a_t and the behaviour logits it was drawn from,
    r_t and the discount of the transition (`res`, the env's StepResult), and
    whether obs_t starts an episode."""
    return Trajectory(
        observation=obs,
        action=actions.astype(np.int32),
        reward=res.reward.astype(np.float32),
        discount=(1.0 - res.done).astype(np.float32),
        behaviour_logits=logits,
        first=first,
    )


class _PolicyRunner:
    """Jitted policy + parameter pulls shared by the actor and the evaluator."""

    def __init__(
        self,
        builder: Builder,
        learner: Any,
        seed: int,
        greedy: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
        name: str = "actor",
    ):
        import jax

        self._jax = jax
        self._policy = jax.jit(builder.make_policy(greedy=greedy))
        self._learner = learner
        self._key = jax.random.PRNGKey(seed)
        self._pending = None
        # Courier calls have a deadline (launch.program): the learner may still
        # be starting (building and compiling), so keep asking until it answers.
        t0 = time.time()
        while True:
            try:
                self.version, self._params, self._meta = learner.get_params()
                break
            except Exception as e:  # courier raises on the deadline
                if should_stop():
                    raise
                if time.time() - t0 > 10:
                    print(f"[{name}] waiting for the learner's parameters: {e}", flush=True)
                    t0 = time.time()
                time.sleep(1.0)

    def refresh(self) -> None:
        """Non-blocking: adopt a finished pull, then start the next one."""
        if self._pending is not None and self._pending.done():
            if self._pending.exception() is None:  # a missed deadline: ask again
                self.version, self._params, self._meta = self._pending.result()
            self._pending = None
        if self._pending is None:
            self._pending = self._learner.futures.get_params()

    def act(self, obs: np.ndarray):
        self._key, sub = self._jax.random.split(self._key)
        actions, logits = self._policy(self._params, self._meta, obs, sub)
        return np.asarray(actions), np.asarray(logits)


class ActorNode:
    def __init__(
        self,
        builder: Builder,
        actor_id: int,
        replay: Any,
        learner: Any,
        counter: Any,
        should_stop: Optional[Callable[[], bool]] = None,
    ):
        from actors.environments import make_vector_env

        cfg = builder.cfg
        self._builder = builder
        self._cfg = cfg
        self._id = actor_id
        self._replay = replay
        self._counter = counter
        self._should_stop = should_stop or (lambda: False)
        n = cfg.actors.envs_per_actor
        # A restarted actor (launch.supervisor sets STACX_RESTART) gets fresh seeds.
        restart = int(os.environ.get("STACX_RESTART", "0"))
        seed = cfg.seed * 100_003 + 1 + actor_id + 7_919 * restart
        self._env = make_vector_env(cfg.env, n, seed, cfg.actors.env_threads)
        self._runner = _PolicyRunner(
            builder, learner, seed, should_stop=self._should_stop, name=f"actor-{actor_id}"
        )
        self._log = Logger(cfg.run_dir, f"actor-{actor_id}", tensorboard=False)

    def run(self) -> None:
        from replay import ReplayTimeoutError, address_of, connect_writer, wait_until_taken

        cfg, env = self._cfg, self._env
        n = env.num_envs
        name = f"actor-{self._id}"
        address = address_of(self._replay)
        # Short waits: a rate-limited insert must not keep the actor from
        # noticing a stop request (Launchpad kills nodes 10 s after SIGTERM).
        writer = connect_writer(
            lambda: self._builder.make_writer(
                self._replay, n, timeout_ms=min(cfg.replay.timeout_ms, 2_000)
            ),
            self._should_stop,
            name,
            address,
        )
        if writer is None:  # stopped while waiting for the replay server
            env.close()
            return
        obs = env.reset()
        first = np.ones(n, np.float32)
        steps, pending_frames, pending_episodes = 0, 0, 0
        t_report = time.time()
        try:
            while not self._should_stop():
                if steps % cfg.actors.param_refresh_steps == 0:
                    self._runner.refresh()
                actions, logits = self._runner.act(obs)
                res = env.step(actions)
                step = trajectory_step(obs, actions, logits, res, first)
                try:
                    writer.append(step)
                except ReplayTimeoutError:
                    # The step is recorded. Wait until Reverb takes the pending
                    # items: a rate limiter throttles this actor; an unreachable
                    # server is retried with backoff and a log line.
                    outage = wait_until_taken(writer, self._should_stop, name)
                    if outage:
                        self._counter.futures.increment(replay_outages=1)
                obs, first = res.observation, res.first.astype(np.float32)
                steps += 1
                pending_frames += n * env.frames_per_step
                for _, ret, frames in res.episode_returns:
                    pending_episodes += 1
                    self._log.write(
                        {
                            "episode_return": ret,
                            "episode_frames": frames,
                            "params_version": self._runner.version,
                        },
                        steps,
                        step_key="actor_steps",
                    )
                    self._counter.futures.record(train_return=float(ret))  # courier: no numpy args
                now = time.time()
                if now - t_report >= 1.0:
                    self._counter.futures.increment(
                        frames=int(pending_frames), episodes=int(pending_episodes)
                    )
                    pending_frames, pending_episodes, t_report = 0, 0, now
        finally:
            try:
                writer.close()
            except Exception as e:  # the server may already be gone at shutdown
                print(f"[actor-{self._id}] writer close: {e}", flush=True)
            env.close()


class EvaluatorNode:
    """Plays whole episodes with the latest parameters; logs unclipped return and HNS."""

    def __init__(
        self,
        builder: Builder,
        learner: Any,
        counter: Any,
        should_stop: Optional[Callable[[], bool]] = None,
        num_envs: int = 1,
    ):
        from actors.environments import make_vector_env

        cfg = builder.cfg
        self._cfg = cfg
        self._counter = counter
        self._should_stop = should_stop or (lambda: False)
        seed = cfg.seed * 100_003 + 99_991
        self._env = make_vector_env(cfg.env, num_envs, seed)
        self._runner = _PolicyRunner(
            builder, learner, seed, should_stop=self._should_stop, name="evaluator"
        )
        self._log = Logger(cfg.run_dir, "evaluator")

    def run(self) -> None:
        cfg, env = self._cfg, self._env
        game = cfg.env.label
        obs = env.reset()
        version = self._runner.version
        try:
            while not self._should_stop():
                actions, _ = self._runner.act(obs)
                res = env.step(actions)
                obs = res.observation
                for _, ret, frames in res.episode_returns:
                    counts = (
                        await_future(
                            self._counter.futures.get_counts(), self._should_stop, timeout_s=5.0
                        )
                        or {}
                    )
                    score = hns(cfg.env.game, ret) if cfg.env.kind == "atari" else float("nan")
                    row = {
                        "game": game,
                        "episode_return": ret,
                        "hns": score,
                        "episode_frames": frames,
                        "learner_steps": version,
                    }
                    self._log.write(row, int(counts.get("frames", 0)))
                    latest = {"eval_return": float(ret)}  # courier: no numpy args
                    if cfg.env.kind == "atari":
                        latest["eval_hns"] = float(score)
                    self._counter.futures.record(**latest)
                    # Newer parameters for the next episode, without waiting.
                    self._runner.refresh()
                    version = self._runner.version
                    pause_until = time.time() + cfg.actors.eval_pause_seconds
                    while time.time() < pause_until and not self._should_stop():
                        time.sleep(0.2)
        finally:
            self._log.close()
            env.close()
