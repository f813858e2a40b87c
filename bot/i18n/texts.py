"""A language's texts: its gettext catalogue (English behind it) and Babel's formats for its locale.

Templates are Python format strings with named fields (`{cost}`); translations keep the same fields. Facts are
filled in as given, except whole numbers, which are written the locale's way (`1,000`, `1.000`, `1 000`). The
caller writes everything else (code spans, mentions, timestamps) before passing it, so a template stays free
of Discord's markup rules.
"""

from __future__ import annotations

import functools
import gettext
import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from babel import Locale
from babel.dates import format_date
from babel.lists import format_list
from babel.numbers import format_currency, format_decimal, get_group_symbol

from bot.i18n.catalogs import catalogue
from bot.i18n.languages import SOURCE_LANGUAGE, language_of

log = logging.getLogger(__name__)

_NO_SPACE_AFTER_A_SENTENCE = frozenset({"zh", "ja"})


class Texts:
    """The texts of one language. `tr("id", **facts)` is a filled template; `tr.plural("id", n)` picks the form
    the language needs for `n` (English: one/other; Japanese: one form)."""

    def __init__(self, language: str, own: gettext.NullTranslations, english: gettext.NullTranslations) -> None:
        self.language = language
        self.locale = Locale.parse(language)
        # The bot's English sentences write lists without the serial comma ("2, 4 or 8"); CLDR's `en` has it.
        self._list_locale = Locale.parse("en_GB") if language == "en" else self.locale
        self._own = own
        self._english = english
        self._group = get_group_symbol(locale=self.locale)

    def __repr__(self) -> str:
        return f"Texts({self.language!r})"

    def __call__(self, message_id: str, /, **facts: object) -> str:
        return self._fill(message_id, self._template(message_id), facts)

    def plural(self, message_id: str, count: int, /, **facts: object) -> str:
        """The form of `message_id` for `count`, which the template may show as `{count}`."""
        template = self._own.ngettext(message_id, message_id, count)
        if template == message_id:
            template = self._english.ngettext(message_id, message_id, count)
        return self._fill(message_id, template, {"count": count, **facts})

    def has(self, message_id: str) -> bool:
        """The id is in this language's catalogue or in English behind it."""
        return self._template(message_id) != message_id

    def translates(self, message_id: str) -> bool:
        """This language's own catalogue has the id (English behind it does not count)."""
        return self._own.gettext(message_id) != message_id

    def _template(self, message_id: str) -> str:
        own = self._own.gettext(message_id)
        return own if own != message_id else self._english.gettext(message_id)

    # --- the locale's formats ---------------------------------------------------------------------------
    def number(self, value: float, *, digits: int = 0) -> str:
        """`1,234` / `1.234` / `1 234`; `digits` fixes the decimals shown."""
        if isinstance(value, int) and not digits:
            # Every catalogue's locale groups whole numbers by threes: only the separator differs, and Babel's
            # general path costs ~50 µs a number (a refusal writes several).
            return f"{value:,}".replace(",", self._group)
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=self.locale)

    def money(self, usd: float) -> str:
        """US dollars as the locale writes them: `$1,234.50`, `1.234,50 $`, `US$1,234.50`…"""
        return format_currency(usd, "USD", locale=self.locale)

    def date(self, when: float | date) -> str:
        """A calendar day (an epoch is read in UTC), medium length: `Nov 30, 2026`, `2026/11/30`, `30.11.2026`…"""
        day = when if isinstance(when, date) else datetime.fromtimestamp(when, UTC).date()
        return format_date(day, format="medium", locale=self.locale)

    def either(self, items: Iterable[object]) -> str:
        """`a`, `a or b`, `a, b or c`, in the locale's words."""
        return format_list([str(item) for item in items], style="or", locale=self._list_locale)

    def sentences(self, sentences: Iterable[str]) -> str:
        """Sentences one after the other: a space between them, none in Chinese and Japanese (their full stop
        ends a sentence without one)."""
        return ("" if self.locale.language in _NO_SPACE_AFTER_A_SENTENCE else " ").join(sentences)

    def all_of(self, items: Iterable[object]) -> str:
        """`a`, `a and b`, `a, b and c`, in the locale's words."""
        return format_list([str(item) for item in items], style="standard", locale=self._list_locale)

    # --- filling ----------------------------------------------------------------------------------------
    def _fill(self, message_id: str, template: str, facts: dict[str, object]) -> str:
        values = {name: self._shown(value) for name, value in facts.items()}
        try:
            return template.format_map(values)
        except (KeyError, IndexError, ValueError):
            # A translation with a broken field must not lose the member's answer: English says it instead
            # (the catalogue tests keep this from shipping).
            log.warning("message %s in %s does not fit its facts; English is used", message_id, self.language)
            return self._english.gettext(message_id).format_map(values)

    def _shown(self, value: object) -> Any:
        """Whole numbers the locale's way; anything else as given (the caller decides how a float reads)."""
        return self.number(value) if isinstance(value, int) and not isinstance(value, bool) else value


@functools.cache
def _texts(language: str) -> Texts:
    return Texts(language, catalogue(language), catalogue(SOURCE_LANGUAGE))


def texts_for(locale: object) -> Texts:
    """The texts for a Discord locale or a catalogue's code (see `language_of`)."""
    return _texts(language_of(locale))
