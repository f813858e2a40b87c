"""One place that answers an interaction, whether or not it was already acknowledged, and the message parts
every cog shares (mention-safe defaults, timestamps, the progress bar)."""

from __future__ import annotations

import discord

NO_PINGS = discord.AllowedMentions.none()
"""Nothing the bot writes may ping anyone, whatever a prompt contains; only a clip's own requester is pinged."""


async def answer(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    ephemeral: bool = True,
) -> None:
    """Reply to an interaction: as its response if it has none yet, else as a followup."""
    embed_or_missing: discord.Embed = embed if embed is not None else discord.utils.MISSING
    if interaction.response.is_done():
        await interaction.followup.send(
            content if content is not None else discord.utils.MISSING,
            embed=embed_or_missing,
            ephemeral=ephemeral,
            allowed_mentions=NO_PINGS,
        )
    else:
        await interaction.response.send_message(
            content, embed=embed_or_missing, ephemeral=ephemeral, allowed_mentions=NO_PINGS
        )


def timestamp(epoch: float, style: str = "R") -> str:
    """A Discord timestamp that every member sees in their own time zone (`R`: "in 5 minutes")."""
    return f"<t:{int(epoch)}:{style}>"


def progress_bar(fraction: float, width: int = 12) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return f"`{'█' * filled}{'░' * (width - filled)}` {fraction * 100:.0f}%"


def quote(text: str, limit: int = 300) -> str:
    """A member's text, shortened and kept from breaking out of its code span."""
    text = discord.utils.escape_markdown(text.replace("`", "'"))
    return text if len(text) <= limit else text[: limit - 1] + "…"
