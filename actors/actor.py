"""Actor and evaluator nodes.

An actor steps N environments (one vector env per process), acts with a
jitted policy on CPU, pulls parameters from the learner every
`param_refresh_steps` steps (asynchronously, over courier), and writes T + 1
step unrolls with Reverb's trajectory writer. It counts frames and reports
unclipped episode returns. The evaluator runs the current policy on its own
environments and logs return and human-normalised score per game.

The actor's loop is overlapped by default (Sample Factory's double-buffered
sampling, envpool's asynchronous mode): the N envs step in
`actors.env_batches` batches in ale-py's own threads; as soon as one batch's
results arrive the policy acts on them and sends its actions, and only then
are that batch's steps written, so inference and Reverb writes run while the
emulators step. The steps are gathered into rows of all N envs (`_Rows`), so
the one writer takes one append per N env steps in both loops.
`actors.overlap=false` is the serial loop (step all N, act, write), for
debugging. Both write the same per-env unrolls: obs_t, the action
a_t taken at obs_t with the logits it was drawn from, the reward r_t and
discount of that transition, and whether obs_t starts an episode.

With the queue replay (IMPALA's), an insert never waits: the FIFO remover
drops the oldest unroll when the table is full. So that actors on a host with
fewer cores than processes do not burn the learner's CPU on unrolls that
would be dropped, an actor waits at each unroll boundary while the table is
full (`actors.wait_when_full`, polled with back-off). A learner that keeps up
never sees the table full, and then nothing waits.

An actor given a `timer` (`utils.timing`) times four sections of its loop:
`env` (`env.step` in the serial loop; `env.recv`, the wait for a batch, in the
overlapped one), `inference` (the policy acting on a batch), `write`
(`writer.append`, without the wait after a replay timeout) and `full` (the
wait while the queue is full).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional, Protocol

import numpy as np

from agents.types import Trajectory
from configs import RunConfig
from configs.games import hns
from utils.counter import await_future
from utils.lifeline import lower_priority
from utils.logs import Logger
from utils.timing import SectionTimer, null_timer


class Builder(Protocol):
    """What actors and the evaluator take from the run's builder
    (`launch.builder.Builder` in a program)."""

    cfg: RunConfig

    def make_policy(self, greedy: bool = False) -> Callable: ...

    def make_writer(self, replay: Any, num_envs: int, timeout_ms: int) -> Any: ...


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


class _Rows:
    """Gathers the overlapped loop's per-batch steps into rows of all N envs,
    so one writer takes one append per N env steps, as in the serial loop.

    Each env's next step fills its slot of the row being built; once every
    slot is filled the row goes to `emit`. Envs are independent columns of
    the writer, so a row may hold steps of different times; per env, the
    steps stay consecutive. An env that comes back before the row is out
    (batches in another order) waits in a queue for the next row."""

    def __init__(self, num_envs: int, emit: Callable[[Trajectory], None]):
        self._n, self._emit = num_envs, emit
        self._row: Optional[Trajectory] = None
        self._filled = np.zeros(num_envs, bool)
        self._queued: list = [[] for _ in range(num_envs)]  # per env: (step, j) oldest first

    def add(self, ids: np.ndarray, step: Trajectory) -> None:
        """Steps of envs `ids` ([k]); `step`'s fields have a leading axis k."""
        if self._row is None:
            self._row = Trajectory(*[np.empty((self._n,) + f.shape[1:], f.dtype) for f in step])
        free = ~self._filled[ids]
        if free.all():
            for dst, src in zip(self._row, step):
                dst[ids] = src
        else:
            for j in np.flatnonzero(free):
                self._put(ids[j], step, j)
            for j in np.flatnonzero(~free):
                self._queued[ids[j]].append((step, j))
        self._filled[ids[free]] = True
        while self._filled.all():
            row, self._row = self._row, Trajectory(*[np.empty_like(f) for f in self._row])
            self._filled[:] = False
            self._emit(row)
            for i, queue in enumerate(self._queued):
                if queue:
                    self._put(i, *queue.pop(0))
                    self._filled[i] = True

    def _put(self, i: int, step: Trajectory, j: int) -> None:
        assert self._row is not None  # made by the first `add`
        for dst, src in zip(self._row, step):
            dst[i] = src[j]

    def waiting(self, i: int) -> int:
        """Steps of env i not yet emitted."""
        return int(self._filled[i]) + len(self._queued[i])


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
        policy = builder.make_policy(greedy=greedy)

        def act(params, meta, obs, key):
            key, sub = jax.random.split(key)
            return (key,) + tuple(policy(params, meta, obs, sub))

        # One dispatch per call: the key split is inside the jitted function.
        self._act = jax.jit(act)
        self._learner = learner
        self._key = jax.random.PRNGKey(seed)
        self._pending = None
        # Courier calls have a deadline (launch.program): the learner may still
        # be starting (building and compiling), so keep asking until it answers.
        t0 = time.time()
        while True:
            try:
                self._adopt(learner.get_params())
                break
            except Exception as e:  # courier raises on the deadline
                if should_stop():
                    raise
                if time.time() - t0 > 10:
                    print(f"[{name}] waiting for the learner's parameters: {e}", flush=True)
                    t0 = time.time()
                time.sleep(1.0)

    def _adopt(self, published) -> None:
        """Parameters as device arrays, put there once: passing courier's numpy
        arrays to the policy would copy every parameter on every call."""
        version, params, meta, frames = published
        self._params, self._meta = self._jax.device_put((params, meta))
        self.version, self.published_frames = version, frames

    def pull(self, should_stop: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Blocking: adopt the learner's newest parameters (kept as they are
        if it does not answer in `timeout_s` or the program stops)."""
        self._pending = None
        try:
            published = await_future(self._learner.futures.get_params(), should_stop, timeout_s)
        except Exception:  # courier raises on a missed deadline
            published = None
        if published is not None:
            self._adopt(published)

    def refresh(self) -> None:
        """Non-blocking: adopt a finished pull, then start the next one."""
        if self._pending is not None and self._pending.done():
            if self._pending.exception() is None:  # a missed deadline: ask again
                self._adopt(self._pending.result())
            self._pending = None
        if self._pending is None:
            self._pending = self._learner.futures.get_params()

    def act(self, obs: np.ndarray):
        self._key, actions, logits = self._act(self._params, self._meta, obs, self._key)
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
        host: str = "local",
        timer: SectionTimer = null_timer,  # times env / inference / write (module docstring)
    ):
        from actors.environments import make_vector_env

        cfg = builder.cfg
        lower_priority(cfg.actors.nice)
        self._builder = builder
        self._cfg = cfg
        self._id = actor_id
        self._name = f"actor-{actor_id}"
        self._replay = replay
        self._counter = counter
        self._should_stop = should_stop or (lambda: False)
        self._host = host  # the actor host this node counts its frames for
        self._timer = timer
        n = cfg.actors.envs_per_actor
        # A restarted actor (launch.supervisor sets STACX_RESTART) gets fresh seeds.
        restart = int(os.environ.get("STACX_RESTART", "0"))
        if restart:
            counter.futures.increment(host=host, restarts=1)
        seed = cfg.seed * 100_003 + 1 + actor_id + 7_919 * restart
        self._env = make_vector_env(
            cfg.env, n, seed, cfg.actors.env_threads, cfg.actors.env_batch_size
        )
        self._runner = _PolicyRunner(
            builder, learner, seed, should_stop=self._should_stop, name=self._name
        )
        self._log = Logger(cfg.run_dir, self._name, tensorboard=False)
        # The first step is reported at once, then once a second, and what is
        # pending at a stop: a run stopped early still counts its frames.
        self._pending_frames, self._pending_episodes, self._t_report = 0, 0, 0.0
        self._t_built, self._acting = time.time(), False

    def run(self) -> None:
        from replay import address_of, connect_writer

        cfg, env = self._cfg, self._env
        writer = None
        try:
            # Short waits: a rate-limited insert must not keep the actor from
            # noticing a stop request (Launchpad kills nodes 10 s after SIGTERM).
            writer = connect_writer(
                lambda: self._builder.make_writer(
                    self._replay, env.num_envs, timeout_ms=min(cfg.replay.timeout_ms, 2_000)
                ),
                self._should_stop,
                self._name,
                address_of(self._replay),
            )
            if writer is None:  # stopped while waiting for the replay server
                return
            if cfg.actors.overlap:
                self._run_overlapped(writer)
            else:
                self._run_serial(writer)
        finally:
            self._report()
            if writer is not None:
                try:  # bounded: a gone server costs one flush timeout (2 s)
                    writer.close()
                except Exception as e:  # the server may already be gone at shutdown
                    print(f"[{self._name}] writer close: {e}", flush=True)
            env.close()

    def _run_serial(self, writer) -> None:
        env, n = self._env, self._env.num_envs
        obs = env.reset()
        first = np.ones(n, np.float32)
        steps = 0
        while not self._should_stop():
            if steps % self._cfg.agent.unroll_length == 0:
                self._wait_while_full(writer)
            if steps % self._cfg.actors.param_refresh_steps == 0:
                self._runner.refresh()
            with self._timer("inference"):
                actions, logits = self._runner.act(obs)
            with self._timer("env"):
                res = env.step(actions)
            self._write(writer, trajectory_step(obs, actions, logits, res, first))
            obs, first = res.observation, res.first.astype(np.float32)
            steps += 1
            self._account(n, res.episode_returns, steps)

    def _run_overlapped(self, writer) -> None:
        """Per env: the observation, action and logits of its step in flight."""
        env, n = self._env, self._env.num_envs
        obs = np.zeros((n,) + tuple(env.observation_shape), np.uint8)
        actions = np.zeros(n, np.int32)
        logits = np.zeros((n, env.num_actions), np.float32)
        first = np.ones(n, np.float32)
        acted = np.zeros(n, bool)  # has a step in flight (its first result is no transition)
        self._rows = rows = _Rows(n, lambda row: self._write(writer, row))
        refresh_every = self._cfg.actors.param_refresh_steps * self._cfg.actors.env_batches
        env.start()
        batches = 0
        while not self._should_stop():
            if batches % (self._cfg.agent.unroll_length * self._cfg.actors.env_batches) == 0:
                self._wait_while_full(writer)
            if batches % refresh_every == 0:
                self._runner.refresh()
            with self._timer("env"):
                ids, res = env.recv()
            with self._timer("inference"):
                a, lg = self._runner.act(res.observation)
            env.send(a)  # these envs step while their last steps are written
            live = acted[ids]
            e = ids[live]
            if len(e):
                rows.add(
                    e,
                    trajectory_step(
                        obs[e],
                        actions[e],
                        logits[e],
                        res._replace(reward=res.reward[live], done=res.done[live]),
                        first[e],
                    ),
                )
            obs[ids], actions[ids], logits[ids] = res.observation, a, lg
            first[ids], acted[ids] = res.first, True
            batches += 1
            self._account(len(e), res.episode_returns, batches // self._cfg.actors.env_batches)

    def _wait_while_full(self, writer) -> None:
        """Queue replay: no unroll while the table is full (`wait_when_full`)."""
        from replay import wait_while_full

        if self._cfg.replay.mode == "queue" and self._cfg.actors.wait_when_full:
            with self._timer("full"):
                wait_while_full(writer.client, self._should_stop, room=self._env.num_envs)

    def _write(self, writer, step: Trajectory) -> None:
        from replay import ReplayTimeoutError, wait_until_taken

        try:
            with self._timer("write"):
                writer.append(step)
        except ReplayTimeoutError:
            # The step is recorded. Wait until Reverb takes the pending items:
            # a rate limiter throttles this actor; an unreachable server is
            # retried with backoff and a log line.
            if wait_until_taken(writer, self._should_stop, self._name):
                self._counter.futures.increment(replay_outages=1)

    def _account(self, transitions: int, episode_returns, steps: int) -> None:
        """Frames and episodes to the counter (once a second), episodes to the log."""
        if not self._acting:
            self._acting = True
            a = self._cfg.actors
            loop = f"overlapped in {a.env_batches} batch(es)" if a.overlap else "serial"
            print(
                f"[{self._name}] acting: {a.envs_per_actor} env(s), {loop} loop; first step "
                f"{time.time() - self._t_built:.1f} s after the node was built",
                flush=True,
            )
        self._pending_frames += transitions * self._env.frames_per_step
        for _, ret, frames in episode_returns:
            self._pending_episodes += 1
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
        if time.time() - self._t_report >= 1.0:
            self._report()

    def _report(self) -> None:
        """Pending frames and episodes to the counter (a future: never waits);
        nothing, and no wait for the next, while nothing is pending."""
        if self._pending_frames or self._pending_episodes:
            self._counter.futures.increment(
                host=self._host,
                frames=int(self._pending_frames),
                episodes=int(self._pending_episodes),
            )
            self._pending_frames, self._pending_episodes, self._t_report = 0, 0, time.time()


class EvaluatorNode:
    """Plays whole episodes, each with the newest parameters the learner has
    published when it starts; logs the unclipped return, the HNS, and the
    learner step and actor frames at which those parameters were published
    (`learner_steps`, `published_frames`: what a learning curve is drawn at)."""

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
        lower_priority(cfg.actors.nice)
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
        self._runner.pull(self._should_stop)
        obs = env.reset()
        version, published_frames = self._runner.version, self._runner.published_frames
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
                        "published_frames": published_frames,
                    }
                    self._log.write(row, int(counts.get("frames", 0)))
                    # courier: no numpy args
                    latest = {"eval_return": float(ret), "eval_learner_steps": float(version)}
                    if cfg.env.kind == "atari":
                        latest["eval_hns"] = float(score)
                    self._counter.futures.record(**latest)
                    pause_until = time.time() + cfg.actors.eval_pause_seconds
                    while time.time() < pause_until and not self._should_stop():
                        time.sleep(0.2)
                    # The newest parameters for the next episode, pulled as it starts.
                    self._runner.pull(self._should_stop)
                    version = self._runner.version
                    published_frames = self._runner.published_frames
        finally:
            self._log.close()
            env.close()
