"""One run folder on disk, read and written in one place.

    <run>/config.json          the RunConfig the program runs (`launch.run`; a
                               sweep writes it before starting the program)
    <run>/checkpoints/         `learner.checkpoint` files; their headers hold the counters
    <run>/logs/learner.csv     one row per learner log interval
    <run>/logs/evaluator.csv   one row per evaluation episode
    <run>/sweep-done.json      a sweep's marker: the run reached its budget
    <run>/sweep.log            a sweep's copy of the program's output
    <run>/run.lock             held while a program runs on it (`utils.lifeline`)

The truth about progress is the newest readable checkpoint: a run is finished
when its counters meet the budget, by the learner's own stopping test
(`configs.config.budget_reached`). The sweep, the report, Slurm, the
learning-curve study and the tests all ask this module.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import re
import statistics
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from configs import RunConfig, load_config, save_config
from configs.config import budget_reached
from configs.games import reference_table
from learner.checkpoint import CheckpointError, checkpoint_dir, list_checkpoints, read_header
from utils.files import read_json_or, write_json_atomic
from utils.logs import read_csv

CONFIG_FILE = "config.json"
DONE_MARKER = "sweep-done.json"
RUN_LOG = "sweep.log"
_SWEEP_NAME = re.compile(r"^(?P<game>.+)-seed(?P<seed>\d+)$")


class Progress(NamedTuple):
    """How far a run is against a budget."""

    finished: bool
    frames: float
    learner_steps: float
    source: str  # where the counters came from: "marker", "checkpoint" or "none"
    counters: Optional[Dict[str, Any]]  # the newest checkpoint's, with its path


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


class RunFolder:
    """The files of the run at `path` (which need not exist yet)."""

    def __init__(self, path: str):
        self.path = path

    def __repr__(self) -> str:
        return f"RunFolder({self.path!r})"

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    # ------------------------------------------------------------------ config
    @property
    def config_path(self) -> str:
        return self.file(CONFIG_FILE)

    def load_config(self) -> RunConfig:
        return load_config(self.config_path)

    def save_config(self, cfg: RunConfig) -> None:
        save_config(cfg, self.config_path)

    # ---------------------------------------------------------------- progress
    def checkpoints(self) -> List[str]:
        """Paths of its complete checkpoint files, oldest first."""
        return [path for _, path in list_checkpoints(checkpoint_dir(self.path))]

    def checkpoint_counters(self) -> Optional[Dict[str, Any]]:
        """Counters of the newest readable checkpoint, with its `checkpoint`
        path and `learner_steps` (reads only the JSON header); None if none."""
        for step, path in reversed(list_checkpoints(checkpoint_dir(self.path))):
            try:
                header = read_header(path)
            except CheckpointError:  # corrupt or half-deleted: try the previous one
                continue
            counters: Dict[str, Any] = dict(header.get("counters", {}))
            counters.setdefault("learner_steps", float(header.get("step", step)))
            counters["checkpoint"] = path
            return counters
        return None

    def marker(self) -> Optional[Dict[str, Any]]:
        """The sweep's done marker, or None (absent or unreadable)."""
        return read_json_or(self.file(DONE_MARKER), None)

    def write_marker(self, counters: Dict[str, Any], **facts: Any) -> None:
        marker = dict(
            facts,
            frames=float(counters.get("frames", 0)),
            learner_steps=float(counters.get("learner_steps", 0)),
            checkpoint=counters.get("checkpoint"),
            finished_at=now(),
        )
        write_json_atomic(self.file(DONE_MARKER), marker)

    def clear_marker(self) -> None:
        """Drop a marker that met an older, smaller budget."""
        try:
            os.unlink(self.file(DONE_MARKER))
        except FileNotFoundError:
            pass

    def progress(self, max_frames: Optional[int], max_learner_steps: int = 0) -> Progress:
        """Progress against a budget: the marker when it meets the budget, else
        the newest checkpoint. Without a budget (`max_frames=None`, a folder
        found without its plan) a marker alone means finished."""

        def meets(c: Optional[Dict[str, Any]]) -> bool:
            if c is None:
                return False
            if max_frames is None:
                return c is marker
            return budget_reached(
                float(c.get("frames", 0)),
                float(c.get("learner_steps", 0)),
                max_frames,
                max_learner_steps or 0,
            )

        marker = self.marker()
        if marker is not None and meets(marker):
            return Progress(
                True,
                float(marker.get("frames", 0)),
                float(marker.get("learner_steps", 0)),
                "marker",
                None,
            )
        counters = self.checkpoint_counters()
        return Progress(
            meets(counters),
            float((counters or {}).get("frames", 0)),
            float((counters or {}).get("learner_steps", 0)),
            "checkpoint" if counters else "none",
            counters,
        )

    def progress_of(self, cfg: RunConfig) -> Progress:
        """Progress against `cfg`'s own budget."""
        return self.progress(cfg.max_frames, cfg.max_learner_steps)

    # -------------------------------------------------------------------- logs
    def learner_rows(self) -> List[Dict[str, str]]:
        """Rows of logs/learner.csv ([] before the first)."""
        return _rows(self.file("logs", "learner.csv"))

    def evaluator_rows(self) -> List[Dict[str, str]]:
        """Rows of logs/evaluator.csv ([] before the first episode)."""
        return _rows(self.file("logs", "evaluator.csv"))

    def learner_steps_logged(self) -> int:
        """The newest learner step in logs/learner.csv (0 before the first row)."""
        rows = self.learner_rows()
        return int(float(rows[-1]["learner_steps"])) if rows else 0

    def episodes(self, game: Optional[str] = None) -> List[Tuple[float, float]]:
        """[(frames, unclipped return)] of the evaluation episodes (of `game`
        only, when given), in file order."""
        out = []
        for row in self.evaluator_rows():
            if game is not None and row.get("game") not in (None, "", game):
                continue
            try:
                ret, frames = float(row["episode_return"]), float(row.get("frames") or "nan")
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(ret):
                out.append((frames, ret))
        return out

    def learner_fps(self, last: int = 10) -> Optional[float]:
        """Median `learner_fps` of the last `last` learner rows: the whole
        program's speed on its host (None before any)."""
        values = []
        for row in self.learner_rows()[-last:]:
            try:
                v = float(row.get("learner_fps") or "nan")
            except ValueError:
                continue
            if math.isfinite(v) and v > 0:
                values.append(v)
        return statistics.median(values) if values else None

    def game(self) -> Optional[str]:
        """The Atari game of a folder found without its plan: from a sweep's
        `<Game>-seed<k>` name, else from its evaluator log."""
        table = reference_table()
        m = _SWEEP_NAME.match(self.name)
        if m and m.group("game") in table:
            return m.group("game")
        for row in self.evaluator_rows():
            if row.get("game") in table:
                return row["game"]
        return None

    def sweep_seed(self) -> int:
        """The seed in a sweep's `<Game>-seed<k>` folder name (0 otherwise)."""
        m = _SWEEP_NAME.match(self.name)
        return int(m.group("seed")) if m else 0


def _rows(path: str) -> List[Dict[str, str]]:
    if not os.path.exists(path):
        return []
    try:
        return read_csv(path)
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
