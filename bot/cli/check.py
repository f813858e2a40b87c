"""`python -m bot check`: configuration, database and providers, as a table; non-zero exit on a problem."""

from __future__ import annotations

import sys

from bot.config import Settings
from bot.logs import Redactor, redact_url, settings_secrets
from bot.providers import build_registry
from bot.store import open_store


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
        for provider in registry.providers:
            models = ", ".join(m.id for m in provider.models())
            rows.append((f"provider {provider.name}", True, models))
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
