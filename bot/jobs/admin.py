"""What server admins change: quotas, grants, blocks, the queue, the models, the server's settings and rules
(blocklist, allowed channels), and who counts as an admin. Knows nothing of Discord: the front end says what it
knows of the caller (Manage Server, roles, who they are).

Every change is recorded in the audit trail (`bot.jobs.audit`) once it is committed, with the acting member
(`by`; None only for changes no member made, such as an operator's script or a test) and the value before and
after. A refused change records nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bot.domain import DEFAULT_LIMITS, GuildSettings, Job, JsonValue, ModelInfo, QuotaLimits, Requester, Usage
from bot.errors import (
    DefaultQuotaUnchanged,
    DisabledModelAsDefault,
    LastEnabledModel,
    LimitOutOfRange,
    ModelNotConfigured,
    PeriodIsServerWide,
    RunningLimitTooLow,
    ZeroGrant,
)
from bot.jobs.admin_settings import SettingsAdmin
from bot.jobs.audit import limits_value

log = logging.getLogger(__name__)

MAX_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class MemberQuota:
    """One member's standing, as an admin looks at it."""

    usage: Usage
    override: QuotaLimits | None
    """The member's own quota, if an admin set one."""
    blocked: bool


class AdminService(SettingsAdmin):
    """Every admin change; the settings and rules, and the audit trail, come from `SettingsAdmin`."""

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

    # --- quotas ---------------------------------------------------------------------------------------
    async def default_quota(self, guild_id: int) -> QuotaLimits:
        """The server's default quota as it applies: its own limits over the built-in default."""
        return DEFAULT_LIMITS.overlaid((await self.store.policy_layers(guild_id, 0, ())).default)

    async def set_default_quota(self, guild_id: int, limits: QuotaLimits, *, by: int | None = None) -> QuotaLimits:
        """Change the limits given (the others stay); returns the default quota as it now applies."""
        if limits == QuotaLimits():
            raise DefaultQuotaUnchanged(await self.default_quota(guild_id))
        _check_limits(limits)
        draft = self.audit.draft(guild_id, "quota default", by=by, describe=_limits_change)
        merged = await self.store.update_policy(guild_id, "default", 0, limits, audit=draft)
        await self.audit.publish(draft)
        return DEFAULT_LIMITS.overlaid(merged)

    async def set_role_quota(
        self, guild_id: int, role_id: int, limits: QuotaLimits | None, *, by: int | None = None
    ) -> QuotaLimits | None:
        """`None` clears the role's limits."""
        if limits is not None:
            _check_limits(limits)
            if limits.period is not None:
                raise PeriodIsServerWide()
        draft = self.audit.draft(guild_id, "quota role", by=by, target=("role", role_id), describe=_limits_change)
        merged = await self.store.update_policy(guild_id, "role", role_id, limits, audit=draft)
        await self.audit.publish(draft)
        return merged

    async def set_user_quota(
        self, guild_id: int, user_id: int, limits: QuotaLimits | None, *, by: int | None = None
    ) -> QuotaLimits | None:
        """`None` drops the member's override."""
        if limits is not None:
            _check_limits(limits)
            if limits.period is not None:
                raise PeriodIsServerWide()
        draft = self.audit.draft(guild_id, "quota user", by=by, target=("user", user_id), describe=_limits_change)
        merged = await self.store.update_policy(guild_id, "user", user_id, limits, audit=draft)
        await self.audit.publish(draft)
        return merged

    async def grant(self, who: Requester, credits: int, *, by: int | None = None) -> Usage:
        """A one-off bonus in the member's current window (negative takes back)."""
        if credits == 0:
            raise ZeroGrant()
        before = await self.jobs.usage(who)
        expected = replace(before, granted=before.granted + credits)
        draft = self.audit.draft(
            who.guild_id, "quota grant", by=by, target=("user", who.user_id),
            before={"granted": before.granted, "left": before.left},
            after={"granted": expected.granted, "left": expected.left},
        )  # fmt: skip
        await self.store.add_ledger(who.guild_id, who.user_id, "grant", credits, at=self.clock.now(), audit=draft)
        await self.audit.publish(draft)
        return await self.jobs.usage(who)

    async def reset(self, who: Requester, *, by: int | None = None) -> Usage:
        """The member's usage in the current window back to zero (jobs still running keep their reservation
        only until they finish; a refund then does not count against the fresh start)."""
        before = await self.jobs.usage(who)
        expected = replace(before, used=0, reserved=0)  # what was charged before the reset no longer counts
        draft = self.audit.draft(
            who.guild_id, "quota reset", by=by, target=("user", who.user_id),
            before={"used": before.used, "left": before.left}, after={"used": expected.used, "left": expected.left},
        )  # fmt: skip
        await self.store.add_ledger(who.guild_id, who.user_id, "reset", 0, at=self.clock.now(), audit=draft)
        await self.audit.publish(draft)
        return await self.jobs.usage(who)

    async def show(self, who: Requester) -> MemberQuota:
        layers = await self.store.policy_layers(who.guild_id, who.user_id, who.role_ids)
        blocked = await self.store.is_blocked(who.guild_id, who.user_id)
        return MemberQuota(usage=await self.jobs.usage(who), override=layers.user, blocked=blocked)

    # --- members --------------------------------------------------------------------------------------
    async def block(self, guild_id: int, user_id: int, *, by: int | None = None) -> None:
        await self._set_blocked(guild_id, user_id, True, by=by)

    async def unblock(self, guild_id: int, user_id: int, *, by: int | None = None) -> None:
        await self._set_blocked(guild_id, user_id, False, by=by)

    async def _set_blocked(self, guild_id: int, user_id: int, blocked: bool, *, by: int | None) -> None:
        before = await self.store.is_blocked(guild_id, user_id)
        action = "user block" if blocked else "user unblock"
        draft = self.audit.draft(
            guild_id, action, by=by, target=("user", user_id), before={"blocked": before}, after={"blocked": blocked}
        )
        await self.store.set_blocked(guild_id, user_id, blocked, now=self.clock.now(), audit=draft)
        await self.audit.publish(draft)

    # --- queue ----------------------------------------------------------------------------------------
    async def pause(self, guild_id: int, *, by: int | None = None) -> None:
        await self._update_settings(guild_id, lambda settings: replace(settings, paused=True), "queue pause", by)

    async def resume(self, guild_id: int, *, by: int | None = None) -> None:
        await self._update_settings(guild_id, lambda settings: replace(settings, paused=False), "queue resume", by)

    async def clear_queue(self, guild_id: int, *, by: int | None = None) -> list[Job]:
        draft = self.audit.draft(guild_id, "queue clear", by=by, describe=_cleared)
        cancelled = await self.jobs.cancel_queued(guild_id, audit=draft)
        log.info("guild %s: queue cleared, %d jobs cancelled and refunded", guild_id, len(cancelled))
        await self.audit.publish(draft)
        return cancelled

    # --- models ---------------------------------------------------------------------------------------
    async def set_model_enabled(
        self, guild_id: int, model_id: str, enabled: bool, *, by: int | None = None
    ) -> GuildSettings:
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

        action = "model enable" if enabled else "model disable"
        return await self._update_settings(guild_id, change, action, by, target=("model", model_id))

    async def set_default_model(self, guild_id: int, model_id: str, *, by: int | None = None) -> GuildSettings:
        self._known_model(model_id)

        def change(settings: GuildSettings) -> GuildSettings:
            if model_id in settings.disabled_models:
                raise DisabledModelAsDefault(model_id)
            return replace(settings, default_model=model_id)

        return await self._update_settings(guild_id, change, "model default", by, target=("model", model_id))

    async def models(self, guild_id: int) -> list[tuple[ModelInfo, bool, bool]]:
        """Every configured model with (enabled, is the server's default)."""
        settings = await self.store.guild_settings(guild_id)
        default = settings.default_model or self.jobs.registry.default_model
        return [(m, m.id not in settings.disabled_models, m.id == default) for m in self.jobs.registry.models()]

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


def _limits_change(before: QuotaLimits | None, after: QuotaLimits | None) -> tuple[JsonValue, JsonValue]:
    """A quota layer before and after, as the change's transaction saw it."""
    return limits_value(before), limits_value(after)


def _cleared(_: object, cancelled: list[Job]) -> tuple[JsonValue, JsonValue]:
    return {"queued": len(cancelled)}, {"queued": 0, "refunded": sum(job.credits for job in cancelled)}
