"""`ProviderHttp`, the one HTTP path of every adapter, against a loopback server: which failures may be
repeated (a create only when the provider cannot have taken it), how errors map into the tree, and streamed
downloads with a size cap that never leave a partial file."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bot.discord.messages import ENGLISH, reason_text
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
from bot.providers.http import ProviderHttp, retry_after

SECRET = "sk-very-secret-value"


class Server:
    """A loopback server whose routes a test sets; records the headers each request carried."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    def route(self, method: str, path: str, handler: object) -> None:
        async def recorded(request: web.Request) -> web.StreamResponse:
            self.seen.append((request.path, dict(request.headers)))
            return await handler(request)  # type: ignore[operator, no-any-return]

        self.app.router.add_route(method, path, recorded)

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    api, storage = Server(), Server()
    yield api, storage
    for server in (api, storage):
        if server.runner is not None:
            await server.runner.cleanup()


def client(base: str, **options: object) -> ProviderHttp:
    return ProviderHttp("acme", base, credential_variable="ACME_KEY",
                        headers={"Authorization": f"Bearer {SECRET}"}, **options)  # type: ignore[arg-type]  # fmt: skip


def json_reply(status: int, body: object, **headers: str) -> object:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, status=status, headers=headers)

    return handler


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_create_is_repeated_only_when_the_provider_cannot_have_taken_it(
    servers: tuple[Server, Server],
) -> None:
    api, _ = servers
    api.route("POST", "/v1/busy", json_reply(429, {"error": "slow down"}, **{"Retry-After": "7"}))
    api.route("POST", "/v1/broken", json_reply(500, {"error": "oops"}))
    api.route("POST", "/v1/unavailable", json_reply(503, {"error": "later"}))
    base = await api.start()
    http = client(f"{base}/v1")
    try:
        with pytest.raises(ProviderError) as busy:
            await http.create("POST", "/busy", json={})
        assert busy.value.retryable and busy.value.retry_after == 7
        # A 500 after the request arrived: the job may exist (and be billed). Final, never sent again.
        with pytest.raises(CreateOutcomeUnknown) as broken:
            await http.create("POST", "/broken", json={})
        assert not broken.value.retryable
        with pytest.raises(CreateOutcomeUnknown):
            await http.create("POST", "/unavailable", json={})
        # ...unless the vendor documents the status as "not accepted".
        documented = client(f"{base}/v1", not_accepted=(429, 503))
        with pytest.raises(ProviderError) as unavailable:
            await documented.create("POST", "/unavailable", json={})
        assert unavailable.value.retryable
        await documented.aclose()
        # A read of the same status is always worth another try.
        with pytest.raises(ProviderError) as read:
            await http.read("POST", "/broken")
        assert read.value.retryable
    finally:
        await http.aclose()
    assert [path for path, _ in api.seen] == ["/v1/busy", "/v1/broken", "/v1/unavailable", "/v1/unavailable",
                                              "/v1/broken"]  # fmt: skip


async def test_a_refused_connection_is_retryable_but_a_cut_answer_to_a_create_is_final(
    servers: tuple[Server, Server],
) -> None:
    refused = client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderError) as nothing_sent:
        await refused.create("POST", "/videos", json={})
    assert nothing_sent.value.retryable and not isinstance(nothing_sent.value, CreateOutcomeUnknown)
    await refused.aclose()

    api, _ = servers

    async def cut(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.abort()  # created, then the answer was lost
        return web.Response()

    api.route("POST", "/videos", cut)
    api.route("GET", "/videos/1", cut)
    http = client(await api.start())
    try:
        with pytest.raises(CreateOutcomeUnknown):
            await http.create("POST", "/videos", json={})
        with pytest.raises(ProviderError) as read:
            await http.read("GET", "/videos/1")
        assert read.value.retryable
    finally:
        await http.aclose()


async def test_errors_map_into_the_tree_and_never_show_the_secret(servers: tuple[Server, Server]) -> None:
    api, _ = servers
    api.route("GET", "/auth", json_reply(401, {"error": {"message": f"bad key {SECRET[:6]}"}}))
    api.route("GET", "/pay", json_reply(402, {"detail": "balance too low"}))
    api.route("POST", "/bad", json_reply(400, {"error": {"message": "size must be WxH"}}))
    api.route("GET", "/gone", json_reply(404, {"error": "no such job"}))
    http = client(await api.start())
    try:
        with pytest.raises(CredentialsRejected) as auth:
            await http.read("GET", "/auth")
        assert "ACME_KEY" in str(auth.value) and SECRET not in str(auth.value) and not auth.value.retryable
        with pytest.raises(ProviderBilling):
            await http.read("GET", "/pay")
        with pytest.raises(RequestRejected) as bad:
            await http.create("POST", "/bad", json={})
        assert "size must be WxH" in reason_text(bad.value.user_message, ENGLISH)
        with pytest.raises(RemoteJobLost):
            await http.read("GET", "/gone")
    finally:
        await http.aclose()


async def test_credentials_go_only_to_the_providers_own_origin(servers: tuple[Server, Server], tmp_path: Path) -> None:
    api, storage = servers
    api.route("GET", "/job", json_reply(200, {"ok": True}))

    async def file(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00" * 1000, content_type="video/mp4")

    storage.route("GET", "/clip.mp4", file)
    http = client(await api.start())
    storage_base = await storage.start()  # same host, another port: another origin
    try:
        assert await http.json("GET", "/job") == {"ok": True}
        assert await http.download(f"{storage_base}/clip.mp4", tmp_path / "clip.mp4") == 1000
    finally:
        await http.aclose()
    assert api.seen[0][1]["Authorization"] == f"Bearer {SECRET}"
    assert "Authorization" not in storage.seen[0][1], "a signed storage URL must not receive the API key"


async def test_download_streams_whole_or_not_at_all(servers: tuple[Server, Server], tmp_path: Path) -> None:
    api, storage = servers
    body = bytes(range(256)) * 4096  # 1 MiB

    async def clip(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="video/mp4")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()  # no Content-Length: the cap must hold while streaming
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"\x01" * 65536)
        await response.write_eof()
        return response

    storage.route("GET", "/clip.mp4", clip)
    storage.route("GET", "/stream.mp4", chunked)
    storage.route("GET", "/expired.mp4", json_reply(403, {"Code": "AccessDenied"}))
    await api.start()
    files = await storage.start()
    http = client(f"http://127.0.0.1:{api.port}", max_download_bytes=2_000_000)
    try:
        dest = tmp_path / "out.mp4"
        assert await http.download(f"{files}/clip.mp4", dest) == len(body)
        assert dest.read_bytes() == body
        with pytest.raises(DownloadTooLarge):
            await http.download(f"{files}/stream.mp4", tmp_path / "big.mp4")
        small = client(f"http://127.0.0.1:{api.port}", max_download_bytes=1_000_000)
        with pytest.raises(DownloadTooLarge):  # refused from Content-Length, before reading
            await small.download(f"{files}/clip.mp4", tmp_path / "declared.mp4")
        await small.aclose()
        with pytest.raises(ResultExpired) as expired:
            await http.download(f"{files}/expired.mp4", tmp_path / "expired.mp4")
        assert expired.value.retryable
    finally:
        await http.aclose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"], "no partial file is left behind"


def test_retry_after_forms() -> None:
    def response(**headers: str) -> httpx.Response:
        return httpx.Response(429, headers=headers)

    assert retry_after(response(**{"Retry-After": "12"})) == 12
    assert retry_after(response(**{"retry-after-ms": "1500"})) == 1.5
    assert retry_after(response(**{"Retry-After": "Mon, 30 Nov 2026 01:00:30 GMT"}), now=1_795_999_000.0) is not None
    dated = retry_after(response(**{"Retry-After": "Mon, 30 Nov 2026 01:00:30 GMT"}), now=1_796_000_400.0)
    assert dated == 30.0
    assert retry_after(response()) is None
    assert retry_after(response(**{"Retry-After": "soon"})) is None


async def test_a_key_in_a_vendor_header_does_not_follow_a_redirect_off_origin(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    api, storage = servers
    where: dict[str, str] = {}

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{where['files']}{request.path}")

    async def clip(request: web.Request) -> web.Response:
        return web.Response(body=b"\x01" * 500, content_type="video/mp4")

    api.route("GET", "/files/a.mp4", redirect)
    api.route("GET", "/files/old.mp4", redirect)
    storage.route("GET", "/files/a.mp4", clip)
    storage.route("GET", "/files/old.mp4", json_reply(403, {"Code": "AccessDenied"}))
    where["files"] = await storage.start()
    base = await api.start()
    http = ProviderHttp("acme", base, credential_variable="ACME_KEY", headers={"x-goog-api-key": SECRET})
    try:
        assert await http.download("/files/a.mp4", tmp_path / "a.mp4") == 500
        # The 403 comes from the storage host the redirect led to: an expired link, not a refused key.
        with pytest.raises(ResultExpired):
            await http.download("/files/old.mp4", tmp_path / "old.mp4")
    finally:
        await http.aclose()
    assert api.seen[0][1]["x-goog-api-key"] == SECRET
    assert all("x-goog-api-key" not in headers for _, headers in storage.seen), storage.seen


async def test_a_health_probe_names_the_setting_to_fix_and_no_secret(servers: tuple[Server, Server]) -> None:
    api, _ = servers
    api.route("GET", "/v1/account", json_reply(200, {"credits": 3}))
    api.route("GET", "/v1/refused", json_reply(401, {"error": "bad key"}))
    api.route("GET", "/v1/unpaid", json_reply(402, {"error": "top up"}))
    api.route("GET", "/v1/page", lambda request: _text_page())
    base = await api.start()
    http = client(f"{base}/v1".replace("http://", "http://user:hunter2@"))
    try:
        good, answer = await http.probe("GET", "account", base_variable="ACME_BASE_URL", models=("acme/one",))
        refused, _ = await http.probe("GET", "refused", base_variable="ACME_BASE_URL", hint=" (and its region)")
        unpaid, _ = await http.probe("GET", "unpaid", base_variable="ACME_BASE_URL")
        page, _ = await http.probe("GET", "page", base_variable="ACME_BASE_URL")
        missing, _ = await http.probe("GET", "nowhere", base_variable="ACME_BASE_URL")
    finally:
        await http.aclose()
    closed = client(f"http://user:hunter2@127.0.0.1:{free_port()}/v1")
    try:
        unreachable, nothing = await closed.probe("GET", "account", base_variable="ACME_BASE_URL")
    finally:
        await closed.aclose()
    assert (good.ok, good.models, answer) == (True, ("acme/one",), {"credits": 3})
    assert (refused.reachable, refused.authenticated) == (True, False)
    assert str(refused.problem).endswith("check ACME_KEY (and its region)")
    assert (unpaid.authenticated, unpaid.ok) == (True, False), "a billing refusal proves the key good"
    assert page.authenticated and "ACME_BASE_URL" in str(page.problem)
    assert missing.reachable and not missing.ok and "ACME_BASE_URL" in str(missing.problem)
    assert (unreachable.reachable, nothing) == (False, None) and "ACME_BASE_URL" in str(unreachable.problem)
    for health in (good, refused, unpaid, page, missing, unreachable):
        assert SECRET not in str(health.problem) and "hunter2" not in str(health.problem)


async def _text_page() -> web.Response:
    return web.Response(text="<html>a web page, not the API</html>", content_type="text/html")
