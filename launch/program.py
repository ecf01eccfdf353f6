"""Builds the Launchpad program: Reverb, counter, learner, N actors, evaluator.

    replay (lp.ReverbNode) <- actors (CourierNode x N) -> counter (CourierNode)
        |                        ^  params (courier)           ^
        v                        |                             |
    learner (CourierNode: pmap update, checkpoints, logs) -----+
    evaluator (CourierNode: unclipped episodes, HNS per game)

Started with `launch_type='local_mp'`: one process per node. TensorFlow (pulled
in by Reverb/Launchpad) never sees a GPU; only the learner's JAX may use the
accelerator, actors and the evaluator run JAX on CPU.
"""

from __future__ import annotations

import functools
import os
from typing import Dict, Optional, Tuple

from configs import RunConfig, shared_config
from launch.network import NODE_ENV  # names a process's node group (socket checks, tests)
from utils import lifeline
from utils.lifeline import LAUNCHER_PID_ENV, RUN_DIR_ENV, STOP_GRACE_ENV
from utils.version import code_version, git_commit
from learner import checkpoint as ckpt_lib


def node(constructor, *args, **kwargs):
    """`utils.lifeline.node` in a Launchpad node process whose own countdown
    after a stop is the launcher's grace (`STOP_GRACE_ENV`): Launchpad 0.5
    reads --lp_termination_notice_secs in each node, where it is always the
    default 10 s, and a node ends itself when that runs out (a learner
    writing its final checkpoint on a busy host would be cut short)."""
    from launchpad.launch import worker_manager

    grace = os.environ.get(STOP_GRACE_ENV)
    if grace:
        worker_manager.get_worker_manager()._termination_notice_secs = int(grace)
    return lifeline.node(constructor, *args, **kwargs)


def should_stop() -> bool:
    """True once Launchpad asked this node's program to stop (never blocks)."""
    import launchpad as lp

    return lp.wait_for_stop(0)


def stop_program() -> None:
    import launchpad as lp

    lp.stop()


def environment_facts(cfg: RunConfig) -> Tuple[Tuple[int, ...], int]:
    """(observation_shape, num_actions) without stepping anything."""
    from actors.environments import num_actions

    return cfg.env.observation_shape, num_actions(cfg.env)


CALL_TIMEOUT_S = 3.0  # courier call deadline; well inside Launchpad's 10 s stop notice


COMPILE_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
COMPILE_CACHE = ".jax_cache"  # under the runs root, unless COMPILE_CACHE_ENV is set


def process_env(group: str, jax_platform: Optional[str], run_dir: str = "") -> Dict[str, str]:
    """A node's environment: its group, the launcher (this process) and run
    folder it lives and dies with (`utils.lifeline`), and JAX's persistent
    compilation cache, shared by every node and run under the same root: the
    actors compile one policy, a resumed learner its same update (set
    `COMPILE_CACHE_ENV` to choose the folder, or to "" for none)."""
    env = {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        NODE_ENV: group,
        LAUNCHER_PID_ENV: str(os.getpid()),
        RUN_DIR_ENV: run_dir,
    }
    if run_dir and COMPILE_CACHE_ENV not in os.environ:
        env[COMPILE_CACHE_ENV] = os.path.join(
            os.path.dirname(os.path.abspath(run_dir)), COMPILE_CACHE
        )
        # Every program, not only those over 1 s: a node compiles hundreds of
        # small ones, and reading them back is cheaper than compiling them.
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    if jax_platform:
        env["JAX_PLATFORMS"] = jax_platform
    return env


def _pin_port(node, port: int) -> None:
    """Makes Launchpad bind `node`'s one address to `port` instead of a port
    it picks at launch (what `--serve` publishes must be known beforehand)."""
    from launchpad import address as lp_address

    class Fixed(lp_address.AbstractAddressBuilder):
        def build(self) -> str:
            return f"localhost:{port}"

    def bind_addresses(**kwargs):
        del kwargs
        for address in node.addresses:
            address.bind(Fixed())

    node.bind_addresses = bind_addresses


def make_program(
    cfg: RunConfig, resume: Optional[str] = None, serve_ports: Optional[Dict[str, int]] = None
):
    """Returns (program, local_resources) ready for `lp.launch(..., 'local_mp')`.
    `serve_ports` ({"replay": port, "counter": ..., "learner": ...}) pins the
    nodes remote actor hosts reach (`launch.remote`) to those ports."""
    import launchpad as lp
    from actors.actor import ActorNode, EvaluatorNode
    from launch.builder import Builder
    from learner.node import LearnerNode
    from utils.counter import Counter

    builder = Builder(cfg, *environment_facts(cfg))
    # Found and validated here, before any process starts; the learner gets its path.
    ckpt = ckpt_lib.for_run(cfg.run_dir, cfg.to_dict(), resume)
    counts = dict(ckpt.counters) if ckpt else {}
    resume_path = ckpt.path if ckpt else None

    program = lp.Program(f"stacx-{cfg.name}")
    nodes = {}
    with program.group("replay"):
        nodes["replay"] = lp.ReverbNode(functools.partial(node, builder.make_tables))
        replay = program.add_node(nodes["replay"])
    with program.group("counter"):
        nodes["counter"] = lp.CourierNode(node, Counter, counts, program_identity(cfg))
        counter = program.add_node(nodes["counter"])
    # Courier calls wait for the server to be ready; without a deadline a call
    # to a node that is gone blocks forever, and its thread keeps the caller
    # from exiting on stop. Every call gets a deadline; callers retry.
    counter.set_client_kwargs(call_timeout=CALL_TIMEOUT_S)
    with program.group("learner"):
        nodes["learner"] = lp.CourierNode(
            node,
            LearnerNode,
            builder,
            replay,
            counter,
            resume_path,
            stop_fn=stop_program,
            should_stop=should_stop,
            evaluated=cfg.actors.evaluator,
        )
        learner = program.add_node(nodes["learner"])
    for name, port in (serve_ports or {}).items():
        _pin_port(nodes[name], port)
    learner.set_client_kwargs(call_timeout=CALL_TIMEOUT_S)
    for i in range(cfg.actors.num_actors):  # none: every actor is on other hosts
        with program.group("actor"):
            program.add_node(
                lp.CourierNode(
                    node, ActorNode, builder, i, replay, learner, counter, should_stop=should_stop
                )
            )
    if cfg.actors.evaluator:
        with program.group("evaluator"):
            program.add_node(
                lp.CourierNode(
                    node, EvaluatorNode, builder, learner, counter, should_stop=should_stop
                )
            )
    return program, _resources(program, cfg.run_dir)


def program_identity(cfg: RunConfig) -> dict:
    """What the counter holds for remote actor hosts to check that they run
    the same code on the same config (`launch.remote`)."""
    return dict(
        code_version=code_version(),
        commit=git_commit(),
        config=shared_config(cfg),
        local_actors=cfg.actors.num_actors,
    )


def _resources(program, run_dir: str) -> dict:
    """Each group's process environment: JAX on CPU for all but the learner,
    whose platform LEARNER_JAX_PLATFORMS may name."""
    from launchpad.nodes.python.local_multi_processing import PythonProcess

    resources = {
        group: PythonProcess(env=process_env(group, "cpu", run_dir))
        for group in ("replay", "counter", "actor", "evaluator")
        if group in program.groups
    }
    resources["learner"] = PythonProcess(
        env=process_env("learner", os.environ.get("LEARNER_JAX_PLATFORMS"), run_dir)
    )
    return resources


def make_actor_program(cfg: RunConfig, endpoints: Dict[str, str], first_id: int, host: str):
    """An actor host's program: `cfg.actors.num_actors` actor nodes (ids from
    `first_id`) whose replay, learner and counter are clients of another
    host's `endpoints` ({"replay": "ip:port", "learner": ..., "counter": ...})."""
    import courier
    import launchpad as lp
    import reverb
    from launchpad.nodes.dereference import Deferred
    from launchpad.nodes.python.local_multi_processing import PythonProcess
    from actors.actor import ActorNode
    from launch.builder import Builder

    builder = Builder(cfg, *environment_facts(cfg))
    # Built in each actor process, as Launchpad's own handles are.
    replay = Deferred(reverb.Client, endpoints["replay"])
    learner = Deferred(courier.Client, endpoints["learner"], call_timeout=CALL_TIMEOUT_S)
    counter = Deferred(courier.Client, endpoints["counter"], call_timeout=CALL_TIMEOUT_S)
    program = lp.Program(f"stacx-{cfg.name}-actors")
    with program.group("actor"):
        for i in range(cfg.actors.num_actors):
            program.add_node(
                lp.CourierNode(
                    node,
                    ActorNode,
                    builder,
                    first_id + i,
                    replay,
                    learner,
                    counter,
                    should_stop=should_stop,
                    host=host,
                )
            )
    return program, {"actor": PythonProcess(env=process_env("actor", "cpu"))}
