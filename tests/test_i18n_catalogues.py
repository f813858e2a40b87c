"""The message catalogues: complete, in step with the code, faithful to the source's placeholders and markup,
compiled, and the only source of what members read.

Each test parses; none eyeballs. The ids the code uses are found by Babel's extractor (`bot.i18n.extraction`),
as `python -m bot.i18n extract` finds them.
"""

from __future__ import annotations

import ast
import gettext
import io
import re
import string
import unicodedata
from collections import Counter
from datetime import date
from functools import cache

import pytest
from babel import Locale
from babel.messages.catalog import Catalog, Message
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po

from bot.i18n import LANGUAGES, SOURCE_LANGUAGE, language_of, texts_for
from bot.i18n.catalogs import DOMAIN, compiled, mo_path, po_path
from bot.i18n.extraction import ROOT, used_ids

TRANSLATED = [language for language in LANGUAGES if language != SOURCE_LANGUAGE]


@cache
def _catalogue(language: str) -> Catalog:
    with po_path(language).open("rb") as source:
        return read_po(source, locale=language, domain=DOMAIN)


@cache
def _used() -> dict[str, list[object]]:
    return used_ids()  # type: ignore[return-value]


def _forms(message: Message) -> tuple[str, ...]:
    return message.string if isinstance(message.string, tuple) else (message.string,)


def _entries(language: str) -> dict[str, Message]:
    return {str(message.id[0] if isinstance(message.id, tuple) else message.id): message
            for message in _catalogue(language) if message.id}  # fmt: skip


# --- in step with the code -------------------------------------------------------------------------------------
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_id_the_code_uses_is_translated_in_every_catalogue(language: str) -> None:
    entries = _entries(language)
    missing = {
        message_id: [str(use) for use in uses][:2]
        for message_id, uses in _used().items()
        if message_id not in entries or entries[message_id].fuzzy or not all(_forms(entries[message_id]))
    }
    assert not missing, f"{language}: {len(missing)} ids used by the code have no translation: {missing}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_catalogue_keeps_an_id_the_code_no_longer_uses(language: str) -> None:
    unused = sorted(set(_entries(language)) - set(_used()))
    assert not unused, f"{language}: ids no code uses (run `python -m bot.i18n extract`): {unused}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_plural_texts_have_the_forms_of_their_language(language: str) -> None:
    plural_ids = {message_id for message_id, uses in _used().items() if any(use.plural for use in uses)}  # type: ignore[attr-defined]
    wanted = get_plural(language).num_plurals
    assert _catalogue(language).num_plurals == wanted
    for message_id, message in _entries(language).items():
        assert message.pluralizable == (message_id in plural_ids), f"{language}: {message_id} plural or not"
        if message.pluralizable:
            assert len(_forms(message)) == wanted, f"{language}: {message_id} needs {wanted} forms"


def test_the_language_list_matches_the_catalogues_on_disk() -> None:
    on_disk = {path.parent.parent.name for path in po_path(SOURCE_LANGUAGE).parents[2].glob("*/LC_MESSAGES/*.po")}
    assert on_disk == set(LANGUAGES)
    for language in LANGUAGES:
        assert Locale.parse(language).language  # Babel knows it: numbers and dates can be written for it


# --- faithful to the source ------------------------------------------------------------------------------------
_CODE_SPAN = re.compile(r"`[^`]*`")
_CHIP = re.compile(r"<(?:t:[^>]*|#\d*|@&?\d*|/[^>]*)>")
_MARKUP = ("**", "__", "~~", "||", "](", "\n")


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _symbols(template: str) -> Counter[str]:
    """Emoji and other pictographs: status icons that members scan for."""
    return Counter(char for char in template if unicodedata.category(char) == "So")


def _shape(template: str) -> dict[str, object]:
    """What a translation must keep of its source: code spans verbatim (commands, option names, fields), Discord
    chips (timestamps, mentions), markdown markers, line breaks and icons."""
    return {
        "code spans": Counter(_CODE_SPAN.findall(template)),
        "chips": Counter(_CHIP.findall(template)),
        "markup": {marker: template.count(marker) for marker in _MARKUP},
        "icons": _symbols(template),
    }


@pytest.mark.parametrize("language", TRANSLATED)
def test_translations_keep_the_placeholders_markup_and_timestamps_of_the_source(language: str) -> None:
    english = _entries(SOURCE_LANGUAGE)
    problems: list[str] = []
    for message_id, message in _entries(language).items():
        source = english.get(message_id)
        if source is None or not all(_forms(message)):
            continue
        source_forms, forms = _forms(source), _forms(message)
        source_fields = set().union(*map(_fields, source_forms))
        # One form may leave `{count}` out ("un crédit"), but together the forms say what English says.
        if set().union(*map(_fields, forms)) != source_fields or any(not _fields(f) <= source_fields for f in forms):
            problems.append(
                f"{message_id}: fields {sorted(set().union(*map(_fields, forms)))} != {sorted(source_fields)}"
            )
        for form in forms:
            try:
                form.format_map({name: "x" for name in source_fields})
            except (ValueError, KeyError, IndexError) as exc:
                problems.append(f"{message_id}: not a format string ({exc})")
            if _shape(form) != _shape(source_forms[-1]):
                problems.append(f"{message_id}: {_shape(form)} != {_shape(source_forms[-1])}")
    assert not problems, f"{language}:\n" + "\n".join(problems)


_DISCORD_LIMITS = {"cmd.": 100, "button.": 80, "modal.": 45}
"""Characters Discord takes: command, option and choice texts 100; button labels 80; modal titles 45."""


@pytest.mark.parametrize("language", LANGUAGES)
def test_texts_fit_discords_limits(language: str) -> None:
    too_long = {
        message_id: len(form)
        for message_id, message in _entries(language).items()
        for prefix, limit in _DISCORD_LIMITS.items()
        if message_id.startswith(prefix)
        for form in _forms(message)
        if len(form.format_map({name: "" for name in _fields(form)})) > limit
        or (message_id.endswith(".name") and len(form) > 32)
    }
    assert not too_long, f"{language}: over Discord's limits: {too_long}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_committed_mo_file_is_compiled_from_the_po(language: str) -> None:
    with mo_path(language).open("rb") as committed:
        shipped = gettext.GNUTranslations(committed)._catalog  # type: ignore[attr-defined]
    fresh = gettext.GNUTranslations(io.BytesIO(compiled(language)))._catalog  # type: ignore[attr-defined]
    assert shipped == fresh, f"run `python -m bot.i18n compile` ({language})"


# --- languages ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("locale", "language"),
    [("en-US", "en"), ("en-GB", "en"), ("zh-CN", "zh_CN"), ("zh-TW", "en"), ("ja", "ja"), ("ko", "ko"),
     ("pt-BR", "pt_BR"), ("es-ES", "es"), ("es-419", "es"), ("de", "de"), ("fr", "fr"), ("it", "en"), (None, "en"),
     ("", "en"), ("ZH_cn", "zh_CN")],
)  # fmt: skip
def test_each_discord_locale_gets_its_catalogue(locale: str | None, language: str) -> None:
    assert language_of(locale) == language


ENGLISH_SENTENCES = texts_for("en").sentences(["One.", "Two."])


def test_numbers_money_dates_and_lists_follow_the_locale() -> None:
    assert texts_for("de").number(1234567) == "1.234.567"
    assert texts_for("en-US").number(1234567) == "1,234,567"
    assert texts_for("fr").number(1234567).replace("\u202f", " ") == "1 234 567"
    assert texts_for("de").either(["a", "b", "c"]) == "a, b oder c"
    assert texts_for("en-US").money(1234.5) == "$1,234.50"
    assert "1.234,50" in texts_for("pt-BR").money(1234.5)
    assert texts_for("de").date(date(2026, 11, 30)) == "30.11.2026"
    assert texts_for("ja").date(date(2026, 11, 30)) == "2026/11/30"
    assert texts_for("en").date(1_796_000_000.0) == "Nov 30, 2026"
    assert texts_for("ja").sentences(["一。", "二。"]) == "一。二。" and ENGLISH_SENTENCES == "One. Two."


# --- nothing shown to a member outside the catalogue ------------------------------------------------------------
WRITES_NO_TEXT = {"ratelimit.py"}
"""Modules of the Discord layer that send no words (the shared REST pause speaks HTTP headers)."""
SHOWN_BY = sorted(
    [*ROOT.joinpath("cogs").rglob("*.py"),
     *(path for path in ROOT.joinpath("bot", "discord").glob("*.py") if path.name not in WRITES_NO_TEXT)]
)  # fmt: skip
"""The cogs and the Discord layer's reply helpers: everything that writes words to Discord."""
_LOOKS_LIKE_WORDS = re.compile(r"[A-Za-z]{2}")
_CATALOGUE_CALLS = {"tr", "plural", "N_", "Np_", "command_text"}
_DEVELOPER_CALLS = {"cast", "getLogger", "TypeVar", "NewType", "getattr", "hasattr", "setattr", "isinstance"}
_LOGGERS = {"log", "logger", "logging", "warnings"}


def _is_text(value: str) -> bool:
    return bool(_LOOKS_LIKE_WORDS.search(value)) and (
        any(c.isspace() for c in value) or bool(re.search("[A-Z]", value))
    )


def _exempt_call(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in _CATALOGUE_CALLS | _DEVELOPER_CALLS
    if isinstance(func, ast.Attribute):
        owner = func.value
        return func.attr in _CATALOGUE_CALLS or (isinstance(owner, ast.Name) and owner.id in _LOGGERS)
    return False


def _member_text(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Raise | ast.Assert):
            return
        if isinstance(node, ast.Call) and _exempt_call(node):
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "__repr__":
            return
        if isinstance(node, ast.AnnAssign):
            if node.value is not None:
                visit(node.value)
            return
        if isinstance(node, ast.arg):
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring
            for child in (*getattr(node, "decorator_list", ()), *getattr(node, "bases", ()),
                          *getattr(node, "keywords", ()), *body):  # fmt: skip
                visit(child)
            return
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return  # an attribute's docstring
        if isinstance(node, ast.FormattedValue):
            visit(node.value)  # not its format spec
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _is_text(node.value):
            found.append((node.lineno, node.value))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_no_member_text_outside_the_catalogue() -> None:
    literals = {
        f"{path.relative_to(ROOT)}:{line}": value
        for path in SHOWN_BY
        for line, value in _member_text(ast.parse(path.read_text(), str(path)))
    }
    assert not literals, "text a member reads must come from the catalogue (tr(...)):\n" + "\n".join(
        f"  {where}: {value!r}" for where, value in literals.items()
    )


def test_the_text_check_finds_a_literal_reply() -> None:
    """The check above would catch the way replies were written before the catalogues."""
    source = (
        'async def f(interaction):\n'
        '    """Docstrings are fine."""\n'
        '    log.info("Logs stay English %s", 1)\n'
        '    await answer(interaction, f"The queue is paused for {who}.")\n'
        '    await answer(interaction, tr("queue.paused"))\n'
        '    raise RuntimeError("Developers read this")\n'
    )  # fmt: skip
    assert _member_text(ast.parse(source)) == [(4, "The queue is paused for ")]


@pytest.mark.parametrize("language", LANGUAGES)
def test_whole_numbers_are_written_as_babel_writes_them(language: str) -> None:
    """`Texts.number`'s short path for whole numbers (grouping by threes) agrees with Babel's own formatting."""
    from babel.numbers import format_decimal

    tr = texts_for(language)
    for number in (0, 7, 999, 1000, 65_536, 1_234_567, -4321, 2**31):
        assert tr.number(number) == format_decimal(number, format="#,##0", locale=tr.locale)
    assert tr.number(1234.5, digits=1) == format_decimal(1234.5, format="#,##0.0", locale=tr.locale)
