"""The learner node: sample [T, B] batches from Reverb, run the pmapped update,
publish parameters, count, log and checkpoint.

Launchpad serves this object over courier: actors and the evaluator call
`get_params()`; Launchpad calls `run()` once the node is up.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from agents.types import Trajectory
from configs import RunConfig
from learner import checkpoint as ckpt_lib
from utils.counter import await_future
from utils.logs import Logger


def stack_batches(window: List[Trajectory]) -> Trajectory:
    """[T + 1, B, ...] x N -> Trajectory with fields [N, T + 1, B, ...]."""
    return Trajectory(*[np.stack(fields) for fields in zip(*window)])


class LearnerNode:
    """Owns the TrainingState. Builds everything JAX in its own process."""

    def __init__(self, cfg: RunConfig, replay_address: Any, counter: Any,
                 observation_shape: Tuple[int, ...], num_actions: int,
                 resume: Optional[str] = None,  # a checkpoint file
                 stop_fn: Optional[Callable[[], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None):
        import jax
        from agents import builders, parallel

        self._cfg = cfg
        self._counter = counter
        self._replay_address = replay_address
        self._stop_fn = stop_fn
        self._should_stop = should_stop or (lambda: False)
        self._lock = threading.Lock()
        self._log = Logger(cfg.run_dir, "learner")
        self._ckpt_dir = ckpt_lib.checkpoint_dir(cfg.run_dir)

        devices = parallel.resolve_devices(cfg.learner.num_devices)
        parallel.check_divisible(cfg.learner.batch_size, len(devices))
        self._networks = builders.make_networks(cfg, observation_shape, num_actions)
        self._parallel = parallel.ParallelLearner(
            lambda axis: builders.make_learner(cfg, self._networks, axis), devices)
        state = self._parallel.learner.init(jax.random.PRNGKey(cfg.seed))
        self._counts: Dict[str, float] = {}
        ckpt = None
        if resume:  # the launcher found and validated it; check again where it is used
            ckpt = ckpt_lib.for_run(cfg.run_dir, cfg.to_dict(), resume)
        if ckpt is not None:
            leaves, treedef = jax.tree_util.tree_flatten(state)
            restored = ckpt_lib.restore_leaves(ckpt, leaves)
            state = jax.tree_util.tree_unflatten(treedef, [np.asarray(x) for x in restored])
            self._counts = dict(ckpt.counters)
            print(f"[learner] resumed from {ckpt.path} at learner step {ckpt.step}", flush=True)
        self._trajectories = int(self._counts.get("trajectories_consumed", 0))
        self._skipped_logged = int(self._counts.get("skipped_updates", 0))
        self._state = self._parallel.replicate(state)
        self._publish()

    # -------------------------------------------------------------- courier API
    def get_params(self) -> Tuple[int, Any, np.ndarray]:
        """(learner step, params, meta_logits [H, 6]) as numpy arrays."""
        with self._lock:
            return self._published

    # -------------------------------------------------------------- internals
    def _host_state(self):
        import jax
        return jax.device_get(self._parallel.unreplicate(self._state))

    def _publish(self) -> None:
        host = self._host_state()
        with self._lock:
            self._published = (int(host.step), host.params, np.asarray(host.meta.logits))

    def _get_counts(self, timeout_s: float = 10.0) -> Dict[str, float]:
        """Counter values; the last known ones if the counter does not answer
        (at shutdown it may already be gone)."""
        counts = await_future(self._counter.futures.get_counts(), timeout_s=timeout_s)
        if counts is not None:
            self._counts = dict(counts)
        return dict(self._counts)

    def save_checkpoint(self, counts_timeout_s: float = 10.0) -> str:
        import jax
        host = self._host_state()
        counts = self._get_counts(counts_timeout_s)
        counts["learner_steps"] = float(host.step)
        counts["trajectories_consumed"] = float(self._trajectories)
        counts["skipped_updates"] = float(host.skipped)
        path = ckpt_lib.save(self._ckpt_dir, int(host.step), jax.tree_util.tree_leaves(host),
                             counts, self._cfg.to_dict(),
                             keep=self._cfg.learner.keep_checkpoints)
        print(f"[learner] checkpoint {path}", flush=True)
        return path

    def run(self) -> None:
        from replay import ReplayTimeoutError, address_of, make_dataset

        cfg = self._cfg
        B, T = cfg.learner.batch_size, cfg.agent.unroll_length
        num_batches = self._parallel.learner.num_batches
        address = address_of(self._replay_address)
        # Wait for data in 1 s slices so a stop request is seen at once;
        # complain only after the configured replay timeout.
        data = make_dataset(address, B, cfg.replay, next_timeout_ms=1_000)
        waited_s = 0.0
        window: List[Trajectory] = []
        step = int(self._published[0])
        t_log = t_ckpt = time.time()
        consumed = 0
        last_log_step = step
        m = None
        print(f"[learner] {cfg.agent_name} on {cfg.env.label}: "
              f"{self._parallel.num_devices} device(s), batch {B} x T {T}, "
              f"{num_batches} batch(es) per update", flush=True)
        try:
            while not self._should_stop():
                counts = self._get_counts()
                if cfg.budget_reached(counts.get("frames", 0), step):
                    print(f"[learner] budget reached: frames={counts.get('frames', 0):.0f} "
                          f"learner_steps={step}", flush=True)
                    break
                try:
                    batch = next(data)
                    waited_s = 0.0
                except ReplayTimeoutError:
                    waited_s += 1.0
                    if waited_s * 1000 >= cfg.replay.timeout_ms:
                        print(f"[learner] no data from replay at {address} for {waited_s:.0f} s "
                              f"(actors down or throttled?); still waiting", flush=True)
                        waited_s = 0.0
                    continue
                window.append(batch)
                self._trajectories += B
                consumed += B * T * cfg.env.frames_per_step
                if len(window) < num_batches:
                    continue
                self._state, m = self._parallel.update(self._state, stack_batches(window))
                # MG/BMG: the validation batch is the next update's first inner batch.
                window = window[-1:] if num_batches > 1 else []
                step += 1
                if step % cfg.learner.publish_every == 0:
                    self._publish()
                now = time.time()
                if now - t_log >= cfg.learner.log_every_seconds:
                    metrics = {k: float(v) for k, v in m.items()}
                    self._write_log(metrics, step, consumed, now - t_log, step - last_log_step)
                    t_log, consumed, last_log_step = now, 0, step
                if now - t_ckpt >= 60 * cfg.learner.checkpoint_every_minutes:
                    self._counter.futures.set(learner_steps=int(step))
                    self.save_checkpoint()
                    t_ckpt = now
        finally:
            self._publish()
            self._counter.futures.set(learner_steps=int(step))
            # On SIGTERM every node stops at once and the counter may be gone:
            # wait for it briefly (the counts read each step are at most one
            # step old), so the last log row and the final checkpoint land well
            # inside Launchpad's 10 s termination notice.
            wait_s = 1.0 if self._should_stop() else 10.0
            if m is not None and step > last_log_step:
                self._write_log({k: float(v) for k, v in m.items()}, step, consumed,
                                max(time.time() - t_log, 1e-6), step - last_log_step, wait_s)
            self.save_checkpoint(counts_timeout_s=wait_s)
            self._log.close()
            data.close()
        if self._stop_fn is not None:
            self._stop_fn()

    def _write_log(self, metrics: Dict[str, float], step: int, consumed: int, dt: float,
                   steps: int, counter_timeout_s: float = 5.0) -> None:
        import jax
        counts = self._get_counts(counter_timeout_s)
        latest = await_future(self._counter.futures.get_latest(),
                              timeout_s=counter_timeout_s) or {}
        skipped = int(jax.device_get(self._parallel.unreplicate(self._state.skipped)))
        if skipped > self._skipped_logged:
            print(f"[learner] skipped {skipped - self._skipped_logged} update(s) with a "
                  f"non-finite loss or gradient ({skipped} in this run so far); "
                  f"parameters kept", flush=True)
            self._skipped_logged = skipped
        row = dict(learner_steps=step, learner_fps=consumed / dt, steps_per_s=steps / dt,
                   actor_frames=counts.get("frames", 0), episodes=counts.get("episodes", 0),
                   skipped_updates=skipped, **{f"train/{k}": v for k, v in metrics.items()})
        self._log.write(row, int(counts.get("frames", 0)))
        parts = [f"frames={counts.get('frames', 0):.0f}", f"steps={step}",
                 f"fps={consumed / dt:.0f}"]
        for key, label in (("train_return", "return"), ("eval_return", "eval"),
                           ("eval_hns", "hns%")):
            if key in latest:
                parts.append(f"{label}={latest[key]:.2f}")
        loss = metrics.get("inner/loss/h0")
        if loss is not None:
            parts.append(f"loss={loss:.3f}")
        print("[learner] " + " ".join(parts), flush=True)
