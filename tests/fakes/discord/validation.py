"""Body checks the fake applies where Discord rejects a request with 400 (code 50035 and friends).

Why: a bot that passes against a lenient fake can still be refused in production; these are the limits from
Discord's docs that a video bot can plausibly hit (content, embeds, mentions, components, attachments).
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.discord.models import (
    EPHEMERAL,
    FakeChannel,
    FakeRole,
    FakeUser,
    StoredAttachment,
    walk_components,
)

SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_VOICE_MESSAGE = 1 << 13
IS_COMPONENTS_V2 = 1 << 15
CHANNEL_MESSAGE_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_VOICE_MESSAGE | IS_COMPONENTS_V2
INTERACTION_MESSAGE_FLAGS = EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
EDIT_FLAGS = SUPPRESS_EMBEDS | IS_COMPONENTS_V2
INTERACTIVE_TYPES = {2, 3, 5, 6, 7, 8}  # button and the select menus: need a custom_id (except link buttons)


class ApiError(Exception):
    """An error response exactly as Discord shapes it: ``{"message", "code"[, "errors"]}``."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            data["errors"] = self.errors
        return data


class FormErrors:
    """Collects field errors into Discord's nested ``errors`` object and raises one 50035."""

    def __init__(self) -> None:
        self.errors: dict[str, Any] = {}

    def add(self, path: str, code: str, message: str) -> None:
        node = self.errors
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_len(self, path: str, value: Any, limit: int) -> None:
        if isinstance(value, str) and len(value) > limit:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ApiError(400, 50035, "Invalid Form Body", self.errors)


def form_error(path: str, code: str, message: str) -> ApiError:
    """A single-field 400/50035, e.g. ``form_error("data.flags", "MESSAGE_FLAGS_INVALID", "…")``."""
    errs = FormErrors()
    errs.add(path, code, message)
    return ApiError(400, 50035, "Invalid Form Body", errs.errors)


def check_embeds(embeds: Any, errs: FormErrors) -> None:
    if not isinstance(embeds, list):
        errs.add("embeds", "BASE_TYPE_LIST", "Must be a list.")
        return
    if len(embeds) > 10:
        errs.add("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds):
        p = f"embeds.{i}"
        errs.max_len(f"{p}.title", embed.get("title"), 256)
        errs.max_len(f"{p}.description", embed.get("description"), 4096)
        errs.max_len(f"{p}.footer.text", (embed.get("footer") or {}).get("text"), 2048)
        errs.max_len(f"{p}.author.name", (embed.get("author") or {}).get("name"), 256)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            errs.add(f"{p}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        for j, f in enumerate(fields):
            errs.max_len(f"{p}.fields.{j}.name", f.get("name"), 256)
            errs.max_len(f"{p}.fields.{j}.value", f.get("value"), 1024)
        texts = [embed.get("title"), embed.get("description"), (embed.get("footer") or {}).get("text")]
        texts += [(embed.get("author") or {}).get("name")]
        texts += [f.get(k) for f in fields for k in ("name", "value")]
        total += sum(len(t) for t in texts if isinstance(t, str))
    if total > 6000:
        errs.add("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")


def check_allowed_mentions(am: Any, errs: FormErrors) -> None:
    if not isinstance(am, dict):
        errs.add("allowed_mentions", "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        return
    unknown = set(am) - {"parse", "users", "roles", "replied_user"}
    if unknown:
        errs.add("allowed_mentions", "UNKNOWN_KEYS", f"Unknown keys: {sorted(unknown)}")
    parse = am.get("parse", [])
    if not isinstance(parse, list) or any(p not in ("users", "roles", "everyone") for p in parse):
        errs.add("allowed_mentions.parse", "BASE_TYPE_CHOICES", "Value must be one of users, roles, everyone.")
        parse = []
    for kind in ("users", "roles"):
        ids = am.get(kind, [])
        if not isinstance(ids, list) or len(ids) > 100:
            errs.add(f"allowed_mentions.{kind}", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        elif ids and kind in parse:
            errs.add(
                "allowed_mentions",
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
            )


def check_components(components: Any, flags: int, errs: FormErrors) -> None:
    if not isinstance(components, list):
        errs.add("components", "BASE_TYPE_LIST", "Must be a list.")
        return
    v2 = bool(flags & IS_COMPONENTS_V2)
    if not v2:
        if len(components) > 5:
            errs.add("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for i, row in enumerate(components):
            if row.get("type") != 1:
                errs.add(f"components.{i}.type", "UNION_TYPE_CHOICES", "Top level components must be rows.")
            elif not 1 <= len(row.get("components") or []) <= 5:
                errs.add(f"components.{i}.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5.")
    seen: set[str] = set()
    for comp in walk_components(components):
        ctype = comp.get("type")
        custom_id = comp.get("custom_id")
        is_link = ctype == 2 and comp.get("style") in (5, 6)
        if ctype in INTERACTIVE_TYPES and not is_link and not custom_id:
            errs.add("components", "COMPONENT_CUSTOM_ID_REQUIRED", "A custom id is required")
        if custom_id is not None:
            if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                errs.add("components", "BASE_TYPE_BAD_LENGTH", "custom_id must be between 1 and 100 in length.")
            elif custom_id in seen:
                errs.add("components", "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated")
            seen.add(str(custom_id))
        if ctype == 2:
            errs.max_len("components.label", comp.get("label"), 80)
            if comp.get("style") == 5 and not comp.get("url"):
                errs.add("components", "BUTTON_COMPONENT_URL_REQUIRED", "A url is required")
        if ctype in (3, 5, 6, 7, 8):
            errs.max_len("components.placeholder", comp.get("placeholder"), 150)
            if len(comp.get("options") or []) > 25:
                errs.add("components.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")


def check_message_body(body: dict[str, Any], n_files: int, *, creating: bool, allowed_flags: int) -> None:
    """Raise ApiError(400 …) the way Discord refuses a message create/edit body."""
    errs = FormErrors()
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        errs.add("content", "BASE_TYPE_STRING", "Must be a string.")
    else:
        errs.max_len("content", content, 2000)
    if "embeds" in body and body["embeds"] is not None:
        check_embeds(body["embeds"], errs)
    if body.get("allowed_mentions") is not None:
        check_allowed_mentions(body["allowed_mentions"], errs)
    flags = int(body.get("flags") or 0)
    if flags & ~allowed_flags:
        errs.add("flags", "MESSAGE_FLAGS_INVALID", f"Invalid message flags: {flags}")
    if body.get("components") is not None:
        check_components(body["components"], flags, errs)
    nonce = body.get("nonce")
    if isinstance(nonce, str) and len(nonce) > 25:
        errs.add("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    attachments = body.get("attachments")
    if attachments is not None and (not isinstance(attachments, list) or len(attachments) > 10):
        errs.add("attachments", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    errs.raise_if_any()
    if n_files > 10:
        raise ApiError(400, 30015, "Maximum number of attachments in a message reached (10)")
    if creating:
        has_body = any(body.get(k) for k in ("content", "embeds", "components", "sticker_ids", "poll"))
        if not has_body and n_files == 0:
            raise ApiError(400, 50006, "Cannot send an empty message")


def check_choices(data: dict[str, Any]) -> None:
    """Autocomplete result (callback type 8): at most 25 choices, names 1-100 characters."""
    errs = FormErrors()
    choices = data.get("choices")
    if not isinstance(choices, list):
        errs.add("data.choices", "BASE_TYPE_REQUIRED", "This field is required")
    elif len(choices) > 25:
        errs.add("data.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    else:
        for i, choice in enumerate(choices):
            name = choice.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 100:
                errs.add(f"data.choices.{i}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            value = choice.get("value")
            if isinstance(value, str) and len(value) > 100:
                errs.max_len(f"data.choices.{i}.value", value, 100)
    errs.raise_if_any()


def check_modal(data: dict[str, Any]) -> None:
    """Modal (callback type 9): custom_id ≤ 100, title ≤ 45, 1-5 top-level components."""
    errs = FormErrors()
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
        errs.add("data.custom_id", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    title = data.get("title")
    if not isinstance(title, str) or not 1 <= len(title) <= 45:
        errs.add("data.title", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
    if not 1 <= len(data.get("components") or []) <= 5:
        errs.add("data.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    errs.raise_if_any()


DISCORD_LOCALES = frozenset({
    "id", "da", "de", "en-GB", "en-US", "es-ES", "es-419", "fr", "hr", "it", "lt", "hu", "nl", "no", "pl", "pt-BR",
    "ro", "fi", "sv-SE", "vi", "tr", "cs", "el", "bg", "ru", "uk", "hi", "th", "zh-CN", "ja", "zh-TW", "ko",
})  # fmt: skip
"""The locales Discord accepts as keys of `name_localizations` and `description_localizations`."""
_CHAT_NAME = re.compile(r"[-_\w]{1,32}")


def _check_localized(errs: FormErrors, path: str, field: str, value: Any, *, low: int, high: int,
                     chat_name: bool = False) -> None:  # fmt: skip
    """A text and its localizations: lengths, and for chat-input names Discord's name rule."""
    localized = value.get(f"{field}_localizations")
    texts = [(f"{path}.{field}", value.get(field, ""))]
    if localized is not None:
        if not isinstance(localized, dict):
            errs.add(
                f"{path}.{field}_localizations", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
            )
            return
        for locale, text in localized.items():
            if locale not in DISCORD_LOCALES:
                errs.add(f"{path}.{field}_localizations.{locale}", "LOCALE_INVALID", f"Invalid locale: {locale}")
            texts.append((f"{path}.{field}_localizations.{locale}", text))
    for where, text in texts:
        if not isinstance(text, str) or not low <= len(text) <= high:
            errs.add(where, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")
        elif chat_name and (not _CHAT_NAME.fullmatch(text) or text != text.lower()):
            errs.add(where, "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")


def _check_options(errs: FormErrors, path: str, options: list[Any]) -> None:
    if len(options) > 25:
        errs.add(f"{path}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for j, option in enumerate(options):
        where = f"{path}.options.{j}"
        _check_localized(errs, where, "name", option, low=1, high=32, chat_name=True)
        _check_localized(errs, where, "description", option, low=1, high=100)
        for k, choice in enumerate(option.get("choices") or []):
            _check_localized(errs, f"{where}.choices.{k}", "name", choice, low=1, high=100)
        _check_options(errs, where, option.get("options") or [])


def check_commands(commands: Any) -> None:
    """Bulk overwrite body: names, descriptions and their localizations (known locales, lengths), options at every
    depth, choices, no duplicate (name, type)."""
    errs = FormErrors()
    if not isinstance(commands, list):
        raise ApiError(400, 50035, "Invalid Form Body", {"_errors": [{"code": "BASE_TYPE_LIST"}]})
    seen: set[tuple[str, int]] = set()
    for i, cmd in enumerate(commands):
        ctype = int(cmd.get("type", 1))
        name = cmd.get("name", "")
        _check_localized(errs, str(i), "name", cmd, low=1, high=32, chat_name=ctype == 1)
        if ctype == 1:
            _check_localized(errs, str(i), "description", cmd, low=1, high=100)
        _check_options(errs, str(i), cmd.get("options") or [])
        if (name, ctype) in seen:
            errs.add(f"{i}.name", "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique")
        seen.add((name, ctype))
    errs.raise_if_any()


# ------------------------------------------------------------------------------------ what Discord's client refuses


class RefusedInteraction(ValueError):
    """The test asked for an interaction no Discord client could send (bad option, missing input…)."""


def refuse(message: str) -> None:
    raise RefusedInteraction(f"Discord would not send this interaction: {message}")


def infer_option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    if isinstance(value, FakeUser):
        return 6
    if isinstance(value, FakeRole):
        return 8
    if isinstance(value, FakeChannel):
        return 7
    if isinstance(value, (StoredAttachment, tuple)):
        return 11
    return 3


def check_option_value(spec: dict[str, Any], value: Any) -> None:
    name = spec["name"]
    choices = spec.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        refuse(f"{value!r} is not a choice of {name!r}")
    too_short = isinstance(value, str) and len(value) < spec.get("min_length", 0)
    if too_short or (isinstance(value, str) and len(value) > spec.get("max_length", 6000)):
        refuse(f"length {len(value)} of {name!r} outside {spec.get('min_length', 0)}..{spec.get('max_length')}")
    if isinstance(value, (int, float)) and spec["type"] in (4, 10):
        lo, hi = spec.get("min_value"), spec.get("max_value")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            refuse(f"{value} of {name!r} outside {lo}..{hi}")


def modal_inputs(modal: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for top in modal.get("components", []):
        out += top.get("components", []) if top.get("type") == 1 else [top["component"]] if "component" in top else []
    return out


def submitted_component(component: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    cid = component.get("custom_id")
    value = values.get(cid, component.get("value") or "")
    if component.get("type") == 4:
        if component.get("required", True) and not value:
            refuse(f"text input {cid!r} is required")
        if len(value) > component.get("max_length", 4000) or len(value) < component.get("min_length", 0):
            refuse(f"text input {cid!r}: length {len(value)} out of range")
        return {"type": 4, "id": component.get("id", 0), "custom_id": cid, "value": value}
    chosen = value if isinstance(value, list) else [value] if value else []
    return {"type": component.get("type"), "id": component.get("id", 0), "custom_id": cid, "values": chosen}
