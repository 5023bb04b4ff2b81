"""Images in requests are bounded in pixels before any pixel is decoded (serving/images.py)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from serving.errors import InvalidInput
from serving.images import DEFAULT_MAX_PIXELS, open_image


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_over_the_limit_is_refused_from_its_header() -> None:
    with pytest.raises(InvalidInput, match=r"more pixels than the server's limit of 16777216 .*it is 4097x4096"):
        open_image(_png(4097, 4096))


def test_an_image_within_the_limit_opens_lazily() -> None:
    with open_image(_png(64, 32)) as image:
        assert image.size == (64, 32)
    assert DEFAULT_MAX_PIXELS == 4096 * 4096
