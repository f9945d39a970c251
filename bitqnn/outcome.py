"""Verdicts as plain immutable data: what every engine returns and every report prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class Verdict(str, Enum):
    PROVED = "proved"
    FALSIFIED = "falsified"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Outcome:
    """An engine's answer. A FALSIFIED outcome carries its witness (flat integer input)."""

    verdict: Verdict
    engine: str
    seconds: float
    reason: str = ""
    witness: np.ndarray | None = None
    stats: dict = field(default_factory=dict)

    @staticmethod
    def unknown(engine: str, seconds: float, reason: str, **stats) -> Outcome:
        return Outcome(Verdict.UNKNOWN, engine, seconds, reason, None, dict(stats))
