"""Jittered exponential backoff, so a pool does not stampede a restarted coordinator."""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self, initial: float = 0.5, maximum: float = 15.0, rng: random.Random | None = None
    ):
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._failures = 0

    def next_delay(self) -> float:
        """Half the exponential step fixed, half random ("equal jitter")."""
        # The exponent is capped: past ~1024 failures 2**n no longer fits a float.
        step = min(self.maximum, self.initial * 2 ** min(self._failures, 64))
        self._failures += 1
        return float(step / 2 + self._rng.uniform(0, step / 2))

    def reset(self) -> None:
        self._failures = 0
