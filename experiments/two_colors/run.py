"""Two-colors MG vs BMG: `python -m experiments.two_colors.run --steps=1e6 --seeds=5
--objectives=mg,bmg_l1,bmg_l4,bmg_l8 --out=runs/two_colors`.

`--agent=q_lambda` runs the epsilon-greedy Peng's Q(lambda) agent whose epsilon
is meta-learned instead of the actor-critic's entropy weight, e.g.
`--agent=q_lambda --objectives=mg,bmg_l1,fixed_0.05`.

Each objective runs all seeds at once (vmap over seeds, one jitted lax.scan
over the whole run); objectives run one after another. Writes to --out:
  results.json           per objective: total reward per seed, mean, 95% CI
                         (t-interval over seeds), runtime, config, entropy
                         weight around the swaps, and the logged curves (per
                         --log_every steps, per seed; ~0.3 MB per objective
                         for 10 seeds x 1M steps)
  summary.json           the same without the curves
  total_reward.png       total reward per objective, mean, 95% CI and seeds
  cumulative_reward.png  cumulative reward, mean over seeds and min-max band
  reward_rate.png        reward per step (smoothed), mean over seeds
  entropy_weight.png     meta-learned entropy weight, swap points marked
                         (epsilon.png for --agent=q_lambda)
Objective names: mg, mg_k<K>, bmg_l<L>, bmg_k<K>_l<L>, mixed_k<K>, and
fixed_<value> (no meta-learning, the meta output held at value), e.g. fixed_0.05.

Long comparisons run in seed chunks: `--append` with new seeds (e.g.
`--seeds=10 --seed_offset=10`) adds them to an objective already in --out
(same config required; the same seeds replace it; partly overlapping seeds
are refused before anything runs), and `--merge=DIR,DIR,...` combines the
results.json (or .json.gz) of chunks run side by side into --out without
running anything.
Seed s always starts from PRNGKey(s), so a chunked objective is the same
experiment as one run over all its seeds.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import app, flags
from matplotlib.figure import Figure
from scipy import stats

from configs import ConfigError, apply_overrides, parse_count
from experiments.two_colors import system as tc_system
from experiments.two_colors.config import TwoColorsConfig, parse_objective
from utils.files import write_json_atomic

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The absl flags of `python -m experiments.two_colors.run`, defined only when it
    runs as a script: importing the module defines nothing (absl flags are
    global, and other modules define the same names, such as --seed and
    --override)."""
    flags.DEFINE_string("steps", "1e6", "environment steps per seed (e.g. 1e6)")
    flags.DEFINE_integer("seeds", 5, "number of seeds (0, 1, ...) + --seed_offset")
    flags.DEFINE_integer("seed_offset", 0, "first seed")
    flags.DEFINE_list("objectives", ["mg", "bmg_l1", "bmg_l4", "bmg_l8"], "objectives to compare")
    flags.DEFINE_enum(
        "agent",
        "actor_critic",
        ["actor_critic", "q_lambda"],
        "actor_critic: meta-learned entropy weight; q_lambda: meta-learned epsilon "
        "of an epsilon-greedy Peng's Q(lambda) agent",
    )
    flags.DEFINE_enum(
        "matching", "kl", ["kl", "l2", "greedy"], "BMG matching function (greedy: q_lambda)"
    )
    flags.DEFINE_integer("hidden", None, "hidden width of actor and critic (default: config's)")
    flags.DEFINE_integer("swap_every", None, "steps between colour swaps (default 100000)")
    flags.DEFINE_multi_string(
        "override",
        [],
        "TwoColorsConfig field=value (repeatable; configs.apply_overrides), applied to "
        "every objective, e.g. meta_learning_rate=3e-4; a field the objective name sets "
        "(fixed_0.2's epsilon) keeps the name's value",
    )
    flags.DEFINE_string("out", "runs/two_colors", "output folder")
    flags.DEFINE_boolean("plots", True, "write PNG plots")
    flags.DEFINE_list(
        "merge",
        [],
        "result folders or files (results.json, .json.gz) to "
        "combine into --out (no runs): their objectives' seed chunks are joined",
    )
    flags.DEFINE_boolean(
        "append",
        False,
        "add to (or replace objectives in) an existing "
        "--out/results.json, e.g. to give objectives different overrides",
    )


# Fields a command line sets by their own flags, never by --override.
OWN_FLAGS = {"agent": "--agent", "steps": "--steps"}


def objective_config(
    name: str, steps: int, fields: Dict[str, Any], overrides: Sequence[str] = ()
) -> TwoColorsConfig:
    """The config of objective `name`: `fields` (the command line's flags), the
    objective name's fields and `steps`, then `overrides` ('field=value',
    `configs.apply_overrides`); a field the objective name sets keeps the
    name's value (`fixed_0.2` means 0.2 whatever --override says)."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in OWN_FLAGS:
            raise ConfigError(f"override {item!r} is not allowed: use {OWN_FLAGS[key]}")
    named = {**parse_objective(name, fields.get("agent", "actor_critic")), "steps": steps}
    cfg = apply_overrides(TwoColorsConfig(**fields, **named), overrides)
    return dataclasses.replace(cfg, **named)


def build_configs(
    objectives: List[str], steps: int, fields: Dict[str, Any], overrides: Sequence[str] = ()
) -> Dict[str, TwoColorsConfig]:
    """`objective_config` of each objective name."""
    return {name: objective_config(name, steps, fields, overrides) for name in objectives}


def confidence_interval(values, level: float = 0.95) -> Tuple[float, float, float]:
    """(mean, lo, hi): t-interval of the mean over seeds (lo = hi = mean for 1 seed)."""
    v = np.asarray(values, np.float64)
    mean = float(v.mean())
    if v.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def swap_stats(
    curves: Dict, log_every: int, swap_every: int, steps: int, window: int = 10_240
) -> Dict:
    """How the entropy weight moves around the colour swaps, averaged over swaps
    and seeds: `before` = mean eps over `window` steps before a swap, `after` =
    over `window` steps after it, `late` = over the last `window` steps before
    the next swap (the new colour learned, if it is); plus the correlation of
    eps and reward rate over all logged points (negative: eps is high where
    reward is low)."""
    eps, rew = np.asarray(curves["eps"]), np.asarray(curves["reward"])
    w = max(1, window // log_every)
    before, after, late = [], [], []
    for s in range(swap_every, steps - swap_every + 1, swap_every):
        i, j = s // log_every, (s + swap_every) // log_every
        if i - w < 0 or j > eps.shape[1]:
            continue
        before.append(eps[:, i - w : i].mean())
        after.append(eps[:, i : i + w].mean())
        late.append(eps[:, j - w : j].mean())
    corr = [float(np.corrcoef(e, r)[0, 1]) for e, r in zip(eps, rew) if e.std() > 1e-6]
    if not before:
        return {}
    return {
        "window_steps": w * log_every,
        "eps_before": float(np.mean(before)),
        "eps_after": float(np.mean(after)),
        "eps_late": float(np.mean(late)),
        "corr_eps_reward": float(np.mean(corr)) if corr else None,
    }


def run_objective(cfg: TwoColorsConfig, seeds: List[int]) -> Dict:
    """All seeds of one config at once: totals, their CI, swap stats, curves, timings."""
    keys = tc_system.seed_keys(seeds)
    t0 = time.time()
    compiled = tc_system.jitted_run(cfg).lower(keys).compile()
    t1 = time.time()
    out = jax.block_until_ready(compiled(keys))
    t2 = time.time()
    out = jax.tree_util.tree_map(np.asarray, out)
    total = [float(x) for x in out["total_reward"]]
    mean, lo, hi = confidence_interval(total)
    curves = {k: np.round(out[k], 5).tolist() for k in ("reward", "eps", "entropy")}
    return {
        "config": dataclasses.asdict(cfg),
        "seeds": list(seeds),
        "total_reward": total,
        "mean": mean,
        "ci95": [lo, hi],
        "compile_s": round(t1 - t0, 1),
        "runtime_s": round(t2 - t1, 1),
        "steps_per_s": round(cfg.steps * len(seeds) / max(t2 - t1, 1e-9)),
        "swap_stats": swap_stats(curves, cfg.log_every, cfg.swap_every, cfg.steps),
        "curves": curves,
    }


HEADER = ("agent", "steps", "log_every", "swap_every")


def _header(results: Dict) -> Dict:
    # A file without "agent" (results/actor_critic/summary.json) holds actor-critic runs:
    # the runner had no other agent when it was written.
    return {k: results.get(k, "actor_critic" if k == "agent" else None) for k in HEADER}


def check_header(old: Dict, new: Dict, refusal: str) -> None:
    """Raise ConfigError(refusal ...) unless `new` results can join `old`'s:
    same agent, steps, log interval and swap interval."""
    if _header(old) != _header(new):
        raise ConfigError(f"{refusal}: it holds {_header(old)}, this one has {_header(new)}")


def check_chunk(old: Optional[Dict], name: str, config: Dict, seeds: List[int], where: str) -> None:
    """Raise ConfigError unless a run of `name` with `config` over `seeds` can
    join `old` (the objective's entry in `where`, None if absent): the same
    config, and seeds either all new (a chunk) or exactly old's (a rerun)."""
    if old is None:
        return
    # Fields added since `old` was written (absent there) kept their old behaviour.
    diff = {
        k: (old["config"][k], config[k])
        for k in sorted(set(old["config"]) & set(config))
        if old["config"][k] != config[k]
    }
    if diff:
        raise ConfigError(
            f"{name} in {where} has a different config, (there, here) = {diff}; "
            "chunks of one objective must share its config"
        )
    both = sorted(set(old["seeds"]) & set(seeds))
    if both and set(old["seeds"]) != set(seeds):
        raise ConfigError(
            f"{name} seeds {seeds} overlap the seeds {old['seeds']} in {where} "
            f"at {both}: allowed are new seeds only (a chunk) or exactly those "
            "(a rerun, which replaces them)"
        )


def _chunks(r: Dict) -> List[Dict]:
    return r.get("chunks") or [{k: r[k] for k in ("seeds", "runtime_s", "compile_s")}]


def merge_objective(old: Optional[Dict], new: Dict) -> Dict:
    """`new` (one run) added to `old` (the same objective, earlier seeds):
    per-seed values and curves joined in seed order, mean, CI and swap stats
    recomputed over all seeds, runtimes summed with the chunks listed. A rerun
    of old's seeds, or no old, gives `new`."""
    if old is None or set(old["seeds"]) == set(new["seeds"]):
        return new
    seeds = old["seeds"] + new["seeds"]
    order = sorted(range(len(seeds)), key=seeds.__getitem__)

    def in_seed_order(a: List, b: List) -> List:
        both = a + b
        return [both[i] for i in order]

    total = in_seed_order(old["total_reward"], new["total_reward"])
    curves = {k: in_seed_order(old["curves"][k], new["curves"][k]) for k in old["curves"]}
    mean, lo, hi = confidence_interval(total)
    chunks = _chunks(old) + _chunks(new)
    runtime = round(sum(c["runtime_s"] for c in chunks), 1)
    cfg = new["config"]
    return dict(
        new,
        seeds=sorted(seeds),
        total_reward=total,
        mean=mean,
        ci95=[lo, hi],
        compile_s=round(sum(c["compile_s"] for c in chunks), 1),
        runtime_s=runtime,
        steps_per_s=round(cfg["steps"] * len(seeds) / max(runtime, 1e-9)),
        swap_stats=swap_stats(curves, cfg["log_every"], cfg["swap_every"], cfg["steps"]),
        curves=curves,
        chunks=chunks,
    )


def merge_results(into: Optional[Dict], other: Dict, where: str) -> Dict:
    """Objectives of `other` (read from `where`) joined into `into`: the
    header fields and the objectives (fields of older files, such as the
    number of seeds of one run, do not describe a merge and are dropped),
    plus "facts": the machine facts each part carries, with where it came from."""
    facts = [dict(f, source=where) for f in _facts_list(other)]
    if into is None:
        merged = dict(_header(other), objectives=other["objectives"])
        return dict(merged, facts=facts) if facts else merged
    check_header(other, into, f"cannot combine {where} with the results so far")
    objectives = dict(into["objectives"])
    for name, r in other["objectives"].items():
        check_chunk(objectives.get(name), name, r["config"], r["seeds"], where)
        objectives[name] = merge_objective(objectives.get(name), r)
    facts = into.get("facts", []) + facts
    merged = dict(_header(into), objectives=objectives)
    return dict(merged, facts=facts) if facts else merged


def _facts_list(results: Dict) -> List[Dict]:
    facts = results.get("facts")
    if facts is None:
        return []
    return list(facts) if isinstance(facts, list) else [facts]


def seed_count(results: Dict) -> str:
    """Seeds per objective for plot titles: "10", or "10-50" if they differ."""
    counts = sorted({len(r["seeds"]) for r in results["objectives"].values()})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def _load(path: str) -> Dict:
    """results.json of a folder, or a results file (.json, or .json.gz as kept
    in experiments/two_colors/results for chunks of long runs)."""
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    try:
        with gzip.open(path, "rt") if path.endswith(".gz") else open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read two-colors results {path}: {e}") from None


class _Figures:
    """What every two-colors figure shares: the results, labels, axes helpers."""

    def __init__(self, results: Dict, out_dir: str):
        self.results, self.out_dir = results, out_dir
        self.log_every, self.steps = results["log_every"], results["steps"]
        self.swaps = np.arange(results["swap_every"], self.steps, results["swap_every"])
        self.q_agent = results.get("agent") == "q_lambda"
        self.what = "epsilon" if self.q_agent else "entropy weight"
        self.title = "Two-colors Q(lambda)" if self.q_agent else "Two-colors"
        self.seeds = seed_count(results)

    def x_axis(self, n):
        return (np.arange(n) + 1) * self.log_every

    def save(self, fig, name):
        fig.tight_layout()
        path = os.path.join(self.out_dir, name)
        fig.savefig(path, dpi=110)
        return path

    def smooth(self, y, width=5):
        """Centred moving average, same length as y (shorter windows at the ends)."""
        width = min(width, y.size)
        return np.convolve(y, np.ones(width), "same") / np.convolve(
            np.ones_like(y), np.ones(width), "same"
        )

    def finish(self, fig, ax, ylabel, ax_title, legend_size, name):
        ax.set_xlabel("environment steps")
        ax.set_ylabel(ylabel)
        ax.set_title(ax_title)
        ax.legend(fontsize=legend_size)
        return self.save(fig, name)

    @staticmethod
    def label(name, r):
        c = r["config"]
        extra = "" if c["objective"] == "none" else f", meta lr {c['meta_learning_rate']:g}"
        if c["objective"] == "bmg":
            extra += f", {c['matching']}"
        return f"{name}{extra}"


def _total_reward(f: _Figures, objs: Dict) -> str:
    """Total reward per objective with its 95% CI (works from summaries too)."""
    fig = Figure(figsize=(1.2 * len(objs) + 2.5, 4))
    ax = fig.subplots()
    names = list(objs)
    means = np.array([objs[n]["mean"] for n in names])
    err = np.abs(np.array([objs[n]["ci95"] for n in names]).T - means)
    ax.bar(
        range(len(names)), means, yerr=err, capsize=4, color=[f"C{i}" for i in range(len(names))]
    )
    for i, n in enumerate(names):
        ax.plot([i] * len(objs[n]["total_reward"]), objs[n]["total_reward"], "k.", ms=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f.label(n, objs[n]).replace(", ", "\n", 1) for n in names], fontsize=7)
    ax.set_ylabel(f"total reward over {f.steps:,} steps")
    ax.set_title(f"{f.title}: total reward, mean and 95% CI ({f.seeds} seeds, dots)", fontsize=9)
    return f.save(fig, "total_reward.png")


def _cumulative_reward(f: _Figures, objs: Dict) -> str:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, r in objs.items():
        rate = np.asarray(r["curves"]["reward"])  # [seeds, bins] mean reward per step
        cum = np.cumsum(rate * f.log_every, axis=1)
        x = f.x_axis(cum.shape[1])
        ax.plot(
            x,
            cum.mean(0),
            label=f"{f.label(name, r)}: {r['mean']:.0f} [{r['ci95'][0]:.0f}, {r['ci95'][1]:.0f}]",
        )
        ax.fill_between(x, cum.min(0), cum.max(0), alpha=0.2)
    for s in f.swaps:
        ax.axvline(s, color="grey", lw=0.5, ls=":")
    return f.finish(
        fig,
        ax,
        "cumulative reward",
        f"{f.title}: cumulative reward (mean, min-max over {f.seeds} seeds)",
        8,
        "cumulative_reward.png",
    )


def _reward_rate(f: _Figures, objs: Dict) -> str:
    """Reward rate (smoothed means, one panel)."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for name, r in objs.items():
        y = np.asarray(r["curves"]["reward"]).mean(0)
        ax.plot(f.x_axis(y.size), f.smooth(y), lw=1.0, label=f.label(name, r))
    for i, s in enumerate(f.swaps):
        ax.axvline(s, color="red", lw=0.8, ls="--", label="colour swap" if i == 0 else None)
    return f.finish(
        fig,
        ax,
        "reward per step",
        f"{f.title}: reward per step (mean over "
        f"seeds, {f.log_every}-step points, 5-point smoothing)",
        7,
        "reward_rate.png",
    )


def _meta_output(f: _Figures, meta: List) -> str:
    """One panel per meta-learning objective, its reward rate behind it."""
    fig = Figure(figsize=(9, 2.2 * len(meta) + 0.6))
    axes = fig.subplots(len(meta), 1, sharex=True, squeeze=False)
    for ax, (name, r) in zip(axes[:, 0], meta):
        eps = np.asarray(r["curves"]["eps"])
        x = f.x_axis(eps.shape[1])
        ax.fill_between(x, eps.min(0), eps.max(0), alpha=0.2, color="C0")
        ax.plot(x, eps.mean(0), color="C0", lw=1.0, label=f"{f.what} (mean, min-max)")
        ax.set_ylabel(f.what, color="C0")
        twin = ax.twinx()
        rew = np.asarray(r["curves"]["reward"]).mean(0)
        twin.plot(x, f.smooth(rew), color="C2", lw=0.7, alpha=0.8)
        twin.set_ylabel("reward / step", color="C2")
        for s in f.swaps:
            ax.axvline(s, color="red", lw=0.8, ls="--")
        ax.set_title(f.label(name, r), fontsize=9)
    axes[-1, 0].set_xlabel("environment steps (red: colour swaps)")
    fig.suptitle(
        f"{f.title}: meta-learned {f.what} (blue) and reward per step (green), {f.seeds} seeds",
        fontsize=10,
    )
    return f.save(fig, "epsilon.png" if f.q_agent else "entropy_weight.png")


def plot(results: Dict, out_dir: str) -> List[str]:
    """The figures of a results (or summary) dict, written into `out_dir`."""
    f = _Figures(results, out_dir)
    objs = results["objectives"]
    paths = [_total_reward(f, objs)]
    objs = {n: r for n, r in objs.items() if "curves" in r}  # curves: runs made here
    paths += [_cumulative_reward(f, objs), _reward_rate(f, objs)]
    meta = [(n, r) for n, r in objs.items() if r["config"]["objective"] != "none"]
    if meta:
        paths.append(_meta_output(f, meta))
    return paths


def write_results(results: Dict, out_dir: str) -> None:
    """results.json (with the curves) and summary.json (without), each written
    atomically: a run stopped mid-write leaves the previous complete file.
    results.json has one number per line (indent 0: as small as no indent)."""
    summary = dict(
        results,
        objectives={
            name: {k: v for k, v in r.items() if k != "curves"}
            for name, r in results["objectives"].items()
        },
    )
    write_json_atomic(os.path.join(out_dir, "results.json"), results, indent=0)
    write_json_atomic(os.path.join(out_dir, "summary.json"), summary)


def main(argv: Sequence[str]) -> None:
    del argv
    try:
        if FLAGS.merge:
            _merge_main()
        else:
            _run_main()
    except ConfigError as e:  # bad input: one line, exit 2, nothing run
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def merge_files(wheres: Sequence[str]) -> Dict[str, Any]:
    """The results of every folder or file in `wheres` joined (`merge_results`)."""
    if not wheres:
        raise ConfigError("--merge is not allowed: it names no results")
    results = merge_results(None, _load(wheres[0]), wheres[0])
    for where in wheres[1:]:
        results = merge_results(results, _load(where), where)
    return results


def _merge_main() -> None:
    results = merge_files(FLAGS.merge)
    os.makedirs(FLAGS.out, exist_ok=True)
    write_results(results, FLAGS.out)
    for name, r in results["objectives"].items():
        print(
            f"{name:>12}: {len(r['seeds'])} seeds, total reward {r['mean']:8.1f}  "
            f"95% CI [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]"
        )
    _finish(results)


def _run_main() -> None:
    steps = parse_count("--steps", FLAGS.steps, "1e6")
    if FLAGS.seeds < 1:
        raise ConfigError(f"--seeds={FLAGS.seeds} is not allowed: must be >= 1")
    fields: Dict[str, Any] = {"matching": FLAGS.matching, "agent": FLAGS.agent}
    if FLAGS.hidden is not None:
        fields["hidden"] = FLAGS.hidden
    if FLAGS.swap_every is not None:
        fields["swap_every"] = FLAGS.swap_every
    configs = build_configs(FLAGS.objectives, int(steps), fields, FLAGS.override)
    seeds = list(range(FLAGS.seed_offset, FLAGS.seed_offset + FLAGS.seeds))
    os.makedirs(FLAGS.out, exist_ok=True)
    first = next(iter(configs.values()))
    results: Dict[str, Any] = {
        "agent": first.agent,
        "steps": int(steps),
        "log_every": first.log_every,
        "swap_every": first.swap_every,
        "objectives": {},
    }
    path = os.path.join(FLAGS.out, "results.json")
    if FLAGS.append and os.path.exists(path):
        old = _load(path)
        check_header(old, results, f"--append to {path} is not allowed")
        for name, cfg in configs.items():  # refuse before hours of running, not after
            check_chunk(old["objectives"].get(name), name, dataclasses.asdict(cfg), seeds, path)
        results["objectives"] = old["objectives"]
    for name, cfg in configs.items():
        r = run_objective(cfg, seeds)
        print(
            f"{name:>12}: total reward {r['mean']:8.1f}  95% CI [{r['ci95'][0]:.1f}, "
            f"{r['ci95'][1]:.1f}]  per seed {[round(x) for x in r['total_reward']]}  "
            f"run {r['runtime_s']} s (+{r['compile_s']} s compile)",
            flush=True,
        )
        results["objectives"][name] = merge_objective(results["objectives"].get(name), r)
        write_results(results, FLAGS.out)  # after every objective: a long run leaves partials
    _finish(results)


def _finish(results: Dict) -> None:
    if FLAGS.plots:
        for p in plot(results, FLAGS.out):
            print("wrote", p)
    print("wrote", os.path.join(FLAGS.out, "results.json"), "and summary.json")


if __name__ == "__main__":
    define_flags()
    app.run(main)
