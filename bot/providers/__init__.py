"""Video providers: one thin adapter per service behind `VideoProvider`, built from the settings."""

from __future__ import annotations

from bot.config import Settings
from bot.providers.base import VideoProvider
from bot.providers.registry import ProviderRegistry


def build_providers(settings: Settings) -> list[VideoProvider]:
    """Every provider whose credentials are configured, then the always-available offline renderer."""
    from bot.providers.local import LocalPreviewProvider

    providers: list[VideoProvider] = []
    providers.append(LocalPreviewProvider(settings.data_dir / "renders"))
    return providers


def build_registry(settings: Settings) -> ProviderRegistry:
    return ProviderRegistry(build_providers(settings), default_model=settings.default_model)
