"""Where a learning-curve run's meta-gradient pushes each meta-parameter, and why.

    python -m experiments.atari_learning.diagnosis --run=runs/atari_learning/Pong-stacx-debug-s0
    python -m experiments.atari_learning.diagnosis --agent=bmg --override=meta.outer_sample=same

Loads the run's newest checkpoint and config, plays `--draws` x (K + 1)
batches of B unrolls with the checkpoint's acting policy on real games, and
computes the meta-gradient of the run's meta-objective w.r.t. the
meta-parameter logits on each draw, whole and with the outer loss's KL term
switched off (`meta.kl_weight = 0`); their difference is the KL term's share.
Adam descends the logits, so a positive mean component lowers that value.
Writes `experiments/atari_learning/results/<run>-meta_gradient.json`
(`--at_init`: the same at the run's initial state, `...-meta_gradient-at_init.json`).
Without `--run`, the initial state of `--preset`/`--agent`/`--game` with the
`--override` values (named `<game>-<agent>-<preset>[-<variant>]`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Dict

import jax
import numpy as np

from actors.actor import trajectory_step
from actors.environments import make_vector_env, num_actions
from agents.types import Trajectory
from configs import HYPER_NAMES, RunConfig, make_config
from launch.builder import Builder
from learner import checkpoint as ckpt_lib
from utils.files import write_json_atomic
from utils.machine import machine_facts
from utils.version import REPO_ROOT, git_commit

OUT_DIR = os.path.join(REPO_ROOT, "experiments", "atari_learning", "results")


def play(builder, state, num_batches: int, warmup_steps: int, seed: int):
    """`num_batches` consecutive [T + 1, B] unrolls of B envs acting with head 0."""
    cfg = builder.cfg
    B, T = cfg.learner.batch_size, cfg.agent.unroll_length
    env = make_vector_env(cfg.env, B, seed)
    policy = jax.jit(builder.make_policy())
    key = jax.random.PRNGKey(seed)
    obs, first = env.reset(), np.ones(B, np.float32)
    steps = []
    for t in range(warmup_steps + num_batches * T + 1):
        key, sub = jax.random.split(key)
        actions, logits = policy(state.params, state.meta.logits, obs, sub)
        actions, logits = np.asarray(actions), np.asarray(logits)
        res = env.step(actions)
        if t >= warmup_steps:
            steps.append(trajectory_step(obs, actions, logits, res, first))
        obs, first = res.observation, res.first.astype(np.float32)
    env.close()
    # Consecutive unrolls overlap by one step, as the actors write them.
    windows = [steps[k * T : k * T + T + 1] for k in range(num_batches)]
    unrolls = [Trajectory(*[np.stack(f) for f in zip(*u)]) for u in windows]  # [T + 1, B, ...]
    return Trajectory(*[np.stack(f) for f in zip(*unrolls)])  # [N, T + 1, B, ...]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.atari_learning.diagnosis")
    p.add_argument("--run", help="a run folder with checkpoints")
    p.add_argument("--agent", default="stacx", help="without --run: stacx | bmg")
    p.add_argument("--game", default="Pong", help="without --run")
    p.add_argument("--preset", default="debug", help="without --run")
    p.add_argument("--override", action="append", default=[], help="without --run")
    p.add_argument("--variant", default="", help="without --run: a name for the overrides")
    p.add_argument("--draws", type=int, default=8, help="independent batch draws")
    p.add_argument("--warmup_steps", type=int, default=200, help="agent steps before recording")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--at_init",
        action="store_true",
        help="the run's initial state (its config and seed) instead of its checkpoint",
    )
    return p.parse_args(argv)


def load(args: argparse.Namespace):
    """(run label, config, checkpoint or None): a run's newest checkpoint, or
    a config made from the flags (then `args.at_init` is set)."""
    if args.run:
        ckpt = ckpt_lib.latest(ckpt_lib.checkpoint_dir(args.run))
        if ckpt is None:
            raise SystemExit(f"--run={args.run!r} has no checkpoint")
        return os.path.basename(os.path.normpath(args.run)), RunConfig.from_dict(ckpt.config), ckpt
    args.at_init = True
    label = "-".join(x for x in (args.game, args.agent, args.preset, args.variant) if x)
    return label, make_config(args.preset, args.agent, args.game, overrides=args.override), None


def meta_gradients(builder, state, args: argparse.Namespace):
    """[draws, H, 6] meta-gradients on the meta logits of the whole objective
    and of the objective without its KL term, on the same batches."""
    no_kl = Builder(
        dataclasses.replace(builder.cfg, meta=dataclasses.replace(builder.cfg.meta, kl_weight=0.0)),
        builder.observation_shape,
        builder.num_actions,
    )

    def meta_grad_fn(lrn):
        """jitted batches -> d meta-objective / d logits, compiled once."""
        eta = jax.lax.stop_gradient(lrn.eta(state.meta.logits))

        def objective(w, batches):
            return lrn.meta_objective(w, eta, state.params, state.opt_state, batches)[0]

        grad = jax.jit(jax.grad(objective))
        return lambda batches: np.asarray(grad(state.meta.logits, batches))

    learner = builder.make_learner()
    grad_whole, grad_without_kl = meta_grad_fn(learner), meta_grad_fn(no_kl.make_learner())
    whole, without_kl = [], []
    for d in range(args.draws):
        batches = play(builder, state, learner.num_batches, args.warmup_steps, args.seed + d)
        whole.append(grad_whole(batches))
        without_kl.append(grad_without_kl(batches))
        print(
            f"draw {d}: g_p/h0 logit gradient {whole[-1][0, 3]:+.3g} "
            f"(without KL {without_kl[-1][0, 3]:+.3g})",
            flush=True,
        )
    return np.stack(whole), np.stack(without_kl)


def summary(g: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Mean and standard error over draws, per meta-parameter and head."""
    mean, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(len(g))
    return {
        f"{name}/h{h}": {"mean": float(mean[h, i]), "se": float(se[h, i])}
        for i, name in enumerate(HYPER_NAMES)
        for h in range(g.shape[1])
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    run_label, cfg, ckpt = load(args)
    if cfg.meta.objective == "none":
        raise SystemExit(f"{run_label!r} learns no meta-parameters ({cfg.agent_name})")
    builder = Builder(cfg, cfg.env.observation_shape, num_actions(cfg.env))
    learner = builder.make_learner()
    if ckpt is None or args.at_init:
        state = learner.init(jax.random.PRNGKey(cfg.seed))
    else:
        leaves, treedef = jax.tree_util.tree_flatten(learner.init(jax.random.PRNGKey(0)))
        state = jax.tree_util.tree_unflatten(treedef, ckpt_lib.restore_leaves(ckpt, leaves))
    whole, without_kl = meta_gradients(builder, state, args)
    hp = learner.hyperparams(state.meta.logits)
    at_checkpoint = ckpt is not None and not args.at_init
    payload = {
        "run": run_label,
        "checkpoint": ckpt.path if ckpt else None,
        "learner_step": ckpt.step if at_checkpoint else 0,
        "frames": ckpt.counters.get("frames") if at_checkpoint else 0,
        "objective": cfg.meta.objective,
        "kl_weight": cfg.meta.kl_weight,
        "outer_kl": cfg.meta.outer_kl,
        "outer_sample": cfg.meta.outer_sample,
        "overrides": args.override,
        "meta_values": {
            f"{name}/h{h}": float(hp[i][h])
            for i, name in enumerate(HYPER_NAMES)
            for h in range(cfg.agent.num_heads)
        },
        "meta_gradient": summary(whole),
        "meta_gradient_without_kl": summary(without_kl),
        "meta_gradient_kl_term": summary(whole - without_kl),
        "draws": args.draws,
        "sign": "Adam descends the logits: a positive gradient lowers the value",
        "facts": machine_facts(),
        "commit": git_commit(),
        "wall_s": time.perf_counter() - t_start,
    }
    suffix = "-at_init" if args.at_init else ""
    path = os.path.join(OUT_DIR, f"{payload['run']}-meta_gradient{suffix}.json")
    os.makedirs(OUT_DIR, exist_ok=True)
    write_json_atomic(path, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
