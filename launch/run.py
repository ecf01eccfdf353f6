"""Run one game: `python -m launch.run --preset=debug --game=Pong --agent=bmg`.

Builds the Launchpad program (Reverb, counter, learner, N actors, evaluator),
starts it with `local_mp`, waits, and prints the run folder and final score.
A run folder that has a checkpoint resumes from it (or give --resume=PATH).
Any config field can be set with --override=section.field=value (repeatable).
"""
from __future__ import annotations

import os
import sys
import threading
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The absl flags of `python -m launch.run`, defined only when it runs
    as a script: importing the module defines nothing (launch modules share
    flag names such as --seed and --override)."""
    flags.DEFINE_string("preset", "debug", "debug | full | test")
    flags.DEFINE_string("game", "Pong", "Atari game (CamelCase, one of the 57) or 'Catch'")
    flags.DEFINE_string("agent", "impala", "impala | stacx | bmg")
    flags.DEFINE_string("name", None,
                        "run name (folder under --root); default <game>-<agent>-<preset>")
    flags.DEFINE_string("root", "runs", "folder holding run folders")
    flags.DEFINE_string("resume", None, "checkpoint file or run folder to resume from")
    flags.DEFINE_string("max_frames", None, "frame budget (e.g. 2e5); overrides the preset")
    flags.DEFINE_integer("max_learner_steps", None, "learner step budget (0 = none)")
    flags.DEFINE_integer("num_actors", None, "actor processes; overrides the preset")
    flags.DEFINE_integer("seed", None, "seed")
    flags.DEFINE_multi_string("override", [], "section.field=value, e.g. meta.L=4")
    flags.DEFINE_string("network", "auto",
                        "isolated: run the program in a private network namespace (loopback "
                        "only); host: listen on this host's interfaces; auto: isolated when the "
                        "kernel allows it (README 'Network exposure')")
    flags.DEFINE_integer("max_restarts", 3, "restarts allowed per crashed actor/evaluator process")


# The built-in Catch game (10x5 grid rendered at 10x10, one frame): a tiny
# network and a faster optimiser, so the whole program learns it in about a
# minute on 2 cores (measured: eval return -0.6 -> 1.0 in 600 learner steps).
CATCH_OVERRIDES = ("env.kind=catch", "env.frame_size=10", "env.frame_stack=1",
                   "network.kind=tiny", "network.hidden=64", "agent.learning_rate=3e-3",
                   "learner.batch_size=16")


def build_config(argv_flags=None):
    """RunConfig from the flags; ConfigError on any bad value."""
    from configs import make_config, parse_count
    f = argv_flags or FLAGS
    overrides = list(f.override)
    game, env_overrides = f.game, []
    if game.lower() == "catch":
        game = "Pong"  # unused by the catch env
        env_overrides = list(CATCH_OVERRIDES)
    if f.max_frames is not None:
        frames = parse_count("--max_frames", f.max_frames, "2e5")
        overrides.append(f"max_frames={frames}")
    if f.max_learner_steps is not None:
        overrides.append(f"max_learner_steps={f.max_learner_steps}")
    if f.num_actors is not None:
        overrides.append(f"actors.num_actors={f.num_actors}")
    if f.seed is not None:
        overrides.append(f"seed={f.seed}")
    overrides.append(f"root={f.root}")
    name = f.name or f"{f.game}-{f.agent}-{f.preset}"
    return make_config(f.preset, f.agent, game, name=name,
                       overrides=env_overrides + overrides)


def check_run_dir(run_dir: str) -> None:
    """The run folder must be creatable and writable (checked before anything starts)."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"run folder {run_dir!r} is not allowed: it must be writable "
                              f"({e.strerror}); choose another --root or --name") from None


def summary(cfg) -> str:
    from learner.logs import read_csv
    lines = [f"run folder: {os.path.abspath(cfg.run_dir)}"]
    path = os.path.join(cfg.run_dir, "logs", "evaluator.csv")
    if os.path.exists(path):
        rows = read_csv(path)
        if rows:
            last = rows[-1]
            hns = last.get("hns", "")
            lines.append(f"final evaluation: {last['game']} return {float(last['episode_return']):.1f}"
                         + (f", HNS {float(hns):.1f} %" if hns not in ("", "nan") else "")
                         + f" ({len(rows)} evaluation episodes)")
    ckpts = os.path.join(cfg.run_dir, "checkpoints")
    if os.path.isdir(ckpts):
        from learner.checkpoint import list_checkpoints
        found = list_checkpoints(ckpts)
        if found:
            lines.append(f"checkpoint: {found[-1][1]}")
    return "\n".join(lines)


def main(argv):
    del argv
    from launch.network import NetworkIsolationError, apply_mode
    try:
        # First of all: the kernel refuses a new user namespace once a thread
        # exists (importing numpy starts OpenBLAS threads).
        network = apply_mode(FLAGS.network)
    except (ValueError, NetworkIsolationError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from configs import ConfigError
    from learner.checkpoint import CheckpointError
    try:
        if FLAGS.max_restarts < 0:
            raise ValueError(f"--max_restarts={FLAGS.max_restarts} is not allowed: "
                             f"must be >= 0")
        cfg = build_config()
        check_run_dir(cfg.run_dir)
        from launch.program import make_program
        program, resources = make_program(cfg, FLAGS.resume)
    except (ConfigError, CheckpointError, PermissionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    import launchpad as lp
    from launchpad.launch.run_locally import launch_local_output_to_files as to_files
    # Each node's stdout/stderr goes to <run>/launchpad/<start time>/<group>/<task>;
    # the learner's progress lines are echoed here. (With output_to_files a
    # crashing node stops the program; current_terminal would not notice.)
    log_dir = os.path.join(cfg.run_dir, "launchpad", time.strftime("%Y%m%d-%H%M%S"))
    to_files._LOGGING_DIR = log_dir
    print(f"starting {cfg.agent_name} on {FLAGS.game}: {cfg.actors.num_actors} actors, "
          f"run folder {cfg.run_dir}, process logs {log_dir}, network {network}"
          + ("" if network == "isolated" else
             " (Reverb and courier listen on all interfaces: README 'Network exposure')"),
          flush=True)
    manager = lp.launch(program, launch_type="local_mp", terminal="output_to_files",
                        local_resources=resources)
    done = threading.Event()
    echo = threading.Thread(target=follow, args=(os.path.join(log_dir, "learner", "0"), done),
                            daemon=True)
    echo.start()
    from launch.supervisor import supervise
    from learner.logs import CsvLog
    events = CsvLog(os.path.join(cfg.run_dir, "logs", "events.csv"))
    failed, restarts = None, {}
    try:
        restarts = supervise(manager, log_dir, lambda group: resources[group].env, events,
                             FLAGS.max_restarts)
    except RuntimeError as e:  # a node exited with an error
        failed = e
    finally:
        done.set()
        echo.join(timeout=5)
    print(summary(cfg), flush=True)
    if restarts:
        print(f"restarted processes: {restarts} (logs/events.csv)", flush=True)
    if failed is not None:
        print(f"error: {failed} (see {log_dir})", file=sys.stderr)
        for node, line in node_errors(log_dir):
            print(f"  {node}: {line}", file=sys.stderr)
        sys.exit(1)


def node_errors(log_dir: str):
    """(node, last exception line) for each node log that ends in a traceback."""
    import re
    found = []
    for group in sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []:
        for task in sorted(os.listdir(os.path.join(log_dir, group))):
            with open(os.path.join(log_dir, group, task), errors="replace") as f:
                lines = f.read().splitlines()
            errors = [l for l in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", l)]
            if errors and any(l.startswith("Traceback") for l in lines):
                found.append((f"{group}/{task}", errors[-1].strip()))
    return found


def follow(path: str, done: threading.Event, prefix: str = "[learner]") -> None:
    """Print the lines of a growing file that start with `prefix` until `done`."""
    while not os.path.exists(path) and not done.wait(0.5):
        pass
    if not os.path.exists(path):
        return
    with open(path, errors="replace") as f:
        while True:
            line = f.readline()
            if line:
                if line.startswith(prefix):
                    print(line.rstrip(), flush=True)
            elif done.wait(0.5):
                for line in f:
                    if line.startswith(prefix):
                        print(line.rstrip(), flush=True)
                return


if __name__ == "__main__":
    define_flags()
    app.run(main)
