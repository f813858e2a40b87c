"""Retry timing (exponential backoff with jitter, or the provider's Retry-After) and the one retry loop.

Every call the engine repeats goes through `retrying`: provider calls, clip posts, the record of a step through
a database outage, and the worker's own loops (claiming, heartbeat). What differs between them is only which
errors are worth another try and how many tries there are.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bot.clock import Clock

log = logging.getLogger(__name__)
T = TypeVar("T")

FOREVER = 0
"""`attempts=FOREVER`: no limit on the tries (a loop the whole process depends on), only `keep_going`."""


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


def says_retryable(error: Exception) -> bool:
    """Errors that know whether a repeat may succeed say so (`retryable`); any other is worth another try."""
    return bool(getattr(error, "retryable", True))


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy,
    clock: Clock,
    retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
    transient: Callable[[Exception], bool] = says_retryable,
    attempts: int | None = None,
    keep_going: Callable[[], bool] | None = None,
    trace: bool = False,
) -> T:
    """Await `call` until it returns, waiting between tries (the error's own `retry_after` when it has one,
    else `policy`'s backoff). An error of `retry_on` that is `transient` is tried again, up to `attempts` tries
    in all (default `policy.max_attempts`, or `FOREVER`) and while `keep_going()`; the last error, and any
    other, is raised to the caller. `what` names the call in the log ("job 1a2b: submit"); `trace` adds the
    traceback (for errors nobody expected)."""
    limit = policy.max_attempts if attempts is None else attempts
    attempt = 1
    while True:
        try:
            return await call()
        except retry_on as exc:
            if not transient(exc) or attempt == limit:
                raise
            retry_after = getattr(exc, "retry_after", None)
            wait = policy.delay(attempt, retry_after if isinstance(retry_after, int | float) else None)
            log.warning("%s failed (%s); try %d in %.1fs", what, exc, attempt + 1, wait, exc_info=trace)
            await clock.sleep(wait)
            if keep_going is not None and not keep_going():
                raise
            attempt += 1
