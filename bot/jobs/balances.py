"""The account balances vendors report (Runway's credits, Luma's dollars, Vidu's credits), for the server's
stats: asked through each provider's health probe at most once per `ttl`, since each ask is a request to the
vendor. A figure, never a key; a vendor that reports none is left out."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.clock import Clock
from bot.providers.registry import ProviderRegistry

log = logging.getLogger(__name__)

BALANCE_TTL = 600.0
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Balance:
    provider: str
    balance: str
    checked_at: float
    """Epoch seconds of the ask that reported it."""


class VendorBalances:
    def __init__(self, registry: ProviderRegistry, clock: Clock, *, ttl: float = BALANCE_TTL) -> None:
        self.registry = registry
        self.clock = clock
        self.ttl = ttl
        self._known: dict[str, Balance] = {}
        self._asked_at: float | None = None
        self._lock = asyncio.Lock()

    async def current(self) -> list[Balance]:
        """The last figures, asked again when older than `ttl` (one ask at a time, whoever calls)."""
        async with self._lock:
            now = self.clock.now()
            if self._asked_at is None or now - self._asked_at >= self.ttl:
                self._asked_at = now
                await asyncio.gather(*(self._ask(name, now) for name in self.registry.provider_names()))
        return sorted(self._known.values(), key=lambda b: b.provider)

    async def _ask(self, name: str, now: float) -> None:
        try:
            health = await asyncio.wait_for(self.registry.provider(name).health(), PROBE_TIMEOUT)
        except Exception as exc:  # a failed ask keeps the last figure: the stats still answer
            log.info("provider %s: balance not known (%s)", name, type(exc).__name__)
            return
        if health.balance is not None:
            self._known[name] = Balance(name, health.balance, now)
