"""Where and how the bot answers a job's member on Discord: the engine stores it as an opaque string.

The engine needs none of it (it has no idea what an interaction token is): it keeps `Job.delivery_ref` as it was
given and hands it back with the job. Only this layer reads or writes it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    application_id: int
    token: str
    """The interaction's token: it answers and edits for 15 minutes, and is never logged."""
    created_at: float
    attachment_size_limit: int
    app_permissions: int | None = None
    """The bot's permissions in the channel, as Discord reported them with the interaction."""
    status_message_id: int | None = None
    """The public status message, for edits with the bot's token once the interaction's has expired."""
    locale: str | None = None
    """The requester's Discord locale (`pt-BR`): the job's public messages speak it unless the server chose a
    language. None in records written before languages were kept (English, or the server's choice)."""
    guild_locale: str | None = None
    """The server's own Discord locale when the job was asked for, for messages that answer nobody."""

    def with_status_message(self, message_id: int) -> ReplyRecord:
        return replace(self, status_message_id=message_id)

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def __repr__(self) -> str:  # the token must not reach a log line through a repr
        return f"ReplyRecord(application_id={self.application_id}, status_message_id={self.status_message_id})"


@functools.lru_cache(maxsize=4096)
def reply_record(delivery_ref: str | None) -> ReplyRecord | None:
    """The record a job carries, or None for a job that came from elsewhere (the command line, an old row).
    Parsed once per record: delivery reads it on every status edit and post, and the record is immutable."""
    if not delivery_ref:
        return None
    return ReplyRecord(**json.loads(delivery_ref))
