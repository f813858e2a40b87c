"""One place that answers an interaction, whether or not it was already acknowledged, and the message parts
every cog shares (mention-safe defaults, timestamps, the progress bar)."""

from __future__ import annotations

import re

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


_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
"""Embeddings, overrides and isolates: left open in a prompt they would reverse the rest of the bot's line."""
_BARE_URL = re.compile(r"https?://[^\s<>()]+", re.IGNORECASE)


def quote(text: str, limit: int = 300) -> str:
    """A member's text as plain text, at most `limit` characters: no markdown, no chips (`<#channel>`,
    `<@&role>`, `<t:…>`, `</command:…>`, custom emoji), no mentions and no link previews; it reads as typed."""
    shown = _plain(text)
    if len(shown) <= limit:
        return shown
    # Cut the member's text, not the rendering, so an escape or a `<…>` around a link is never cut in half;
    # escaping lengthens the text unevenly, hence the search for the longest prefix that fits.
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if len(_plain(text[:middle])) < limit:
            low = middle
        else:
            high = middle - 1
    return _plain(text[:low]) + "…"


def _plain(text: str) -> str:
    text = discord.utils.escape_markdown(_BIDI_CONTROLS.sub("", text).replace("`", "'"))
    # Every chip starts with `<`; a zero-width space after it leaves the text as it looks but no longer markup.
    text = discord.utils.escape_mentions(text.replace("<", "<\u200b"))
    return _BARE_URL.sub(lambda url: f"<{url.group(0)}>", text)  # `<url>`: a link that does not unfurl
