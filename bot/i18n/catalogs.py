"""Loading the compiled catalogues (`bot/locales/<language>/LC_MESSAGES/videobot.mo`).

A checkout where a `.po` was edited after its `.mo` was compiled reads the `.po` instead (compiled in memory by
Babel), so a translator sees their change without a compile step; `tests/test_i18n_catalogues.py` keeps the
committed `.mo` files current.
"""

from __future__ import annotations

import functools
import gettext
import io
import logging
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
DOMAIN = "videobot"


def po_path(language: str) -> Path:
    return LOCALES_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_path(language: str) -> Path:
    return po_path(language).with_suffix(".mo")


def compiled(language: str) -> bytes:
    """The `.po` of `language` compiled to `.mo` bytes (fuzzy entries left out, as `pybabel compile` does)."""
    with po_path(language).open("rb") as source:
        catalogue = read_po(source, locale=language, domain=DOMAIN)
    out = io.BytesIO()
    write_mo(out, catalogue, use_fuzzy=False)
    return out.getvalue()


@functools.cache
def catalogue(language: str) -> gettext.NullTranslations:
    mo, po = mo_path(language), po_path(language)
    if not po.exists() and not mo.exists():  # a language being started: English until it has a catalogue
        log.warning("no catalogue for %s; English is used", language)
        return gettext.NullTranslations()
    if po.exists() and (not mo.exists() or po.stat().st_mtime > mo.stat().st_mtime):
        log.debug("catalogue %s: the .po is newer than its .mo; reading the .po", language)
        return gettext.GNUTranslations(io.BytesIO(compiled(language)))
    with mo.open("rb") as data:
        return gettext.GNUTranslations(data)
