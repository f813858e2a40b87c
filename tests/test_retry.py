"""The one retry loop: which errors are tried again, how long it waits, and when it gives up."""

from __future__ import annotations

import pytest

from bot.clock import FakeClock
from bot.errors import DeliveryError, ProviderError, StoreError
from bot.jobs.retry import FOREVER, RetryPolicy, retrying

POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, jitter=0.0)


class Flaky:
    """Fails with the given errors, one per call, then answers "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def test_transient_errors_are_retried_with_exponential_backoff() -> None:
    clock = FakeClock()
    call = Flaky(StoreError("down"), StoreError("down"), StoreError("down"))
    assert await retrying(call, what="t", policy=POLICY, clock=clock) == "done"
    assert call.calls == 4
    assert clock.slept == [1.0, 2.0, 4.0]


async def test_retry_after_is_honoured_and_capped() -> None:
    clock = FakeClock()
    call = Flaky(ProviderError("429", retryable=True, retry_after=7.0), ProviderError("429", retryable=True,
                 retry_after=3600.0))  # fmt: skip
    assert await retrying(call, what="t", policy=POLICY, clock=clock, retry_on=ProviderError) == "done"
    assert clock.slept == [7.0, POLICY.max_retry_after]


async def test_an_error_that_says_it_is_final_is_raised_at_once() -> None:
    clock = FakeClock()
    call = Flaky(DeliveryError("forbidden", retryable=False))
    with pytest.raises(DeliveryError):
        await retrying(call, what="t", policy=POLICY, clock=clock, retry_on=DeliveryError)
    assert (call.calls, clock.slept) == (1, [])


async def test_errors_outside_retry_on_pass_through_untouched() -> None:
    clock = FakeClock()
    call = Flaky(ValueError("a bug"))
    with pytest.raises(ValueError):
        await retrying(call, what="t", policy=POLICY, clock=clock, retry_on=StoreError)
    assert (call.calls, clock.slept) == (1, [])


async def test_it_gives_up_after_the_attempts_with_the_last_error() -> None:
    clock = FakeClock()
    call = Flaky(*(StoreError(f"down {n}") for n in range(1, 10)))
    with pytest.raises(StoreError, match="down 4"):
        await retrying(call, what="t", policy=POLICY, clock=clock)
    assert call.calls == POLICY.max_attempts
    with pytest.raises(StoreError, match="down 6"):
        await retrying(call, what="t", policy=POLICY, clock=clock, attempts=2)


async def test_a_predicate_can_refuse_a_retry() -> None:
    clock = FakeClock()
    call = Flaky(StoreError("lease lost"))
    with pytest.raises(StoreError):
        await retrying(call, what="t", policy=POLICY, clock=clock, transient=lambda exc: "lease" not in str(exc))
    assert call.calls == 1


async def test_forever_retries_past_the_policy_until_told_to_stop() -> None:
    clock = FakeClock()
    call = Flaky(*(StoreError("down") for _ in range(10)))
    assert await retrying(call, what="t", policy=POLICY, clock=clock, attempts=FOREVER) == "done"
    assert call.calls == 11
    assert clock.slept[-1] == POLICY.max_delay, "the backoff is capped"

    stopping = Flaky(*(StoreError("down") for _ in range(10)))
    with pytest.raises(StoreError):
        await retrying(stopping, what="t", policy=POLICY, clock=clock, attempts=FOREVER,
                       keep_going=lambda: stopping.calls < 3)  # fmt: skip
    assert stopping.calls == 3, "no call once the caller stops"
