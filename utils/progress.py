"""Progress against a budget: the share done and an ETA from the recent rate
(an exponential moving average of the share per second, as Sample Factory
reports it), so a slow start or a pause does not skew it for long."""

from __future__ import annotations

import math
from typing import Optional


class Eta:
    """`update(now, share)` -> seconds left at the recent rate (None until two
    readings have shown progress). `smoothing` weighs the newest rate."""

    def __init__(self, smoothing: float = 0.3):
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing={smoothing!r} is not allowed: must be in (0, 1]")
        self._smoothing = smoothing
        self._last: Optional[tuple] = None
        self._rate: Optional[float] = None

    def update(self, now: float, share: float) -> Optional[float]:
        if self._last is not None and now > self._last[0]:
            rate = (share - self._last[1]) / (now - self._last[0])
            a = self._smoothing
            self._rate = rate if self._rate is None else a * rate + (1 - a) * self._rate
        self._last = (now, share)
        if share >= 1.0:
            return 0.0
        if not self._rate or self._rate <= 0:
            return None
        return (1.0 - share) / self._rate


def format_duration(seconds: Optional[float]) -> str:
    """'3.5 days', '1h02m', '4m05s', '12s'; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 2 * 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
