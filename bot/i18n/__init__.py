"""What members read, in their language: gettext catalogues keyed by stable message ids, and Babel's rules for
numbers, money, dates and lists.

The code names a text by its id (`tr("quota-exceeded", cost=3)`), never by its words. English is a catalogue
like the others (`bot/locales/en/LC_MESSAGES/videobot.po`) and the fallback of every other one. How to add a
language: the README's "Translating" section; `python -m bot.i18n` extracts and compiles.
"""

from __future__ import annotations

from bot.i18n.ids import N_, Np_
from bot.i18n.languages import (
    DISCORD_LOCALES,
    LANGUAGES,
    SOURCE_LANGUAGE,
    language_of,
)
from bot.i18n.texts import Texts, texts_for

__all__ = ["DISCORD_LOCALES", "LANGUAGES", "N_", "SOURCE_LANGUAGE", "Np_", "Texts", "language_of", "texts_for"]
