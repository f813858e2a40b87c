"""Video providers: one thin adapter per service behind `VideoProvider`, built from the settings."""

from __future__ import annotations

from bot.config import Settings
from bot.providers.base import VideoProvider
from bot.providers.catalog import Catalogue
from bot.providers.registry import ProviderRegistry


def build_providers(settings: Settings) -> list[VideoProvider]:
    """Every provider whose credentials are configured, then the always-available offline renderer."""
    from bot.providers.local import LocalPreviewProvider

    providers: list[VideoProvider] = []
    providers.append(LocalPreviewProvider(settings.data_dir / "renders"))
    return providers


def build_registry(settings: Settings) -> ProviderRegistry:
    """The registry of every configured provider, priced by the catalogue (and `MODELS_FILE`). Call
    `await registry.start()` before use: self-hosted servers are asked then which models they serve."""
    catalogue = Catalogue.load(settings.models_file)
    return ProviderRegistry(build_providers(settings), default_model=settings.default_model, catalogue=catalogue)
