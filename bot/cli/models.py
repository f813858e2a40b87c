"""`python -m bot models`: the model catalogue as a table, every enabled model with what it can do and costs."""

from __future__ import annotations

from collections.abc import Sequence

from bot.config import Settings
from bot.domain import ModelInfo
from bot.providers import build_registry
from bot.text import duration_range

COLUMNS = ("model", "label", "durations", "aspects", "image", "seed", "negative", "cr/s", "usd/s")


def model_row(model: ModelInfo) -> tuple[str, ...]:
    def yes(flag: bool) -> str:
        return "yes" if flag else "-"

    if model.usd_per_second is None:
        price = "unknown"
    else:
        price = f"{model.usd_per_second:.3f}" + (f" ({model.price_as_of})" if model.price_as_of else "")
    return (
        model.id,
        model.label,
        duration_range(model.durations),
        " ".join(model.aspects),
        yes(model.supports_image),
        yes(model.supports_seed),
        yes(model.supports_negative_prompt),
        f"{model.weight:g}",
        price,
    )


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


async def models(settings: Settings) -> int:
    registry = build_registry(settings)
    try:
        await registry.start()
        rows = [COLUMNS, *(model_row(m) for m in registry.models())]
    finally:
        await registry.aclose()
    print(table(rows))
    print(f"\ndefault model: {registry.default_model}; prices are vendors' list prices (MODELS_FILE overrides them)")
    return 0
