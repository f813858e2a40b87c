"""The configured providers and their models, looked up by model name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bot.domain import ModelInfo
from bot.providers.base import VideoProvider

LOCAL_MODEL = "local/preview"


class ProviderRegistry:
    def __init__(self, providers: Iterable[VideoProvider], default_model: str | None = None) -> None:
        self._providers: dict[str, VideoProvider] = {}
        self._models: dict[str, ModelInfo] = {}
        for provider in providers:
            self._providers[provider.name] = provider
            for model in provider.models():
                self._models[model.id] = model
        if default_model is None:
            # The first configured provider's first model, the offline renderer only when nothing else is set up.
            remote = [m for m in self._models if not m.startswith("local/")]
            default_model = remote[0] if remote else LOCAL_MODEL
        self.default_model = default_model

    def provider(self, name: str) -> VideoProvider:
        return self._providers[name]

    @property
    def providers(self) -> Sequence[VideoProvider]:
        return list(self._providers.values())

    def model(self, model_id: str) -> ModelInfo | None:
        return self._models.get(model_id)

    def models(self) -> list[ModelInfo]:
        return list(self._models.values())

    def concurrency_limits(self) -> dict[str, int]:
        return {name: provider.max_concurrency for name, provider in self._providers.items()}

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
