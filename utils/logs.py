"""Run logs: append-only CSV files and TensorBoard event files under the run folder.

`runs/<name>/logs/<label>.csv` (one row per `write`, header kept across
restarts, so a resumed run appends) and `runs/<name>/tb/<label>/` event files.
"""

from __future__ import annotations

import csv
import math
import os
import time
from typing import Dict, Mapping, Optional


class CsvLog:
    """Append rows to a CSV file; columns are fixed by the first row ever written."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._fields: Optional[list] = None
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, newline="") as f:
                self._fields = next(csv.reader(f), None)

    def write(self, row: Mapping[str, object]) -> None:
        new = self._fields is None
        fields = self._fields = list(row) if self._fields is None else self._fields
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k, ""), k) for k in fields})


def _fmt(v, column: str = ""):
    """Metrics to 6 significant digits; a Unix `time` to the millisecond
    (6 digits of 1.8e9 would be 10,000 s)."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3f}" if column == "time" else f"{v:.6g}"
    return v


def read_csv(path: str) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Logger:
    """CSV + TensorBoard for one process (`label`: learner, actor-0, evaluator...)."""

    def __init__(self, run_dir: str, label: str, tensorboard: bool = True):
        self.csv = CsvLog(os.path.join(run_dir, "logs", f"{label}.csv"))
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter  # noqa: PLC0415 (pure Python; imported only when used)

            self._tb = SummaryWriter(os.path.join(run_dir, "tb", label), flush_secs=10)

    def write(self, values: Mapping[str, float], step: int, step_key: str = "frames") -> None:
        row: Dict[str, object] = {"time": time.time(), step_key: step}
        row.update(values)
        self.csv.write(row)
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self._tb.add_scalar(k, float(v), global_step=int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
