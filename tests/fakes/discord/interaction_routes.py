"""Interaction endpoints of the fake: the callback and the token (webhook) routes.

Why separate: these are the routes with Discord's hard timing rules (3 s to acknowledge, once only; 15 min
token), which is where a video bot with slow jobs most often goes wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes.discord.models import EPHEMERAL, LOADING, CallbackRecord, StoredMessage
from tests.fakes.discord.validation import (
    EDIT_FLAGS,
    INTERACTION_MESSAGE_FLAGS,
    ApiError,
    check_choices,
    check_message_body,
    check_modal,
    form_error,
)

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord
    from tests.fakes.discord.interactions import InteractionRecord
    from tests.fakes.discord.models import RecordedRequest
    from tests.fakes.discord.rest import Reply, RestApi

# Which callback types each interaction type accepts (docs: receiving-and-responding, callback types).
ALLOWED_CALLBACKS: dict[int, set[int]] = {
    1: {1},
    2: {4, 5, 9},
    3: {4, 5, 6, 7, 9},
    4: {8},
    5: {4, 5, 6, 7},
}
TRUTHY = {"1", "true", "True"}


class InteractionRoutes:
    def __init__(self, fake: FakeDiscord, rest: RestApi) -> None:
        self.fake = fake
        self.rest = rest

    def _message_type(self, rec: InteractionRecord) -> int:
        if rec.type == 2:
            return 20 if rec.payload["data"].get("type", 1) == 1 else 23
        return 0

    def _interaction_message(
        self, rec: InteractionRecord, body: dict[str, Any], rec_req: RecordedRequest, flags: int
    ) -> StoredMessage:
        channel = self.fake.channels[rec.channel_id]
        meta: dict[str, Any] = {
            "id": str(rec.id),
            "type": rec.type,
            "user": rec.user.payload(),
            "authorizing_integration_owners": rec.payload.get("authorizing_integration_owners", {}),
        }
        if rec.source_message is not None:
            meta["interacted_message_id"] = str(rec.source_message.id)
        if rec.original is not None:
            meta["original_response_message_id"] = str(rec.original.id)
        return self.rest.new_message(
            channel,
            body,
            rec_req.files,
            type=self._message_type(rec) if rec.original is None else 0,
            flags=flags,
            webhook_id=self.fake.app_id,
            interaction_id=rec.id,
            interaction_metadata=meta,
        )

    # ---------------------------------------------------------------- POST /interactions/{id}/{token}/callback

    async def callback(self, req: RecordedRequest, interaction_id: str, token: str) -> Reply:
        fake = self.fake
        rec = fake.interactions.get(int(interaction_id)) if interaction_id.isdigit() else None
        if rec is None or rec.token != token:
            raise ApiError(404, 10062, "Unknown interaction")
        body = req.json if isinstance(req.json, dict) else {}
        ctype = body.get("type")
        data = body.get("data") or {}
        attempt = CallbackRecord(ctype if isinstance(ctype, int) else -1, data, fake.clock.now(), 0, None, req.files)
        rec.attempts.append(attempt)
        try:
            result = self._callback(rec, attempt, req)
        except ApiError as exc:
            attempt.status, attempt.code = exc.status, exc.code
            raise
        attempt.status = 200 if req.query.get("with_response") in TRUTHY else 204
        fake.notify()
        return (200, result) if attempt.status == 200 else (204, None)

    def _callback(self, rec: InteractionRecord, attempt: CallbackRecord, req: RecordedRequest) -> dict[str, Any]:
        fake = self.fake
        if rec.acknowledged:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if fake.clock.now() - rec.created_at > fake.callback_deadline:
            raise ApiError(404, 10062, "Unknown interaction")
        ctype, data = attempt.type, attempt.data
        if ctype not in ALLOWED_CALLBACKS.get(rec.type, set()):
            raise form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", f"Invalid callback type {ctype}")
        msg: StoredMessage | None = None
        flags = int(data.get("flags") or 0)
        if ctype == 4:
            self.rest.check_sizes(req.files, rec.attachment_size_limit)
            check_message_body(data, len(req.files), creating=True, allowed_flags=INTERACTION_MESSAGE_FLAGS)
            msg = self._interaction_message(rec, data, req, flags)
        elif ctype == 5:
            if flags & ~EPHEMERAL:
                raise form_error("data.flags", "MESSAGE_FLAGS_INVALID", "Only EPHEMERAL is allowed")
            msg = self._interaction_message(rec, {}, req, flags | LOADING)
        elif ctype in (6, 7):
            msg = rec.source_message
            if msg is None:
                raise form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "Interaction has no message")
            if ctype == 7:
                self.rest.check_sizes(req.files, rec.attachment_size_limit)
                check_message_body(data, len(req.files), creating=False, allowed_flags=INTERACTION_MESSAGE_FLAGS)
                self.rest.edit(msg, data, req.files)
                fake.message_event("MESSAGE_UPDATE", msg)
        elif ctype == 8:
            check_choices(data)
        elif ctype == 9:
            check_modal(data)
            rec.modal = data
            fake.modals[data["custom_id"]] = rec
        attempt.message = msg
        rec.callback = attempt
        if ctype in (4, 5):
            rec.original = msg
            fake.store_message(msg)  # type: ignore[arg-type]
        elif ctype in (6, 7):
            rec.original = msg
        interaction: dict[str, Any] = {"id": str(rec.id), "type": rec.type}
        if msg is not None:
            interaction |= {
                "response_message_id": str(msg.id),
                "response_message_loading": ctype == 5,
                "response_message_ephemeral": msg.ephemeral,
            }
        result: dict[str, Any] = {"interaction": interaction}
        if ctype in (4, 5, 7):
            result["resource"] = {"type": ctype}
            if ctype != 5 and msg is not None:
                result["resource"]["message"] = msg.payload()
        return result

    # ---------------------------------------------------------------- /webhooks/{app}/{token}...

    def _token(self, app_id: str, token: str) -> InteractionRecord:
        fake = self.fake
        if app_id != str(fake.app_id):
            raise ApiError(404, 10015, "Unknown Webhook")
        rec = fake.interactions_by_token.get(token)
        if rec is None or fake.clock.now() - rec.created_at > fake.token_lifetime:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if not rec.acknowledged:
            raise ApiError(404, 10015, "Unknown Webhook")
        return rec

    def _target(self, rec: InteractionRecord, message_id: str) -> StoredMessage:
        if message_id == "@original":
            msg = rec.original
        else:
            msg = next((m for m in [rec.original, *rec.followups] if m and str(m.id) == message_id), None)
        if msg is None or msg.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def followup(self, req: RecordedRequest, app_id: str, token: str) -> Reply:
        fake = self.fake
        rec = self._token(app_id, token)
        body = req.json if isinstance(req.json, dict) else {}
        self.rest.check_sizes(req.files, rec.attachment_size_limit)
        check_message_body(body, len(req.files), creating=True, allowed_flags=INTERACTION_MESSAGE_FLAGS)
        original = rec.original
        if original is not None and original.loading and not original.deleted and not rec.followups and not rec.edits:
            # Discord: the first followup after a type-5 defer fills in the loading message (unless it was deleted).
            msg = rec.original
            self.rest.edit(msg, body, req.files)
            fake.message_event("MESSAGE_UPDATE", msg)
        else:
            msg = self._interaction_message(rec, body, req, int(body.get("flags") or 0))
            fake.store_message(msg)
        rec.followups.append(msg)
        fake.notify()
        return (200, msg.payload()) if req.query.get("wait") in TRUTHY else (204, None)

    async def get_message(self, req: RecordedRequest, app_id: str, token: str, message_id: str) -> Reply:
        return 200, self._target(self._token(app_id, token), message_id).payload()

    async def edit_message(self, req: RecordedRequest, app_id: str, token: str, message_id: str) -> Reply:
        rec = self._token(app_id, token)
        msg = self._target(rec, message_id)
        body = req.json if isinstance(req.json, dict) else {}
        self.rest.check_sizes(req.files, rec.attachment_size_limit)
        check_message_body(body, len(req.files), creating=False, allowed_flags=INTERACTION_MESSAGE_FLAGS)
        if int(body.get("flags") or 0) & ~(EDIT_FLAGS | EPHEMERAL):
            raise form_error("flags", "MESSAGE_FLAGS_INVALID", "Invalid flags for an edit")
        self.rest.edit(msg, body, req.files)
        if msg is rec.original:
            rec.edits.append(body)
        self.fake.message_event("MESSAGE_UPDATE", msg)
        self.fake.notify()
        return 200, msg.payload()

    async def delete_message(self, req: RecordedRequest, app_id: str, token: str, message_id: str) -> Reply:
        rec = self._token(app_id, token)
        self.fake.delete_message(self._target(rec, message_id))
        return 204, None
