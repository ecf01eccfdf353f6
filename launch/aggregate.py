"""Aggregates over runs and games with bootstrap confidence intervals.

Scores are arrays [runs, games] (one row per seed, one column per game), as
rliable (Agarwal et al. 2021, "Deep RL at the edge of the statistical
precipice") takes them. The interquartile mean (IQM), median and mean come
with percentile CIs from rliable's stratified bootstrap: runs are resampled
with replacement within each game. With one game this is the ordinary
bootstrap of the per-seed scores.
"""

from __future__ import annotations

import warnings
from typing import Dict, Mapping

import numpy as np

STATISTICS = ("iqm", "median", "mean")


def _aggregates(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics  # noqa: PLC0415 (loads scipy and pandas: only when aggregating)

    return np.array(
        [metrics.aggregate_iqm(scores), metrics.aggregate_median(scores), np.mean(scores)]
    )


def interval_estimates(
    scores: Mapping[str, np.ndarray], reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Dict[str, Dict[str, object]]:
    """{name: {"runs", "games", "iqm", "iqm_ci", "median", "median_ci", "mean",
    "mean_ci"}} for each `scores[name]` of shape [runs, games]; the CIs are
    [low, high] at `confidence` from `reps` bootstrap draws (seeded)."""
    from rliable import library as rly  # noqa: PLC0415 (rliable loads scipy, pandas)

    arrays = {}
    for name, s in scores.items():
        a = np.asarray(s, dtype=float)
        if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)):
            raise ValueError(
                f"scores[{name!r}] has shape {a.shape}: it must be a finite array "
                f"[runs, games] with at least one run and one game"
            )
        arrays[name] = a
    with warnings.catch_warnings():
        # rliable passes arch a RandomState, which arch 7 calls deprecated.
        warnings.simplefilter("ignore", FutureWarning)
        points, intervals = rly.get_interval_estimates(
            arrays,
            _aggregates,
            reps=reps,
            confidence_interval_size=confidence,
            random_state=np.random.RandomState(seed),
        )
    out: Dict[str, Dict[str, object]] = {}
    for name, a in arrays.items():
        row: Dict[str, object] = {"runs": int(a.shape[0]), "games": int(a.shape[1])}
        for i, stat in enumerate(STATISTICS):
            row[stat] = float(points[name][i])
            row[f"{stat}_ci"] = [float(intervals[name][0, i]), float(intervals[name][1, i])]
        out[name] = row
    return out
