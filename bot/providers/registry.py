"""The configured providers and their models as the catalogue prices them, looked up by model name."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from bot.domain import ModelInfo
from bot.providers.base import VideoProvider
from bot.providers.catalog import Catalogue

log = logging.getLogger(__name__)

LOCAL_MODEL = "local/preview"


class ProviderRegistry:
    def __init__(
        self,
        providers: Iterable[VideoProvider],
        default_model: str | None = None,
        catalogue: Catalogue | None = None,
    ) -> None:
        self._providers: dict[str, VideoProvider] = {p.name: p for p in providers}
        self.catalogue = catalogue or Catalogue()
        self._configured_default = default_model
        self._models: dict[str, ModelInfo] = {}
        self.default_model = LOCAL_MODEL
        self._index()

    def _index(self) -> None:
        self._models = {}
        for provider in self._providers.values():
            for model in provider.models():
                priced = self.catalogue.apply(model)
                if priced is not None:
                    self._models[model.id] = priced
        default = self._configured_default
        if default is not None:
            default = self.catalogue.resolve_alias(default, self.offers) or default
        else:
            # The first configured provider's first model; the offline renderer only when nothing else is set up.
            remote = [m for m in self._models if not m.startswith(f"{LOCAL_MODEL.split('/')[0]}/")]
            default = remote[0] if remote else LOCAL_MODEL
        self.default_model = default

    async def start(self) -> None:
        """Let each provider get ready (a self-hosted server is asked which models it serves), then index the
        models again. A provider that cannot be reached keeps what it knew; its jobs will say what is wrong."""
        for provider in self._providers.values():
            try:
                await provider.start()
            except Exception as exc:
                log.warning("provider %s could not start (%s); its jobs will retry", provider.name, exc)
        self._index()

    def offers(self, model_id: str) -> bool:
        return model_id in self._models

    def provider_names(self) -> list[str]:
        return list(self._providers)

    def provider(self, name: str) -> VideoProvider:
        return self._providers[name]

    @property
    def providers(self) -> Sequence[VideoProvider]:
        return list(self._providers.values())

    def model(self, model_id: str) -> ModelInfo | None:
        """A model by name or alias (`MODELS_FILE`'s first offered model of the chain)."""
        found = self._models.get(model_id)
        if found is None:
            alias = self.catalogue.resolve_alias(model_id, self.offers)
            found = self._models.get(alias) if alias else None
        if found is None and "/" in model_id:
            provider = self._providers.get(model_id.split("/", 1)[0])
            extra = provider.model_for(model_id) if provider is not None else None
            found = self.catalogue.apply(extra) if extra is not None else None
        return found

    def models(self) -> list[ModelInfo]:
        return list(self._models.values())

    def concurrency_limits(self) -> dict[str, int]:
        return {name: provider.max_concurrency for name, provider in self._providers.items()}

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
