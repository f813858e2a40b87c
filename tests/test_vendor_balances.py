"""Where a vendor reports the account's balance, `python -m bot check` and `/videoadmin stats` show it: the figure,
asked at most every ten minutes, never a key."""

from __future__ import annotations

from pathlib import Path

from bot.clock import FakeClock
from bot.config import Settings
from bot.discord.stats_reply import stats_embed
from bot.jobs.balances import BALANCE_TTL, VendorBalances
from bot.jobs.stats import StatsService
from bot.providers import build_registry
from bot.store.base import Store
from tests.fakes.providers.luma import LumaFake
from tests.fakes.providers.runway import RunwayFake
from tests.test_check_command import run_bot


async def test_balances_are_asked_at_most_every_ttl_and_shown_in_the_stats(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    async with RunwayFake() as runway, LumaFake() as luma:
        runway.credit_balance = 12_345
        luma.credit_balance = 4_250  # US cents
        settings = Settings(_env_file=None, data_dir=tmp_path, **runway.settings(), **luma.settings())  # type: ignore[call-arg]
        registry = build_registry(settings)
        balances = VendorBalances(registry, clock)
        try:
            first = await balances.current()
            assert [(b.provider, b.balance) for b in first] == [("luma", "$42.50"), ("runway", "12,345 credits")]
            asked = len(runway.requests("GET /v1/organization"))
            clock.advance(BALANCE_TTL / 2)
            runway.credit_balance = 100
            assert [b.balance for b in await balances.current()] == ["$42.50", "12,345 credits"]
            assert len(runway.requests("GET /v1/organization")) == asked, "cached within the TTL"
            clock.advance(BALANCE_TTL)
            assert [b.balance for b in await balances.current()] == ["$42.50", "100 credits"]
        finally:
            await registry.aclose()
    embed = stats_embed(await StatsService(store, clock).server_stats(1, days=1), await balances.current())
    field = next(f for f in embed.fields if f.name == "Provider accounts")
    assert "`runway` · 100 credits" in str(field.value) and "<t:" in str(field.value)


async def test_check_prints_the_balance_but_never_the_key(tmp_path: Path) -> None:
    async with RunwayFake() as runway:
        runway.credit_balance = 777
        _, out = await run_bot(tmp_path, "check", env=runway.env())
    line = next(line for line in out.splitlines() if "provider runway" in line)
    assert line.startswith("ok ") and "balance 777 credits" in line, out
    assert runway.env()["RUNWAYML_API_SECRET"] not in out
