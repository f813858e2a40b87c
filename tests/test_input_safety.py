"""Hostile input (issue 6, findings 7-9): invisible prompts, images that are not what they claim or too big to
decode, and prompts that would render as Discord markup. Unit tests of the rules, then the real bot against
the loopback Discord: refusals are ephemeral, free, and leave nothing on disk."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL import _imaging as pillow_memory  # Pillow's allocator counters
from pydantic import ValidationError

from bot.discord.messages import describe
from bot.discord.replies import quote
from bot.domain import NO_VISIBLE_TEXT, STORED, Requester, VideoRequest
from bot.errors import (
    BadOption,
    ImageDamaged,
    ImageFarTooLarge,
    ImageRejected,
    ImageTooLarge,
    NotAnImage,
    WrongImageFormat,
)
from bot.images import MAX_IMAGE_PIXELS, check_image, load_image
from bot.providers.local_render import RenderError, _ImageBackground
from bot.text import visible_text
from cogs.video import request_from_options
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ALICE_ID, GUILD_ID
from tests.fakes.discord.models import CallbackRecord

# Pillow warns (once per place) about images over its own 89 MP limit before our 40 MP refusal happens.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

INVISIBLE = {
    "zero width space": "\u200b",
    "zero width non-joiner": "\u200c",
    "zero width joiner": "\u200d",
    "word joiner": "\u2060",
    "byte order mark": "\ufeff",
    "soft hyphen": "\u00ad",
    "mongolian vowel separator": "\u180e",
    "right-to-left override": "\u202e",
    "left-to-right isolate": "\u2066",
    "invisible times": "\u2062",
    "tag latin a": "\U000e0041",
    "cancel tag": "\U000e007f",
    "combining acute accent": "\u0301",
    "combining grapheme joiner": "\u034f",
    "devanagari visarga (spacing mark)": "\u0903",
    "combining enclosing circle": "\u20dd",
    "variation selector 16": "\ufe0f",
    "variation selector 17": "\U000e0100",
    "mongolian free variation selector": "\u180b",
    "khmer inherent vowel": "\u17b4",
    "space": " ",
    "no-break space": "\u00a0",
    "ideographic space": "\u3000",
    "em space": "\u2003",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "tab and newline": "\t\n",
    "null": "\x00",
    "bell": "\x07",
    "delete": "\x7f",
    "hangul filler": "\u3164",
    "hangul choseong filler": "\u115f",
    "hangul jungseong filler": "\u1160",
    "halfwidth hangul filler": "\uffa0",
    "braille blank": "\u2800",
    "musical null notehead": "\U0001d159",
    "musical begin beam": "\U0001d173",
    "shorthand format letter overlap": "\U0001bca0",
}
ALL_INVISIBLE = "".join(INVISIBLE.values())


# --- finding 7: invisible prompts -------------------------------------------------------------------------


@pytest.mark.parametrize("chars", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_a_prompt_of_only_invisible_characters_is_refused(chars: str) -> None:
    assert visible_text(chars * 3) == ""
    with pytest.raises(ValidationError) as refused:
        VideoRequest(prompt=chars * 3, model="local/preview", duration=2)
    assert refused.value.errors()[0]["type"] == NO_VISIBLE_TEXT
    request = VideoRequest(prompt="a fox", model="local/preview", duration=2, negative_prompt=chars * 3)
    assert request.negative_prompt is None


def test_all_invisible_characters_together_are_still_nothing() -> None:
    assert visible_text(ALL_INVISIBLE * 2) == ""
    with pytest.raises(BadOption) as refused:
        request_from_options(prompt=ALL_INVISIBLE, model="local/preview", duration=2)
    assert (refused.value.option, refused.value.problem) == ("prompt", NO_VISIBLE_TEXT)
    assert "nothing visible" in describe(refused.value)


@pytest.mark.parametrize(
    "prompt",
    ["e\u0301t\u00e9", "❤️", "1️⃣", "👨\u200d👩\u200d👧", "สวัสดี", "नमस्ते", "한국어", "مرحبا", "\u200ba fox\u200b", "·"],
)
def test_visible_prompts_pass_unchanged(prompt: str) -> None:
    request = request_from_options(prompt=prompt, model="local/preview", duration=2, negative_prompt="blur\u200b")
    assert request.prompt == prompt.strip()
    assert request.negative_prompt == "blur\u200b"


def test_a_request_stored_before_the_rule_stays_readable() -> None:
    stored = VideoRequest.model_construct(prompt="\u200b", model="local/preview", duration=2).model_dump_json()
    assert VideoRequest.model_validate_json(stored, context=STORED).prompt == "\u200b"
    with pytest.raises(ValidationError):
        VideoRequest.model_validate_json(stored)


def test_the_refusal_names_the_real_problem() -> None:
    with pytest.raises(BadOption) as invisible:
        request_from_options(prompt="\u200b\u3164", model="local/preview", duration=2)
    assert describe(invisible.value).startswith("`prompt`: it has nothing visible in it")
    with pytest.raises(BadOption) as too_long:
        request_from_options(prompt="x" * 2001, model="local/preview", duration=2)
    assert (too_long.value.option, too_long.value.problem) == ("prompt", "string_too_long")
    assert describe(too_long.value) == "`prompt`: write a prompt of 1 to 2,000 characters."
    with pytest.raises(BadOption) as bad_model:
        request_from_options(prompt="a fox", model="no slash", duration=2)
    assert describe(bad_model.value).startswith("`model`: "), "an option without its own sentence: the validator's"


async def test_video_with_an_invisible_prompt_is_refused_and_free(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        for prompt in ("\u200b\u200c\u2060\ufeff", "\u3164\u2800\u115f", "\u0301\u034f\ufe0f", "\U000e0041\u202e"):
            refusal = await ephemeral(await h.fake.slash("video", {"prompt": prompt, "duration": 2}))
            assert "nothing visible" in refusal, refusal
        await assert_nothing_charged(h)

        accepted = await (await h.fake.slash("video", {"prompt": "a fox", "negative_prompt": "\u200b"})).wait_callback()
        assert not accepted.ephemeral
        assert (await h.only_job()).request.negative_prompt is None


async def test_remix_and_animate_refuse_an_invisible_prompt(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        await (await h.fake.slash("video", {"prompt": "a kite", "duration": 2})).wait_callback()
        job = await h.wait_job_state((await h.only_job()).id, "delivered")
        clip = h.fake.message(job.delivered_message_id)

        picture = await h.fake.user_message("look at this")
        picture.attachments.append(h.fake.upload_attachment("leaf.png", png_bytes(64, 64), "image/png"))
        for opened in (
            await h.fake.message_command("Animate", picture),
            await h.fake.click(clip, f"video:remix:{job.id}"),
        ):
            modal = await opened.wait_callback()
            assert modal.type == 9
            submitted = await h.fake.submit_modal(modal.data["custom_id"], {modal_input(modal): "\u200b\u2800\u3164"})
            assert "nothing visible" in await ephemeral(submitted)
        assert [j.id for j in await h.jobs_of()] == [job.id]
        assert staged_inputs(h) == []


# --- finding 8: images ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "declared"), [("GIF", "image/png"), ("TIFF", "image/png"), ("BMP", "image/png"),
                                               ("ICO", "image/png"), ("JPEG", "image/png"), ("PNG", "image/jpeg"),
                                               ("PNG", "image/webp")])  # fmt: skip
def test_an_image_must_be_the_format_it_was_declared_as(tmp_path: Path, fmt: str, declared: str) -> None:
    path = tmp_path / "image.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path, fmt)
    with pytest.raises(WrongImageFormat) as refused:
        check_image(path, declared)
    assert refused.value.expected == (declared.split("/")[1],)
    assert f"not a {declared.split('/')[1]} image" in describe(refused.value)


def test_a_file_declared_as_no_accepted_image_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.gif"
    Image.new("RGB", (32, 32)).save(path, "GIF")
    with pytest.raises(NotAnImage) as refused:
        check_image(path, "image/gif")
    assert describe(refused.value) == "That file is not an image I can use: attach a png, jpeg or webp."


@pytest.mark.parametrize(("fmt", "declared"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_accepted_formats_pass(tmp_path: Path, fmt: str, declared: str) -> None:
    path = tmp_path / "image"
    Image.new("RGB", (320, 200), (10, 120, 30)).save(path, fmt)
    assert check_image(path, declared) == (320, 200)
    assert check_image(path, declared + "; charset=binary") == (320, 200)


def test_too_many_pixels_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png(12000, 12000))
    assert path.stat().st_size < 40_000, "a tiny file that declares 144 MP"
    with pytest.raises(ImageTooLarge) as refused:
        check_image(path, "image/png")
    assert (refused.value.width, refused.value.height, refused.value.max_pixels) == (12000, 12000, MAX_IMAGE_PIXELS)
    assert "12,000×12,000 pixels; the limit is 40 megapixels" in describe(refused.value)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(huge_png(20000, 20000))  # over Pillow's own limit: it raises DecompressionBombError
    with pytest.raises(ImageFarTooLarge) as bombed:
        check_image(bomb, "image/png")
    assert "far too many pixels" in describe(bombed.value)
    edge = tmp_path / "edge.png"
    edge.write_bytes(huge_png(8000, MAX_IMAGE_PIXELS // 8000 + 1))
    with pytest.raises(ImageTooLarge):
        check_image(edge, "image/png")
    edge.write_bytes(huge_png(8000, MAX_IMAGE_PIXELS // 8000))
    assert check_image(edge, "image/png") == (8000, 5000), "the limit itself is allowed"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_damaged_images_are_refused(tmp_path: Path, fmt: str) -> None:
    whole = io.BytesIO()
    noise = np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(whole, fmt)
    path = tmp_path / "cut"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    with pytest.raises(ImageDamaged) as damaged:
        check_image(path, f"image/{fmt.lower()}")
    assert "damaged or incomplete" in describe(damaged.value)
    path.write_bytes(whole.getvalue()[:40] + b"\x00" * 300)
    with pytest.raises(ImageRejected):
        check_image(path, f"image/{fmt.lower()}")


async def test_a_gif_sent_as_png_is_refused_and_nothing_stays_on_disk(tmp_path: Path) -> None:
    gif = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 0, 255)).save(gif, "GIF")
    async with running_bot(tmp_path, with_worker=False) as h:
        for name, data, reason in [
            ("cat.png", gif.getvalue(), "not a png image"),
            ("huge.png", huge_png(12000, 12000), "12,000×12,000 pixels"),
            ("cut.png", png_bytes(200, 200)[:300], "damaged or incomplete"),
        ]:
            rec = await h.fake.slash(
                "video", {"prompt": "animate", "duration": 2}, attachments={"image": (name, data, "image/png")}
            )
            assert reason in await refusal_after_defer(rec), name
            assert staged_inputs(h) == [], f"{name} was left in DATA_DIR"
        await assert_nothing_charged(h)


async def test_animate_refuses_a_bad_image_and_leaves_nothing(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        picture = await h.fake.user_message("huge")
        picture.attachments.append(h.fake.upload_attachment("huge.png", huge_png(12000, 12000), "image/png"))
        modal = await (await h.fake.message_command("Animate", picture)).wait_callback()
        submitted = await h.fake.submit_modal(modal.data["custom_id"], {modal_input(modal): "make it move"})
        assert "12,000×12,000 pixels" in await refusal_after_defer(submitted)
        assert staged_inputs(h) == []
        await assert_nothing_charged(h)


async def test_an_image_discord_measured_too_big_is_refused_before_download(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        attachment = h.fake.upload_attachment("big.png", png_bytes(16, 16), "image/png")
        attachment.width, attachment.height = 9000, 9000
        rec = await h.fake.slash("video", {"prompt": "animate", "duration": 2}, attachments={"image": attachment})
        callback = await rec.wait_callback()
        assert callback.type == 4 and callback.ephemeral, "refused at once, not deferred for a download"
        assert "9,000×9,000 pixels" in callback.data["content"]
        assert not h.fake.requests_to("GET /attachments/*"), "the image was never fetched"
        assert staged_inputs(h) == []


def test_the_renderer_decodes_a_large_jpeg_scaled_down(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    gradient = np.linspace(0, 255, 6000, dtype=np.uint8)[None, :].repeat(4000, axis=0)
    Image.fromarray(gradient, "L").save(path, "JPEG")
    pillow_memory.reset_stats()
    background = _ImageBackground(path, 1280, 720, 48, np.random.default_rng(0))
    stats = pillow_memory.get_stats()
    assert background.image.shape == (778, 1383, 3), "kept at the (overscanned) frame size"
    # Pillow allocates image memory in blocks of at most 16 MB, one or more per image: one block each means
    # nothing near the 24 MP source (24 MB in one channel, 96 MB in RGB) ever existed in memory.
    assert stats["new_count"] >= 1
    assert stats["allocated_blocks"] + stats["reused_blocks"] <= stats["new_count"], stats


def test_the_renderer_refuses_too_many_pixels_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png(12000, 12000))
    pillow_memory.reset_stats()
    with pytest.raises(RenderError) as refused:
        _ImageBackground(path, 1280, 720, 48, np.random.default_rng(0))
    cause = refused.value.__cause__
    assert isinstance(cause, ImageTooLarge) and (cause.width, cause.height) == (12000, 12000)
    assert pillow_memory.get_stats()["new_count"] == 0, "no pixel memory was allocated"


def test_load_image_fills_the_size_asked_for(tmp_path: Path) -> None:
    for fmt, mode in [("PNG", "P"), ("PNG", "RGBA"), ("PNG", "1"), ("PNG", "I;16"), ("WEBP", "RGBA"), ("JPEG", "CMYK")]:
        path = tmp_path / f"image.{fmt.lower()}"
        Image.new(mode, (900, 300)).save(path, fmt)
        loaded = load_image(path, (200, 100))
        assert (loaded.size, loaded.mode) == ((200, 100), "RGB"), (fmt, mode)
    gif = tmp_path / "image.gif"
    Image.new("RGB", (40, 40)).save(gif, "GIF")
    with pytest.raises(WrongImageFormat) as refused:
        load_image(gif, (20, 20))
    assert "not a png, jpeg or webp image" in describe(refused.value)


# --- finding 9: prompts that render as markup --------------------------------------------------------------

CHIPS = ["<#3000000000000000003>", "<@&123>", "<@123>", "<@!123>", "<t:1:R>", "</video:123>", "<:blob:123>",
         "<a:blob:123>", "<id:customize>"]  # fmt: skip


def test_quote_shows_chips_as_plain_text() -> None:
    shown = quote(" ".join(CHIPS))
    for chip in CHIPS:
        assert chip not in shown
        assert chip.replace("<", "<\u200b") in shown, "still reads as typed"


def test_quote_keeps_links_from_unfurling() -> None:
    shown = quote("see https://example.com/a_b and http://x.y/z. or <https://kept.example>")
    assert "<https://example.com/a_b>" in shown and "<http://x.y/z.>" in shown
    assert_no_bare_url(shown)
    assert quote("[click](https://evil.example)") == "\\[click](<https://evil.example>)"


def test_quote_neutralises_mentions_markdown_and_bidi() -> None:
    assert quote("@everyone @here") == "@\u200beveryone @\u200bhere"
    assert quote("**bold** `code` # title") == "\\*\\*bold\\*\\* 'code' # title"
    assert quote("# title") == "\\# title"
    assert quote("abc\u202edef") == "abcdef", "an open override would reverse the rest of the bot's line"


@pytest.mark.parametrize("limit", [5, 20, 33, 120])
def test_quote_cuts_without_breaking_a_link_or_going_over(limit: int) -> None:
    text = "<#1> " * 5 + "https://example.com/" + "a" * 200 + " <t:1:R>"
    shown = quote(text, limit)
    assert len(shown) <= limit and shown.endswith("…")
    assert_no_bare_url(shown)
    assert "<#1>" not in shown and "<t:1:R>" not in shown


async def test_status_message_and_clip_show_a_prompt_as_plain_text(tmp_path: Path) -> None:
    prompt = "<#3000000000000000003> <@&123> <t:1:R> https://example.com a fox"
    async with running_bot(tmp_path) as h:
        rec = await h.fake.slash("video", {"prompt": prompt, "duration": 2})
        callback = await rec.wait_callback()
        assert not callback.ephemeral
        done = await h.wait_job_state((await h.only_job()).id, "delivered")
        assert done.request.prompt == prompt, "stored as written; only its rendering is neutralised"
        final = await rec.wait_original(lambda m: "Done" in m.content)
        clip = h.fake.message(done.delivered_message_id)
        for text in (callback.data["content"], final.content, clip.embeds[0]["description"]):
            for token in ("<#3000000000000000003>", "<@&123>", "<t:1:R>"):
                assert token not in text, (token, text)
            assert "<https://example.com>" in text
            assert_no_bare_url(text)


# --- helpers ----------------------------------------------------------------------------------------------


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 200, 0)).save(out, "PNG")
    return out.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of any size, written chunk by chunk: Pillow would need the whole image in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row * 500) for _ in range(height // 500))
    pixels += packer.compress(row * (height % 500)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def staged_inputs(h: Harness) -> list[Path]:
    folder = h.settings.data_dir / "staging" / "inputs"
    return sorted(folder.iterdir()) if folder.exists() else []


async def ephemeral(rec: Any) -> str:
    """The text of the ephemeral refusal an interaction got at once (before any deferral)."""
    callback: CallbackRecord = await rec.wait_callback()
    assert callback.type == 4 and callback.ephemeral, callback.data
    return str(callback.data["content"])


async def refusal_after_defer(rec: Any) -> str:
    """The refusal of an interaction deferred while its image was fetched: a private followup, and the public
    "thinking…" placeholder deleted, so the channel never shows it."""
    callback: CallbackRecord = await rec.wait_callback()
    assert callback.type == 5, callback.data
    followup = await rec.wait_followup()
    assert followup.ephemeral, "an image refusal is private"
    assert rec.original is None or rec.original.deleted, "the public placeholder is removed"
    return str(followup.content)


async def assert_nothing_charged(h: Harness) -> None:
    assert await h.jobs_of() == []
    usage = await h.app.jobs.usage(Requester(GUILD_ID, ALICE_ID))
    assert (usage.used, usage.reserved, usage.left) == (0, 0, 60)


def modal_input(modal: CallbackRecord) -> str:
    for row in modal.data["components"]:
        for component in row.get("components", [row.get("component")]):
            return str(component["custom_id"])
    raise AssertionError("the modal has no input")


def assert_no_bare_url(text: str) -> None:
    """Every link sits inside a closed `<…>`, which Discord shows as a link without a preview."""
    for link in re.finditer(r"https?://[^\s<>]*", text):
        inside = text[link.start() - 1 : link.start()] == "<" and text[link.end() : link.end() + 1] == ">"
        assert inside, f"a bare link in {text!r}"
