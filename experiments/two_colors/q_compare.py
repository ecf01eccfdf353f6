"""Q(lambda) on two-colors: five ways to set epsilon, each tuned on its own grid.

    python -m experiments.two_colors.q_compare --stage=learners --out=DIR
    python -m experiments.two_colors.q_compare --stage=tune [--methods=...] --out=DIR
    python -m experiments.two_colors.q_compare --stage=compare [--methods=...] --out=DIR
    python -m experiments.two_colors.q_compare --stage=report --out=DIR

Every method runs the same value learner (`LEARNER`: Peng's Q(lambda) with a
prioritised replay of recent rollouts; experiments/two_colors/README.md says
why) and differs only in how epsilon is set:

  fixed        a constant epsilon
  linear       a linear decay from a start value to an end value over a number
               of steps, then held (the usual DQN-style schedule)
  mg           the meta-network's epsilon, by the one-step meta-gradient
  bmg_greedy   BMG as published for this agent: K = 0, the greedy policy of the
               target L steps on, KL(greedy target || epsilon-greedy policy)
  bmg_l2       BMG with L = 1 and L2 matching in parameter space

`--stage=learners` runs the candidate value learners (`LEARNERS`) with a fixed
epsilon of 0.2 and writes DIR/learners.json: reward per step in each colour
phase. `--stage=tune` runs each method's grid (`GRIDS`, four settings each) and one
setting past it on the side of its best (`EXTENSIONS`) on the tuning seeds,
and writes DIR/tuning.json with every setting's total reward and each
method's best (settings already there are not run again). `--stage=compare`
runs each method's best setting on the evaluation seeds (other seeds than the
tuning ones) and writes DIR/results.json and summary.json in the runner's
format (`experiments.two_colors.run`), so its plots and `--merge` apply;
methods can run in separate processes into separate folders and be merged
with `python -m experiments.two_colors.run --merge=DIR1,DIR2 --out=DIR`.
`--stage=report` prints (and writes DIR/report.md) the comparison's table
with Welch p-values against fixed, and draws DIR/epsilon_around_swaps.png.
`--override=field=value` (repeatable) sets a TwoColorsConfig field for every
run of a stage, e.g. a short `swap_every` and `log_every` for a tiny budget.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from configs import ConfigError, apply_overrides
from experiments.two_colors.config import TwoColorsConfig, parse_objective
from experiments.two_colors.run import merge_objective, plot, run_objective, write_results
from utils.files import write_json_atomic
from utils.machine import machine_facts

# The value learner every method shares: discount 0.9 and SGD lr 0.3 as chosen
# for the online learner; a FIFO of the last 256 rollouts (4,096 steps), 7 of
# them replayed with each fresh rollout, drawn in proportion to their largest
# TD error.
LEARNER = {
    "agent": "q_lambda",
    "discount": 0.9,
    "learning_rate": 0.3,
    "replay_rollouts": 256,
    "replay_batch": 7,
    "replay_priority": 1.0,
}
META_LRS = (3e-5, 1e-4, 3e-4, 1e-3)
# (label, runner objective, extra config fields)
Setting = Tuple[str, str, Dict[str, Any]]
# method -> its settings, four each.
GRIDS: Dict[str, List[Setting]] = {
    "fixed": [(f"fixed_{e}", f"fixed_{e}", {}) for e in (0.05, 0.1, 0.2, 0.3)],
    "linear": [
        (name, name, {})
        for name in (
            "linear_0.5_0.05_1e5",
            "linear_0.5_0.05_3e5",
            "linear_0.9_0.1_1e5",
            "linear_0.9_0.1_3e5",
        )
    ],
    "mg": [(f"mg_lr{lr:g}", "mg", {"meta_learning_rate": lr}) for lr in META_LRS],
    "bmg_greedy": [
        (f"bmg_k0_l4_lr{lr:g}", "bmg_k0_l4", {"matching": "greedy", "meta_learning_rate": lr})
        for lr in (1e-5,) + META_LRS[:3]
    ],
    "bmg_l2": [
        (f"bmg_l1_l2_lr{lr:g}", "bmg_l1", {"matching": "l2", "meta_learning_rate": lr})
        for lr in META_LRS
    ],
}
# One more setting per method, below or above its grid: tuning runs the one on
# the side of the grid's best (its edge, or the better neighbour of an inner
# best), so every method is chosen from five settings.
EXTENSIONS: Dict[str, Tuple[Setting, ...]] = {
    "fixed": (("fixed_0.02", "fixed_0.02", {}), ("fixed_0.4", "fixed_0.4", {})),
    "linear": (
        ("linear_0.3_0.02_1e5", "linear_0.3_0.02_1e5", {}),
        ("linear_0.9_0.2_3e5", "linear_0.9_0.2_3e5", {}),
    ),
    "mg": tuple((f"mg_lr{lr:g}", "mg", {"meta_learning_rate": lr}) for lr in (1e-5, 3e-3)),
    "bmg_greedy": tuple(
        (f"bmg_k0_l4_lr{lr:g}", "bmg_k0_l4", {"matching": "greedy", "meta_learning_rate": lr})
        for lr in (3e-6, 1e-3)
    ),
    "bmg_l2": tuple(
        (f"bmg_l1_l2_lr{lr:g}", "bmg_l1", {"matching": "l2", "meta_learning_rate": lr})
        for lr in (1e-5, 3e-3)
    ),
}
# The meta-learned methods start from the same epsilon.
INIT_EPSILON = 0.2
ONLINE = {k: v for k, v in LEARNER.items() if not k.startswith("replay")}
# `--stage=learners`: value learners tried with a fixed epsilon of 0.2.
LEARNERS: List[Tuple[str, Dict]] = [
    ("online (one SGD step per fresh rollout)", ONLINE),
    ("uniform replay, 256 rollouts, 7 per update", dict(LEARNER, replay_priority=0.0)),
    ("prioritised replay, 256 rollouts, 7 per update (chosen)", LEARNER),
    ("prioritised replay, 1024 rollouts, 7 per update", dict(LEARNER, replay_rollouts=1024)),
    ("prioritised replay, 256 rollouts, 15 per update", dict(LEARNER, replay_batch=15)),
    ("layer normalisation", dict(ONLINE, q_layer_norm=True)),
    ("layer normalisation, lr 0.1", dict(ONLINE, q_layer_norm=True, learning_rate=0.1)),
    ("Adam, lr 1e-3", dict(ONLINE, inner_optimizer="adam", learning_rate=1e-3)),
    ("output layer reset every 50k steps", dict(ONLINE, q_reset_every=50_000)),
]


def phase_rates(curve, cfg: TwoColorsConfig) -> List[float]:
    """Mean reward per step of each colour phase (seed mean): curve [seeds, bins]."""
    per = cfg.swap_every // cfg.log_every
    r = np.asarray(curve)
    return [float(r[:, p * per : (p + 1) * per].mean()) for p in range(cfg.steps // cfg.swap_every)]


def learners(steps: int, seeds: List[int], out: str, overrides: Sequence[str] = ()) -> Dict:
    """Each candidate value learner with epsilon fixed at 0.2: reward per step
    in the first colour's phases (odd: 1st, 3rd, ...) and the second's (even)."""
    rows = []
    for label, fields in LEARNERS:
        cfg = TwoColorsConfig(**fields, objective="none", init_epsilon=0.2, steps=steps)
        cfg = apply_overrides(cfg, overrides)
        r = run_objective(cfg, seeds)
        phases = phase_rates(r["curves"]["reward"], cfg)
        odd, even = sum(phases[0::2]) / len(phases[0::2]), sum(phases[1::2]) / len(phases[1::2])
        rows.append(
            {
                "learner": label,
                "fields": fields,
                "phase_reward_per_step": phases,
                "odd": odd,
                "even": even,
                "even_over_odd": even / odd if odd else None,
                "total_reward": r["mean"],
                "runtime_s": r["runtime_s"],
            }
        )
        print(f"{label:>58}: odd {odd:.3f} even {even:.3f}  {[round(x, 3) for x in phases]}")
    result = {
        "steps": steps,
        "seeds": seeds,
        "epsilon": 0.2,
        "overrides": list(overrides),
        "learners": rows,
        "facts": machine_facts(),
    }
    write_json_atomic(os.path.join(out, "learners.json"), result)
    return result


def method_config(
    objective: str, extra: Dict, steps: int, overrides: Sequence[str] = ()
) -> TwoColorsConfig:
    """A method's setting on the shared learner, then `overrides` ('field=value'),
    which apply to every method alike (e.g. a short swap interval for a tiny run)."""
    fields = {**LEARNER, "init_epsilon": INIT_EPSILON, **extra}
    fields.update(parse_objective(objective, "q_lambda"))
    return apply_overrides(TwoColorsConfig(**fields, steps=steps), overrides)


def tune(
    methods: List[str], steps: int, seeds: List[int], out: str, overrides: Sequence[str] = ()
) -> Dict:
    """Each method's grid and the one setting past it on the side of its best;
    writes DIR/tuning.json after every setting."""
    path = os.path.join(out, "tuning.json")
    tuning: Dict[str, Any] = {
        "steps": steps,
        "seeds": seeds,
        "learner": LEARNER,
        "overrides": list(overrides),
        "methods": {},
    }
    if os.path.exists(path):
        with open(path) as f:
            tuning = json.load(f)

    def run(method, setting, done):
        label, objective, extra = setting
        if label in done:  # a setting already in tuning.json (an earlier, stopped stage)
            return done[label]
        r = run_objective(method_config(objective, extra, steps, overrides), seeds)
        print(f"{method:>11} {label:>22}: {r['mean']:9.1f}  ({r['runtime_s']} s)", flush=True)
        return {
            "label": label,
            "objective": objective,
            "extra": extra,
            "total_reward": r["mean"],
            "ci95": r["ci95"],
            "per_seed": r["total_reward"],
            "runtime_s": r["runtime_s"],
        }

    for method in methods:
        old = tuning["methods"].get(method, {})
        done = {row["label"]: row for row in old.get("grid", []) + old.get("extension", [])}
        rows = []
        for setting in GRIDS[method]:
            rows.append(run(method, setting, done))
            tuning["methods"][method] = {"grid": rows}
            write_json_atomic(path, tuning)
        totals = [row["total_reward"] for row in rows]
        i = totals.index(max(totals))
        upward = i == len(rows) - 1 or (0 < i and totals[i + 1] > totals[i - 1])
        extension = [run(method, EXTENSIONS[method][int(upward)], done)]
        best = max(rows + extension, key=lambda row: row["total_reward"])
        tuning["methods"][method] = {"grid": rows, "extension": extension, "best": best["label"]}
        tuning["facts"] = machine_facts()
        write_json_atomic(path, tuning)
    return tuning


def compare(
    methods: List[str],
    steps: int,
    seeds: List[int],
    out: str,
    tuning_path: str,
    overrides: Sequence[str] = (),
) -> Dict:
    """Each method's best tuning setting on the evaluation seeds, into DIR's
    results.json / summary.json (the runner's format) and its plots."""
    tuning: Dict[str, Dict] = {"methods": {}}
    for where in tuning_path.split(","):  # tuning stages run side by side, one file each
        with open(where) as f:
            tuning["methods"].update(json.load(f)["methods"])
    results: Dict[str, Any] = {"agent": "q_lambda", "steps": steps, "objectives": {}}
    path = os.path.join(out, "results.json")
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    for method in methods:
        entry = tuning["methods"][method]
        row = next(r for r in entry["grid"] + entry["extension"] if r["label"] == entry["best"])
        cfg = method_config(row["objective"], row["extra"], steps, overrides)
        results.update(log_every=cfg.log_every, swap_every=cfg.swap_every)
        t0 = time.time()
        r = run_objective(cfg, seeds)
        r["method"], r["setting"] = method, row["label"]
        phases = phase_rates(r["curves"]["reward"], cfg)
        r["phase_reward_per_step"] = phases
        r["odd_even_reward_per_step"] = [
            sum(phases[0::2]) / len(phases[0::2]),
            sum(phases[1::2]) / len(phases[1::2]),
        ]
        print(
            f"{method:>11} ({row['label']}): {r['mean']:9.1f} 95% CI "
            f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]  {time.time() - t0:.0f} s",
            flush=True,
        )
        results["objectives"][method] = merge_objective(results["objectives"].get(method), r)
        results["facts"] = machine_facts()
        write_results(results, out)
    for p in plot(results, out):
        print("wrote", p)
    return results


def report(out: str) -> str:
    """A markdown table of DIR/results.json (the merged comparison) with Welch
    p-values against the fixed epsilon; also written to DIR/report.md."""
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    objs = results["objectives"]
    base = objs.get("fixed")
    lines = [
        "| method (setting) | total reward | 95% CI | reward/step odd / even phases "
        "| epsilon before / after / late swap | Welch p vs fixed | run (compile) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(objs.items(), key=lambda kv: -kv[1]["mean"]):
        odd, even = r["odd_even_reward_per_step"]
        sw = r.get("swap_stats") or {}
        eps = (
            f"{sw['eps_before']:.3f} / {sw['eps_after']:.3f} / {sw['eps_late']:.3f}" if sw else "-"
        )
        p = "-"
        if base is not None and name != "fixed":
            welch = stats.ttest_ind(r["total_reward"], base["total_reward"], equal_var=False)
            p = f"{welch.pvalue:.2g}"
        lines.append(
            f"| {name} ({r['setting']}) | {r['mean']:,.0f} | [{r['ci95'][0]:,.0f}, "
            f"{r['ci95'][1]:,.0f}] | {odd:.3f} / {even:.3f} | {eps} | {p} | "
            f"{r['runtime_s']:.0f} s ({r['compile_s']:.0f} s) |"
        )
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    plot_around_swaps(results, out)
    return text


def around_swaps(curve, log_every: int, swap_every: int, before: int = 10_240):
    """Mean over seeds and swaps of a logged curve [seeds, bins] from `before`
    steps ahead of each swap to the next swap: (steps from the swap, values).
    `before` is cut to one swap interval where the swaps come more often."""
    c = np.asarray(curve)
    span = swap_every // log_every
    b = min(before // log_every, span)
    starts = range(span, c.shape[1] - span + 1, span)
    windows = [c[:, s - b : s + span - b] for s in starts]
    x = (np.arange(span) - b) * log_every
    return x, np.mean(windows, axis=(0, 1))


def plot_around_swaps(results: Dict, out: str) -> str:
    """epsilon_around_swaps.png: epsilon and reward per step from 10k steps before
    a colour swap to the next swap, averaged over swaps and seeds, per method."""
    fig = Figure(figsize=(9, 7))
    ax_e, ax_r = fig.subplots(2, 1, sharex=True)
    for name, r in results["objectives"].items():
        label = f"{name} ({r['setting']})"
        for ax, key in ((ax_e, "eps"), (ax_r, "reward")):
            x, y = around_swaps(r["curves"][key], results["log_every"], results["swap_every"])
            ax.plot(x, y, label=label)
    for ax in (ax_e, ax_r):
        ax.axvline(0, color="grey", lw=0.5)
    ax_e.set_ylabel("epsilon")
    ax_e.set_yscale("log")
    ax_r.set_ylabel("reward per step")
    ax_r.set_xlabel("steps from a colour swap (mean over swaps and seeds)")
    ax_e.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "epsilon_around_swaps.png")
    fig.savefig(path, dpi=100)
    return path


# Per stage: environment steps, number of seeds, first seed (each stage its own seeds).
STAGE_DEFAULTS = {"learners": (4e5, 4, 300), "tune": (4e5, 5, 0), "compare": (2e6, 20, 100)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--stage", choices=("learners", "tune", "compare", "report"), required=True)
    p.add_argument("--methods", default=",".join(GRIDS), help=f"subset of {list(GRIDS)}")
    p.add_argument("--steps", type=float, default=None, help="tune: 4e5, compare: 2e6")
    p.add_argument("--seeds", type=int, default=None, help="tune: 5, compare: 20")
    p.add_argument("--seed_offset", type=int, default=None, help="tune: 0, compare: 100")
    p.add_argument(
        "--tuning",
        default=None,
        help="compare: tuning.json file(s), comma-separated (default: --out's)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a TwoColorsConfig field for every run of the stage (repeatable), e.g. "
        "swap_every=512 --override=log_every=128 --override=hidden=8 for a tiny run",
    )
    p.add_argument("--out", default="runs/q_compare")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = _parser()
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in GRIDS]
    if unknown:
        p.error(f"--methods={args.methods!r}: {unknown} not among {list(GRIDS)}")
    if args.stage == "report":
        print(report(args.out), end="")
        return
    steps_default, n, first = STAGE_DEFAULTS[args.stage]
    steps = int(args.steps or steps_default)
    n = args.seeds or n
    first = args.seed_offset if args.seed_offset is not None else first
    seeds = list(range(first, first + n))
    try:  # bad input: refused before anything runs
        method_config("fixed_0.2", {}, steps, args.override)
    except ConfigError as e:
        p.error(str(e))
    os.makedirs(args.out, exist_ok=True)
    if args.stage == "learners":
        learners(steps, seeds, args.out, args.override)
    elif args.stage == "tune":
        tune(methods, steps, seeds, args.out, args.override)
    else:
        tuning = args.tuning or os.path.join(args.out, "tuning.json")
        compare(methods, steps, seeds, args.out, tuning, args.override)


if __name__ == "__main__":
    main()
