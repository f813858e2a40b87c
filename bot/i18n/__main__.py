"""Translators' commands, one each (the README's "Translating"):

python -m bot.i18n extract      ids from the code → bot/locales/videobot.pot, and every .po brought up to date
python -m bot.i18n init LANG    a new language's .po (LANG as gettext writes it: ko, pt_BR…)
python -m bot.i18n compile      every .po → its .mo
python -m bot.i18n status       how much of each language is translated
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

from bot.i18n.catalogs import DOMAIN, LOCALES_DIR, compiled, mo_path, po_path
from bot.i18n.extraction import used_ids
from bot.i18n.languages import SOURCE_LANGUAGE

TEMPLATE = LOCALES_DIR / f"{DOMAIN}.pot"
PO_WIDTH = 116


def _read(language: str) -> Catalog:
    with po_path(language).open("rb") as source:
        return read_po(source, locale=language, domain=DOMAIN)


def _write(catalogue: Catalog, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        write_po(out, catalogue, width=PO_WIDTH, omit_header=False, ignore_obsolete=True, include_lineno=False)


def _languages() -> list[str]:
    return sorted(path.parent.parent.name for path in LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def template() -> Catalog:
    """The .pot: every id the code uses, each with its English text as a note for translators."""
    english = _read(SOURCE_LANGUAGE) if po_path(SOURCE_LANGUAGE).exists() else Catalog()
    pot = Catalog(project="videobot", domain=DOMAIN, fuzzy=False)
    for message_id, found in used_ids().items():
        plural = any(use.plural for use in found)
        source = english.get(message_id)
        notes: list[str] = []
        if source is not None and source.string:
            forms = source.string if isinstance(source.string, tuple) else (source.string,)
            notes = [f"English: {form}" for form in forms]
        pot.add(
            (message_id, message_id) if plural else message_id,
            string=("", "") if plural else "",
            locations=[(use.where.rsplit(":", 1)[0], int(use.where.rsplit(":", 1)[1])) for use in found],
            auto_comments=notes,
            flags=("python-brace-format",),
        )
    return pot


def extract() -> int:
    pot = template()
    _write(pot, TEMPLATE)
    for language in _languages():
        catalogue = _read(language)
        catalogue.update(pot, no_fuzzy_matching=True)
        _write(catalogue, po_path(language))
    print(f"{len(pot)} ids → {TEMPLATE.relative_to(LOCALES_DIR.parent.parent)}; updated: {', '.join(_languages())}")
    return 0


def init(language: str) -> int:
    try:
        Locale.parse(language)
    except (UnknownLocaleError, ValueError):
        print(f"{language}: not a locale Babel knows (write it as gettext does: ko, pt_BR, zh_CN)", file=sys.stderr)
        return 2
    if po_path(language).exists():
        print(f"{po_path(language)} exists already; `extract` brings it up to date", file=sys.stderr)
        return 2
    with TEMPLATE.open("rb") as source:
        catalogue = read_po(source, locale=language, domain=DOMAIN)
    catalogue.locale = Locale.parse(language)
    _write(catalogue, po_path(language))
    print(f"{po_path(language)}: translate its msgstr lines, then `python -m bot.i18n compile`")
    return 0


def compile_all() -> int:
    for language in _languages():
        mo_path(language).write_bytes(compiled(language))
        print(f"{mo_path(language).relative_to(LOCALES_DIR)}")
    return 0


def status() -> int:
    for language in _languages():
        catalogue = _read(language)
        ids = [message for message in catalogue if message.id]
        done = [
            message
            for message in ids
            if message.string
            and not message.fuzzy
            and all(message.string if isinstance(message.string, tuple) else (message.string,))
        ]
        print(f"{language:6} {len(done)}/{len(ids)} translated")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.i18n", description="Message catalogues")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("extract", help="ids from the code into the .pot and every .po")
    commands.add_parser("init", help="start a new language").add_argument("language")
    commands.add_parser("compile", help="compile every .po to its .mo")
    commands.add_parser("status", help="how much of each language is translated")
    args = parser.parse_args(argv)
    if args.command == "extract":
        return extract()
    if args.command == "init":
        return init(args.language)
    if args.command == "compile":
        return compile_all()
    return status()


if __name__ == "__main__":
    sys.exit(main())
