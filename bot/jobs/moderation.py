"""A server's rules on what may be asked and where: the prompt blocklist and the allowed channels.

Blocklist patterns are words or phrases (matched on word boundaries) or `/regex/`, checked against the prompt
and the negative prompt after `normalize`, so that look-alike letters, accents, zero-width characters and case
do not slip past. A regex runs on every request, so its cost is bounded when an admin adds it (`vet_pattern`):
a length limit, a syntax check that refuses what backtracks catastrophically (a quantifier inside a repeated
group, backreferences), and a timed trial against adversarial prompts in a separate process that is killed
when it runs over. Pure functions apart from that trial; knows nothing of Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import sys
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bot.domain import MAX_PROMPT_CHARS, GuildSettings, Requester, VideoRequest
from bot.errors import (
    BlockedPattern,
    BlockedWord,
    ChannelNotAllowed,
    EmptyPattern,
    InvalidRegex,
    PatternTooLong,
    RegexBackreference,
    RegexNestedQuantifier,
    RegexRepeatTooLarge,
    RegexTooSlow,
)
from bot.text import is_invisible

with warnings.catch_warnings():  # the parser behind `re`, the one honest way to read a regex's structure
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants as sre
    import sre_parse

log = logging.getLogger(__name__)

MAX_PATTERN_CHARS = 200
MAX_REPEAT = 1000
"""The largest repeat count a regex may name (`a{1000}`); more only makes compiling and matching heavy."""
MAX_PATTERNS = 100
MAX_REGEXES = 10
"""Each regex costs time on every request, words almost none: regexes are fewer."""
TRIAL_SECONDS = 3.0
"""Wall-clock bound of the whole trial (a process start included): past it, the trial process is killed."""
TRIAL_MATCH_SECONDS = 0.05
"""CPU time a regex may take on any one trial prompt. On a prompt of the longest length, linear regexes take
microseconds and the usual quadratic ones (`.*foo`) milliseconds; catastrophic ones (exponential, cubic) run for
seconds or forever. Matching runs on every request, so at most `MAX_REGEXES` × 2 texts × this per request."""
TRIAL_CHARS = 6
"""Characters of the regex that the adversarial prompts are made of (singly and in pairs)."""

_LOOKALIKES = str.maketrans(
    # Cyrillic and Greek letters drawn like Latin ones (after case folding), and Latin variants. NFKC
    # already folds fullwidth, mathematical and circled letters; these it leaves alone, being other scripts.
    {
        "а": "a", "в": "b", "ь": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k",
        "ӏ": "l", "м": "m", "п": "n", "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "т": "t", "у": "y", "ү": "y",
        "х": "x", "ԝ": "w", "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w", "ɑ": "a", "ɡ": "g", "ı": "i",
        # small capitals, which NFKC keeps as letters of their own
        "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
        "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u",
        "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
    }
)  # fmt: skip
_SCRIPTIO_CONTINUA = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x2E80, 0x9FFF), (0xF900, 0xFAFF))
"""Thai, Lao, Myanmar, Khmer and CJK: written without spaces between words, so no word boundaries to ask for."""


def normalize(text: str) -> str:
    """`text` as the blocklist sees it: compatibility forms folded (fullwidth, mathematical letters, ligatures),
    case folded, accents and every invisible character dropped (zero-width spaces and joiners, soft hyphens,
    bidi and tag characters), look-alike letters of other scripts mapped to Latin, and each run of spaces made
    one space. Patterns go through the same function, so both sides always agree."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    kept: list[str] = []
    for char in folded:
        if char.isspace():
            kept.append(" ")
        elif not is_invisible(char):
            kept.append(char)
    return " ".join(unicodedata.normalize("NFC", "".join(kept)).translate(_LOOKALIKES).split())


# --- patterns ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rule:
    """One blocklist pattern, ready to match normalized text."""

    source: str
    """As the admin typed it (what the list shows and stores)."""
    number: int
    """Its place in the server's list, from 1: how a refusal names a regex without showing it."""
    is_regex: bool
    matcher: re.Pattern[str]


def is_regex(pattern: str) -> bool:
    return len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/")


def same_pattern(a: str, b: str) -> bool:
    """Two patterns the blocklist treats as one (a word in another case or with a zero-width space is the same
    word; a regex is itself)."""
    if is_regex(a) or is_regex(b):
        return a == b
    return normalize(a) == normalize(b)


def parse_pattern(typed: str, number: int = 0) -> Rule:
    """Check a pattern as an admin typed it, without running it: raises the refusal that says what to change."""
    pattern = typed.strip()
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternTooLong(len(pattern), max_length=MAX_PATTERN_CHARS)
    if is_regex(pattern):
        body = pattern[1:-1]
        try:
            parsed = sre_parse.parse(body, re.IGNORECASE)
            matcher = re.compile(body, re.IGNORECASE)
        except (re.error, RecursionError, OverflowError) as exc:
            raise InvalidRegex(str(getattr(exc, "msg", exc))) from None
        _check_structure(parsed.data, repeated=False)
        return Rule(pattern, number, True, matcher)
    words = normalize(pattern)
    if not words:
        raise EmptyPattern()
    return Rule(pattern, number, False, re.compile(_bounded(words)))


def _bounded(words: str) -> str:
    """A word or phrase matched whole: not inside a longer word, where its edges are letters of a spaced script."""
    start = r"(?<!\w)" if _needs_boundary(words[0]) else ""
    end = r"(?!\w)" if _needs_boundary(words[-1]) else ""
    return start + re.escape(words) + end


def _needs_boundary(char: str) -> bool:
    if not (char.isalnum() or char == "_"):
        return False
    return not any(low <= ord(char) <= high for low, high in _SCRIPTIO_CONTINUA)


_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT)}


def _check_structure(items: list[tuple[Any, Any]], *, repeated: bool) -> None:
    """Refuse what makes a backtracking matcher slow whatever the prompt: backreferences, and a repetition inside
    a repeated part (`(a+)+`, `(a*b?)*`). A part repeated at most once (`?`) counts as not repeated."""
    for op, arg in items:
        if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            raise RegexBackreference()
        if op in _REPEATS:
            low, high, body = arg
            if low > MAX_REPEAT or (high != sre.MAXREPEAT and high > MAX_REPEAT):
                raise RegexRepeatTooLarge(MAX_REPEAT)
            repeats = high > 1
            if repeats and repeated:
                raise RegexNestedQuantifier()
            _check_structure(body.data, repeated=repeated or repeats)
        else:
            for child in _children(op, arg):
                _check_structure(child, repeated=repeated)


def _children(op: Any, arg: Any) -> Iterator[list[tuple[Any, Any]]]:
    """The sub-patterns of one parsed node (groups, alternatives, lookarounds)."""
    if op is sre.SUBPATTERN:
        yield arg[-1].data
    elif op is sre.BRANCH:
        for branch in arg[1]:
            yield branch.data
    elif op in (sre.ASSERT, sre.ASSERT_NOT):
        yield arg[1].data
    elif op is getattr(sre, "ATOMIC_GROUP", None):
        yield arg.data


# --- the trial ---------------------------------------------------------------------------------------------
_TRIAL = """
import json, re, signal, sys, time
task = json.loads(sys.stdin.read())
matcher = re.compile(task["regex"], re.IGNORECASE)
timer = hasattr(signal, "setitimer")
def over(*_):
    raise TimeoutError
if timer:  # `re` checks for signals while it matches: a CPU-time alarm stops a runaway match early
    signal.signal(signal.SIGVTALRM, over)
worst = 0.0
try:
    for prompt in task["prompts"]:
        start = time.process_time()
        if timer:
            signal.setitimer(signal.ITIMER_VIRTUAL, 2 * task["budget"])
        matcher.search(prompt)
        if timer:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        worst = max(worst, time.process_time() - start)
        if worst > task["budget"]:
            break
except TimeoutError:
    worst = float("inf")
print(worst)
"""


def trial_prompts(body: str, length: int = MAX_PROMPT_CHARS) -> list[str]:
    """Prompts of the longest length made of the regex's own characters, singly and in pairs, each with and
    without a character that matches nothing at the end: what drives a backtracking matcher into its worst
    case (`(a|aa)+$` on "aaa…a!", `\\d*\\d*x` on "111…1")."""
    chars: list[str] = []
    for char in _characters(sre_parse.parse(body, re.IGNORECASE).data):
        if char not in chars:
            chars.append(char)
    chars = chars[:TRIAL_CHARS] or ["a"]
    prompts = []
    for char in chars:
        prompts += [char * length, char * (length - 1) + "\x00"]
    for i, first in enumerate(chars):
        for second in chars[i + 1 :]:
            prompts.append((first + second) * (length // 2 - 1) + "\x00")
    return prompts


def _characters(items: list[tuple[Any, Any]]) -> Iterator[str]:
    """Characters the regex matches somewhere, in order (a class gives one of its members)."""
    for op, arg in items:
        if op is sre.LITERAL:
            yield chr(arg)
        elif op is sre.NOT_LITERAL:
            yield "a" if arg != ord("a") else "b"
        elif op is sre.ANY:
            yield "a"
        elif op is sre.IN:
            yield from _class_member(arg)
        elif op in _REPEATS:
            yield from _characters(arg[2].data)
        else:
            for child in _children(op, arg):
                yield from _characters(child)


def _class_member(items: list[tuple[Any, Any]]) -> Iterator[str]:
    if items and items[0][0] is sre.NEGATE:  # `[^…]`: a character it does not list
        listed = {chr(arg) for op, arg in items if op is sre.LITERAL}
        yield next(char for char in "ab1 " if char not in listed)
        return
    examples = {sre.CATEGORY_DIGIT: "1", sre.CATEGORY_SPACE: " ", sre.CATEGORY_WORD: "a"}
    for op, arg in items:
        if op is sre.LITERAL:
            yield chr(arg)
            return
        if op is sre.RANGE:
            yield chr(arg[0])
            return
        if op is sre.CATEGORY and arg in examples:
            yield examples[arg]
            return


async def trial(body: str) -> None:
    """Run the regex on adversarial prompts in a child process: `RegexTooSlow` if one prompt takes more than
    `TRIAL_MATCH_SECONDS` of CPU (the child stops it with a CPU-time alarm), or the whole trial more than
    `TRIAL_SECONDS` of wall-clock time (then the child is killed). A child, because a runaway match cannot be
    stopped safely inside the bot's own process, and a kill always works."""
    task = json.dumps({"regex": body, "prompts": trial_prompts(body), "budget": TRIAL_MATCH_SECONDS})
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", _TRIAL,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(child.communicate(task.encode()), TRIAL_SECONDS)
    except TimeoutError:
        raise RegexTooSlow() from None
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
    if child.returncode != 0:  # it ran out of memory or recursion on a trial prompt
        raise RegexTooSlow()
    worst = float(out.decode().strip() or "inf")
    log.debug("regex trial: worst prompt took %.4f s", worst)
    if worst > TRIAL_MATCH_SECONDS:
        raise RegexTooSlow()


async def vet_pattern(typed: str) -> str:
    """The pattern to store, once it passed every check (a regex: the syntax checks, then the trial)."""
    rule = parse_pattern(typed)
    if rule.is_regex:
        await trial(rule.source[1:-1])
    return rule.source


# --- the checks on each request ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def compile_rules(blocklist: tuple[str, ...]) -> tuple[Rule, ...]:
    """A server's blocklist, compiled once per version of it. A stored pattern that no longer compiles (saved by
    an older version) is skipped and logged rather than refusing every request."""
    rules = []
    for number, typed in enumerate(blocklist, 1):
        try:
            rules.append(parse_pattern(typed, number))
        except Exception as exc:
            log.warning("blocklist rule %d is skipped: %s", number, exc)
    return tuple(rules)


def check_blocklist(blocklist: tuple[str, ...], request: VideoRequest) -> None:
    """Refuse a request whose prompt or negative prompt a rule matches, naming the first rule that does."""
    if not blocklist:
        return
    rules = compile_rules(blocklist)
    for option, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
        if not text:
            continue
        seen = normalize(text)
        for rule in rules:
            if rule.matcher.search(seen):
                if rule.is_regex:
                    raise BlockedPattern(option, rule=rule.number)
                raise BlockedWord(option, word=rule.source)


def check_channel(settings: GuildSettings, who: Requester) -> None:
    """Once a server allows some channels, requests come only from them or their threads."""
    allowed = settings.allowed_channels
    if not allowed or who.channel_id in allowed or who.parent_channel_id in allowed:
        return
    raise ChannelNotAllowed(tuple(sorted(allowed)))


def check_request(settings: GuildSettings, who: Requester, request: VideoRequest) -> None:
    """Every server rule on a request, before anything is charged."""
    check_channel(settings, who)
    check_blocklist(settings.blocklist, request)
