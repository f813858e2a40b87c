"""`bot.providers.frames`, the first-frame handling the adapters share: type sniffing, the header read that
refuses before decoding, and the two ways an unusable image is refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.discord.messages import ENGLISH, reason_text
from bot.errors import ProviderError, RequestRejected
from bot.providers.frames import cropped_frame, data_uri, fitted_frame, read_frame, sniff_mime
from tests.provider_harness import image_file


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_the_type_is_sniffed_from_the_first_bytes(tmp_path: Path, fmt: str, mime: str) -> None:
    data = image_file(tmp_path, (20, 10), fmt).read_bytes()
    assert sniff_mime(data) == mime
    assert data_uri(mime, data).startswith(f"data:{mime};base64,")
    assert sniff_mime(b"GIF89a" + data) is None


def test_a_frame_is_read_from_its_header_and_scaled_down_keeping_its_shape(tmp_path: Path) -> None:
    with read_frame("acme", image_file(tmp_path, (4000, 1000), "JPEG")) as frame:
        assert (frame.format, frame.size, frame.mime) == ("JPEG", (4000, 1000), "image/jpeg")
        assert frame.within(2000) == (2000, 500) and frame.within(8000) == (4000, 1000)
        encoded = fitted_frame(frame.path, (200, 100))
    with Image.open(io.BytesIO(encoded)) as fitted:
        assert (fitted.format, fitted.size) == ("JPEG", (200, 100))


async def test_an_unusable_image_is_refused_the_way_its_adapter_says(tmp_path: Path) -> None:
    garbage = tmp_path / "frame.png"
    garbage.write_text("not a picture")
    with pytest.raises(RequestRejected) as unreadable, read_frame("acme", garbage):
        pass
    with pytest.raises(ProviderError) as missing, read_frame("acme", tmp_path / "gone.png"):
        pass
    with pytest.raises(ProviderError) as uncroppable:
        await cropped_frame("acme", garbage, (64, 64))
    assert unreadable.value.field == "image" and not unreadable.value.retryable
    assert not missing.value.retryable and "missing" in reason_text(missing.value.user_message, ENGLISH)
    assert not uncroppable.value.retryable
    assert "could not be read" in reason_text(uncroppable.value.user_message, ENGLISH)
