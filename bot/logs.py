"""Logging set up so that no token or key reaches any log output, at any level.

At DEBUG, discord.py logs every gateway event (an INTERACTION_CREATE carries the interaction's token, valid for
15 minutes: enough to post as the bot), every REST and webhook URL (`/webhooks/{app}/{token}`,
`/interactions/{id}/{token}/callback`), and exceptions whose text holds the same URLs. Our own code can log
a `Job` whose repr holds its interaction token, or a database URL with its password.

Redaction happens in a LogRecord factory rather than in a handler filter: the factory runs for every record
of every logger (discord.*, asyncio, ours) when it is created, so it covers handlers added later (discord.py's
`setup_logging`, a library's, a test harness's) and loggers that do not propagate to the root, where a filter
on the root's handlers would see only what reaches them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from pydantic import SecretStr

from bot.config import Settings

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MASK = "***"
MIN_SECRET_CHARS = 6
"""Shorter configured secrets are not masked as plain text (masking "abc" everywhere would ruin every line);
they are still masked where they sit in a URL, a header or a token field."""

_SECRET_NAME = (
    r"(?:[\w.-]{0,30}(?:password|passwd|passphrase|pwd|token|secret|signature|credentials?|apikey|authorization)"
    r"[\w.-]{0,30}|(?:[\w.-]{0,30}[_.-])?(?:key|sig|auth|pass)(?:[_.-][\w.-]{0,30})?)"
)
"""A parameter or field whose value is a secret: password, sslpassword, api_key, access_token, X-Amz-Signature…
Bounded repetitions: log lines can hold long unbroken strings, and unbounded ones would backtrack for ages."""

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Interaction and webhook tokens in Discord URLs: /webhooks/{id}/{token}, /interactions/{id}/{token}/callback.
    (re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/?#\s'\"]+"), rf"\g<1>{MASK}"),
    # Interaction tokens anywhere: they are base64 of "interaction:…".
    (re.compile(r"aW50ZXJhY3Rpb246[\w.:=+/-]*"), MASK),
    # A credential in a URL: scheme://user:password@host.
    (re.compile(r"(\b[a-z][a-z0-9+.-]{0,30}://[^/\s:@'\"]*:)[^@\s/'\"]*@", re.IGNORECASE), rf"\g<1>{MASK}@"),
    # A secret query parameter or assignment: ?password=…, &api_key=…, token=… (not already quoted).
    (re.compile(rf"((?<![\w-]){_SECRET_NAME}=)(?!['\"])[^&\s#,;)'\"]+", re.IGNORECASE), rf"\g<1>{MASK}"),
    # A secret field in JSON, a dict repr or a dataclass repr: "token": "…", 'token': '…', token='…'.
    (
        re.compile(rf"((?<![\w-])['\"]?{_SECRET_NAME}['\"]?\s*[:=]\s*)(['\"])(?:(?!\2).)*\2", re.IGNORECASE),
        rf"\g<1>\g<2>{MASK}\g<2>",
    ),
    # Authorization schemes wherever they appear: Bot …, Bearer …, Basic …
    (re.compile(r"\b(Bot|Bearer|Basic)\s+[\w.=+/-]{16,}"), rf"\g<1> {MASK}"),
    # Anything shaped like a Discord bot token (or a JWT): three base64url parts joined by dots.
    (re.compile(r"(?<![\w-])[\w-]{20,}\.[\w-]{6,}\.[\w-]{20,}"), MASK),
)


class Redactor:
    """Masks the configured secrets and everything shaped like a token or a credential."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literal = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._literal = re.compile("|".join(map(re.escape, literal))) if literal else None

    def __call__(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


def redact_url(url: str) -> str:
    """A URL to show (`check`): its password and secret query parameters masked, the rest as written."""
    return Redactor()(url)


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret the settings hold: each `SecretStr` (bot token, provider keys) and the credentials inside
    URL settings (a database password)."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value().strip())
        elif isinstance(value, str) and "://" in value:
            found.extend(_url_secrets(value))
    return [secret for secret in found if secret]


def _url_secrets(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    values = [value for key, value in parse_qsl(parts.query) if re.fullmatch(_SECRET_NAME, key, re.IGNORECASE)]
    return [password, *values] if password else values


class RedactingRecordFactory:
    """Wraps the current LogRecord factory: each record leaves it with its message, traceback and stack
    already formatted and masked, so no handler or formatter can reach the raw values."""

    def __init__(self, previous: Any, redact: Redactor) -> None:
        self.previous = previous
        self.redact = redact
        self._formatter = logging.Formatter()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: the handler reports it as usual, with nothing formatted
            record.msg, record.args = self.redact(str(record.msg)), None
        else:
            record.msg, record.args = self.redact(message), None
        if record.exc_info:
            # The exception object itself goes: a handler that renders its own traceback from it (rich, an
            # error reporter) would print the unmasked text. Formatters print `exc_text` instead.
            record.exc_text = self.redact(self._formatter.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return record


def install_redaction(redact: Redactor) -> None:
    """Make every log record from now on pass through `redact` (replacing an earlier redactor, not stacking)."""
    current = logging.getLogRecordFactory()
    previous = current.previous if isinstance(current, RedactingRecordFactory) else current
    logging.setLogRecordFactory(RedactingRecordFactory(previous, redact))


JOB_FIELDS = ("job_id", "guild_id", "user_id", "model", "from_state", "state")
"""Fields a job's log line carries as `extra` (`bot.jobs.notify`): JSON lines give them as keys of their own."""


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log shippers: time, level, logger, message, and the job's fields when the
    line is about a job. The message, traceback and stack arrive masked from the record factory; the job's
    fields are plain ids and names, masked once more all the same (an `extra` skips the factory)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = self.redact(value) if isinstance(value, str) else value
        if record.exc_text:
            line["exception"] = record.exc_text
        elif record.exc_info:  # a record made before redaction was installed
            line["exception"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> logging.Handler:
    """Redaction for every logger, then one handler on the root at LOG_LEVEL (stderr unless `stream`), writing
    plain lines or, with LOG_FORMAT=json, one JSON object a line."""
    redact = Redactor(settings_secrets(settings))
    install_redaction(redact)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if settings.log_format == "json" else logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    return handler
