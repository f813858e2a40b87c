"""What a member's text looks like once rendered: which characters show nothing at all.

A prompt made only of zero-width spaces, joiners, bidi controls, combining marks or Hangul fillers passes a
length check but asks for nothing, and would be charged and rendered as an empty card. Pure functions, so the
request validators and the tests share one definition.
"""

from __future__ import annotations

import unicodedata

_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Mn", "Mc", "Me", "Zs", "Zl", "Zp"})
"""Controls, format characters (ZWSP, joiners, BOM, bidi and tag characters), lone surrogates, combining marks
(alone they have nothing to sit on) and every kind of space or separator."""

_DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers (letters, but drawn as nothing)
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),  # includes code points still unassigned, which renderers also skip
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical format controls
    (0xE0000, 0xE0FFF),  # tag characters and variation selectors supplement
)
"""Unicode's Default_Ignorable_Code_Point ranges: what a renderer draws as nothing even when it does not know
the character (the category check misses the fillers, which are letters, and unassigned code points)."""

_BLANK_SYMBOLS = frozenset({0x2800, 0x1D159})
"""Symbols whose glyph is empty: the blank braille pattern and the musical null notehead."""


def is_invisible(char: str) -> bool:
    code = ord(char)
    if code in _BLANK_SYMBOLS or unicodedata.category(char) in _INVISIBLE_CATEGORIES:
        return True
    return any(low <= code <= high for low, high in _DEFAULT_IGNORABLE)


def visible_text(text: str) -> str:
    """`text` without the characters that render as nothing; empty when a member wrote nothing one can see."""
    return "".join(char for char in text if not is_invisible(char))


def duration_range(durations: tuple[int, ...]) -> str:
    """Durations in seconds, compactly: `1-60 s` for a run, `4/6/8 s` otherwise."""
    if not durations:
        return "-"
    ordered = sorted(durations)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]} s"
    return "/".join(str(d) for d in ordered) + " s"
