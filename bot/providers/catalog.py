"""The model catalogue: what each model costs, in credits and in US dollars, and what the operator changed.

Adapters say what a vendor's model can do (`VideoProvider.models()`); the catalogue sets the policy on top:
the credit weight (credits per second of video), the list price, and the operator's `MODELS_FILE` overrides
(a model's weight, price, durations, label, or turning it off) and aliases. Vendors change prices; operators
keep them current in that file without a release.

Weights follow the list price: one credit per second for every 5 US cents per second, at least one. So the
offline preview and self-hosted models weigh 1, Wan 2.2 on fal ($0.08/s) weighs 2, Veo 3.1 ($0.40/s) weighs 8.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.domain import ModelInfo
from bot.errors import ConfigError

USD_PER_CREDIT_SECOND = 0.05


@dataclass(frozen=True, slots=True)
class ListPrice:
    usd_per_second: float
    as_of: str
    """When the vendor's public price was read (YYYY-MM), with "unconfirmed" when it came from a reseller or a
    third-party copy rather than the vendor's own page: check it and set it in `MODELS_FILE`."""


LIST_PRICES: Mapping[str, ListPrice] = {
    # Hosted Sora was shut down on 2026-09-24; relays that still serve the ids keep the last public price.
    "openai/sora-2": ListPrice(0.10, "2026-08"),
    "openai/sora-2-pro": ListPrice(0.30, "2026-08"),
    "veo/veo-3.1-generate-preview": ListPrice(0.40, "2026-08"),
    "veo/veo-3.1-fast-generate-preview": ListPrice(0.15, "2026-08"),
    "veo/veo-3.0-generate-001": ListPrice(0.40, "2026-08"),
    "veo/veo-3.0-fast-generate-001": ListPrice(0.15, "2026-08"),
    "fal/fal-ai/wan/v2.2-a14b/text-to-video": ListPrice(0.08, "2026-08"),  # 720p; 480p is $0.04/s
    "fal/fal-ai/wan/v2.2-a14b/image-to-video": ListPrice(0.08, "2026-08"),
    # Runway API credits at $0.01: Gen-4.5 12/s, Gen-4 Turbo 5/s, Veo 3.1 40/s and Fast 15/s with sound.
    "runway/gen4.5": ListPrice(0.12, "2026-08 unconfirmed"),
    "runway/gen4_turbo": ListPrice(0.05, "2026-08 unconfirmed"),
    "runway/veo3.1": ListPrice(0.40, "2026-08 unconfirmed"),
    "runway/veo3.1_fast": ListPrice(0.15, "2026-08 unconfirmed"),
    # Luma bills per output pixel: 720p at 24 fps is about 22 million pixels a second.
    "luma/ray-2": ListPrice(0.14, "2025-10 unconfirmed"),
    "luma/ray-flash-2": ListPrice(0.05, "2025-10 unconfirmed"),
    # Kling resource-pack units at about $0.14: 2.5 Turbo pro 2.5 units per 5 s, the masters 10 units per 5 s.
    "kling/kling-v2-5-turbo": ListPrice(0.07, "2026-11 unconfirmed"),
    "kling/kling-v2-6": ListPrice(0.07, "2026-11 unconfirmed"),
    "kling/kling-v2-1-master": ListPrice(0.28, "2026-11 unconfirmed"),
    "kling/kling-v2-master": ListPrice(0.28, "2026-11 unconfirmed"),
    "kling/kling-v2-1": ListPrice(0.05, "2026-11 unconfirmed"),
    "kling/kling-v1-6": ListPrice(0.05, "2026-11 unconfirmed"),
    # MiniMax pay-as-you-go at 768P: $0.56 per 10 s (Fast $0.32).
    "minimax/MiniMax-Hailuo-2.3": ListPrice(0.056, "2026-08 unconfirmed"),
    "minimax/MiniMax-Hailuo-2.3-Fast": ListPrice(0.032, "2026-08 unconfirmed"),
    "minimax/MiniMax-Hailuo-02": ListPrice(0.056, "2026-08 unconfirmed"),
    # Vidu credits at $0.005 (resellers' tables): Q1 80 per 5 s at 1080p, Q3 Pro 30/s, 2.0 and 1.5 100 per 4 s.
    "vidu/viduq1": ListPrice(0.08, "2026-11 unconfirmed"),
    "vidu/viduq3-pro": ListPrice(0.15, "2026-11 unconfirmed"),
    "vidu/viduq2": ListPrice(0.05, "2026-11 unconfirmed"),
    "vidu/vidu2.0": ListPrice(0.125, "2026-11 unconfirmed"),
    "vidu/vidu1.5": ListPrice(0.125, "2026-11 unconfirmed"),
    # DashScope international, Wan 2.6 at 720p (third-party figure).
    "dashscope/wan2.6-t2v": ListPrice(0.10, "2026-11 unconfirmed"),
    "dashscope/wan2.6-i2v": ListPrice(0.10, "2026-11 unconfirmed"),
}
"""Public list prices per second of video, from the vendors' pricing pages (through the reference notes; an
"unconfirmed" date marks a figure read from a reseller or a third-party copy).
Models not listed have no known price: self-hosted ones cost nothing here, hosted ones should be priced in
`MODELS_FILE`."""

SELF_HOSTED = frozenset({"local", "comfyui"})
"""Providers that run on the operator's own hardware: no list price, weight 1."""

_OVERRIDE_KEYS = {"weight", "usd_per_second", "durations", "enabled", "label"}


@dataclass(frozen=True, slots=True)
class ModelOverride:
    """One model's section of `MODELS_FILE`; only what is given changes."""

    weight: float | None = None
    usd_per_second: float | None = None
    durations: tuple[int, ...] | None = None
    enabled: bool = True
    label: str | None = None


class Catalogue:
    def __init__(
        self,
        overrides: Mapping[str, ModelOverride] | None = None,
        aliases: Mapping[str, tuple[str, ...]] | None = None,
        prices: Mapping[str, ListPrice] = LIST_PRICES,
    ) -> None:
        self.overrides = dict(overrides or {})
        self.aliases = dict(aliases or {})
        self.prices = prices

    @classmethod
    def load(cls, path: Path | None) -> Catalogue:
        """The built-in catalogue, with `MODELS_FILE` applied when one is set. A bad file ends the process with
        one line naming the file and the key."""
        if path is None:
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"setting MODELS_FILE is invalid: {path} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"setting MODELS_FILE is invalid: {path}: {exc}") from None
        return _parse(data, str(path))

    def apply(self, model: ModelInfo) -> ModelInfo | None:
        """The model as this bot offers it (weight, price, overrides), or None when the operator turned it off."""
        override = self.overrides.get(model.id, ModelOverride())
        if not override.enabled:
            return None
        listed = self.prices.get(model.id)
        usd = override.usd_per_second
        if usd is None and listed is not None:
            usd = listed.usd_per_second
        if usd is None and model.provider in SELF_HOSTED:
            usd = 0.0
        weight = override.weight if override.weight is not None else weight_for(usd)
        durations = model.durations
        if override.durations is not None:
            # An operator may narrow what the vendor allows, not widen it (the vendor would refuse the rest);
            # a model whose vendor takes any length is opened to exactly the listed ones.
            narrowed = tuple(d for d in override.durations if d in model.durations)
            durations = narrowed or model.durations
        return dataclasses.replace(
            model,
            weight=weight,
            usd_per_second=usd,
            price_as_of=listed.as_of if listed and override.usd_per_second is None else None,
            durations=durations,
            label=override.label or model.label,
        )

    def cost_usd(self, model: ModelInfo, seconds: int) -> float:
        """A job's list-price cost. A model with no known price counts at the highest price in the catalogue, so
        that a missing price cannot empty a server's budget unseen."""
        return seconds * (model.usd_per_second if model.usd_per_second is not None else self.highest_price())

    def highest_price(self) -> float:
        prices = [p.usd_per_second for p in self.prices.values()]
        prices += [o.usd_per_second for o in self.overrides.values() if o.usd_per_second is not None]
        return max(prices, default=0.0)

    def resolve_alias(self, name: str, offered: Callable[[str], bool]) -> str | None:
        """The first model of an alias's fallback chain that is offered here, or None (not an alias, or none)."""
        for candidate in self.aliases.get(name, ()):
            if offered(candidate):
                return candidate
        return None


def weight_for(usd_per_second: float | None) -> float:
    if not usd_per_second:
        return 1.0
    return float(max(1, round(usd_per_second / USD_PER_CREDIT_SECOND)))


def _parse(data: dict[str, Any], where: str) -> Catalogue:
    unknown = set(data) - {"models", "aliases"}
    if unknown:
        raise ConfigError(
            f'MODELS_FILE {where}: unknown section [{sorted(unknown)[0]}] (expected [models."id"] or [aliases])'
        )
    overrides: dict[str, ModelOverride] = {}
    for model_id, section in _table(data.get("models", {}), f"{where} [models]").items():
        overrides[model_id] = _override(model_id, _table(section, f'{where} [models."{model_id}"]'), where)
    aliases: dict[str, tuple[str, ...]] = {}
    for alias, chain in _table(data.get("aliases", {}), f"{where} [aliases]").items():
        if not isinstance(chain, list) or not chain or not all(isinstance(m, str) and "/" in m for m in chain):
            raise ConfigError(f"MODELS_FILE {where}: alias {alias!r} must be a list of provider/model names")
        aliases[alias] = tuple(chain)
    return Catalogue(overrides, aliases)


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"MODELS_FILE {where} must be a table")
    return value


def _override(model_id: str, section: dict[str, Any], where: str) -> ModelOverride:
    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(f'MODELS_FILE {where}: [models."{model_id}"] {key} must be {expected}')

    if "/" not in model_id:
        raise ConfigError(f"MODELS_FILE {where}: {model_id!r} is not a provider/model name")
    unknown = set(section) - _OVERRIDE_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f'MODELS_FILE {where}: [models."{model_id}"] has unknown key {key!r} '
                          f"(known: {', '.join(sorted(_OVERRIDE_KEYS))})")  # fmt: skip
    weight = section.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0):
        raise bad("weight", "a number above 0")
    usd = section.get("usd_per_second")
    if usd is not None and (isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0):
        raise bad("usd_per_second", "a number of dollars, 0 or more")
    durations = section.get("durations")
    if durations is not None and (
        not isinstance(durations, list)
        or not durations
        or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 60 for d in durations)
    ):
        raise bad("durations", "a list of whole seconds from 1 to 60")
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise bad("enabled", "true or false")
    label = section.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise bad("label", "a non-empty string")
    return ModelOverride(
        weight=float(weight) if weight is not None else None,
        usd_per_second=float(usd) if usd is not None else None,
        durations=tuple(sorted(set(durations))) if durations is not None else None,
        enabled=enabled,
        label=label,
    )
