"""How many pixels an image in a request may decode to, for every handler that decodes images.

A small file can declare a huge image, whose decode takes seconds and hundreds of MiB on the one inference
thread every model shares (docs/serving.md, "Threat model", has the figures). The size is in the image's
header, so it is checked before a pixel is decoded: :func:`open_image` refuses it with a 400, and
:func:`limit_pixels` sets the same limit in PIL itself (``Image.MAX_IMAGE_PIXELS``, with its bomb warning
made an error), so a handler's own ``Image.open`` (a ``.mar``'s, an ``inference.py``'s) is bounded too.
"""

from __future__ import annotations

import io
import warnings

from serving.errors import InvalidInput

DEFAULT_MAX_PIXELS = 4096 * 4096
_max_pixels = DEFAULT_MAX_PIXELS


def limit_pixels(pixels: int) -> None:
    """The server's ``--max-image-pixels``: for :func:`open_image`, and for PIL in this whole process."""
    from PIL import Image

    global _max_pixels
    _max_pixels = pixels
    # PIL warns past MAX_IMAGE_PIXELS and raises past twice that: an error from the first pixel over.
    Image.MAX_IMAGE_PIXELS = pixels
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def open_image(data: bytes, formats: list[str] | None = None):
    """A PIL image of ``data``, its header read and its size checked; nothing decoded yet."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # PIL's check, at our limit
        raise _too_large(str(exc).split(",")[0]) from None
    width, height = image.size
    if width * height > _max_pixels:
        image.close()
        raise _too_large(f"it is {width}x{height} = {width * height} pixels")
    return image


def _too_large(detail: str) -> InvalidInput:
    return InvalidInput(
        f"image has more pixels than the server's limit of {_max_pixels} (--max-image-pixels): send a "
        f"smaller image ({detail})"
    )
