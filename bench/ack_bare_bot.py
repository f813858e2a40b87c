"""The floor for `bench/discord_ack.py`: a bare discord.py bot whose `/video prompt:` only defers.

    DISCORD_TOKEN=… DISCORD_API_BASE=http://127.0.0.1:PORT/api/v10 DISCORD_GATEWAY_URL=ws://127.0.0.1:PORT/ \\
        python bench/ack_bare_bot.py

Whatever this bot takes to acknowledge a burst is discord.py's own cost (reading the gateway, parsing each
interaction, sending the callback); what our bot takes beyond it is ours. It is pointed at the fake exactly as
`bot/cli/run.py` points the real bot (`Route.BASE` and the default gateway URL), and syncs its one command so
the fake knows it.
"""

from __future__ import annotations

import asyncio
import os
import signal

import discord
import yarl
from discord import app_commands
from discord.ext import commands


class BareBot(commands.Bot):
    async def setup_hook(self) -> None:
        await self.tree.sync()


def make_bot() -> BareBot:
    bot = BareBot(command_prefix=commands.when_mentioned, help_command=None, intents=discord.Intents.default())

    @bot.tree.command(name="video", description="Generate a video from a prompt")
    @app_commands.guild_only()
    async def video(interaction: discord.Interaction, prompt: str) -> None:
        await interaction.response.defer()

    return bot


async def main() -> None:
    discord.http.Route.BASE = os.environ["DISCORD_API_BASE"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["DISCORD_GATEWAY_URL"])
    bot = make_bot()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(bot.start(os.environ["DISCORD_TOKEN"]))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await bot.close()
    if runner.done() and runner.exception() is not None:
        raise runner.exception()  # type: ignore[misc]


if __name__ == "__main__":
    asyncio.run(main())
