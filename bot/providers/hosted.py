"""What the adapters of hosted video services share: one `ProviderHttp` and a fixed model list.

A subclass sets `catalogue` (its `ModelInfo`s, in the order offered) and `self.http`, and writes what is its
vendor's: health, submit, poll, cancel, and download when its result is not a plain URL to fetch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from bot.domain import ModelInfo
from bot.errors import ProviderError
from bot.providers.base import PollResult, RemoteJob
from bot.providers.http import ProviderHttp


class HostedProvider:
    name: str
    catalogue: ClassVar[tuple[ModelInfo, ...]]
    """What the vendor's models can do; the same for every account (nothing to ask at start)."""
    http: ProviderHttp

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(model.id for model in self.catalogue)

    def models(self) -> Sequence[ModelInfo]:
        return self.catalogue

    def model_for(self, model_id: str) -> ModelInfo | None:
        return None

    async def start(self) -> None:
        """Nothing to learn: the model list is fixed."""

    async def download(self, remote: RemoteJob, result: PollResult, dest: Path) -> None:
        """The poll's result URL, fresh from the last poll. On another origin (a signed storage or CDN URL),
        `ProviderHttp` sends it no credentials."""
        if not result.output_url:
            raise ProviderError(f"{self.name}: job {remote.remote_id} finished without a video URL", retryable=True)
        await self.http.download(result.output_url, dest)

    async def aclose(self) -> None:
        await self.http.aclose()
