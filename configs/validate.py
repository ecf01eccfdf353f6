"""Validators for frozen config dataclasses.

Each raises ConfigError naming the class, the field, the value and what is
allowed. Call them from a dataclass's ``__post_init__``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence


class ConfigError(ValueError):
    """A configuration value is not allowed."""


def fail(owner: Any, field: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{type(owner).__name__}.{field}={value!r} is not allowed: {allowed}")


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_int(owner: Any, field: str, lo: int = 1, hi: Optional[int] = None) -> None:
    v = getattr(owner, field)
    ok = is_int(v) and v >= lo and (hi is None or v <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        fail(owner, field, v, f"must be an integer {rng}")


def check_num(
    owner: Any,
    field: str,
    lo: float = 0.0,
    hi: float = math.inf,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    v = getattr(owner, field)
    ok = is_num(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        fail(owner, field, v, f"must be a finite number in {left}{lo}, {hi}{right}")


def check_bool(owner: Any, field: str) -> None:
    if not isinstance(getattr(owner, field), bool):
        fail(owner, field, getattr(owner, field), "must be True or False")


def check_choice(owner: Any, field: str, allowed: Sequence[str]) -> None:
    v = getattr(owner, field)
    if v not in allowed:
        fail(owner, field, v, f"must be one of {list(allowed)}")
