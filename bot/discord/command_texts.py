"""Commands in the member's language: descriptions, option descriptions and choice names from the catalogues,
handed to Discord as localizations through discord.py's `app_commands.Translator`.

Names (commands, groups, options) stay the English, ASCII ones everywhere: they are what members type and what
the README and the admins' messages quote. Only the Animate menu's name, which nobody types, is translated.
"""

from __future__ import annotations

from discord import Locale, app_commands
from discord.app_commands import TranslationContextLocation, TranslationContextTypes, locale_str

from bot.i18n import SOURCE_LANGUAGE, language_of, texts_for

_UNTRANSLATED = frozenset(
    {
        TranslationContextLocation.command_name,
        TranslationContextLocation.group_name,
        TranslationContextLocation.parameter_name,
    }
)
"""What members type stays the same in every language."""


def command_text(message_id: str) -> locale_str:
    """A command's text: English for discord.py (the command's own), the id for the translator."""
    return locale_str(texts_for(SOURCE_LANGUAGE)(message_id), message_id=message_id)


class CatalogueTranslator(app_commands.Translator):
    """Looks a command text up in the catalogue of each Discord locale; English, or a text a catalogue lacks,
    is left to the command's own (Discord shows it when a locale has none)."""

    async def translate(self, string: locale_str, locale: Locale, context: TranslationContextTypes) -> str | None:
        message_id = string.extras.get("message_id")
        menu = isinstance(context.data, app_commands.ContextMenu)  # its name is a label nobody types
        if message_id is None or (context.location in _UNTRANSLATED and not menu):
            return None
        language = language_of(locale)
        texts = texts_for(language)
        if language == SOURCE_LANGUAGE or not texts.translates(message_id):
            return None
        return texts(message_id)
