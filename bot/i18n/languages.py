"""Which catalogue answers which Discord locale.

Discord sends a member's client language (`interaction.locale`) and the server's (`guild_locale`) as its own
locale codes (`en-US`, `zh-CN`, `pt-BR`, `es-419`…). A catalogue is a gettext language code (`zh_CN`); a locale
with no catalogue of its own falls back to one of the same language, then to English.
"""

from __future__ import annotations

import functools

SOURCE_LANGUAGE = "en"
LANGUAGES = ("en", "zh_CN", "ja", "ko", "pt_BR", "es", "de", "fr")
"""The catalogues the bot ships, English (the source) first."""

DISCORD_LOCALES: dict[str, str] = {
    "en": "en-US",
    "zh_CN": "zh-CN",
    "ja": "ja",
    "ko": "ko",
    "pt_BR": "pt-BR",
    "es": "es-ES",
    "de": "de",
    "fr": "fr",
}
"""Each catalogue's own Discord locale: what `/videoadmin settings language:` offers and stores."""

_SAME_LANGUAGE_ONLY = {"zh"}
"""Languages whose regional variants are not interchangeable: Traditional Chinese (`zh-TW`) readers get English,
not the Simplified catalogue."""


_BY_LOWER = {language.lower(): language for language in LANGUAGES}
_BY_BASE = {language.split("_")[0].lower(): language for language in LANGUAGES}


@functools.cache
def _catalogue_of(code: str) -> str:
    exact = _BY_LOWER.get(code.lower())
    if exact is not None:
        return exact
    base = code.split("_")[0].lower()
    return SOURCE_LANGUAGE if base in _SAME_LANGUAGE_ONLY else _BY_BASE.get(base, SOURCE_LANGUAGE)


def language_of(locale: object) -> str:
    """The catalogue for a Discord locale (`discord.Locale` or its code, any case, `-` or `_`); English when
    none fits or the locale is unknown."""
    code = str(getattr(locale, "value", locale) or "").strip().replace("-", "_")
    return _catalogue_of(code) if code else SOURCE_LANGUAGE
