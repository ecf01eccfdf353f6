"""The learner node: sample [T, B] batches from Reverb, run the pmapped update,
publish parameters, count, log and checkpoint.

Launchpad serves this object over courier: actors and the evaluator call
`get_params()`; Launchpad calls `run()` once the node is up.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from agents.types import Trajectory
from learner import checkpoint as ckpt_lib
from utils.counter import await_future
from utils.logs import Logger

if TYPE_CHECKING:  # JAX is imported when the node builds, not at import
    from agents.builders import Builder


def stack_batches(window: List[Trajectory]) -> Trajectory:
    """[T + 1, B, ...] x N -> Trajectory with fields [N, T + 1, B, ...]."""
    return Trajectory(*[np.stack(fields) for fields in zip(*window)])


class LearnerNode:
    """Owns the TrainingState. Builds everything JAX in its own process."""

    def __init__(
        self,
        builder: Builder,
        replay: Any,
        counter: Any,
        resume: Optional[str] = None,  # a checkpoint file
        stop_fn: Optional[Callable[[], None]] = None,
        should_stop: Optional[Callable[[], bool]] = None,
    ):
        import jax
        from agents import parallel

        cfg = builder.cfg
        self._builder = builder
        self._cfg = cfg
        self._counter = counter
        self._replay = replay
        self._stop_fn = stop_fn
        self._should_stop = should_stop or (lambda: False)
        self._lock = threading.Lock()
        self._log = Logger(cfg.run_dir, "learner")
        self._ckpt_dir = ckpt_lib.checkpoint_dir(cfg.run_dir)

        devices = parallel.resolve_devices(cfg.learner.num_devices)
        parallel.check_divisible(cfg.learner.batch_size, len(devices))
        self._parallel = parallel.ParallelLearner(builder.make_learner, devices)
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
        path = ckpt_lib.save(
            self._ckpt_dir,
            int(host.step),
            jax.tree_util.tree_leaves(host),
            counts,
            self._cfg.to_dict(),
            keep=self._cfg.learner.keep_checkpoints,
        )
        print(f"[learner] checkpoint {path}", flush=True)
        return path

    def run(self) -> None:
        """Sample, update, publish; log and checkpoint on their clocks; stop at
        the budget or when asked, with a last log row and checkpoint."""
        from replay import address_of

        cfg = self._cfg
        B, T = cfg.learner.batch_size, cfg.agent.unroll_length
        # Wait for data in 1 s slices so a stop request is seen at once.
        data = self._builder.make_dataset(self._replay, next_timeout_ms=1_000)
        windows = _Windows(
            data,
            self._parallel.learner.num_batches,
            address_of(self._replay),
            cfg.replay.timeout_ms,
        )
        step = int(self._published[0])
        self._period = _Period(step)
        t_ckpt, m = time.time(), None
        print(
            f"[learner] {cfg.agent_name} on {cfg.env.label}: "
            f"{self._parallel.num_devices} device(s), batch {B} x T {T}, "
            f"{windows.num_batches} batch(es) per update",
            flush=True,
        )
        try:
            while not self._should_stop() and not self._budget_reached(step):
                window = windows.next()
                if window is None:  # no data within 1 s: check stop and budget again
                    continue
                new = windows.pop_new()
                self._trajectories += B * new
                self._period.consumed += B * T * cfg.env.frames_per_step * new
                self._state, m = self._parallel.update(self._state, stack_batches(window))
                step += 1
                if step % cfg.learner.publish_every == 0:
                    self._publish()
                now = time.time()
                if now - self._period.start >= cfg.learner.log_every_seconds:
                    self._write_log(m, step, now)
                if now - t_ckpt >= 60 * cfg.learner.checkpoint_every_minutes:
                    self._counter.futures.set(learner_steps=int(step))
                    self.save_checkpoint()
                    t_ckpt = now
        finally:
            try:
                self._finish(step, m)
            finally:
                data.close()
        if self._stop_fn is not None:
            self._stop_fn()

    def _budget_reached(self, step: int) -> bool:
        frames = self._get_counts().get("frames", 0)
        if self._cfg.budget_reached(frames, step):
            print(f"[learner] budget reached: frames={frames:.0f} learner_steps={step}", flush=True)
            return True
        return False

    def _finish(self, step: int, m: Optional[Dict[str, Any]]) -> None:
        """Last publication, log row and checkpoint."""
        self._publish()
        self._counter.futures.set(learner_steps=int(step))
        # On SIGTERM every node stops at once and the counter may be gone:
        # wait for it briefly (the counts read each step are at most one
        # step old), so the last log row and the final checkpoint land well
        # inside Launchpad's 10 s termination notice.
        wait_s = 1.0 if self._should_stop() else 10.0
        if m is not None and step > self._period.step:
            self._write_log(m, step, max(time.time(), self._period.start + 1e-6), wait_s)
        self.save_checkpoint(counts_timeout_s=wait_s)
        self._log.close()

    def _write_log(
        self, m: Dict[str, Any], step: int, now: float, counter_timeout_s: float = 5.0
    ) -> None:
        """One log row and progress line for the period since the last one."""
        import jax

        metrics = {k: float(v) for k, v in m.items()}
        consumed, dt, steps = (
            self._period.consumed,
            now - self._period.start,
            step - self._period.step,
        )
        self._period = _Period(step, now)
        counts = self._get_counts(counter_timeout_s)
        latest = await_future(self._counter.futures.get_latest(), timeout_s=counter_timeout_s) or {}
        skipped = int(jax.device_get(self._parallel.unreplicate(self._state.skipped)))
        if skipped > self._skipped_logged:
            print(
                f"[learner] skipped {skipped - self._skipped_logged} update(s) with a "
                f"non-finite loss or gradient ({skipped} in this run so far); "
                f"parameters kept",
                flush=True,
            )
            self._skipped_logged = skipped
        row = dict(
            learner_steps=step,
            learner_fps=consumed / dt,
            steps_per_s=steps / dt,
            actor_frames=counts.get("frames", 0),
            episodes=counts.get("episodes", 0),
            skipped_updates=skipped,
            **{f"train/{k}": v for k, v in metrics.items()},
        )
        self._log.write(row, int(counts.get("frames", 0)))
        parts = [
            f"frames={counts.get('frames', 0):.0f}",
            f"steps={step}",
            f"fps={consumed / dt:.0f}",
        ]
        for key, label in (
            ("train_return", "return"),
            ("eval_return", "eval"),
            ("eval_hns", "hns%"),
        ):
            if key in latest:
                parts.append(f"{label}={latest[key]:.2f}")
        loss = metrics.get("inner/loss/h0")
        if loss is not None:
            parts.append(f"loss={loss:.3f}")
        print("[learner] " + " ".join(parts), flush=True)


class _Period:
    """What happened since the last log row: its start, step and frames consumed."""

    def __init__(self, step: int, start: Optional[float] = None):
        self.step, self.start, self.consumed = step, time.time() if start is None else start, 0


class _Windows:
    """The learner's input: windows of `num_batches` consecutive batches. With
    MG/BMG (`num_batches` > 1) the validation batch of one update is the first
    inner batch of the next, so each update after the first takes
    `num_batches - 1` new batches (`pop_new` counts them)."""

    def __init__(self, data, num_batches: int, address: str, timeout_ms: int):
        self._data, self.num_batches = data, num_batches
        self._address, self._timeout_s = address, timeout_ms / 1000
        self._window: List[Trajectory] = []
        self._waited_s = 0.0
        self._new = 0

    def pop_new(self) -> int:
        """Batches taken from the dataset since the last call."""
        new, self._new = self._new, 0
        return new

    def next(self) -> Optional[List[Trajectory]]:
        """The next full window, or None after a 1 s wait without data (it says
        so once per replay timeout: actors may be down or throttled)."""
        from replay import ReplayTimeoutError

        if len(self._window) == self.num_batches:  # the last one was used
            self._window = self._window[-1:] if self.num_batches > 1 else []
        while len(self._window) < self.num_batches:
            try:
                self._window.append(next(self._data))
            except ReplayTimeoutError:
                self._waited_s += 1.0
                if self._waited_s >= self._timeout_s:
                    print(
                        f"[learner] no data from replay at {self._address} for "
                        f"{self._waited_s:.0f} s (actors down or throttled?); still waiting",
                        flush=True,
                    )
                    self._waited_s = 0.0
                return None
            self._waited_s = 0.0
            self._new += 1
        return self._window
