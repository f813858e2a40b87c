"""One way for every adapter to talk HTTP to its video service.

Each provider holds one long-lived `ProviderHttp` (one `httpx.AsyncClient`, explicit timeouts, a connection
pool). Nothing here sleeps or loops: a failure becomes a `ProviderError` that says whether a repeat may pass and
how long the provider asked us to wait, and the worker's one retry loop (`bot.jobs.retry`) does the waiting, on
its injected clock. What differs between the two kinds of request:

- a **read** (status poll, result fetch, cancel) may be repeated freely: network errors, 408, 409, 429 and 5xx
  are retryable, honouring `Retry-After`;
- a **create** may be repeated only when the provider cannot have accepted it: the connection was never made,
  or it answered with a status its vendor documents as "not accepted" (`not_accepted`, 429 by default). Any
  other failure after the request left is `CreateOutcomeUnknown`, final, because a second create could make and
  bill the video twice.

Vendor error shapes (a content policy refusal in a 400, a billing code) are recognised by the adapter's
`map_error`, consulted first; the rest is mapped here by status, once for every provider.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import httpx

from bot.errors import (
    CreateOutcomeUnknown,
    CredentialsRejected,
    DownloadTooLarge,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
    ResultExpired,
)
from bot.errors.said import Said
from bot.i18n.ids import N_
from bot.providers.base import ProviderHealth

log = logging.getLogger(__name__)

TIMEOUTS = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)
"""Connect and pool waits are short (a provider that cannot be reached should fail fast and be retried); reads
and writes allow a slow upload of an input image or a slow first byte of a large clip."""
MAX_DOWNLOAD_BYTES = 500_000_000
CHUNK_BYTES = 64 * 1024
RETRYABLE_READ = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

ErrorMapper = Callable[[httpx.Response, "Kind"], ProviderError | None]


class Kind(enum.Enum):
    CREATE = "create"
    READ = "read"


class ProviderHttp:
    """The HTTP client of one provider. `headers` carry its credentials and are sent only to its own host (a
    result URL on a storage host gets none: a signed URL must not receive an API key)."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        credential_variable: str,
        headers: Mapping[str, str] | None = None,
        map_error: ErrorMapper | None = None,
        not_accepted: Collection[int] = (429,),
        timeout: httpx.Timeout = TIMEOUTS,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self.credential_variable = credential_variable
        self._auth_headers = dict(headers or {})
        self._map_error = map_error
        self._not_accepted = frozenset(not_accepted)
        self.max_download_bytes = max_download_bytes
        self.client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            follow_redirects=True,
            transport=transport,
            headers={"User-Agent": "videobot/0.1"},
            event_hooks={"request": [self._drop_credentials_off_origin]},
        )

    async def _drop_credentials_off_origin(self, request: httpx.Request) -> None:
        """httpx drops only `Authorization` when a redirect leaves the origin: a key in a vendor's own header
        (`x-goog-api-key`) must not follow a redirect to a storage host either. Runs on every hop."""
        if not self.is_own(request.url):
            for name in self._auth_headers:
                request.headers.pop(name, None)

    def url(self, path_or_url: str) -> httpx.URL:
        """A path is appended to the base URL unchanged (`<NAME>_BASE_URL` + documented path); a URL that the
        provider handed back (status URL, file URL) is followed as given."""
        if path_or_url.startswith(("http://", "https://")):
            return httpx.URL(path_or_url)
        return self.base_url.join(path_or_url.lstrip("/"))

    def is_own(self, url: httpx.URL) -> bool:
        """Whether `url` is on the provider's own API origin (scheme, host and port)."""
        return (url.scheme, url.host, url.port) == (self.base_url.scheme, self.base_url.host, self.base_url.port)

    def _headers_for(self, url: httpx.URL, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(self._auth_headers) if self.is_own(url) else {}
        headers.update(extra or {})
        return headers

    async def create(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request that makes something at the provider (a video, an upload): see the module notes."""
        return await self._send(method, path, Kind.CREATE, kwargs)

    async def read(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request that may be repeated (status, result, cancel, listing)."""
        return await self._send(method, path, Kind.READ, kwargs)

    async def _send(self, method: str, path: str, kind: Kind, kwargs: dict[str, Any]) -> httpx.Response:
        url = self.url(path)
        headers = self._headers_for(url, kwargs.pop("headers", None))
        try:
            response = await self.client.request(method, url, headers=headers, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the provider: any request may be repeated.
            raise ProviderError(
                f"{self.provider} unreachable: {type(exc).__name__}",
                retryable=True,
                user_message=Said(N_("failure.unreachable")),
            ) from None
        except httpx.TransportError as exc:
            if kind is Kind.CREATE:
                raise CreateOutcomeUnknown(self.provider, f"{type(exc).__name__} after sending") from None
            raise ProviderError(
                f"{self.provider}: {type(exc).__name__} on {method} {url.path}", retryable=True
            ) from None
        if response.status_code >= 400:
            raise self.error_for(response, kind)
        return response

    def error_for(self, response: httpx.Response, kind: Kind) -> ProviderError:
        """The one mapping of an HTTP failure into the error tree: the adapter's vendor shapes first."""
        if self._map_error is not None:
            mapped = self._map_error(response, kind)
            if mapped is not None:
                return mapped
        status = response.status_code
        reason = error_text(response)
        wait = retry_after(response)
        if kind is Kind.CREATE and status in self._not_accepted:
            return ProviderError(f"{self.provider} did not accept the job (HTTP {status}): {reason}",
                                 retryable=True, retry_after=wait, status=status,
                                 user_message=Said(N_("failure.provider-busy")))  # fmt: skip
        if status in (401, 403):
            return CredentialsRejected(self.provider, self.credential_variable, status=status)
        if status == 402:
            return ProviderBilling(self.provider, reason, status=status)
        if kind is Kind.CREATE and (status >= 500 or status in (408, 409)):
            return CreateOutcomeUnknown(self.provider, f"HTTP {status}: {reason}")
        if status in RETRYABLE_READ:
            return ProviderError(f"{self.provider} HTTP {status}: {reason}", retryable=True, retry_after=wait,
                                 status=status, user_message=Said(N_("failure.provider-trouble")))  # fmt: skip
        if kind is Kind.READ and status in (404, 410):
            return RemoteJobLost(f"{self.provider} no longer knows this job (HTTP {status}): {reason}")
        return RequestRejected(self.provider, reason, status=status)

    async def json(self, method: str, path: str, *, create: bool = False, **kwargs: Any) -> Any:
        """A request whose answer must be JSON; anything else is a (retryable) provider fault."""
        response = await (self.create if create else self.read)(method, path, **kwargs)
        if create:
            try:
                return response.json()
            except ValueError:
                # The video may exist (and be billed) already: a repeat could pay twice.
                raise CreateOutcomeUnknown(self.provider, f"HTTP {response.status_code} answer is not JSON") from None
        return parse_json(response, self.provider)

    async def probe(
        self, method: str, path: str, *, base_variable: str, models: tuple[str, ...] = (), hint: str = "", **kwargs: Any
    ) -> tuple[ProviderHealth, Any]:
        """`health()`'s one cheap authenticated read: what it shows of the provider (`health_for` when it fails),
        and its JSON answer, None unless the read passed and answered JSON."""
        try:
            response = await self.read(method, path, **kwargs)
        except ProviderError as exc:
            return self.health_for(exc, base_variable=base_variable, models=models, hint=hint), None
        try:
            return ProviderHealth(reachable=True, authenticated=True, models=models), response.json()
        except ValueError:
            problem = f"{method} {path} answered HTTP {response.status_code} without JSON: check {base_variable}"
            return ProviderHealth(reachable=True, authenticated=True, models=models, problem=problem), None

    def health_for(
        self, error: ProviderError, *, base_variable: str, models: tuple[str, ...] = (), hint: str = ""
    ) -> ProviderHealth:
        """A failed health read as `python -m bot check` shows it, naming the setting to fix, never a secret:
        refused credentials name their variable (then `hint`), a service nothing reached names `base_variable`
        (`<NAME>_BASE_URL`), and a billing refusal still proves the credentials good."""
        base = self.base_url.copy_with(userinfo=b"")  # a password in the URL is not for the report
        if isinstance(error, CredentialsRejected):
            return ProviderHealth(reachable=True, authenticated=False, models=models, problem=f"{error}{hint}")
        if error.status is None and error.retryable:  # nothing reached the service
            problem = f"cannot reach {base}: check {base_variable} ({error})"
            return ProviderHealth(reachable=False, authenticated=False, models=models, problem=problem)
        problem = str(error)
        if isinstance(error, RemoteJobLost):  # a 404 or 410: the address is not the vendor's API
            problem = f"{self.provider} has no such address under {base}: check {base_variable}"
        return ProviderHealth(reachable=True, authenticated=isinstance(error, ProviderBilling), models=models,
                              problem=problem)  # fmt: skip

    async def download(self, url: str, dest: Path, *, headers: Mapping[str, str] | None = None) -> int:
        """Stream `url` to `dest`, whole or not at all, never holding the clip in memory; returns its size.
        A 403/404/410 from a result URL means it expired: `ResultExpired`, so the caller asks for a fresh one."""
        target = self.url(url)
        part = dest.with_name(f".{dest.name}.part")
        try:
            async with self.client.stream("GET", target, headers=self._headers_for(target, headers)) as response:
                if response.status_code in (403, 404, 410) and not self.is_own(response.url):
                    raise ResultExpired(self.provider, response.status_code)
                if response.status_code >= 400:
                    await response.aread()
                    raise self.error_for(response, Kind.READ)
                declared = int(response.headers.get("content-length") or 0)
                if declared > self.max_download_bytes:
                    raise DownloadTooLarge(self.provider, self.max_download_bytes)
                size = await self._write(response, part)
            os.replace(part, dest)
        except httpx.TransportError as exc:
            raise ProviderError(f"{self.provider} download interrupted: {type(exc).__name__}", retryable=True) from None
        finally:
            part.unlink(missing_ok=True)
        log.info("%s: downloaded %d bytes", self.provider, size)
        return size

    async def _write(self, response: httpx.Response, part: Path) -> int:
        size = 0
        handle = await asyncio.to_thread(part.open, "wb")
        try:
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                size += len(chunk)
                if size > self.max_download_bytes:
                    raise DownloadTooLarge(self.provider, self.max_download_bytes)
                handle.write(chunk)
        finally:
            handle.close()
        if size == 0:
            raise ProviderError(f"{self.provider} sent an empty video", retryable=True)
        return size

    async def aclose(self) -> None:
        await self.client.aclose()


def parse_json(response: httpx.Response, provider: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ProviderError(
            f"{provider} answered HTTP {response.status_code} with something that is not JSON", retryable=True
        ) from None


def error_text(response: httpx.Response, limit: int = 300) -> str:
    """The provider's own words from an error body: the common JSON shapes, else the start of the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:limit] or f"HTTP {response.status_code}"
    return (_message_in(body) or str(body))[:limit]


def _message_in(body: object) -> str | None:
    if isinstance(body, str):
        return body
    if isinstance(body, list) and body:
        return _message_in(body[0])
    if isinstance(body, dict):
        for key in ("error", "detail", "message", "msg", "title"):
            if key in body:
                found = _message_in(body[key])
                if found:
                    return found
    return None


def retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """The wait the provider asked for: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    millis = response.headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
