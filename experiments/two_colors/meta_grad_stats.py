"""Bias and variance of meta-gradient estimators on two-colors.

    python -m experiments.two_colors.meta_grad_stats --samples=256
        --out=runs/meta_grad_stats [--append]

At fixed parameters (an agent trained for `--warmup` steps with the `none`
objective, so its meta-network is at its initial value), every sample draws
fresh rollouts from its own key exactly as training would (each inner
update's next batch is collected by the updated agent) and computes, on the
same data, the meta-gradient of each estimator:
  MG K = 1, 2, 4, 8; mixed (K = 8, lambda-geometric); BMG L = 1, 4 (K = 1, KL).
Reported per estimator over the samples: the norm of the mean meta-gradient,
the variance (trace of the covariance), and the cosine similarity of the mean
to a long-horizon reference (MG with K = `--reference_k`, averaged over the
same samples) as a bias proxy. BMG's gradient has another scale (it matches a
target rather than descending f), so compare it by cosine and by the
normalised variance `trace(Cov) / |mean|^2` (also reported).
The per-estimator sums are kept in stats.json, so `--append` adds more
samples (the next indices) across runs until the cosines mean something: the
`se_over_norm` column says how far each mean is from that. The scale of
every estimator depends strongly on the point (the warmup seed): compare
estimators at one point and measure at several `--seed`s.
Writes stats.json, summary.json (stats.json without the sums) and stats.png
into --out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from matplotlib.figure import Figure

from configs import ConfigError, parse_count
from experiments.two_colors import system as tc_system
from experiments.two_colors.config import TwoColorsConfig
from utils.files import write_json_atomic

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The absl flags of `python -m experiments.two_colors.meta_grad_stats`, defined
    only when it runs as a script: importing the module defines nothing (absl
    flags are global, and other modules define the same names, such as --seed
    and --override)."""
    flags.DEFINE_integer("samples", 256, "independent batches (keys) per estimator")
    flags.DEFINE_string("warmup", "2e5", "training steps before the measurement")
    flags.DEFINE_integer("reference_k", 16, "inner steps of the reference MG meta-gradient")
    flags.DEFINE_float("mix_lambda", 0.5, "lambda of the mixed estimator (K = 8)")
    flags.DEFINE_integer("hidden", 64, "hidden width of actor and critic")
    flags.DEFINE_integer("seed", 0, "seed")
    flags.DEFINE_string("out", "runs/meta_grad_stats", "output folder")
    flags.DEFINE_integer("batch", 32, "samples vmapped at once (larger on an accelerator)")
    flags.DEFINE_boolean(
        "append",
        False,
        "add this run's samples (the next sample indices) to "
        "--out/stats.json measured with the same setup",
    )


ESTIMATORS = ("mg_k1", "mg_k2", "mg_k4", "mg_k8", "mixed_k8", "bmg_l1", "bmg_l4")


def sample_grads(
    samples: int,
    start: int,
    warmup_steps: int,
    reference_k: int,
    mix_lambda: float,
    hidden: int,
    seed: int,
    batch: int = 32,
):
    """Meta-gradients of every estimator (and the reference) on samples
    start .. start + samples - 1: {name: [samples, P] float32}. Sample i's data
    comes from fold_in(PRNGKey(seed + 1), i), so chunks of samples measured in
    different runs are the same draws as one long run."""
    cfg = TwoColorsConfig(objective="none", hidden=hidden, steps=max(warmup_steps, 16))
    system = tc_system.make_system(cfg)
    state = system.init(jax.random.PRNGKey(seed))
    state, _ = jax.jit(
        lambda s: jax.lax.scan(
            lambda c, _: system.cycle(c), s, None, length=tc_system.num_cycles(cfg)
        )
    )(state)
    # The warmup (objective none) holds the meta-network with its output weights
    # at zero; measure at the initial value a meta-learner starts from.
    meta_start = tc_system.make_system(dataclasses.replace(cfg, objective="mg"))
    state = state._replace(meta_params=meta_start.init(jax.random.PRNGKey(seed)).meta_params)
    meta, upd = system.meta, system.inner_update
    horizon = max(reference_k, 8)
    mix = TwoColorsConfig(objective="mixed", K=8, mix_lambda=mix_lambda).mix_coefficients

    def flat(tree):
        return jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(tree)])

    def one_sample(index):
        key = jax.random.fold_in(jax.random.PRNGKey(seed + 1), index)
        # `horizon` + 1 rollouts, each collected by the agent after the updates so far.
        batches, p, o, es = [state.pending], state.params, state.opt_state, state.env_state
        for k, kk in enumerate(jax.random.split(key, horizon)):
            p, o, _ = upd(p, o, state.meta_params, batches[-1])
            es, b = system.collect(p, es, batches[-1].meta_input, kk)
            batches.append(b)
        w, x0, s0 = state.meta_params, state.params, state.opt_state
        grads = {}
        for K in (1, 2, 4, 8):
            grads[f"mg_k{K}"] = flat(jax.grad(meta.mg)(w, x0, s0, batches[:K], batches[K]))
        grads["mixed_k8"] = flat(jax.grad(meta.mixed)(w, x0, s0, batches[:8], batches[1:9], mix))
        for L in (1, 4):  # K = 1; L - 1 rule steps on the agent's next batches
            x1, s1 = meta.unroll(w, x0, s0, batches[:1])[-1]
            target = meta.bootstrap_target(x1, s1, w, batches[1:L], batches[L])
            grads[f"bmg_l{L}"] = flat(
                jax.grad(meta.bmg)(w, x0, s0, batches[:1], batches[L], target)
            )
        grads["reference"] = flat(
            jax.grad(meta.mg)(w, x0, s0, batches[:reference_k], batches[reference_k])
        )
        return grads

    run = jax.jit(jax.vmap(one_sample))
    index = np.arange(start, start + samples, dtype=np.int32)
    chunks = [jax.device_get(run(index[i : i + batch])) for i in range(0, samples, batch)]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def sums_of(grads) -> Dict:
    """Sufficient statistics per estimator: n, sum of the vectors, sum of their
    squared norms (float64), and each sample's norm (for the median and the
    tail, which the moments hide); chunks add up with add_sums."""
    sums = {}
    for k, g in grads.items():
        g = g.astype(np.float64)
        sq = (g**2).sum(1)
        sums[k] = {
            "n": len(g),
            "sum": g.sum(0).tolist(),
            "sumsq": float(sq.sum()),
            "norms": np.sqrt(sq).tolist(),
        }
    return sums


def add_sums(a: Dict, b: Dict) -> Dict:
    return {
        k: {
            "n": a[k]["n"] + b[k]["n"],
            "sum": (np.asarray(a[k]["sum"]) + np.asarray(b[k]["sum"])).tolist(),
            "sumsq": a[k]["sumsq"] + b[k]["sumsq"],
            "norms": a[k]["norms"] + b[k]["norms"],
        }
        for k in a
    }


def stats_from_sums(sums: Dict) -> Dict:
    """Per estimator: |mean|, trace(Cov) (unbiased), trace(Cov) / |mean|^2,
    the standard error of the mean relative to its norm (sqrt(trace(Cov) / n)
    / |mean|: the cosine below means something only where this is well below
    1 for the estimator and the reference), cos(mean, reference mean), and the
    median and largest per-sample norm (heavy tails show as max >> median)."""
    ref = np.asarray(sums["reference"]["sum"]) / sums["reference"]["n"]
    stats = {}
    for name in ESTIMATORS + ("reference",):
        n, mean = sums[name]["n"], np.asarray(sums[name]["sum"]) / sums[name]["n"]
        norm2 = float(mean @ mean)
        var = max(sums[name]["sumsq"] - n * norm2, 0.0) / (n - 1)
        stats[name] = {
            "mean_norm": norm2**0.5,
            "variance_trace": var,
            "normalised_variance": var / norm2 if norm2 > 0 else float("inf"),
            "se_over_norm": (var / n) ** 0.5 / norm2**0.5 if norm2 > 0 else float("inf"),
            "cosine_to_reference": float(mean @ ref / ((norm2 * float(ref @ ref)) ** 0.5 + 1e-30)),
            "median_norm": float(np.median(sums[name]["norms"])),
            "max_norm": float(np.max(sums[name]["norms"])),
        }
    return stats


def plot(stats, path):
    names = list(ESTIMATORS)
    fig = Figure(figsize=(17, 3.6))
    axes = fig.subplots(1, 4)
    for ax, key, title in zip(
        axes,
        ("variance_trace", "normalised_variance", "median_norm", "cosine_to_reference"),
        (
            "variance: trace(Cov)",
            "trace(Cov) / |mean|^2",
            "median per-sample norm",
            "cosine(mean, reference)",
        ),
    ):
        values = [stats[n][key] for n in names]
        ax.bar(
            names,
            values,
            color=[
                "C0" if n.startswith("mg") else "C1" if n.startswith("mixed") else "C2"
                for n in names
            ],
        )
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45)
        if key != "cosine_to_reference":  # bars from well below the smallest, so each shows
            ax.set_yscale("log")
            ax.set_ylim(bottom=min(v for v in values if v > 0) / 10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


SETUP = ("warmup_steps", "reference_k", "mix_lambda", "hidden", "seed", "backend")


def main(argv):
    del argv
    try:
        warmup = parse_count("--warmup", FLAGS.warmup, "2e5", minimum=0)
        if FLAGS.samples < 2 or FLAGS.reference_k < 8 or FLAGS.batch < 1:
            raise ValueError(
                f"--samples={FLAGS.samples} (>= 2), --reference_k="
                f"{FLAGS.reference_k} (>= 8), --batch={FLAGS.batch} (>= 1)"
            )
        _main(warmup)
    except (ConfigError, ValueError) as e:
        print(f"error: bad flag value: {e}", file=sys.stderr)
        sys.exit(2)


def _main(warmup: int) -> None:
    facts = {
        "warmup_steps": warmup,
        "reference_k": FLAGS.reference_k,
        "mix_lambda": FLAGS.mix_lambda,
        "hidden": FLAGS.hidden,
        "seed": FLAGS.seed,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "chunks": [],
    }
    path = os.path.join(FLAGS.out, "stats.json")
    old, start = None, 0
    if FLAGS.append and os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f)
            old_setup = {k: old["facts"][k] for k in SETUP}
            start, facts["chunks"] = old["sums"]["reference"]["n"], old["facts"]["chunks"]
            len(old["sums"]["reference"]["norms"])  # KeyError: a file without per-sample norms
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(
                f"--append to {path} is not allowed: not a stats file of this "
                f"version ({e!r}); measure into another --out"
            ) from None
        if old_setup != {k: facts[k] for k in SETUP}:
            raise ConfigError(
                f"--append to {path} is not allowed: it was measured with "
                f"{old_setup}, this run has { ({k: facts[k] for k in SETUP}) }"
            )
    t0 = time.time()
    sums = sums_of(
        sample_grads(
            FLAGS.samples,
            start,
            warmup,
            FLAGS.reference_k,
            FLAGS.mix_lambda,
            FLAGS.hidden,
            FLAGS.seed,
            FLAGS.batch,
        )
    )
    facts["chunks"].append(
        {"start": start, "samples": FLAGS.samples, "seconds": round(time.time() - t0, 1)}
    )
    if old:
        sums = add_sums(old["sums"], sums)
    facts["samples"] = sums["reference"]["n"]
    facts["seconds"] = round(sum(c["seconds"] for c in facts["chunks"]), 1)
    stats = stats_from_sums(sums)
    # Atomic: a long measurement is never left half-written. summary.json is
    # the same without the sums (what the tables and stats.png are made of).
    write_json_atomic(path, {"facts": facts, "stats": stats, "sums": sums})
    write_json_atomic(os.path.join(FLAGS.out, "summary.json"), {"facts": facts, "stats": stats})
    plot(stats, os.path.join(FLAGS.out, "stats.png"))
    print(
        f"{'estimator':10s} {'|mean|':>10s} {'tr(Cov)':>10s} {'tr/|m|^2':>10s} "
        f"{'se/|m|':>8s} {'cos(ref)':>9s} {'median|g|':>10s} {'max|g|':>10s}"
    )
    for name, s in stats.items():
        print(
            f"{name:10s} {s['mean_norm']:10.3e} {s['variance_trace']:10.3e} "
            f"{s['normalised_variance']:10.3e} {s['se_over_norm']:8.3f} "
            f"{s['cosine_to_reference']:9.3f} {s['median_norm']:10.3e} {s['max_norm']:10.3e}"
        )
    print(
        f"{facts['samples']} samples ({FLAGS.samples} this run) in {facts['seconds']:.0f} s; "
        f"wrote {path}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
