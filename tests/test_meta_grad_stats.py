"""experiments.two_colors.meta_grad_stats: statistics from chunked sums
(reference values by numpy), and --append refusing a file measured another
way. Measuring itself compiles for minutes (every estimator unrolled), so it
is not run here; that a chunk of samples start.. equals those rows of one
long run was checked when the sums were introduced (bit-identical
meta-gradients)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from experiments.two_colors import meta_grad_stats as mgs


def _fake_grads(n=50, p=7, seed=0):
    rng = np.random.default_rng(seed)
    names = mgs.ESTIMATORS + ("reference",)
    return {k: (rng.normal(size=(n, p)) + i * 0.3).astype(np.float32) for i, k in enumerate(names)}


def test_stats_from_sums_match_numpy():
    g = _fake_grads()
    stats = mgs.stats_from_sums(mgs.sums_of(g))
    ref = g["reference"].astype(np.float64).mean(0)
    for name, x in g.items():
        x = x.astype(np.float64)
        mean = x.mean(0)
        s = stats[name]
        np.testing.assert_allclose(s["mean_norm"], np.linalg.norm(mean), rtol=1e-12)
        np.testing.assert_allclose(s["variance_trace"], np.trace(np.cov(x.T)), rtol=1e-10)
        np.testing.assert_allclose(
            s["normalised_variance"], np.trace(np.cov(x.T)) / (mean @ mean), rtol=1e-10
        )
        np.testing.assert_allclose(
            s["se_over_norm"],
            np.sqrt(np.trace(np.cov(x.T)) / len(x)) / np.linalg.norm(mean),
            rtol=1e-10,
        )
        np.testing.assert_allclose(
            s["cosine_to_reference"],
            mean @ ref / (np.linalg.norm(mean) * np.linalg.norm(ref)),
            rtol=1e-10,
        )
        norms = np.linalg.norm(x, axis=1)
        np.testing.assert_allclose(s["median_norm"], np.median(norms), rtol=1e-12)
        np.testing.assert_allclose(s["max_norm"], norms.max(), rtol=1e-12)
    np.testing.assert_allclose(stats["reference"]["cosine_to_reference"], 1.0, rtol=1e-12)


def test_sums_of_chunks_add_up_to_the_whole():
    g = _fake_grads(n=30)
    head = mgs.sums_of({k: v[:12] for k, v in g.items()})
    tail = mgs.sums_of({k: v[12:] for k, v in g.items()})
    whole, joined = mgs.sums_of(g), mgs.add_sums(head, tail)
    for k in g:
        assert joined[k]["n"] == 30
        np.testing.assert_allclose(joined[k]["sum"], whole[k]["sum"], rtol=1e-12)
        np.testing.assert_allclose(joined[k]["sumsq"], whole[k]["sumsq"], rtol=1e-12)
        np.testing.assert_allclose(joined[k]["norms"], whole[k]["norms"], rtol=1e-12)


def _cli(tmp_path, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.two_colors.meta_grad_stats",
            f"--out={tmp_path}",
            "--samples=2",
            "--warmup=0",
            "--reference_k=8",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_append_refuses_other_setup_and_old_files(tmp_path):
    facts = {
        "warmup_steps": 0,
        "reference_k": 8,
        "mix_lambda": 0.5,
        "hidden": 64,
        "seed": 0,
        "backend": "cpu",
        "chunks": [{"start": 0, "samples": 2, "seconds": 1.0}],
    }
    stats_file = tmp_path / "stats.json"
    stats_file.write_text(json.dumps({"facts": facts, "sums": mgs.sums_of(_fake_grads(n=2))}))
    before = stats_file.read_text()
    done = _cli(tmp_path, "--append", "--hidden=8")
    assert done.returncode == 2 and "'hidden': 64" in done.stderr and "'hidden': 8" in done.stderr
    assert stats_file.read_text() == before
    for old in (
        {"facts": dict(facts, samples=2), "stats": {}},  # before the sums
        {
            "facts": facts,
            "sums": {
                k: {kk: vv for kk, vv in v.items() if kk != "norms"}
                for k, v in mgs.sums_of(_fake_grads(n=2)).items()
            },
        },
    ):
        stats_file.write_text(json.dumps(old))
        done = _cli(tmp_path, "--append", "--hidden=64")
        assert done.returncode == 2 and "not a stats file of this version" in done.stderr
    done = _cli(tmp_path, "--batch=0")
    assert done.returncode == 2 and "--batch=0" in done.stderr
