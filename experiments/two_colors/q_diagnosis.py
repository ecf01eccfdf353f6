"""Why the Q(lambda) agent does not learn the second colour: measurements.

    python -m experiments.two_colors.q_diagnosis [--steps=6e5] [--seeds=5] [--out=DIR]

Runs the Q(lambda) agent with a fixed epsilon (the comparison's learner and
setting: discount 0.9, SGD lr 0.3, epsilon 0.2) and records, per colour phase
and averaged over seeds:

- pick-ups of the paying item and of the other one (from the rewards: +1 is
  the paying item, -1 the other), and the reward per step;
- Q-values of probe states at the end of each phase: the agent at (2, 2)
  with item i one step to its right (the other item in a corner), Q(s, right)
  = what the agent expects for picking item i now, for i = 0, 1;
- the fraction of hidden ReLU units inactive on every one of 1,024 random
  observations (dead units: lost plasticity of the plain kind);

and the same for a learner whose first phase pays item 1 (`reversed`:
`swap_every` shifted by one phase), which is what a fresh learner started
at a swap sees. If the fresh learner learns item 1 as fast as the first
learner learns item 0, the world and the targets are symmetric and the
first learner's trouble in its second phase is its own history. Writes
`q_diagnosis.json` (and `q_diagnosis.png`) into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any, Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from configs import ConfigError, apply_overrides
from experiments.two_colors import env
from experiments.two_colors import system as tc_system
from experiments.two_colors.agents import mlp_apply
from experiments.two_colors.config import TwoColorsConfig
from utils.files import write_json_atomic
from utils.machine import machine_facts

PROBE_AGENT = (2, 2)
RIGHT = 3  # action index of "right" (x + 1)


def probe_observations() -> jax.Array:
    """[2, 30]: agent at (2, 2) with item i at (3, 2), the other at (0, 0) or (4, 4)."""
    obs = []
    for i in (0, 1):
        items: List[Any] = [None, None]
        items[i], items[1 - i] = (3, 2), (0, 0) if i == 0 else (4, 4)
        state = env.EnvState(
            agent=jnp.asarray(PROBE_AGENT, jnp.int32),
            items=jnp.asarray(items, jnp.int32),
            t=jnp.zeros((), jnp.int32),
        )
        obs.append(env.observe(state))
    return jnp.stack(obs)


def random_observations(n: int = 1024, seed: int = 0):
    """[n, 30]: observations of fresh random placements."""
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.vmap(lambda k: env.observe(env.reset(k)))(keys)


def dead_fraction(q_layers, obs):
    """Fraction of hidden ReLU units that are 0 on every observation in `obs`."""
    x, dead = obs, []
    for layer in q_layers[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
        dead.append(jnp.all(x <= 0, axis=0))
    return jnp.mean(jnp.concatenate(dead).astype(jnp.float32))


def run_seeds(cfg, seeds, first_item: int = 0) -> dict:
    """Per cycle, for each seed: rollout reward sums and pick-ups, probe Q-values,
    dead-unit fraction. `first_item=1` makes item 1 pay first."""
    system = tc_system.make_system(cfg)
    probes, randoms = probe_observations(), random_observations()
    n_cycles = tc_system.num_cycles(cfg)

    def one(key):
        state = system.init(key)
        if first_item:  # start the env clock one phase in: item 1 pays first
            state = state._replace(
                env_state=state.env_state._replace(t=jnp.asarray(cfg.swap_every, jnp.int32))
            )

        def body(s, _):
            s, logs = system.cycle(s)
            q = mlp_apply(s.params["q"], probes)[:, RIGHT]
            return s, (logs["reward"], logs["picks"], q, dead_fraction(s.params["q"], randoms))

        _, out = jax.lax.scan(body, state, None, length=n_cycles)
        return out

    keys = tc_system.seed_keys(seeds)
    t0 = time.time()
    reward, picks, q, dead = jax.tree_util.tree_map(np.asarray, jax.jit(jax.vmap(one))(keys))
    return {
        "reward": reward.reshape(len(seeds), -1),  # per rollout
        "picks": picks.reshape(len(seeds), -1),
        "q_right": q,  # [seeds, cycles, 2]
        "dead": dead,  # [seeds, cycles]
        "runtime_s": time.time() - t0,
    }


def per_phase(raw: dict, cfg, first_item: int) -> list:
    """One row per colour phase: paying / other pick-ups per 1k steps, reward per
    step, Q(probe_i, right) at the phase's end, dead units, mean over seeds."""
    T, C = cfg.rollout_length, cfg.cycle
    rollouts_per_phase = cfg.swap_every // T
    rows = []
    for p in range(cfg.steps // cfg.swap_every):
        sl = slice(p * rollouts_per_phase, (p + 1) * rollouts_per_phase)
        r, k = raw["reward"][:, sl], raw["picks"][:, sl]
        paying = (r + k) / 2  # +1 pick-ups
        other = (k - r) / 2
        end = min(((p + 1) * rollouts_per_phase) // C, raw["q_right"].shape[1]) - 1
        pays = (p + first_item) % 2
        q = raw["q_right"][:, end]  # [seeds, 2]
        rows.append(
            {
                "phase": p,
                "paying_item": pays,
                "reward_per_step": float(r.sum(1).mean() / cfg.swap_every),
                "paying_picks_per_1k": float(paying.sum(1).mean() * 1000 / cfg.swap_every),
                "other_picks_per_1k": float(other.sum(1).mean() * 1000 / cfg.swap_every),
                "q_pick_paying_end": float(q[:, pays].mean()),
                "q_pick_other_end": float(q[:, 1 - pays].mean()),
                "dead_units_end": float(raw["dead"][:, end].mean()),
            }
        )
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--steps", type=float, default=6e5)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seed_offset", type=int, default=200)
    p.add_argument("--epsilon", type=float, default=0.2)
    p.add_argument("--out", default="runs/q_diagnosis")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a TwoColorsConfig field for the learner, e.g. replay_rollouts=64 (repeatable)",
    )
    p.add_argument("--reversed", type=int, default=1, help="1: also run the reversed learner")
    return p


def learner_config(epsilon: float, steps: int, overrides: Sequence[str] = ()) -> TwoColorsConfig:
    """The diagnosed learner: Q(lambda), fixed epsilon, discount 0.9, SGD lr 0.3,
    then `overrides` ('field=value')."""
    cfg = TwoColorsConfig(
        agent="q_lambda",
        objective="none",
        discount=0.9,
        learning_rate=0.3,
        init_epsilon=epsilon,
        steps=steps,
    )
    return apply_overrides(cfg, overrides)


def main(argv: Sequence[str] | None = None) -> None:
    p = _parser()
    args = p.parse_args(argv)
    try:
        cfg = learner_config(args.epsilon, int(args.steps), args.override)
    except ConfigError as e:
        p.error(str(e))
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    out: Dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "seeds": seeds,
        "learners": {},
        "facts": machine_facts(),
    }
    learners = (("item 0 first", 0), ("reversed: item 1 first", 1))[: 1 + bool(args.reversed)]
    for name, first in learners:
        raw = run_seeds(cfg, seeds, first)
        rows = per_phase(raw, cfg, first)
        out["learners"][name] = {
            "runtime_s": raw["runtime_s"],
            "phases": rows,
            "q_curve": q_curve(raw, cfg),
        }
        print(name)
        for row in rows:
            print(
                "  "
                + "  ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                )
            )
    path = os.path.join(args.out, "q_diagnosis.json")
    write_json_atomic(path, out)
    print(f"wrote {path}")
    print(f"wrote {plot(out, args.out)}")


def q_curve(raw: dict, cfg, every: int = 2048) -> dict:
    """Seed-mean probe Q-values Q(pick item i) every `every` steps: {steps, item_0, item_1}."""
    q = raw["q_right"].mean(0)  # [cycles, 2]
    stride = max(1, every // (cfg.rollout_length * cfg.cycle))
    steps = (np.arange(q.shape[0]) + 1) * cfg.rollout_length * cfg.cycle
    return {
        "steps": steps[::stride].tolist(),
        "item_0": np.round(q[::stride, 0], 4).tolist(),
        "item_1": np.round(q[::stride, 1], 4).tolist(),
    }


def plot(out: dict, out_dir: str) -> str:
    """q_diagnosis.png: the probe Q-values of both items over training, per learner,
    with the colour swaps marked."""
    names = list(out["learners"])
    fig = Figure(figsize=(9, 3 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)
    swap, steps = out["config"]["swap_every"], out["config"]["steps"]
    for ax, name in zip(axes[:, 0], names):
        c = out["learners"][name]["q_curve"]
        for item in (0, 1):
            ax.plot(c["steps"], c[f"item_{item}"], label=f"Q(pick item {item})")
        for s in range(swap, steps, swap):
            ax.axvline(s, color="grey", lw=0.5)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("probe Q")
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("environment steps (grey: colour swaps)")
    fig.tight_layout()
    path = os.path.join(out_dir, "q_diagnosis.png")
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    main()
