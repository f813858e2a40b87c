"""The Discord client: wiring only. It owns the services, loads the cogs, syncs commands when their
definition changed, and installs the one tree error handler."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.background import BackgroundLoops
from bot.discord.command_texts import CatalogueTranslator
from bot.discord.log_channel import LogChannel
from bot.discord.messages import describe
from bot.discord.replies import NO_PINGS, answer
from bot.domain import Requester
from bot.errors import UserError
from bot.i18n import texts_for

if TYPE_CHECKING:
    from bot.clock import Clock
    from bot.config import Settings
    from bot.discord.delivery import DiscordDelivery
    from bot.jobs.admin import AdminService
    from bot.jobs.service import JobService
    from bot.jobs.worker import Worker
    from bot.metrics import Metrics
    from bot.store.base import Store

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.video", "cogs.queue", "cogs.admin")
COMMANDS_HASH_KEY = "discord.commands_hash"


def discord_http_trace(metrics: Metrics) -> aiohttp.TraceConfig:
    """Counts Discord's error answers and rate limits (`http_trace=` of a discord.py client): every REST,
    webhook and interaction call of discord.py goes through the one aiohttp session it is installed on."""

    async def answered(_s: aiohttp.ClientSession, _c: SimpleNamespace, end: aiohttp.TraceRequestEndParams) -> None:
        metrics.discord_response(end.response.status, end.response.headers)

    async def failed(
        _s: aiohttp.ClientSession, _c: SimpleNamespace, failure: aiohttp.TraceRequestExceptionParams
    ) -> None:
        if not isinstance(failure.exception, asyncio.CancelledError):  # a shutdown, not Discord
            metrics.discord_request_failed()

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(answered)
    trace.on_request_exception.append(failed)
    return trace


class VideoBot(commands.Bot):
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        jobs: JobService,
        admin: AdminService,
        delivery: DiscordDelivery,
        clock: Clock,
        worker: Worker | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("intents", discord.Intents.default())
        options.setdefault("allowed_mentions", NO_PINGS)
        shards = settings.gateway_shard_ids
        if shards is not None:
            options.setdefault("shard_count", settings.discord_shard_count)
            if isinstance(self, commands.AutoShardedBot):
                options.setdefault("shard_ids", shards)
            elif len(shards) == 1:
                options.setdefault("shard_id", shards[0])
            else:
                raise TypeError(f"{type(self).__name__} runs one shard, not {shards}: build it with bot_class()")
            log.info("this gateway runs shard(s) %s of %d", ", ".join(map(str, shards)), settings.discord_shard_count)
        super().__init__(command_prefix=commands.when_mentioned, help_command=None, **options)
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.admin = admin
        self.delivery = delivery
        self.clock = clock
        self.worker = worker
        self.loops = BackgroundLoops(store, delivery, worker, settings.data_dir, clock)
        self.log_channel = LogChannel(self)
        """Posts admin changes and refusals by rule to each server's log channel."""

    async def setup_hook(self) -> None:
        await self.tree.set_translator(CatalogueTranslator())
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.tree.error(self.on_app_command_error)
        self.admin.audit.subscribe(self.log_channel.on_audit)
        await self.sync_commands_if_changed()
        self.delivery.attach(self)
        await self.loops.start()

    async def close(self) -> None:
        await self.loops.stop()  # first: posts in flight finish while the connection is still up
        self.admin.audit.unsubscribe(self.log_channel.on_audit)
        await self.log_channel.close()
        await super().close()

    def gateway_connected(self) -> bool:
        """Ready and its gateway socket open now (/healthz): a dropped socket reads False until it is back."""
        return self.is_ready() and not self.is_closed() and self.ws is not None and self.ws.open

    async def sync_commands_if_changed(self) -> bool:
        """Sync global commands only when their definition changed since the last sync, so restarts do not
        spend Discord's daily command-creation limit. The hash is over the payload `sync` sends, translations
        included, so a changed translation syncs too."""
        translator = self.tree.translator
        commands_ = self.tree.get_commands()
        if translator is None:
            payload = [command.to_dict(self.tree) for command in commands_]
        else:
            payload = [await command.get_translated_payload(self.tree, translator) for command in commands_]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        if await self.store.get_meta(COMMANDS_HASH_KEY) == digest:
            log.info("application commands unchanged; not syncing")
            return False
        await self.tree.sync()
        await self.store.set_meta(COMMANDS_HASH_KEY, digest)
        log.info("application commands synced (%d top-level)", len(payload))
        return True

    # --- shared helpers for the cogs ------------------------------------------------------------------
    def requester(self, interaction: discord.Interaction) -> Requester:
        member = interaction.user
        roles = tuple(role.id for role in member.roles) if isinstance(member, discord.Member) else ()
        channel = interaction.channel
        return Requester(
            guild_id=interaction.guild_id or 0,
            user_id=member.id,
            channel_id=interaction.channel_id or 0,
            role_ids=roles,
            parent_channel_id=channel.parent_id if isinstance(channel, discord.Thread) else None,
        )

    async def is_admin(self, interaction: discord.Interaction) -> bool:
        """Manage Server, or the server's admin role; checked on every call (command permissions are a hint)."""
        if interaction.guild_id is None:
            return False
        return await self.admin.is_admin(
            interaction.guild_id,
            manage_server=interaction.permissions.manage_guild,
            role_ids=self.requester(interaction).role_ids,
        )

    # --- the one error handler ------------------------------------------------------------------------
    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await self.report_error(interaction, cause)

    async def report_error(self, interaction: discord.Interaction, error: BaseException) -> None:
        """The one error funnel: a `UserError` is explained (`messages.describe`, ephemeral); anything else is
        logged with a reference the member can quote, and they get a short apology."""
        tr = texts_for(interaction.locale)
        if isinstance(error, UserError):
            message = describe(error, tr)
        elif isinstance(error, app_commands.NoPrivateMessage):
            message = tr("server-only")
        elif isinstance(error, app_commands.TransformerError):
            message = tr("option-not-understood")
        elif isinstance(error, app_commands.CheckFailure):
            message = tr("check-failed")
        else:
            reference = f"{interaction.id:x}"[-8:]
            log.error(
                "interaction %s (%s) failed: reference %s",
                interaction.id,
                interaction.command.qualified_name if interaction.command else "component",
                reference,
                exc_info=error,
            )
            message = tr("internal-error", reference=reference)
        try:
            await answer(interaction, message)
        except discord.HTTPException:
            log.warning("could not tell the member about an error in interaction %s", interaction.id)


class ShardedVideoBot(VideoBot, commands.AutoShardedBot):
    """A gateway process running several shards: discord.py's AutoShardedClient, one socket per shard and one
    cache, so the cogs and the delivery see the same client as with one shard.

    One shard keeps the plain client (`shard_id=`): AutoShardedClient adds a socket per shard, a second ready
    state and discord.py's 5 s pause between IDENTIFYs, all of which buy nothing for one socket."""

    def gateway_connected(self) -> bool:
        """Ready and every shard's socket open now: one dropped shard is one slice of the servers not heard."""
        if not self.is_ready() or self.is_closed():
            return False
        running = self.shards
        wanted = self.shard_ids or range(self.shard_count or 0)
        return bool(wanted) and all(i in running and not running[i].is_closed() for i in wanted)


def bot_class(settings: Settings) -> type[VideoBot]:
    """The client for this gateway's shards: AutoShardedBot when it runs several, else the plain one."""
    shards = settings.gateway_shard_ids
    return ShardedVideoBot if shards is not None and len(shards) > 1 else VideoBot
