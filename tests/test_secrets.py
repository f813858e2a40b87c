"""No token or key in any log line, at any level, and none in what `python -m bot check` prints (issue 6,
finding 11). The end-to-end test runs a whole `/video` at DEBUG, with logging configured exactly as
`python -m bot` configures it, and searches everything written for every token the fake Discord issued."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.cli.main import main
from bot.config import Settings
from bot.discord.reply_record import ReplyRecord
from bot.logs import MASK, Redactor, configure_logging, redact_url, settings_secrets
from tests.discord_harness import running_bot
from tests.fakes.discord import FakeDiscord

REPO = Path(__file__).resolve().parents[1]
BOT_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAwMQ.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
"""Shaped like a real bot token: base64 user id, timestamp, HMAC."""
INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpxd2VydHl1aW9wYXNkZmdoamts" + "x" * 60
OPENAI_KEY = "sk-proj-" + "Q" * 40
FAL_KEY = "3b8c1d2e-aaaa-bbbb-cccc-1234567890ab:0123456789abcdef0123456789abcdef"


@contextlib.contextmanager
def logging_as_in_production(settings: Settings) -> Iterator[io.StringIO]:
    """`configure_logging` into a buffer; the process's logging is put back as it was afterwards."""
    root = logging.getLogger()
    factory, level = logging.getLogRecordFactory(), root.level
    buffer = io.StringIO()
    handler = configure_logging(settings, stream=buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        logging.setLogRecordFactory(factory)
        root.setLevel(level)


def settings_with_secrets(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "discord_token": BOT_TOKEN,
        "openai_api_key": OPENAI_KEY,
        "fal_key": FAL_KEY,
        "database_url": "postgresql://videobot:db-pa55word@db.internal:5432/videobot?sslpassword=ssl-pa55",
        "log_level": "DEBUG",
    }
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[arg-type]


def assert_absent(output: str, *values: str) -> None:
    for value in values:
        assert value not in output, f"{value[:12]}… is in the log"
        # A token left half-masked still gives most of it away: no long piece of it may appear either.
        for start in range(0, max(1, len(value) - 24), 12):
            assert value[start : start + 24] not in output, f"part of {value[:12]}… is in the log"


# --- what reaches the log --------------------------------------------------------------------------------


def test_every_secret_is_masked_in_messages_tracebacks_and_reprs() -> None:
    settings = settings_with_secrets()
    with logging_as_in_production(settings) as buffer:
        callback = f"https://discord.com/api/v10/interactions/123/{INTERACTION_TOKEN}/callback"
        logging.getLogger("discord.http").debug("%s %s with %s has returned %s", "POST", callback, None, 204)
        logging.getLogger("discord.webhook.async_").debug(
            "Webhook ID %s with %s %s has returned status code %s",
            1,
            "POST",
            f"https://discord.com/api/v10/webhooks/1/{INTERACTION_TOKEN}?wait=1",
            200,
        )
        event = {"t": "INTERACTION_CREATE", "d": {"id": "9", "token": INTERACTION_TOKEN}}
        logging.getLogger("discord.gateway").debug("For Shard ID %s: WebSocket Event: %s", 0, event)
        logging.getLogger("bot.jobs").info("job %s", ReplyRecord(1, INTERACTION_TOKEN, 0.0, 10).dumps())
        logging.getLogger("httpx").debug("headers %s", {"Authorization": f"Bearer {OPENAI_KEY}"})
        logging.getLogger("bot").warning("login with Bot %s and key %s", BOT_TOKEN, FAL_KEY)
        logging.getLogger("asyncpg").error("cannot connect to %s", settings.database_url)
        try:
            raise RuntimeError(f"POST {callback} failed with Authorization: Bot {BOT_TOKEN}")
        except RuntimeError:
            logging.getLogger("discord.client").exception("Ignoring exception in on_interaction")
        logging.getLogger("bot").debug("where", stack_info=True)
    output = buffer.getvalue()
    assert_absent(output, BOT_TOKEN, INTERACTION_TOKEN, OPENAI_KEY, FAL_KEY, "db-pa55word", "ssl-pa55")
    assert f"/interactions/123/{MASK}/callback" in output and f"/webhooks/1/{MASK}?wait=1" in output
    assert "Traceback (most recent call last)" in output and "RuntimeError: POST" in output
    assert "videobot:***@db.internal:5432" in output, "what is not secret stays readable"


def test_handlers_added_later_and_loggers_that_do_not_propagate_are_covered() -> None:
    """Why redaction sits in the record factory and not in a filter on the root's handlers."""
    late = io.StringIO()
    alone = logging.getLogger("some.library")
    handler = logging.StreamHandler(late)
    with logging_as_in_production(settings_with_secrets()):
        alone.addHandler(handler)
        alone.propagate = False
        try:
            alone.error("token=%s", BOT_TOKEN)
            logging.getLogger("discord.gateway").debug("%s", {"token": INTERACTION_TOKEN})
        finally:
            alone.removeHandler(handler)
            alone.propagate = True
    assert late.getvalue().strip() == f"token={MASK}"


def test_configured_secrets_without_a_recognisable_shape_are_masked() -> None:
    plain = "hunter2hunter2"
    settings = settings_with_secrets(discord_token=plain, openai_api_key=None)
    assert plain in settings_secrets(settings)
    with logging_as_in_production(settings) as buffer:
        logging.getLogger("bot").info("the token is %s", plain)
    assert plain not in buffer.getvalue()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:s3cret@127.0.0.1:1/api/v10", "http://user:***@127.0.0.1:1/api/v10"),
        ("postgresql://bot:pw@db:5432/videobot", "postgresql://bot:***@db:5432/videobot"),
        ("postgresql://bot@db:5432/videobot", "postgresql://bot@db:5432/videobot"),
        ("sqlite:///data/x.db?password=hunter2&mode=ro", "sqlite:///data/x.db?password=***&mode=ro"),
        (
            "postgres://db/x?sslpassword=a1&token=b2&key=c3&secret=d4&api_key=e5&sslmode=require",
            "postgres://db/x?sslpassword=***&token=***&key=***&secret=***&api_key=***&sslmode=require",
        ),
        ("https://discord.com/api/v10", "https://discord.com/api/v10"),
    ],
)
def test_urls_are_shown_without_their_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redaction_keeps_ordinary_lines_and_is_quick_on_long_ones() -> None:
    redact = Redactor()
    line = "job 3f2a: running → delivering (author alice, signal SIGTERM, 12 keys cached)"
    assert redact(line) == line
    assert redact("x" * 200_000) == "x" * 200_000  # bounded patterns: no catastrophic backtracking


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_whole_video_at_debug_logs_no_token(tmp_path: Path, log_format: str) -> None:
    bot_token = "bot-token-" + secrets.token_hex(16)  # no token shape: only the configured value can mask it
    async with FakeDiscord(token=bot_token) as fake:
        settings = settings_with_secrets(discord_token=bot_token, log_format=log_format)
        with logging_as_in_production(settings) as buffer:
            async with running_bot(tmp_path, fake=fake, clock=fake.clock, log_level="DEBUG") as h:
                rec = await h.fake.slash("video", {"prompt": "a lighthouse at dusk", "duration": 2})
                await rec.wait_callback()
                job = await h.wait_job_state((await h.wait_for_job()).id, "delivered")
                clip = h.fake.message(job.delivered_message_id)
                again = await h.fake.click(clip, f"video:again:{job.id}")
                await again.wait_callback()
                await h.wait_job_state((await h.jobs_of())[-1].id, "delivered")
        output = buffer.getvalue()
    issued = list(fake.interactions_by_token)
    assert len(issued) >= 2
    # The log did capture what leaked before: gateway events, webhook and callback URLs, at DEBUG.
    assert "INTERACTION_CREATE" in output and "/webhooks/" in output and "/callback" in output
    assert_absent(output, bot_token, *issued)


# --- `python -m bot check` ---------------------------------------------------------------------------------


def run_check(tmp_path: Path, **env: str) -> str:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "DISCORD_TOKEN": BOT_TOKEN,
        "DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "check"],
        cwd=tmp_path,  # no .env here
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


def test_check_masks_every_credential_in_the_urls_it_prints(tmp_path: Path) -> None:
    output = run_check(
        tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path}/x.db?password=hunter2&sslpassword=hunter3",
        DISCORD_API_BASE="http://proxy-user:s3cret@127.0.0.1:1/api/v10",
    )
    assert "ok   database" in output, output
    assert "http://proxy-user:***@127.0.0.1:1/api/v10" in output and "password=***&sslpassword=***" in output
    assert_absent(output, "hunter2", "hunter3", "s3cret", BOT_TOKEN)

    output = run_check(tmp_path, DATABASE_URL="postgresql://videobot:pg-s3cret@127.0.0.1:1/videobot?token=tok-s3cret")
    assert "BAD  database" in output and "postgresql://videobot:***@127.0.0.1:1/videobot?token=***" in output
    assert_absent(output, "pg-s3cret", "tok-s3cret", BOT_TOKEN)


def test_python_m_bot_logs_through_the_redaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for name, value in {
        "DISCORD_TOKEN": "plain-bot-token-value",
        "LOG_LEVEL": "DEBUG",
        "DATABASE_URL": f"sqlite:///{tmp_path}/bot.db",
        "DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(name, value)  # fmt: skip
    root = logging.getLogger()
    handlers, factory, level = list(root.handlers), logging.getLogRecordFactory(), root.level
    try:
        assert main(["check"]) == 0
        later = io.StringIO()
        root.addHandler(logging.StreamHandler(later))
        logging.getLogger("discord.gateway").debug("sent %s", "plain-bot-token-value")
    finally:
        root.handlers[:] = handlers
        logging.setLogRecordFactory(factory)
        root.setLevel(level)
    assert later.getvalue() == f"sent {MASK}\n"


def test_settings_secrets_lists_keys_and_url_passwords() -> None:
    settings = settings_with_secrets(kling_secret_key=SecretStr("kling-secret-value"))
    found = settings_secrets(settings)
    for value in (BOT_TOKEN, OPENAI_KEY, FAL_KEY, "kling-secret-value", "db-pa55word", "ssl-pa55"):
        assert value in found
