"""`python -m bot check`: configuration, database and providers, as a table; non-zero exit on a problem."""

from __future__ import annotations

import asyncio
import sys

from bot.config import Settings
from bot.logs import Redactor, redact_url, settings_secrets
from bot.providers import build_registry
from bot.providers.base import VideoProvider
from bot.store import open_store

HEALTH_TIMEOUT = 20.0


async def check(settings: Settings) -> int:
    rows: list[tuple[str, bool, str]] = []
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    rows.append(("DISCORD_TOKEN", bool(token), "set" if token else "missing (needed for run/gateway/worker)"))
    rows.append(("DISCORD_API_BASE", True, redact_url(settings.discord_api_base)))
    try:
        store = await open_store(settings.database_url)
        depth = await store.queue_depth()
        await store.close()
        rows.append(("database", True, f"{redact_url(settings.database_url)}: migrated, {depth} job(s) queued"))
    except Exception as exc:
        rows.append(("database", False, f"{redact_url(settings.database_url)}: {exc}"))
    registry = build_registry(settings)
    try:
        await registry.start()
        for provider in registry.providers:
            rows.append((f"provider {provider.name}", *await provider_row(provider)))
        default_ok = registry.model(registry.default_model) is not None
        rows.append(("DEFAULT_MODEL", default_ok, registry.default_model + ("" if default_ok else ": not configured")))
    finally:
        await registry.aclose()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rows.append(("DATA_DIR", True, str(settings.data_dir.resolve())))

    width = max(len(name) for name, _, _ in rows)
    # Every line is masked, not only the URLs above: a driver's error message can quote its connection string.
    redact = Redactor(settings_secrets(settings))
    for name, ok, detail in rows:
        print(redact(f"{'ok ' if ok else 'BAD'}  {name:<{width}}  {detail}"))
    problems = [name for name, ok, _ in rows if not ok]
    if problems:
        print(f"{len(problems)} problem(s): {', '.join(problems)}", file=sys.stderr)
        return 1
    return 0


async def provider_row(provider: VideoProvider) -> tuple[bool, str]:
    """Reachable, credentials accepted, models on offer: one line per provider."""
    try:
        health = await asyncio.wait_for(provider.health(), HEALTH_TIMEOUT)
    except TimeoutError:
        return False, f"no answer within {HEALTH_TIMEOUT:g} s"
    except Exception as exc:  # a check reports every failure as a row, never a traceback
        return False, f"{type(exc).__name__}: {exc}"
    if not health.reachable:
        return False, f"unreachable: {health.problem or 'no connection'}"
    if not health.authenticated:
        return False, f"credentials refused: {health.problem or 'check its key'}"
    if health.problem is not None:
        return False, health.problem
    models = ", ".join(health.models) if health.models else "no models offered"
    balance = f"; balance {health.balance}" if health.balance else ""
    return bool(health.models), f"reachable, authenticated{balance}; {models}"
