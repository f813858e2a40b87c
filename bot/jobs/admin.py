"""What server admins change: quotas, grants, blocks, the queue and the models. Knows nothing of Discord;
the admin cog checks permissions and calls these."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from bot.clock import Clock
from bot.domain import GuildSettings, Job, ModelInfo, QuotaLimits, Requester, Usage
from bot.errors import InvalidRequest
from bot.jobs.quotas import resolve_policy, window_bounds
from bot.jobs.service import JobService
from bot.store.base import Store

log = logging.getLogger(__name__)


class AdminService:
    def __init__(self, store: Store, jobs: JobService, clock: Clock) -> None:
        self.store = store
        self.jobs = jobs
        self.clock = clock

    # --- quotas ---------------------------------------------------------------------------------------
    async def set_default_quota(self, guild_id: int, limits: QuotaLimits) -> QuotaLimits:
        _check_limits(limits)
        merged = await self.store.update_policy(guild_id, "default", 0, limits)
        assert merged is not None
        return merged

    async def set_role_quota(self, guild_id: int, role_id: int, limits: QuotaLimits | None) -> QuotaLimits | None:
        """`None` clears the role's limits."""
        if limits is not None:
            _check_limits(limits)
            if limits.period is not None:
                raise InvalidRequest("The period is set for the whole server, with `/videoadmin quota default`.")
        return await self.store.update_policy(guild_id, "role", role_id, limits)

    async def set_user_quota(self, guild_id: int, user_id: int, limits: QuotaLimits | None) -> QuotaLimits | None:
        """`None` drops the member's override."""
        if limits is not None:
            _check_limits(limits)
            if limits.period is not None:
                raise InvalidRequest("The period is set for the whole server, with `/videoadmin quota default`.")
        return await self.store.update_policy(guild_id, "user", user_id, limits)

    async def grant(self, who: Requester, credits: int) -> Usage:
        """A one-off bonus in the member's current window (negative takes back)."""
        if credits == 0:
            raise InvalidRequest("Grant a non-zero number of credits (negative takes credits back).")
        await self.store.add_ledger(who.guild_id, who.user_id, "grant", credits, at=self.clock.now())
        return await self.jobs.usage(who)

    async def reset(self, who: Requester) -> Usage:
        """The member's usage in the current window back to zero (jobs still running keep their reservation
        only until they finish; a refund then does not count against the fresh start)."""
        await self.store.add_ledger(who.guild_id, who.user_id, "reset", 0, at=self.clock.now())
        return await self.jobs.usage(who)

    async def show(self, who: Requester) -> tuple[Usage, bool]:
        return await self.jobs.usage(who), await self.store.is_blocked(who.guild_id, who.user_id)

    async def window(self, who: Requester) -> tuple[float, float]:
        policy = resolve_policy(await self.store.policy_layers(who.guild_id, who.user_id, who.role_ids))
        return window_bounds(policy.period, self.clock.now())

    # --- members --------------------------------------------------------------------------------------
    async def block(self, guild_id: int, user_id: int) -> None:
        await self.store.set_blocked(guild_id, user_id, True, now=self.clock.now())

    async def unblock(self, guild_id: int, user_id: int) -> None:
        await self.store.set_blocked(guild_id, user_id, False, now=self.clock.now())

    # --- queue ----------------------------------------------------------------------------------------
    async def pause(self, guild_id: int) -> None:
        await self._update_settings(guild_id, lambda settings: replace(settings, paused=True))

    async def resume(self, guild_id: int) -> None:
        await self._update_settings(guild_id, lambda settings: replace(settings, paused=False))

    async def clear_queue(self, guild_id: int) -> list[Job]:
        cancelled = await self.jobs.cancel_queued(guild_id)
        log.info("guild %s: queue cleared, %d jobs cancelled and refunded", guild_id, len(cancelled))
        return cancelled

    # --- models ---------------------------------------------------------------------------------------
    async def set_model_enabled(self, guild_id: int, model_id: str, enabled: bool) -> GuildSettings:
        self._known_model(model_id)
        configured = [m.id for m in self.jobs.registry.models()]

        def change(settings: GuildSettings) -> GuildSettings:
            disabled = set(settings.disabled_models)
            if enabled:
                disabled.discard(model_id)
            else:
                if len([m for m in configured if m not in disabled]) <= 1 and model_id not in disabled:
                    raise InvalidRequest("At least one model must stay enabled.")
                disabled.add(model_id)
            default_model = settings.default_model if settings.default_model not in disabled else None
            return replace(settings, disabled_models=frozenset(disabled), default_model=default_model)

        return await self._update_settings(guild_id, change)

    async def set_default_model(self, guild_id: int, model_id: str) -> GuildSettings:
        self._known_model(model_id)

        def change(settings: GuildSettings) -> GuildSettings:
            if model_id in settings.disabled_models:
                raise InvalidRequest(f"`{model_id}` is disabled on this server; enable it first.")
            return replace(settings, default_model=model_id)

        return await self._update_settings(guild_id, change)

    async def models(self, guild_id: int) -> list[tuple[ModelInfo, bool, bool]]:
        """Every configured model with (enabled, is the server's default)."""
        settings = await self.store.guild_settings(guild_id)
        default = settings.default_model or self.jobs.registry.default_model
        return [(m, m.id not in settings.disabled_models, m.id == default) for m in self.jobs.registry.models()]

    async def set_admin_role(self, guild_id: int, role_id: int | None) -> GuildSettings:
        """The front end refuses managed roles (it knows them); the role everyone has is refused here too,
        since it would make every member an admin."""
        if role_id == guild_id:
            raise InvalidRequest("Every member has the @everyone role: choose a role only your admins have.")
        return await self._update_settings(guild_id, lambda settings: replace(settings, admin_role_id=role_id))

    async def _update_settings(self, guild_id: int, change: Callable[[GuildSettings], GuildSettings]) -> GuildSettings:
        """One transaction per change, with `change` run on the row as it is then: two admins changing different
        settings at once both keep theirs. Checks that depend on the current settings belong inside `change`."""
        settings = await self.store.update_guild_settings(guild_id, change)
        self.jobs.forget_settings(guild_id)
        return settings

    def _known_model(self, model_id: str) -> None:
        if self.jobs.registry.model(model_id) is None:
            known = ", ".join(f"`{m.id}`" for m in self.jobs.registry.models())
            raise InvalidRequest(f"Unknown model `{model_id}`. Configured models: {known}.")


def _check_limits(limits: QuotaLimits) -> None:
    for name in ("credits", "max_queued", "max_running"):
        value = getattr(limits, name)
        if value is not None and not 0 <= value <= 1_000_000:
            raise InvalidRequest(f"`{name}` must be between 0 and 1,000,000.")
    if limits.max_running is not None and limits.max_running < 1:
        raise InvalidRequest("`max_running` must be at least 1 (block the member to stop them instead).")
