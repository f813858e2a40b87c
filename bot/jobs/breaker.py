"""A circuit breaker per provider: after a run of failures that look like an outage, new jobs skip the provider
for a while instead of each waiting out its own retries.

Only submits are gated (a job a provider already took is polled there whatever happens). A job on a model alias
then falls back to the next model at once; any other job fails with a refund and says why. After the cool-down
one submit is let through; its outcome closes the breaker or opens it again. The state lives in each worker
process: it is about what this process sees, and it costs nothing to lose in a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.clock import Clock

FAILURES_TO_OPEN = 5
COOL_DOWN_SECONDS = 60.0


@dataclass
class _Circuit:
    failures: int = 0
    """Outage-like failures in a row."""
    open_until: float | None = None


class CircuitBreaker:
    def __init__(self, clock: Clock, *, failures_to_open: int = FAILURES_TO_OPEN,
                 cool_down: float = COOL_DOWN_SECONDS) -> None:  # fmt: skip
        self.clock = clock
        self.failures_to_open = failures_to_open
        self.cool_down = cool_down
        self._circuits: dict[str, _Circuit] = {}

    def is_open(self, provider: str) -> bool:
        """Whether a new submit to `provider` should be skipped now (after the cool-down, one is let through)."""
        circuit = self._circuits.get(provider)
        if circuit is None or circuit.open_until is None:
            return False
        if self.clock.now() >= circuit.open_until:
            circuit.open_until = None  # half open: the next outcome decides
            circuit.failures = self.failures_to_open - 1
            return False
        return True

    def reopens_in(self, provider: str) -> float:
        circuit = self._circuits.get(provider)
        if circuit is None or circuit.open_until is None:
            return 0.0
        return max(0.0, circuit.open_until - self.clock.now())

    def failed(self, provider: str) -> None:
        """An outage-like failure (unreachable, 5xx, timeouts): enough of them in a row open the circuit."""
        circuit = self._circuits.setdefault(provider, _Circuit())
        circuit.failures += 1
        if circuit.failures >= self.failures_to_open and circuit.open_until is None:
            circuit.open_until = self.clock.now() + self.cool_down

    def succeeded(self, provider: str) -> None:
        self._circuits.pop(provider, None)
