"""The 57 Atari games, their reference scores, and human-normalised scores.

Pure Python (csv + statistics): importing this module loads nothing heavy and
reads no file until a function is called.

Human-normalised score, in percent (100 = human level, 0 = random play):
    HNS = 100 * (score - random) / (human - random)
"""

from __future__ import annotations

import csv
import difflib
import functools
import math
import os
import statistics
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional

_TABLE = os.path.join(os.path.dirname(__file__), "data", "atari57_reference_scores.csv")


class GameScores(NamedTuple):
    game: str  # CamelCase name, e.g. "MsPacman"
    ale_id: str  # ale-py ROM id, e.g. "ms_pacman"
    random: float  # score of uniform random play
    human: float  # score of the human tester


@functools.lru_cache(maxsize=None)
def reference_table() -> Dict[str, GameScores]:
    """All 57 games keyed by CamelCase name, in the table's order."""
    with open(_TABLE, newline="") as f:
        rows = list(csv.DictReader(f))
    table = {
        r["game"]: GameScores(r["game"], r["ale_id"], float(r["random"]), float(r["human"]))
        for r in rows
    }
    if len(table) != 57:
        raise RuntimeError(f"{_TABLE}: expected 57 games, found {len(table)}")
    return table


def all_games() -> List[str]:
    """The 57 CamelCase game names in the reference table's order."""
    return list(reference_table())


def suggest_game(name: str) -> Optional[str]:
    """The closest valid game name to `name` (case-insensitive), or None."""
    table = reference_table()
    lowered = {g.lower(): g for g in table}
    lowered.update({s.ale_id: s.game for s in table.values()})
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def unknown_game_message(name: str) -> str:
    hint = suggest_game(name)
    did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
    return (
        f"unknown Atari game {name!r}{did_you_mean}; allowed: one of the 57 games "
        f"of the reference table, e.g. 'Pong', 'Breakout', 'MsPacman' "
        f"(see configs.games.all_games())"
    )


def get_game(name: str) -> GameScores:
    """Look a game up by CamelCase name or ale id; a clear error otherwise."""
    table = reference_table()
    if name in table:
        return table[name]
    for s in table.values():
        if s.ale_id == name:
            return s
    raise ValueError(unknown_game_message(name))


def hns(game: str, score: float) -> float:
    """Human-normalised score of `score` on `game`, in percent."""
    s = get_game(game)
    return 100.0 * (score - s.random) / (s.human - s.random)


def _finite(values: Iterable[float]) -> List[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError("cannot aggregate an empty set of scores")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite normalised score(s) {bad}: all must be finite")
    return out


def median_hns(per_game: Mapping[str, float]) -> float:
    """Median of per-game HNS values (percent); games missing are not counted."""
    return statistics.median(_finite(per_game.values()))


def mean_hns(per_game: Mapping[str, float]) -> float:
    """Mean of per-game HNS values (percent)."""
    return statistics.fmean(_finite(per_game.values()))


def aggregate_hns(scores: Mapping[str, float]) -> Dict[str, float]:
    """Raw per-game scores -> {'median': %, 'mean': %, 'games': n}."""
    per_game = {g: hns(g, s) for g, s in scores.items()}
    return {"median": median_hns(per_game), "mean": mean_hns(per_game), "games": len(per_game)}
