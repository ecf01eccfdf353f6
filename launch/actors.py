"""Actors on this host for a run served elsewhere:
`python -m launch.actors --endpoints=FILE --num_actors=N`.

FILE is the `endpoints.json` a learner host wrote (`launch.run --serve=IFACE`).
This host joins the run through its counter (same code version and shared
config, or it is refused), then runs N actor nodes as a `local_mp` program
whose replay, learner and counter are the learner host's. Their frames,
episodes and restarts count in the run's one counter, under this host's label.

It stops, with a message, when the learner host has not answered for
--learner_timeout_s (the run finished, or its host is gone), on Ctrl-C or
SIGTERM. Exit status: 0 after a clean stop, 1 if the program failed, 2 for
bad input or an endpoints file whose learner host cannot be reached.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Dict

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    fv: Dict[str, Any] = dict(flag_values=flag_values)
    flags.DEFINE_string("endpoints", None, "the learner host's <run folder>/endpoints.json", **fv)
    flags.DEFINE_integer("num_actors", 1, "actor processes on this host", **fv)
    flags.DEFINE_string(
        "label", None, "this host's name in the learner's logs (default: '<hostname> <ip>')", **fv
    )
    flags.DEFINE_string(
        "root", "runs", "folder for this host's actor logs (<root>/<run name>/logs)", **fv
    )
    flags.DEFINE_multi_string(
        "override",
        [],
        "section.field=value for this host (actors.* only may differ from the learner host)",
        **fv,
    )
    flags.DEFINE_float(
        "join_timeout_s", 30.0, "give up (exit 2) if the learner host does not answer", **fv
    )
    flags.DEFINE_float(
        "learner_timeout_s",
        60.0,
        "stop once the learner host has not answered for this long",
        **fv,
    )
    flags.DEFINE_integer("max_restarts", 3, "restarts allowed per crashed actor process", **fv)


def build_config(data: dict, f: flags.FlagValues = FLAGS):
    """The run's config from the endpoints file, for this host (its root,
    its number of actors, its overrides)."""
    import dataclasses

    from configs import RunConfig, apply_overrides

    cfg = apply_overrides(RunConfig.from_dict(data["config"]), f.override)
    if f.num_actors < 1:
        from configs import ConfigError

        raise ConfigError(f"--num_actors={f.num_actors} is not allowed: must be >= 1")
    return dataclasses.replace(
        cfg, root=f.root, actors=dataclasses.replace(cfg.actors, num_actors=f.num_actors)
    )


class Watchdog(threading.Thread):
    """Asks the learner host's counter for the counts every `poll_s`; after
    `timeout_s` without an answer, says so and stops this program (SIGTERM
    to itself: Launchpad's handler stops every node)."""

    def __init__(self, counter, address: str, timeout_s: float, poll_s: float = 2.0):
        super().__init__(daemon=True)
        self._counter, self._address = counter, address
        self._timeout_s, self._poll_s = timeout_s, poll_s
        self.fired = threading.Event()
        self.done = threading.Event()
        self.frames = 0.0

    def run(self) -> None:
        last_ok = time.monotonic()
        while not self.done.wait(self._poll_s):
            try:
                self.frames = float(self._counter.get_counts().get("frames", 0))
                last_ok = time.monotonic()
            except Exception:  # courier: deadline exceeded / unavailable
                silent = time.monotonic() - last_ok
                if silent >= self._timeout_s:
                    print(
                        f"[actors] the learner host ({self._address}) has not answered for "
                        f"{silent:.0f} s: its run finished or its host is gone; stopping",
                        flush=True,
                    )
                    self.fired.set()
                    os.kill(os.getpid(), signal.SIGTERM)
                    return


def wait_for_counter(address: str) -> None:
    """Returns once the learner host's counter answers; EndpointsError after
    --join_timeout_s."""
    from launch import remote

    deadline = time.monotonic() + FLAGS.join_timeout_s
    while not remote.reachable(address):
        if time.monotonic() > deadline:
            raise remote.EndpointsError(
                f"--endpoints={FLAGS.endpoints!r}: nothing answers at the learner host's "
                f"counter {address} after {FLAGS.join_timeout_s:.0f} s (the run "
                f"has stopped, the file is stale, or a firewall drops this host)"
            )
        time.sleep(1.0)


def main(argv):
    del argv
    from configs import ConfigError
    from launch import remote
    from launch.run import check_run_dir

    try:
        if not FLAGS.endpoints:
            raise remote.EndpointsError("--endpoints=FILE is required (the learner host's file)")
        if FLAGS.max_restarts < 0:
            raise ValueError(f"--max_restarts={FLAGS.max_restarts} is not allowed: must be >= 0")
        data = remote.read_endpoints(FLAGS.endpoints)
        cfg = build_config(data)
        wait_for_counter(data["counter"])
        import courier

        from launch.program import CALL_TIMEOUT_S, make_actor_program

        counter = courier.Client(data["counter"], call_timeout=CALL_TIMEOUT_S)
        label = FLAGS.label or remote.host_label(data["counter"])
        first_id = remote.first_actor_id(
            counter, label, cfg.actors.num_actors, cfg, FLAGS.join_timeout_s
        )
        check_run_dir(cfg.run_dir)
        program, resources = make_actor_program(cfg, data, first_id, label)
    except (ConfigError, PermissionError, ValueError, remote.EndpointsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from launch.supervisor import exit_on_failure, launch_supervised

    log_dir = os.path.join(cfg.run_dir, "launchpad", time.strftime("actors-%Y%m%d-%H%M%S"))
    last = first_id + cfg.actors.num_actors - 1
    print(
        f"joined {cfg.name} (learner host {data['address']}, commit "
        f"{data.get('commit') or '?'}) as {label!r}: actors {first_id}..{last}, "
        f"process logs {log_dir}",
        flush=True,
    )
    # Started once the program runs: it stops it with SIGTERM, which Launchpad handles.
    watchdog = Watchdog(counter, data["counter"], FLAGS.learner_timeout_s)
    try:
        _, failed = launch_supervised(
            program,
            resources,
            log_dir,
            os.path.join(cfg.run_dir, "logs", f"events-actors-{first_id}.csv"),
            FLAGS.max_restarts,
            on_launch=watchdog.start,
            stop_grace_s=cfg.learner.stop_grace_s,
            nice=cfg.actors.nice,
        )
    finally:
        watchdog.done.set()
    if not watchdog.fired.is_set():
        exit_on_failure(failed, log_dir)
    print(
        f"stopped {cfg.actors.num_actors} actor(s); the run's counter had "
        f"{watchdog.frames:.0f} frames when last read",
        flush=True,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
