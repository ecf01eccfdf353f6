"""Counter node: shared run counters (frames, steps, episodes) and latest scores.

A plain Python object served over courier by Launchpad. It starts from the
counts of the checkpoint being resumed, so counters continue rather than
restart. Thread-safe: courier serves calls from several threads.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Dict, Mapping, Optional


# A host that has counted nothing for this long is reported silent (gone?).
SILENT_AFTER_S = 30.0


class Counter:
    """Run counters, latest scores, and the actor hosts that feed the run.

    `identity` (when given) is what a remote actor host must match to join:
    {"code_version": str, "commit": str, "config": the run's config without host-local
    fields (`shared_config`), "local_actors": int}. Each host's frames,
    episodes and restarts are tallied beside the totals; "local" is this host.
    """

    def __init__(
        self, initial: Optional[Mapping[str, float]] = None, identity: Optional[dict] = None
    ):
        self._lock = threading.Lock()
        # Always present, so every checkpoint carries them (0 before any report).
        self._counts: Dict[str, float] = {"frames": 0, "episodes": 0, **(initial or {})}
        self._latest: Dict[str, float] = {}
        self._identity = dict(identity or {})
        self._hosts: Dict[str, Dict[str, float]] = {}
        local = int(self._identity.get("local_actors", 0))
        if local:
            self._host("local")["actors"] = local

    def _host(self, label: str) -> Dict[str, float]:
        now = time.time()
        if label not in self._hosts:
            self._hosts[label] = dict(
                actors=0, frames=0, episodes=0, restarts=0, joined=now, seen=now
            )
        return self._hosts[label]

    def increment(self, host: Optional[str] = None, **deltas: float) -> Dict[str, float]:
        """Add to counters (e.g. frames=80, episodes=1), also to `host`'s tally
        when given; returns all counts."""
        with self._lock:
            for k, v in deltas.items():
                self._counts[k] = self._counts.get(k, 0) + v
            if host is not None:
                tally = self._host(host)
                for k in ("frames", "episodes", "restarts"):
                    tally[k] += deltas.get(k, 0)
                tally["seen"] = time.time()
            return dict(self._counts)

    def join(self, host: str, num_actors: int, code_version: str, config: dict) -> dict:
        """An actor host asks to join: {"first_actor_id": k} (its actors take
        ids k .. k + num_actors - 1, unique over the run's life, checkpoint
        included), or {"error": why} when its code or config differs."""
        want_code = self._identity.get("code_version")
        if want_code is not None and code_version != want_code:
            commit = self._identity.get("commit") or "?"
            return {
                "error": f"code version {code_version} differs from the learner host's "
                f"{want_code} (commit {commit}): check out that commit (and its local "
                f"changes) on the actor host"
            }
        want = self._identity.get("config")
        if want is not None:
            diffs = nested_differences(want, config)
            if diffs:
                return {
                    "error": "config differs from the learner host's: "
                    + "; ".join(f"{k} is {b!r} here, {a!r} there" for k, a, b in diffs[:8])
                    + ("" if len(diffs) <= 8 else f" (and {len(diffs) - 8} more)")
                }
        with self._lock:
            joined = int(self._counts.get("remote_actor_ids", 0))
            self._counts["remote_actor_ids"] = joined + num_actors
            tally, now = self._host(host), time.time()
            if now - tally["seen"] > SILENT_AFTER_S:  # its earlier actors are gone
                tally["actors"] = 0
            tally["actors"] += num_actors
            tally["seen"] = now
        return {"first_actor_id": int(self._identity.get("local_actors", 0)) + joined}

    def get_hosts(self) -> Dict[str, Dict[str, float]]:
        """Per host: actors joined, frames, episodes, restarts, and `silent_s`,
        seconds since it last counted anything."""
        now = time.time()
        with self._lock:
            return {
                h: {
                    **{k: v for k, v in t.items() if k not in ("seen", "joined")},
                    "silent_s": now - t["seen"],
                }
                for h, t in self._hosts.items()
            }

    def set(self, **values: float) -> None:
        with self._lock:
            self._counts.update(values)

    def record(self, **values: float) -> None:
        """Latest values (e.g. train_return=-20, eval_hns=3.1); not checkpointed."""
        with self._lock:
            self._latest.update(values)

    def get_counts(self) -> Dict[str, float]:
        with self._lock:
            return dict(self._counts)

    def get_latest(self) -> Dict[str, float]:
        with self._lock:
            return dict(self._latest)


def nested_differences(ours: dict, theirs: dict, where: str = "") -> list:
    """[(dotted key, ours, theirs)] for every leaf where two nested dicts
    differ (a key missing on one side counts, with the value None)."""
    out = []
    for k in sorted(set(ours) | set(theirs)):
        a, b = ours.get(k), theirs.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(nested_differences(a, b, f"{where}{k}."))
        elif a != b:
            out.append((f"{where}{k}", a, b))
    return out


def summarize_hosts(hosts: Dict[str, Dict[str, float]]) -> str:
    """One line: each host's actors, frames and restarts; silent ones marked."""
    parts = []
    for label in sorted(hosts, key=lambda h: (h != "local", h)):
        t = hosts[label]
        part = f"{label}: {int(t['actors'])} actor(s), {t['frames'] / 1e6:.2f}M frames"
        if t.get("restarts"):
            part += f", {int(t['restarts'])} restart(s)"
        if t["silent_s"] > SILENT_AFTER_S:
            part += f", silent for {t['silent_s']:.0f} s"
        parts.append(part)
    return "; ".join(parts)


def await_future(future, should_stop=None, timeout_s: float = 30.0, poll_s: float = 0.2):
    """Result of a courier future, or None if the program is stopping or
    `timeout_s` passed: a peer that is gone must never hang a node's shutdown."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return future.result(timeout=poll_s)
        except concurrent.futures.TimeoutError:
            if (should_stop is not None and should_stop()) or time.monotonic() > deadline:
                return None


class LocalHandle:
    """What a courier handle to `target` offers (direct calls, and `.futures`
    whose calls return finished futures), in-process: the node classes run
    against it in tests and benchmarks without a Launchpad program."""

    def __init__(self, target):
        self._target = target
        self.futures = _LocalFutures(target)

    def __getattr__(self, name):
        return getattr(self._target, name)


class _LocalFutures:
    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        def call(*args, **kwargs):
            future = concurrent.futures.Future()
            future.set_result(getattr(self._target, name)(*args, **kwargs))
            return future

        return call
