"""The learner node: sample [T, B] batches from Reverb, run the pmapped update,
publish parameters, count, log and checkpoint.

Launchpad serves this object over courier: actors and the evaluator call
`get_params()`; Launchpad calls `run()` once the node is up.

The update never waits on its own input or bookkeeping: the next window is
sampled, stacked, sharded and put on the devices in a background thread
(`learner.inputs.Prefetcher`); the counter is read with a future at most once
a second; a publication starts the device-to-host copy of the parameters
after one update and adopts it after the next one is dispatched, so the copy
overlaps that update.

A learner given a `timer` (`utils.timing`) times one section: `update`, the
dispatch of each update (JAX runs it asynchronously; `wait_for_updates()`
waits until the updates dispatched so far have run).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

import numpy as np

from configs import RunConfig
from learner import checkpoint as ckpt_lib
from learner.inputs import Prefetcher, Windows
from utils.counter import await_future, summarize_hosts
from utils.logs import CsvLog, Logger
from utils.progress import Eta, format_duration
from utils.timing import SectionTimer, null_timer

# While the learner holds a finished run open for its final evaluation, it
# says so this often: a user (or a test's wait) sees a live program.
FINAL_EVAL_SAY_EVERY_S = 20.0


class Builder(Protocol):
    """What the learner takes from the run's builder (`launch.builder.Builder`
    in a program)."""

    cfg: RunConfig

    def make_learner(self, axis_name: Optional[str] = None) -> Any: ...

    def make_dataset(self, replay: Any, next_timeout_ms: Optional[int] = None) -> Any: ...


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
        timer: SectionTimer = null_timer,  # times each update (module docstring)
        evaluated: bool = False,  # an evaluator node plays the published parameters
    ):
        import jax
        from agents import parallel

        cfg = builder.cfg
        self._builder = builder
        self._cfg = cfg
        self._counter = counter
        self._replay = replay
        self._stop_fn = stop_fn
        self._evaluated = evaluated
        self._should_stop = should_stop or (lambda: False)
        self._timer = timer
        self._lock = threading.Lock()
        self._log = Logger(cfg.run_dir, "learner")
        self._hosts_log = CsvLog(os.path.join(cfg.run_dir, "logs", "hosts.csv"))
        self._ckpt_dir = ckpt_lib.checkpoint_dir(cfg.run_dir)

        devices = parallel.resolve_devices(cfg.learner.num_devices)
        parallel.check_divisible(cfg.learner.batch_size, len(devices))
        self._parallel = parallel.ParallelLearner(builder.make_learner, devices)
        state = self._parallel.learner.init(jax.random.PRNGKey(cfg.seed))
        self._counts: Dict[str, float] = {}
        self._counts_future, self._counts_asked = None, -float("inf")
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
        self._eta = Eta()
        self._skipped_logged = int(self._counts.get("skipped_updates", 0))
        self._state = self._parallel.replicate(state)
        self._publish()

    # -------------------------------------------------------------- courier API
    def get_params(self) -> Tuple[int, Any, np.ndarray, float]:
        """(learner step, params, meta_logits [H, 6], actor frames when they
        were published) as numpy arrays; the frames date an evaluation."""
        with self._lock:
            return self._published

    def wait_for_updates(self) -> None:
        """Returns once the updates dispatched so far have run: a timer's
        `update` section ends when an update is dispatched, not done."""
        import jax

        jax.block_until_ready(self._state)

    # -------------------------------------------------------------- internals
    def _host_state(self):
        import jax

        return jax.device_get(self._parallel.unreplicate(self._state))

    def _publish(self) -> None:
        self._adopt(self._start_publication())

    def _start_publication(self):
        """The first device's (step, params, meta logits), copying to the host."""
        import jax

        s = self._state
        published = jax.tree_util.tree_map(lambda x: x[0], (s.step, s.params, s.meta.logits))
        for x in jax.tree_util.tree_leaves(published):
            x.copy_to_host_async()
        return published

    def _adopt(self, published) -> None:
        import jax

        step, params, meta = jax.device_get(published)
        with self._lock:
            self._published = (
                int(step),
                params,
                np.asarray(meta),
                float(self._counts.get("frames", 0)),
            )

    def _poll_counts(self) -> Dict[str, float]:
        """The latest counter values without waiting: one `get_counts` call in
        flight at most, asked at most once a second."""
        f = self._counts_future
        if f is not None and f.done():
            if f.exception() is None:
                self._counts = dict(f.result())
            self._counts_future = None
        now = time.monotonic()
        if self._counts_future is None and now - self._counts_asked >= 1.0:
            self._counts_future, self._counts_asked = self._counter.futures.get_counts(), now
        return self._counts

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
        windows = Windows(
            data,
            self._parallel.learner.num_batches,
            self._parallel.learner.window_overlap,
            address_of(self._replay),
            cfg.replay.timeout_ms,
        )
        inputs = Prefetcher(windows, self._parallel.put, cfg.learner.prefetch_windows)
        step = int(self._published[0])
        self._period = _Period(step)
        t_ckpt, m, publication = time.time(), None, None
        print(
            f"[learner] {cfg.agent_name} on {cfg.env.label}: "
            f"{self._parallel.num_devices} device(s), batch {B} x T {T}, "
            f"{windows.num_batches} batch(es) per update",
            flush=True,
        )
        try:
            while not self._should_stop() and not self._budget_reached(step):
                item = inputs.get(timeout_s=1.0)
                if item is None:  # no data within 1 s: check stop and budget again
                    continue
                self._trajectories += B * item.new_batches
                self._period.consumed += B * T * cfg.env.frames_per_step * item.new_batches
                with self._timer("update"):
                    self._state, m = self._parallel.update(self._state, item.batches)
                step += 1
                if publication is not None:  # copied while this update was dispatched
                    self._adopt(publication)
                    publication = None
                if step % cfg.learner.publish_every == 0:
                    publication = self._start_publication()
                now = time.time()
                if now - self._period.start >= cfg.learner.log_every_seconds:
                    self._write_log(m, step, now)
                if now - t_ckpt >= 60 * cfg.learner.checkpoint_every_minutes:
                    self._counter.futures.set(learner_steps=int(step))
                    self.save_checkpoint()
                    t_ckpt = now
        finally:
            try:
                inputs.close()
                self._finish(step, m)
            finally:
                data.close()
        if not self._should_stop():  # the budget: its final parameters are published
            self._await_final_evaluation(step)
        if self._stop_fn is not None:
            self._stop_fn()

    def _budget_reached(self, step: int) -> bool:
        frames = self._poll_counts().get("frames", 0)
        if self._cfg.budget_reached(frames, step):
            print(f"[learner] budget reached: frames={frames:.0f} learner_steps={step}", flush=True)
            return True
        return False

    def _await_final_evaluation(self, step: int) -> None:
        """Hold the program open until the evaluator has logged an episode
        played with the parameters of learner step `step` (the counter's
        `eval_learner_steps`), at most `learner.final_eval_timeout_s`: a run
        that reaches its budget ends with an evaluation of what it learned,
        however late the evaluator started. Actors meanwhile wait on replay."""
        timeout_s = self._cfg.learner.final_eval_timeout_s
        if not self._evaluated or timeout_s <= 0:
            return
        print(
            f"[learner] waiting for the evaluator's episode with the final parameters "
            f"(learner step {step}; at most {timeout_s:.0f} s)",
            flush=True,
        )
        start = time.monotonic()
        said = start
        while not self._should_stop() and time.monotonic() < start + timeout_s:
            latest = await_future(self._counter.futures.get_latest(), self._should_stop, 5.0)
            if (latest or {}).get("eval_learner_steps", -1.0) >= step:
                print("[learner] final evaluation logged", flush=True)
                return
            if time.monotonic() - said >= FINAL_EVAL_SAY_EVERY_S:
                said = time.monotonic()
                waited = f"{said - start:.0f} s of at most {timeout_s:.0f}"
                print(f"[learner] still waiting for the final evaluation: {waited}", flush=True)
            time.sleep(0.5)
        if not self._should_stop():
            print(
                f"[learner] no evaluation of the final parameters within {timeout_s:.0f} s "
                f"(learner.final_eval_timeout_s); stopping without it",
                flush=True,
            )

    def _finish(self, step: int, m: Optional[Dict[str, Any]]) -> None:
        """Checkpoint first, then the last log row and publication."""
        stopping = self._should_stop()
        self._counter.futures.set(learner_steps=int(step))
        # On a stop request every node stops at once and the counter may be
        # gone: wait for it briefly (the counts read each step are at most one
        # step old). The checkpoint comes first, so it lands inside the
        # launcher's grace period (`learner.stop_grace_s`) however busy the
        # host is; the log row and publication are what may be cut short.
        wait_s = 1.0 if stopping else 10.0
        self.save_checkpoint(counts_timeout_s=wait_s)
        if m is not None and step > self._period.step:
            self._write_log(m, step, max(time.time(), self._period.start + 1e-6), wait_s)
        if not stopping:  # the evaluator's last episodes play the final parameters
            self._publish()
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
        share = self._cfg.budget_share(counts.get("frames", 0), step)
        eta_s = self._eta.update(now, share)
        row = dict(
            learner_steps=step,
            budget_share=share,
            eta_s=float("nan") if eta_s is None else eta_s,
            learner_fps=consumed / dt,
            steps_per_s=steps / dt,
            actor_frames=counts.get("frames", 0),
            episodes=counts.get("episodes", 0),
            skipped_updates=skipped,
            **{f"train/{k}": v for k, v in metrics.items()},
        )
        self._log.write(row, int(counts.get("frames", 0)))
        parts = [
            f"frames={counts.get('frames', 0):.0f} ({100 * share:.1f}%,"
            f" eta {format_duration(eta_s)})",
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
        self._log_hosts(step, now, counter_timeout_s)

    def _log_hosts(self, step: int, now: float, timeout_s: float) -> None:
        """Which hosts feed the run: a row per host in logs/hosts.csv and, once
        other hosts have joined, a progress line."""
        hosts = await_future(self._counter.futures.get_hosts(), timeout_s=timeout_s) or {}
        for label in sorted(hosts):
            self._hosts_log.write(dict(time=now, learner_steps=step, host=label, **hosts[label]))
        if any(label != "local" for label in hosts):
            print(f"[learner] actor hosts: {summarize_hosts(hosts)}", flush=True)


class _Period:
    """What happened since the last log row: its start, step and frames consumed."""

    def __init__(self, step: int, start: Optional[float] = None):
        self.step, self.start, self.consumed = step, time.time() if start is None else start, 0
