"""A vendor's result storage or CDN beside its loopback fake: a second aiohttp server on another port, so another
origin, as the real services hand out a finished video.

The fake owns one as `storage` (`FakeVendor` starts and stops it with the API, and logs every request to it as a
`download`, scripted faults included); the fake's handler answers as the vendor's storage does: a signed URL
authenticates by itself, so a request carrying `Authorization` is refused (an API key must never travel there),
and an expired URL is refused, marked on the job with `FakeVendor.refuse_url` so that its next poll signs a
fresh one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware

from tests.fakes.providers.base import FakeVendor, Handler


class StorageHost:
    """The second server: an app with the fake's middleware and one route, on a loopback port of its own."""

    def __init__(self, middleware: Middleware, handler: Handler, route: str = "/{key:.+}",
                 method: str = "*") -> None:  # fmt: skip
        """`middleware`: the fake's own (its request log and scripted faults); `handler` answers `route`."""
        self.app = web.Application(middlewares=[middleware])
        self.app.router.add_route(method, route, handler)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def xml_error(status: int, code: str, message: str, extra: str = "") -> web.Response:
    """An object store's error (S3's shape, which OSS and CDNs in front of buckets share); `extra` is XML
    appended inside `<Error>` (a request id, a host id)."""
    xml = f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}</Error>\n"
    xml = f'<?xml version="1.0" encoding="UTF-8"?>\n{xml}'
    return web.Response(status=status, text=xml, content_type="application/xml")


class OssBucket:
    """Alibaba Cloud OSS, where DashScope and MiniMax put a finished video: a URL signed for GET with `Expires`,
    `OSSAccessKeyId` and `Signature` (HMAC-SHA1, as OSS signs a query string), errors in OSS's XML."""

    def __init__(self, name: str, lifetime: int) -> None:
        """`lifetime`: seconds a URL it signs is valid."""
        self.name, self.lifetime = name, lifetime
        self._secret = secrets.token_bytes(16)

    def signed_url(self, origin: str, key: str, *, expired: bool = False) -> str:
        """`origin` + `key` (a path in the bucket), valid for `lifetime`, or one that expired a minute ago."""
        now = int(time.time())
        expires = now - 60 if expired else now + self.lifetime
        signature = quote(self._sign(key, expires), safe="")
        return f"{origin}{key}?Expires={expires}&OSSAccessKeyId=LTAIfake&Signature={signature}"

    def answer(self, request: web.Request, fake: FakeVendor, key: re.Pattern[str]) -> web.Response:
        """What OSS answers a request for `fake`'s video at `key` (a path whose first group is the job id):
        refusals first, then an expired URL (`FakeVendor.refuse_url`), an unknown key, else the video."""
        refused = self._refusal(request)
        if refused is not None:
            return refused
        match = key.fullmatch(request.path)
        job = fake.jobs.get(match.group(1)) if match else None
        if int(request.query["Expires"]) < time.time():
            fake.refuse_url(job)
            return self.error(403, "AccessDenied", "Request has expired.")
        if job is None:
            return self.error(404, "NoSuchKey", "The specified key does not exist.")
        return fake.video_response()

    def _refusal(self, request: web.Request) -> web.Response | None:
        if "Authorization" in request.headers:
            # A signed URL already authenticates: OSS refuses a second mechanism (and the key must not leak).
            return self.error(400, "InvalidArgument", "Authorization header is invalid.")
        if request.method not in ("GET", "HEAD"):
            return self.error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        expires, signature = request.query.get("Expires", ""), request.query.get("Signature")
        if not signature or "OSSAccessKeyId" not in request.query or not expires.isdigit():
            return self.error(403, "AccessDenied", "AccessDenied: You have no right to access this object.")
        if not hmac.compare_digest(signature, self._sign(request.path, int(expires))):
            return self.error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
        return None

    def error(self, status: int, code: str, message: str) -> web.Response:
        host = f"<RequestId>{secrets.token_hex(12).upper()}</RequestId><HostId>{self.name}.oss.example</HostId>"
        return xml_error(status, code, message, host)

    def _sign(self, key: str, expires: int) -> str:
        digest = hmac.new(self._secret, f"GET\n\n\n{expires}\n{key}".encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()
