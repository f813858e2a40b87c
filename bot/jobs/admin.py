"""What server admins change: quotas, grants, blocks, the queue, the models and the admin role, and who counts
as an admin. Knows nothing of Discord: the front end says what it knows of the caller (Manage Server, roles)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from bot.clock import Clock
from bot.domain import DEFAULT_LIMITS, GuildSettings, Job, ModelInfo, QuotaLimits, Requester, Usage
from bot.errors import (
    AdminRoleNeedsManageServer,
    DefaultQuotaUnchanged,
    DisabledModelAsDefault,
    EveryoneAsAdminRole,
    LastEnabledModel,
    LimitOutOfRange,
    ManagedRoleAsAdminRole,
    ModelNotConfigured,
    PeriodIsServerWide,
    RunningLimitTooLow,
    ZeroGrant,
)
from bot.jobs.service import JobService
from bot.store.base import AdminStore

log = logging.getLogger(__name__)

MAX_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class MemberQuota:
    """One member's standing, as an admin looks at it."""

    usage: Usage
    override: QuotaLimits | None
    """The member's own quota, if an admin set one."""
    blocked: bool


class AdminService:
    def __init__(self, store: AdminStore, jobs: JobService, clock: Clock) -> None:
        self.store = store
        self.jobs = jobs
        self.clock = clock

    # --- who is an admin -------------------------------------------------------------------------------
    async def is_admin(self, guild_id: int, *, manage_server: bool, role_ids: Sequence[int]) -> bool:
        """Manage Server, or the server's admin role. The settings come from the job service's short cache, like
        every other read on the command path; a change made in this process applies at once."""
        if manage_server:
            return True
        settings = await self.jobs.guild_settings(guild_id)
        admin_role = settings.admin_role_id
        # @everyone is refused as the admin role, but a row saved before that rule must not make everyone an admin
        return admin_role is not None and admin_role != guild_id and admin_role in role_ids

    async def settings(self, guild_id: int) -> GuildSettings:
        return await self.store.guild_settings(guild_id)

    # --- quotas ---------------------------------------------------------------------------------------
    async def default_quota(self, guild_id: int) -> QuotaLimits:
        """The server's default quota as it applies: its own limits over the built-in default."""
        return DEFAULT_LIMITS.overlaid((await self.store.policy_layers(guild_id, 0, ())).default)

    async def set_default_quota(self, guild_id: int, limits: QuotaLimits) -> QuotaLimits:
        """Change the limits given (the others stay); returns the default quota as it now applies."""
        if limits == QuotaLimits():
            raise DefaultQuotaUnchanged(await self.default_quota(guild_id))
        _check_limits(limits)
        merged = await self.store.update_policy(guild_id, "default", 0, limits)
        return DEFAULT_LIMITS.overlaid(merged)

    async def set_role_quota(self, guild_id: int, role_id: int, limits: QuotaLimits | None) -> QuotaLimits | None:
        """`None` clears the role's limits."""
        if limits is not None:
            _check_limits(limits)
            if limits.period is not None:
                raise PeriodIsServerWide()
        return await self.store.update_policy(guild_id, "role", role_id, limits)

    async def set_user_quota(self, guild_id: int, user_id: int, limits: QuotaLimits | None) -> QuotaLimits | None:
        """`None` drops the member's override."""
        if limits is not None:
            _check_limits(limits)
            if limits.period is not None:
                raise PeriodIsServerWide()
        return await self.store.update_policy(guild_id, "user", user_id, limits)

    async def grant(self, who: Requester, credits: int) -> Usage:
        """A one-off bonus in the member's current window (negative takes back)."""
        if credits == 0:
            raise ZeroGrant()
        await self.store.add_ledger(who.guild_id, who.user_id, "grant", credits, at=self.clock.now())
        return await self.jobs.usage(who)

    async def reset(self, who: Requester) -> Usage:
        """The member's usage in the current window back to zero (jobs still running keep their reservation
        only until they finish; a refund then does not count against the fresh start)."""
        await self.store.add_ledger(who.guild_id, who.user_id, "reset", 0, at=self.clock.now())
        return await self.jobs.usage(who)

    async def show(self, who: Requester) -> MemberQuota:
        layers = await self.store.policy_layers(who.guild_id, who.user_id, who.role_ids)
        blocked = await self.store.is_blocked(who.guild_id, who.user_id)
        return MemberQuota(usage=await self.jobs.usage(who), override=layers.user, blocked=blocked)

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
                    raise LastEnabledModel(model_id)
                disabled.add(model_id)
            default_model = settings.default_model if settings.default_model not in disabled else None
            return replace(settings, disabled_models=frozenset(disabled), default_model=default_model)

        return await self._update_settings(guild_id, change)

    async def set_default_model(self, guild_id: int, model_id: str) -> GuildSettings:
        self._known_model(model_id)

        def change(settings: GuildSettings) -> GuildSettings:
            if model_id in settings.disabled_models:
                raise DisabledModelAsDefault(model_id)
            return replace(settings, default_model=model_id)

        return await self._update_settings(guild_id, change)

    async def models(self, guild_id: int) -> list[tuple[ModelInfo, bool, bool]]:
        """Every configured model with (enabled, is the server's default)."""
        settings = await self.store.guild_settings(guild_id)
        default = settings.default_model or self.jobs.registry.default_model
        return [(m, m.id not in settings.disabled_models, m.id == default) for m in self.jobs.registry.models()]

    async def set_admin_role(
        self, guild_id: int, role_id: int, *, by_manage_server: bool, managed: bool = False
    ) -> GuildSettings:
        """Name the role whose members count as admins. Holders of the admin role run every other admin
        command, but moving the role would let them hand admin to anyone: only Manage Server may
        (`by_manage_server`). The role everyone has would make every member an admin, and a role an integration
        hands out (`managed`: a bot's, boosts, a subscription) is not the admins' to give."""
        if not by_manage_server:
            raise AdminRoleNeedsManageServer()
        if role_id == guild_id:
            raise EveryoneAsAdminRole()
        if managed:
            raise ManagedRoleAsAdminRole(role_id)
        return await self._update_settings(guild_id, lambda settings: replace(settings, admin_role_id=role_id))

    async def _update_settings(self, guild_id: int, change: Callable[[GuildSettings], GuildSettings]) -> GuildSettings:
        """One transaction per change, with `change` run on the row as it is then: two admins changing different
        settings at once both keep theirs. Checks that depend on the current settings belong inside `change`."""
        settings = await self.store.update_guild_settings(guild_id, change)
        self.jobs.forget_settings(guild_id)
        return settings

    def _known_model(self, model_id: str) -> None:
        if self.jobs.registry.model(model_id) is None:
            raise ModelNotConfigured(model_id, configured=tuple(m.id for m in self.jobs.registry.models()))


def _check_limits(limits: QuotaLimits) -> None:
    for name in ("credits", "max_queued", "max_running"):
        value = getattr(limits, name)
        if value is not None and not 0 <= value <= MAX_LIMIT:
            raise LimitOutOfRange(name, low=0, high=MAX_LIMIT)
    if limits.max_running is not None and limits.max_running < 1:
        raise RunningLimitTooLow()
