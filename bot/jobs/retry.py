"""Retry timing: exponential backoff with jitter, and the provider's Retry-After when it gives one."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.25
    """Fraction of the delay added at random, so many jobs failing together do not retry together."""
    max_retry_after: float = 600.0
    """A Retry-After longer than this is capped (a provider asking for an hour is treated as ten minutes)."""

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before try number `attempt + 1` (attempt counts from 1)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        draw: float = (rng or random).random()
        return backoff * (1 + self.jitter * draw)
