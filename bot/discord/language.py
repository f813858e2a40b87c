"""Which language a Discord message is written in.

- A reply to the member who interacted follows their client's language (`interaction.locale`).
- A public message about a job (its status, its clip) answers the member who asked, so it follows their
  language, kept with the job (`ReplyRecord.locale`); a server that chose a language for its public messages
  (`/videoadmin settings language:`) gets that one instead.
- A channel message with nobody to answer (the log channel) follows the server's chosen language, else the
  server's own locale (`guild_locale`).
Logs are never translated.
"""

from __future__ import annotations

import discord

from bot.i18n import Texts, texts_for


def member_texts(interaction: discord.Interaction) -> Texts:
    """For an answer to the member who interacted."""
    return texts_for(interaction.locale)


def public_texts(server_language: str | None, member_locale: str | None) -> Texts:
    """For a public message answering a member: the server's chosen language, else the member's."""
    return texts_for(server_language or member_locale)


def channel_texts(server_language: str | None, guild_locale: object) -> Texts:
    """For a channel message that answers nobody: the server's chosen language, else its own locale."""
    return texts_for(server_language or guild_locale)
