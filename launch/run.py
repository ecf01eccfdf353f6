"""Run one game: `python -m launch.run --preset=debug --game=Pong --agent=bmg`.

Builds the Launchpad program (Reverb, counter, learner, N actors, evaluator),
starts it with `local_mp`, waits, and prints the run folder and final score.
A run folder that has a checkpoint resumes from it (or give --resume=PATH).
Any config field can be set with --override=section.field=value (repeatable).
The validated config is written to <run folder>/config.json;
`--config=<that file>` runs exactly it (the sweep and the learning-curve
experiment start their programs that way).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Dict

from absl import app, flags

FLAGS = flags.FLAGS


# The flags that choose the config; `--config` replaces all of them.
CONFIG_FLAGS = (
    "preset",
    "game",
    "agent",
    "name",
    "root",
    "max_frames",
    "max_learner_steps",
    "num_actors",
    "seed",
    "override",
)


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The absl flags of `python -m launch.run`, defined only when it runs
    as a script: importing the module defines nothing (launch modules share
    flag names such as --seed and --override)."""
    fv: Dict[str, Any] = dict(flag_values=flag_values)
    flags.DEFINE_string("preset", "debug", "debug | full | test", **fv)
    flags.DEFINE_string("game", "Pong", "Atari game (CamelCase, one of the 57) or 'Catch'", **fv)
    flags.DEFINE_string("agent", "impala", "impala | stacx | bmg", **fv)
    flags.DEFINE_string(
        "name", None, "run name (folder under --root); default <game>-<agent>-<preset>", **fv
    )
    flags.DEFINE_string("root", "runs", "folder holding run folders", **fv)
    flags.DEFINE_string(
        "config",
        None,
        "a run's config.json (written into every run folder): run exactly that "
        "config; no other config flag may be given with it",
        **fv,
    )
    flags.DEFINE_string("resume", None, "checkpoint file or run folder to resume from", **fv)
    flags.DEFINE_string("max_frames", None, "frame budget (e.g. 2e5); overrides the preset", **fv)
    flags.DEFINE_integer("max_learner_steps", None, "learner step budget (0 = none)", **fv)
    flags.DEFINE_integer("num_actors", None, "actor processes; overrides the preset", **fv)
    flags.DEFINE_integer("seed", None, "seed", **fv)
    flags.DEFINE_multi_string("override", [], "section.field=value, e.g. meta.L=4", **fv)
    flags.DEFINE_string(
        "network",
        "auto",
        "isolated: run the program in a private network namespace (loopback "
        "only); host: listen on this host's interfaces; auto: isolated when the "
        "kernel allows it (docs/operations.md, 'Network exposure')",
        **fv,
    )
    flags.DEFINE_string(
        "serve",
        None,
        "network interface (e.g. eth0) on which actor hosts reach this run: "
        "writes <run folder>/endpoints.json for `python -m launch.actors` "
        "(docs/operations.md, 'More than one machine'); needs --network=host or auto",
        **fv,
    )
    flags.DEFINE_integer(
        "serve_port",
        0,
        "with --serve: replay, counter and learner listen on this port and the "
        "next two (0: free ports picked at start)",
        **fv,
    )
    flags.DEFINE_list(
        "serve_allow",
        [],
        "with --serve: the actor hosts' addresses, for the firewall rules printed",
        **fv,
    )
    flags.DEFINE_integer(
        "max_restarts", 3, "restarts allowed per crashed actor/evaluator process", **fv
    )


def build_config(f: flags.FlagValues = FLAGS):
    """The RunConfig the command line asks for; ConfigError on any bad value."""
    from configs import ConfigError, load_config, make_config, parse_count

    if f.config is not None:
        given = [n for n in CONFIG_FLAGS if f[n].present]
        if given:
            raise ConfigError(
                f"--{given[0]} is not allowed with --config={f.config!r}: the "
                f"file holds the whole config (edit it, or drop --config)"
            )
        return load_config(f.config)
    frames = parse_count("--max_frames", f.max_frames, "2e5") if f.max_frames is not None else None
    return make_config(
        f.preset,
        f.agent,
        f.game,
        name=f.name,
        overrides=f.override,
        root=f.root,
        seed=f.seed,
        max_frames=frames,
        max_learner_steps=f.max_learner_steps,
        num_actors=f.num_actors,
    )


def check_run_dir(run_dir: str) -> None:
    """The run folder must be creatable and writable (checked before anything starts)."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(
            f"run folder {run_dir!r} is not allowed: it must be writable "
            f"({e.strerror}); choose another --root or --name"
        ) from None


def summary(cfg) -> str:
    from utils.logs import read_csv

    lines = [f"run folder: {os.path.abspath(cfg.run_dir)}"]
    path = os.path.join(cfg.run_dir, "logs", "evaluator.csv")
    if os.path.exists(path):
        rows = read_csv(path)
        if rows:
            last = rows[-1]
            hns = last.get("hns", "")
            lines.append(
                f"final evaluation: {last['game']} return {float(last['episode_return']):.1f}"
                + (f", HNS {float(hns):.1f} %" if hns not in ("", "nan") else "")
                + f" ({len(rows)} evaluation episodes)"
            )
    ckpts = os.path.join(cfg.run_dir, "checkpoints")
    if os.path.isdir(ckpts):
        from learner.checkpoint import list_checkpoints

        found = list_checkpoints(ckpts)
        if found:
            lines.append(f"checkpoint: {found[-1][1]}")
    return "\n".join(lines)


def main(argv):
    del argv
    network = network_mode()
    cfg, program, resources = prepare()
    launch(cfg, program, resources, network)


def network_mode() -> str:
    """Enter the network mode asked for (exit 2 if it cannot be had). First of
    all: the kernel refuses a new user namespace once a thread exists
    (importing numpy starts OpenBLAS threads)."""
    from launch.network import NetworkIsolationError, apply_mode

    try:
        if FLAGS.serve and FLAGS.network == "isolated":
            raise ValueError(
                f"--serve={FLAGS.serve!r} is not allowed with --network=isolated: actor "
                f"hosts could not reach a private namespace; use --network=host"
            )
        return apply_mode("host" if FLAGS.serve else FLAGS.network)
    except (ValueError, NetworkIsolationError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def fit_to_host(cfg):
    """`cfg` with its actors packed for this host (`launch.host`), saying so;
    a warning if it may still not fit in memory."""
    from launch import host

    cores, memory = host.cores(), host.available_gb()
    fitted = host.fit_actors(cfg, cores, memory)
    line = host.packing_line(cfg, fitted, cores, memory)
    if line:
        print(line, flush=True)
    warning = host.memory_warning(fitted, memory)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return fitted


def prepare():
    """(cfg, program, resources) from the flags, every input checked (exit 2
    on bad input, leaving the run folder as it was); then the run folder is
    taken (refused while a live program holds it) and its config written."""
    from configs import ConfigError, save_config
    from launch import remote
    from learner.checkpoint import CheckpointError
    from utils.lifeline import RunFolderBusyError, RunFolderLock

    try:
        if FLAGS.max_restarts < 0:
            raise ValueError(f"--max_restarts={FLAGS.max_restarts} is not allowed: must be >= 0")
        cfg = build_config()
        if cfg.actors.num_actors == 0 and not FLAGS.serve:
            raise ValueError(
                "actors.num_actors=0 is not allowed without --serve: nothing would feed "
                "the learner (give --serve=IFACE for actors on other hosts)"
            )
        served = None
        if FLAGS.serve:
            address = remote.interface_address(FLAGS.serve)
            ports = remote.pick_ports(FLAGS.serve_port)
            served = remote.endpoints(address, ports, FLAGS.serve, cfg)
            exposure = remote.exposure(served, FLAGS.serve_allow)
        check_run_dir(cfg.run_dir)
        cfg = fit_to_host(cfg)
        from launch.program import make_program

        program, resources = make_program(cfg, FLAGS.resume, ports if served else None)
        # Held until this process exits; a live program on the folder refuses us.
        RunFolderLock(cfg.run_dir).acquire(" ".join(sys.argv))
        save_config(cfg, os.path.join(cfg.run_dir, "config.json"))
        if served:
            path = os.path.join(cfg.run_dir, remote.ENDPOINTS_FILE)
            remote.write_endpoints(path, served)
            print(f"{exposure}\nendpoints for actor hosts: {path}", flush=True)
    except (
        ConfigError,
        CheckpointError,
        PermissionError,
        ValueError,
        remote.EndpointsError,
        RunFolderBusyError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return cfg, program, resources


def launch(cfg, program, resources, network: str) -> None:
    """Run the program to its end, echoing the learner's progress lines; exit
    1 with each node's last error if it failed."""
    from launch.supervisor import exit_on_failure, launch_supervised

    # Each node's stdout/stderr goes to <run>/launchpad/<start time>/<group>/<task>.
    log_dir = os.path.join(cfg.run_dir, "launchpad", time.strftime("%Y%m%d-%H%M%S"))
    print(
        f"starting {cfg.agent_name} on {cfg.env.label}: {cfg.actors.num_actors} actor "
        f"process(es) of {cfg.actors.envs_per_actor} env(s), "
        f"run folder {cfg.run_dir}, process logs {log_dir}, network {network}"
        + (
            ""
            if network == "isolated"
            else " (Reverb and courier listen on all interfaces: docs/operations.md, "
            "'Network exposure')"
        ),
        flush=True,
    )
    done = threading.Event()
    echo = threading.Thread(
        target=follow, args=(os.path.join(log_dir, "learner", "0"), done), daemon=True
    )
    echo.start()
    try:
        restarts, failed = launch_supervised(
            program,
            resources,
            log_dir,
            os.path.join(cfg.run_dir, "logs", "events.csv"),
            FLAGS.max_restarts,
            stop_grace_s=cfg.learner.stop_grace_s,
            nice=cfg.actors.nice,
        )
    finally:
        done.set()
        echo.join(timeout=5)
    print(summary(cfg), flush=True)
    if restarts:
        print(f"restarted processes: {restarts} (logs/events.csv)", flush=True)
    exit_on_failure(failed, log_dir)


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
