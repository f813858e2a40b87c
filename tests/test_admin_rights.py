"""Who may name the admin role, which roles may be it, and settings changes that do not overwrite each other
(issue 6, finding 10). Concurrency on both stores; the rules end to end through the loopback Discord."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.clock import FakeClock, OffsetClock
from bot.discord.messages import describe
from bot.domain import GuildSettings
from bot.errors import (
    AdminRoleNeedsManageServer,
    EveryoneAsAdminRole,
    InvalidRequest,
    LastEnabledModel,
    ManagedRoleAsAdminRole,
)
from bot.jobs.admin import AdminService
from bot.jobs.service import JobService
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ADMIN_ID, ALICE_ID, GUILD_ID, FakeDiscord
from tests.fakes.discord.models import CallbackRecord
from tests.fakes.scripted_provider import ScriptedProvider

MODELS = 21
MODS_ROLE_ID = 5000000000000000011
"""Permission-less; alice has it, and it is made the admin role: alice is an admin without Manage Server."""
BOOSTER_ROLE_ID = 5000000000000000013
OTHER_ROLE_ID = 5000000000000000017


def admin_service(store: Store, clock: FakeClock) -> AdminService:
    """Models p00/video … p20/video, one provider each."""
    registry = ProviderRegistry([ScriptedProvider(name=f"p{n:02d}") for n in range(MODELS)])
    return AdminService(store, JobService(store, registry, clock), clock)


# --- one transaction per change -----------------------------------------------------------------------------


async def test_concurrent_model_changes_all_stick(store: Store, clock: FakeClock) -> None:
    admin = admin_service(store, clock)
    await asyncio.gather(*(admin.set_model_enabled(GUILD_ID, f"p{n:02d}/video", False) for n in range(20)))
    assert (await store.guild_settings(GUILD_ID)).disabled_models == {f"p{n:02d}/video" for n in range(20)}

    await asyncio.gather(*(admin.set_model_enabled(GUILD_ID, f"p{n:02d}/video", True) for n in range(0, 20, 2)))
    assert (await store.guild_settings(GUILD_ID)).disabled_models == {f"p{n:02d}/video" for n in range(1, 20, 2)}


async def test_different_settings_changed_at_once_all_stick(store: Store, clock: FakeClock) -> None:
    admin = admin_service(store, clock)
    await asyncio.gather(
        admin.pause(GUILD_ID),
        admin.set_admin_role(GUILD_ID, MODS_ROLE_ID, by_manage_server=True),
        admin.set_default_model(GUILD_ID, "p20/video"),
        *(admin.set_model_enabled(GUILD_ID, f"p{n:02d}/video", False) for n in range(5)),
    )
    settings = await store.guild_settings(GUILD_ID)
    assert settings == GuildSettings(
        GUILD_ID,
        paused=True,
        default_model="p20/video",
        disabled_models=frozenset(f"p{n:02d}/video" for n in range(5)),
        admin_role_id=MODS_ROLE_ID,
    )


async def test_checks_see_the_settings_as_they_are_at_the_change(store: Store, clock: FakeClock) -> None:
    """Disabling every model at once: each check runs inside its own transaction, so exactly one model stays
    enabled (checks made on a snapshot read earlier would all pass)."""
    admin = admin_service(store, clock)
    outcomes = await asyncio.gather(
        *(admin.set_model_enabled(GUILD_ID, f"p{n:02d}/video", False) for n in range(MODELS)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], LastEnabledModel), outcomes
    assert "At least one model must stay enabled" in describe(refused[0])
    assert len((await store.guild_settings(GUILD_ID)).disabled_models) == MODELS - 1


async def test_a_refused_change_saves_nothing(store: Store, clock: FakeClock) -> None:
    await store.update_guild_settings(GUILD_ID, lambda s: replace(s, paused=True, admin_role_id=MODS_ROLE_ID))

    def refuse(settings: GuildSettings) -> GuildSettings:
        raise InvalidRequest("no")

    with pytest.raises(InvalidRequest):
        await store.update_guild_settings(GUILD_ID, refuse)
    assert await store.guild_settings(GUILD_ID) == GuildSettings(GUILD_ID, paused=True, admin_role_id=MODS_ROLE_ID)
    admin = admin_service(store, clock)
    with pytest.raises(EveryoneAsAdminRole) as everyone:
        await admin.set_admin_role(GUILD_ID, GUILD_ID, by_manage_server=True)
    assert "@everyone" in describe(everyone.value)
    with pytest.raises(ManagedRoleAsAdminRole) as managed:
        await admin.set_admin_role(GUILD_ID, BOOSTER_ROLE_ID, by_manage_server=True, managed=True)
    assert managed.value.role_id == BOOSTER_ROLE_ID
    assert describe(managed.value).startswith(f"<@&{BOOSTER_ROLE_ID}> is managed by an integration")
    with pytest.raises(AdminRoleNeedsManageServer):
        await admin.set_admin_role(GUILD_ID, OTHER_ROLE_ID, by_manage_server=False)
    assert (await store.guild_settings(GUILD_ID)).admin_role_id == MODS_ROLE_ID


async def test_the_admin_role_makes_admins_unless_it_is_everyone(store: Store, clock: FakeClock) -> None:
    admin = admin_service(store, clock)
    assert await admin.is_admin(GUILD_ID, manage_server=True, role_ids=())
    assert not await admin.is_admin(GUILD_ID, manage_server=False, role_ids=(MODS_ROLE_ID,))
    await admin.set_admin_role(GUILD_ID, MODS_ROLE_ID, by_manage_server=True)
    assert await admin.is_admin(GUILD_ID, manage_server=False, role_ids=(OTHER_ROLE_ID, MODS_ROLE_ID))
    assert not await admin.is_admin(GUILD_ID, manage_server=False, role_ids=(OTHER_ROLE_ID,))
    # A row saved before @everyone was refused as the admin role must not make every member an admin.
    await store.update_guild_settings(GUILD_ID, lambda s: replace(s, admin_role_id=GUILD_ID))
    admin.jobs.forget_settings(GUILD_ID)
    assert not await admin.is_admin(GUILD_ID, manage_server=False, role_ids=(GUILD_ID,))


# --- the admin role, end to end -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server(tmp_path: Path) -> AsyncIterator[Harness]:
    """The default world plus: "Video Mods" (alice has it), a managed "Server Booster" role and "Helpers"
    (created before the bot connects, so they are in discord.py's cache)."""
    clock = OffsetClock()
    fake = FakeDiscord(clock=clock)
    fake.add_role("Video Mods", 0, id=MODS_ROLE_ID)
    fake.add_role("Server Booster", 0, id=BOOSTER_ROLE_ID).managed = True
    fake.add_role("Helpers", 0, id=OTHER_ROLE_ID)
    fake.guilds[GUILD_ID].members[ALICE_ID].roles.append(MODS_ROLE_ID)
    await fake.start()
    try:
        async with running_bot(tmp_path, clock=clock, fake=fake, with_worker=False) as h:
            yield h
    finally:
        await fake.close()


async def settings_command(h: Harness, user: int, role: int | None = None) -> CallbackRecord:
    options: dict[str, Any] = {} if role is None else {"admin_role": role}
    rec = await h.fake.slash("videoadmin settings", options, user=user)
    callback = await rec.wait_callback()
    assert callback.type == 4 and callback.ephemeral, callback.data
    return callback


async def test_everyone_and_managed_roles_cannot_be_the_admin_role(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        refused = await settings_command(h, ADMIN_ID, GUILD_ID)
        assert "@everyone" in refused.data["content"] and "cannot be the admin role" in refused.data["content"]
        refused = await settings_command(h, ADMIN_ID, BOOSTER_ROLE_ID)
        assert "managed by an integration" in refused.data["content"]
        assert (await h.store.guild_settings(GUILD_ID)).admin_role_id is None

        accepted = await settings_command(h, ADMIN_ID, MODS_ROLE_ID)
        assert "now count as video admins" in accepted.data["content"]
        assert (await h.store.guild_settings(GUILD_ID)).admin_role_id == MODS_ROLE_ID


async def test_only_manage_server_moves_the_admin_role(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        await h.app.admin.set_admin_role(GUILD_ID, MODS_ROLE_ID, by_manage_server=True)

        for role in (OTHER_ROLE_ID, MODS_ROLE_ID, GUILD_ID):
            refused = await settings_command(h, ALICE_ID, role)
            assert "Only members with the Manage Server permission" in refused.data["content"], role
        assert (await h.store.guild_settings(GUILD_ID)).admin_role_id == MODS_ROLE_ID

        # Still an admin for everything else, and may look at the settings.
        shown = await settings_command(h, ALICE_ID)
        assert f"Admin role: <@&{MODS_ROLE_ID}>" in shown.data["content"]
        paused = await (await h.fake.slash("videoadmin queue pause", user=ALICE_ID)).wait_callback()
        assert "paused" in paused.data["content"]
        assert (await h.store.guild_settings(GUILD_ID)).paused

        moved = await settings_command(h, ADMIN_ID, OTHER_ROLE_ID)
        assert "now count as video admins" in moved.data["content"]
        assert (await h.store.guild_settings(GUILD_ID)).admin_role_id == OTHER_ROLE_ID
