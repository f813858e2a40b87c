"""Injecting interactions into the fake Discord: complete INTERACTION_CREATE payloads and their records.

Why complete: a missing key in a ``parse_*`` (``attachment_size_limit``, ``version``, ``member.flags``,
``channel.name``…) raises KeyError inside discord.py and kills the client, so every payload carries everything
Discord sends. Why strict: Discord's client enforces the command schema (required options, choices, ranges,
contexts) and only lets users click components that exist, so the helpers refuse what no user could send.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.discord.models import (
    CallbackRecord,
    FakeChannel,
    FakeGuild,
    FakeRole,
    FakeUser,
    StoredAttachment,
    StoredMessage,
)
from tests.fakes.discord.validation import (
    check_option_value,
    infer_option_type,
    modal_inputs,
    refuse,
    submitted_component,
)

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord

UserRef = FakeUser | int | str
FileSpec = StoredAttachment | tuple[str, bytes] | tuple[str, bytes, str]
SELECT_TYPES = {3, 5, 6, 7, 8}


@dataclass(eq=False)
class InteractionRecord:
    """One injected interaction and everything the bot did with it (callback, @original, followups)."""

    fake: FakeDiscord = field(repr=False)
    id: int
    token: str
    type: int
    payload: dict[str, Any] = field(repr=False)
    created_at: float
    attachment_size_limit: int
    channel_id: int
    guild_id: int | None
    user: FakeUser
    source_message: StoredMessage | None = None
    attempts: list[CallbackRecord] = field(default_factory=list)
    callback: CallbackRecord | None = None
    original: StoredMessage | None = None
    followups: list[StoredMessage] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)
    modal: dict[str, Any] | None = None

    @property
    def acknowledged(self) -> bool:
        return self.callback is not None

    @property
    def choices(self) -> list[dict[str, Any]]:
        """Autocomplete result (callback type 8)."""
        return list(self.callback.data.get("choices", [])) if self.callback else []

    async def wait_callback(self, timeout: float = 5.0) -> CallbackRecord:  # noqa: ASYNC109
        """The accepted callback; a rejected attempt (late, invalid) does not count."""
        return await self.fake.wait_for(lambda: self.callback, timeout, what=f"callback of interaction {self.id}")

    async def wait_attempt(self, timeout: float = 5.0) -> CallbackRecord:  # noqa: ASYNC109
        """The first callback attempt, accepted or not (see ``.status``/``.code``)."""
        return await self.fake.wait_for(
            lambda: self.attempts[0] if self.attempts else None, timeout, what=f"callback attempt on {self.id}"
        )

    async def wait_original(
        self,
        predicate: Callable[[StoredMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> StoredMessage:
        """@original once it satisfies ``predicate`` (default: exists and is no longer the loading placeholder)."""
        check = predicate or (lambda m: not m.loading)

        def ready() -> StoredMessage | None:
            msg = self.original
            return msg if msg is not None and check(msg) else None

        return await self.fake.wait_for(ready, timeout, what=f"@original of interaction {self.id}")

    async def wait_edit(self, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Body of the ``count``-th PATCH of @original."""
        return await self.fake.wait_for(
            lambda: self.edits[count - 1] if len(self.edits) >= count else None,
            timeout,
            what=f"edit #{count} of @original of {self.id}",
        )

    async def wait_followup(self, count: int = 1, timeout: float = 5.0) -> StoredMessage:  # noqa: ASYNC109
        return await self.fake.wait_for(
            lambda: self.followups[count - 1] if len(self.followups) >= count else None,
            timeout,
            what=f"followup #{count} of {self.id}",
        )


class InteractionsMixin:
    """The ``slash``/``autocomplete``/``click``/``submit_modal``/``message_command`` helpers of FakeDiscord."""

    async def slash(
        self: FakeDiscord,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        subcommand: list[str] | str | None = None,
        attachments: dict[str, FileSpec] | None = None,
        user: UserRef | None = None,
        guild: int | None = None,
        channel: int | None = None,
        in_dm: bool = False,
        roles: list[int] | None = None,
        permissions: int | None = None,
        app_permissions: int | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> InteractionRecord:
        """A chat-input command; ``name`` may hold the path (``"videoadmin quota default"``)."""
        opts = dict(options or {}) | dict(attachments or {})
        ctx = self._context(user, guild, channel, in_dm)
        data = self._command_data(name, subcommand, opts, ctx, focused=None)
        return await self._inject(2, data, ctx, roles, permissions, app_permissions, locale, attachment_size_limit)

    async def autocomplete(
        self: FakeDiscord,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        subcommand: list[str] | str | None = None,
        user: UserRef | None = None,
        guild: int | None = None,
        channel: int | None = None,
        in_dm: bool = False,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Type 4: ``options`` are what the user has typed so far; ``focused`` names the option being typed."""
        ctx = self._context(user, guild, channel, in_dm)
        data = self._command_data(name, subcommand, options, ctx, focused=focused)
        return await self._inject(4, data, ctx, None, None, None, locale, None)

    async def message_command(
        self: FakeDiscord,
        name: str,
        target: StoredMessage | int,
        *,
        user: UserRef | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> InteractionRecord:
        msg = target if isinstance(target, StoredMessage) else self.message(target)
        ctx = self._context(user, msg.guild_id, msg.channel_id, msg.guild_id is None)
        cmd = self._find_command(name, 3, ctx)
        data = {
            "id": cmd["id"] if cmd else str(self.new_id()),
            "name": name,
            "type": 3,
            "target_id": str(msg.id),
            "resolved": {"messages": {str(msg.id): msg.payload()}},
        }
        return await self._inject(2, data, ctx, None, None, None, locale, attachment_size_limit)

    async def user_command(
        self: FakeDiscord, name: str, target: UserRef, *, user: UserRef | None = None, guild: int | None = None
    ) -> InteractionRecord:
        ctx = self._context(user, guild, None, False)
        cmd = self._find_command(name, 2, ctx)
        resolved: dict[str, Any] = {}
        target_user = self._resolve_ref(6, target, resolved, ctx)
        data = {"id": cmd["id"] if cmd else str(self.new_id()), "name": name, "type": 2, "target_id": target_user}
        data["resolved"] = resolved
        return await self._inject(2, data, ctx, None, None, None, "en-US", None)

    async def click(
        self: FakeDiscord,
        message: StoredMessage | int,
        custom_id: str,
        *,
        values: list[str] | None = None,
        user: UserRef | None = None,
        roles: list[int] | None = None,
        permissions: int | None = None,
        app_permissions: int | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> InteractionRecord:
        """A button press or select on a stored message; the payload carries the full ``message`` (DynamicItem)."""
        msg = message if isinstance(message, StoredMessage) else self.message(message)
        if msg.deleted:
            refuse(f"message {msg.id} was deleted")
        comp = msg.find_component(custom_id)
        if comp is None:
            raise LookupError(f"message {msg.id} has no component {custom_id!r}; it has {msg.custom_ids()}")
        if comp.get("disabled"):
            refuse(f"component {custom_id!r} is disabled")
        ctx = self._context(user, msg.guild_id, msg.channel_id, msg.guild_id is None)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": comp["type"]}
        if comp["type"] in SELECT_TYPES:
            chosen = list(values or [])
            if not comp.get("min_values", 1) <= len(chosen) <= comp.get("max_values", 1):
                refuse(f"{len(chosen)} values for select {custom_id!r}")
            allowed = {o["value"] for o in comp.get("options", [])}
            if comp["type"] == 3 and not set(chosen) <= allowed:
                refuse(f"values {chosen} not among the options {sorted(allowed)}")
            data["values"] = chosen
        rec = self._record(3, data, ctx, roles, permissions, app_permissions, locale, attachment_size_limit)
        rec.source_message = msg
        rec.payload["message"] = msg.payload()
        return await self._send(rec)

    async def submit_modal(
        self: FakeDiscord,
        custom_id: str,
        values: dict[str, Any],
        *,
        user: UserRef | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> InteractionRecord:
        """Type 5 for a modal the bot showed (callback type 9); ``values`` maps input custom_id → text."""
        shown = self.modals.pop(custom_id, None)
        if shown is None or shown.modal is None:
            raise LookupError(f"no modal {custom_id!r} was shown; shown: {sorted(self.modals)}")
        modal = shown.modal
        unknown = set(values) - {c.get("custom_id") for c in modal_inputs(modal)}
        if unknown:
            refuse(f"modal {custom_id!r} has no inputs {sorted(unknown)}")
        components: list[dict[str, Any]] = []
        for top in modal.get("components", []):
            if top.get("type") == 1:
                row = [submitted_component(c, values) for c in top["components"]]
                components.append({"type": 1, "components": row})
            elif top.get("type") == 18:
                components.append(
                    {"type": 18, "id": top.get("id", 0), "component": submitted_component(top["component"], values)}
                )
        ctx = self._context(user or shown.user, shown.guild_id, shown.channel_id, shown.guild_id is None)
        data = {"custom_id": custom_id, "components": components}
        rec = self._record(5, data, ctx, None, None, None, locale, attachment_size_limit)
        if shown.source_message is not None:
            rec.source_message = shown.source_message
            rec.payload["message"] = shown.source_message.payload()
        return await self._send(rec)

    # ---------------------------------------------------------------- building blocks

    def _context(
        self: FakeDiscord, user: UserRef | None, guild: int | None, channel: int | None, in_dm: bool
    ) -> tuple[FakeUser, FakeGuild | None, FakeChannel]:
        who = self.user(user if user is not None else self.default_user_id)
        if in_dm:
            return who, None, self.dm_channel(who)
        g = self.guilds[guild or self.default_guild_id]
        ch = self.channels[channel] if channel else g.text_channel
        if ch.guild_id != g.id:
            refuse(f"channel {ch.id} is not in guild {g.id}")
        if who.id not in g.members:
            refuse(f"{who.username} is not a member of guild {g.id}")
        return who, g, ch

    def _find_command(
        self: FakeDiscord, name: str, ctype: int, ctx: tuple[FakeUser, FakeGuild | None, FakeChannel]
    ) -> dict[str, Any] | None:
        _, g, _ = ctx
        pool = [*(self.guild_commands.get(g.id, []) if g else []), *self.global_commands]
        cmd = next((c for c in pool if c["name"] == name and c.get("type", 1) == ctype), None)
        if cmd is None:
            if self.strict_commands:
                known = [c["name"] for c in pool]
                raise LookupError(f"command {name!r} (type {ctype}) is not synced; synced: {known}")
            return None
        contexts = cmd.get("contexts")
        context = 0 if g else 1
        if (contexts is not None and context not in contexts) or (g is None and cmd.get("dm_permission") is False):
            refuse(f"/{name} is not available in {'guilds' if g else 'DMs'}")
        return cmd

    def _command_data(
        self: FakeDiscord,
        name: str,
        subcommand: list[str] | str | None,
        options: dict[str, Any],
        ctx: tuple[FakeUser, FakeGuild | None, FakeChannel],
        focused: str | None,
    ) -> dict[str, Any]:
        root, *path = name.split()
        path += [subcommand] if isinstance(subcommand, str) else list(subcommand or [])
        cmd = self._find_command(root, 1, ctx)
        schema: list[dict[str, Any]] | None = cmd.get("options", []) if cmd else None
        wrappers: list[tuple[str, int]] = []
        for depth, part in enumerate(path):
            sub = next((o for o in schema or [] if o["name"] == part and o["type"] in (1, 2)), None)
            if schema is not None and sub is None:
                refuse(f"/{root} has no subcommand {part!r}")
            wrappers.append((part, sub["type"] if sub else (1 if depth == len(path) - 1 else 2)))
            schema = sub.get("options", []) if sub else None
        if schema and any(o["type"] in (1, 2) for o in schema):
            refuse(f"/{name} needs a subcommand: {[o['name'] for o in schema]}")
        resolved: dict[str, Any] = {}
        opts = [self._option(n, v, schema, resolved, ctx, n == focused) for n, v in options.items()]
        if schema is not None and focused is None:
            missing = [o["name"] for o in schema if o.get("required") and o["name"] not in options]
            if missing:
                refuse(f"/{name} misses required options {missing}")
        for part, ptype in reversed(wrappers):
            opts = [{"name": part, "type": ptype, "options": opts}]
        data: dict[str, Any] = {"id": cmd["id"] if cmd else str(self.new_id()), "name": root, "type": 1}
        data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        if cmd and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return data

    def _option(
        self: FakeDiscord,
        name: str,
        value: Any,
        schema: list[dict[str, Any]] | None,
        resolved: dict[str, Any],
        ctx: tuple[FakeUser, FakeGuild | None, FakeChannel],
        focused: bool,
    ) -> dict[str, Any]:
        spec = next((o for o in schema or [] if o["name"] == name), None)
        if schema is not None and spec is None:
            refuse(f"unknown option {name!r}; the command has {[o['name'] for o in schema]}")
        otype = spec["type"] if spec else infer_option_type(value)
        if focused:
            return {"name": name, "type": otype, "value": value, "focused": True}
        out = self._resolve_ref(otype, value, resolved, ctx)
        if spec:
            check_option_value(spec, out)
        return {"name": name, "type": otype, "value": out}

    def _resolve_ref(
        self: FakeDiscord,
        otype: int,
        value: Any,
        resolved: dict[str, Any],
        ctx: tuple[FakeUser, FakeGuild | None, FakeChannel],
    ) -> Any:
        """Option value as Discord sends it, adding users/members/roles/channels/attachments to ``resolved``."""
        _, g, channel = ctx
        if otype == 3:
            return str(value)
        if otype == 4:
            if isinstance(value, bool) or not isinstance(value, int):
                refuse(f"{value!r} is not an integer")
            return value
        if otype == 5:
            return bool(value)
        if otype == 10:
            return float(value)
        if otype in (6, 9) and not isinstance(value, FakeRole):
            if otype == 9 and isinstance(value, int) and g and value in g.roles:
                return self._resolve_ref(8, value, resolved, ctx)
            u = self.user(value)
            resolved.setdefault("users", {})[str(u.id)] = u.payload()
            if g is not None and u.id in g.members:
                member = g.members[u.id].payload(g.permissions_of(u.id))
                del member["user"]
                resolved.setdefault("members", {})[str(u.id)] = member
            return str(u.id)
        if otype in (8, 9):
            role = value if isinstance(value, FakeRole) else self.role(value, g)
            resolved.setdefault("roles", {})[str(role.id)] = role.payload()
            return str(role.id)
        if otype == 7:
            ch = value if isinstance(value, FakeChannel) else self.channels[int(value)]
            resolved.setdefault("channels", {})[str(ch.id)] = ch.payload() | {
                "permissions": str(self.bot_permissions(ch))
            }
            return str(ch.id)
        if otype == 11:
            att = (
                value if isinstance(value, StoredAttachment) else self.upload_attachment(*value, channel_id=channel.id)
            )
            resolved.setdefault("attachments", {})[str(att.id)] = att.payload()
            return str(att.id)
        refuse(f"unsupported option type {otype}")
        return None

    def _record(
        self: FakeDiscord,
        itype: int,
        data: dict[str, Any],
        ctx: tuple[FakeUser, FakeGuild | None, FakeChannel],
        roles: list[int] | None,
        permissions: int | None,
        app_permissions: int | None,
        locale: str,
        attachment_size_limit: int | None,
    ) -> InteractionRecord:
        who, g, channel = ctx
        iid = self.new_id()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(120)
        limit = self.upload_limit if attachment_size_limit is None else attachment_size_limit
        app_perms = self.bot_permissions(channel) if app_permissions is None else app_permissions
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": itype,
            "token": token,
            "version": 1,
            "data": data,
            "attachment_size_limit": limit,
            "app_permissions": str(app_perms),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "channel_id": str(channel.id),
            "channel": channel.payload(),
        }
        if g is not None:
            member = g.members[who.id]
            perms = permissions if permissions is not None else g.permissions_of(who.id, roles)
            payload["member"] = member.payload(perms)
            if roles is not None:  # this interaction's roles (e.g. a role granted a moment ago)
                payload["member"]["roles"] = [str(r) for r in roles]
            payload |= {
                "guild_id": str(g.id),
                "guild": {"id": str(g.id), "locale": g.locale, "features": []},
                "guild_locale": g.locale,
                "authorizing_integration_owners": {"0": str(g.id)},
                "context": 0,
            }
        else:
            payload |= {"user": who.payload(), "authorizing_integration_owners": {"0": "0"}, "context": 1}
        rec = InteractionRecord(
            self, iid, token, itype, payload, self.clock.now(), limit, channel.id, g.id if g else None, who
        )
        self.interactions[iid] = rec
        self.interactions_by_token[token] = rec
        return rec

    async def _inject(self: FakeDiscord, itype: int, data: dict[str, Any], *args: Any) -> InteractionRecord:
        return await self._send(self._record(itype, data, *args))

    async def _send(self: FakeDiscord, rec: InteractionRecord) -> InteractionRecord:
        self.gateway.dispatch("INTERACTION_CREATE", rec.payload, guild_id=rec.guild_id)
        self.notify()
        await asyncio.sleep(0)
        return rec
