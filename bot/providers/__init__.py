"""Video providers: one thin adapter per service behind `VideoProvider`, built from the settings."""

from __future__ import annotations

from bot.config import Settings
from bot.providers.base import VideoProvider
from bot.providers.catalog import Catalogue
from bot.providers.registry import ProviderRegistry


def build_providers(settings: Settings) -> list[VideoProvider]:
    """Every provider whose credentials are configured, then the always-available offline renderer."""
    from bot.providers import comfyui, dashscope, fal, kling, luma, minimax, openai, replicate, runway, veo, vidu
    from bot.providers.local import LocalPreviewProvider

    # In order of preference for the default model: the first configured provider's first model.
    factories = (openai.from_settings, veo.from_settings, fal.from_settings, replicate.from_settings,
                 comfyui.from_settings, dashscope.from_settings, runway.from_settings, luma.from_settings,
                 kling.from_settings, minimax.from_settings, vidu.from_settings)  # fmt: skip
    configured = [factory(settings) for factory in factories]
    providers: list[VideoProvider] = [p for p in configured if p is not None]
    providers.append(LocalPreviewProvider(settings.data_dir / "renders"))
    return providers


def build_registry(settings: Settings) -> ProviderRegistry:
    """The registry of every configured provider, priced by the catalogue (and `MODELS_FILE`). Call
    `await registry.start()` before use: self-hosted servers are asked then which models they serve."""
    catalogue = Catalogue.load(settings.models_file)
    return ProviderRegistry(build_providers(settings), default_model=settings.default_model, catalogue=catalogue)
