"""The tensor codec of a torch.export model: request bodies to arrays, results to response bodies.

The small steps around a forward pass (serving/runner.py runs the pass itself): decode the request,
postprocess the logits, encode the response. Each is a plain function of its inputs so it can be tested
without a server. Errors that are the
client's fault raise :class:`InvalidInput` (400), :class:`UnsupportedMediaType` (415) or
:class:`NotAcceptable` (406) from serving/errors.py, with a message that says what was expected.

numpy only at import time: torch is imported by whoever loads a model, so the server can bind and
answer ``/ping`` (503) before the slow torch import.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import math
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from serving.errors import InvalidInput, NotAcceptable, UnsupportedMediaType
from serving.images import open_image

if TYPE_CHECKING:
    from serving.artifact import Artifact


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


simdjson = _optional("simdjson")
"""An optimisation only: without it every body takes the general path."""


MAX_JSON_DEPTH = 32
"""Deeper nesting than any tensor we serve needs; refused before numpy sees it."""

JSON = "application/json"
NPY = "application/x-npy"
PNG = "image/png"
JPEG = "image/jpeg"
RESPONSE_TYPES = (JSON, NPY)
IMAGE_FORMATS = {PNG: "PNG", JPEG: "JPEG"}
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a pixel array may hold


def request_types(artifact: Artifact) -> tuple[str, ...]:
    """Content types this model reads: images only for image-shaped models."""
    return (JSON, NPY, PNG, JPEG) if image_mode(artifact) else (JSON, NPY)


def image_mode(artifact: Artifact) -> str | None:
    """PIL mode ("L" or "RGB") of an image-shaped input ``[C, H, W]`` with 1 or 3 channels, else None."""
    shape = artifact.input_shape
    if len(shape) == 3 and shape[0] in (1, 3):
        return "L" if shape[0] == 1 else "RGB"
    return None


def decode(body: bytes, media_type: str, artifact: Artifact) -> np.ndarray:
    """A validated float32 batch ``(N, *input_shape)`` from a request body of ``media_type``."""
    if media_type == JSON:
        return decode_json(body, artifact)
    if media_type == NPY:
        return decode_npy(body, artifact)
    if media_type in IMAGE_FORMATS and image_mode(artifact):
        return decode_image(body, media_type, artifact)
    accepted = ", ".join(request_types(artifact))
    raise UnsupportedMediaType(f"content type {media_type or '(none)'!r} is not supported: send one of {accepted}")


def _depth(value: Any, limit: int) -> int:
    # Iterative, so a hostile 100k-deep list cannot overflow the stack.
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        level = [
            item for v in level if isinstance(v, (list, dict)) for item in (v.values() if isinstance(v, dict) else v)
        ]
    return depth


def decode_json(body: bytes, artifact: Artifact) -> np.ndarray:
    """``{"instances": [...]}`` or a bare list: one instance or a batch, pixels in [0, 255]."""
    if not body:
        raise InvalidInput('empty body: send a JSON array of pixel values or {"instances": [...]}')
    array = _plain_array(body, artifact.input_shape)
    if array is not None:
        return to_batch(array, artifact, finite=True)
    try:
        payload = orjson.loads(body)  # several times json.loads's speed (docs/serving.md, "Measured")
    except orjson.JSONDecodeError:
        payload = _loads_for_the_message(body)  # invalid for orjson: the standard parser says precisely why
    if isinstance(payload, dict):
        if "instances" not in payload:
            raise InvalidInput("JSON object must have an 'instances' field holding a list of inputs")
        payload = payload["instances"]
    try:
        return to_batch(payload, artifact)
    except InvalidInput:
        # Depth only matters for the message: numpy refuses more than 64 dimensions by itself, so the walk
        # runs only for input that failed anyway, not on every request.
        if _depth(payload, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise InvalidInput(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
        raise


# What is left of a JSON number array when the numbers and whitespace are taken out: its brackets and commas.
_NUMBER_CHARS = b"0123456789.eE+- \t\n\r"
_MAX_FAST_BATCH = 64


@functools.lru_cache(maxsize=256)
def _skeleton(shape: tuple[int, ...], count: int | None, wrapped: bool) -> bytes:
    """The brackets and commas of a body holding ``count`` instances of ``shape`` (None: one bare instance),
    as ``{"instances": ...}`` or a bare list, with _NUMBER_CHARS removed as from the body."""

    def nested(dims: tuple[int, ...]) -> bytes:
        return b"[" + b",".join([nested(dims[1:])] * dims[0]) + b"]" if dims else b""

    array = nested(shape if count is None else (count, *shape))
    return (b'{"instances":' + array + b"}").translate(None, _NUMBER_CHARS) if wrapped else array


def _plain_array(body: bytes, shape: tuple[int, ...]) -> np.ndarray | None:
    """The common request, read without building a Python object per number: a body that is exactly
    ``{"instances": [...]}`` or a bare list holding N instances of ``shape`` (or one bare instance), all
    numbers. simdjson validates the JSON and converts the numbers into one float64 buffer (in about half
    the time orjson + numpy take: docs/serving.md, "Measured"); the body's brackets and commas, compared
    with those of an array of that shape, prove it rectangular. Anything else (other keys, strings, deeper or ragged
    nesting, numbers simdjson refuses) returns None, and the general path reads it and says what is wrong."""
    if simdjson is None:
        return None
    try:
        document = simdjson.Parser().parse(body)
        wrapped = isinstance(document, simdjson.Object)
        values = document["instances"] if isinstance(document, simdjson.Object) else document
        if not isinstance(values, simdjson.Array):
            return None
        flat = np.frombuffer(values.as_buffer(of_type="d"), dtype=np.float64)
    except (ValueError, TypeError, RuntimeError, KeyError):
        return None
    size = math.prod(shape)
    count, rest = divmod(len(flat), size)
    if rest or not 0 < count <= _MAX_FAST_BATCH:
        return None
    skeleton = body.translate(None, _NUMBER_CHARS)
    if skeleton == _skeleton(shape, count, wrapped):
        return flat.reshape(count, *shape)
    if count == 1 and skeleton == _skeleton(shape, None, wrapped):
        return flat.reshape(shape)
    return None


def _loads_for_the_message(body: bytes) -> Any:
    """The standard library's reading of a body orjson refused: a clear InvalidInput, or the value when
    only orjson's limits were hit (integers past 64 bits, nesting past 1024)."""
    try:
        # parse_int=float: a 5000-digit integer becomes inf (refused later as not finite) instead of tripping
        # Python's int-length limit, and no int can overflow numpy's int64 on the way.
        return json.loads(body, parse_constant=_reject_constant, parse_int=float)
    except RecursionError:  # the C decoder recurses per nesting level
        raise InvalidInput(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidInput(f"body is not valid JSON ({_first_line(exc)})") from None


def _reject_constant(name: str) -> float:
    raise InvalidInput(f"{name} is not a valid pixel value: send finite numbers")


def decode_npy(body: bytes, artifact: Artifact) -> np.ndarray:
    """A ``.npy`` file (``numpy.save``) of one instance or a batch; object arrays are never unpickled.

    The header is read and checked first (dtype numeric, shape small enough for the model), so a header that
    declares a terabyte, or one that does not parse, is a 400 before numpy allocates anything.
    """
    if not body:
        raise InvalidInput("empty body: send an .npy file written by numpy.save")
    stream = io.BytesIO(body)
    try:
        major, _ = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except Exception as exc:  # numpy raises ValueError, SyntaxError, TokenError, TypeError... on hostile headers
        raise InvalidInput(f"body is not a readable .npy array ({_first_line(exc)})") from None
    if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInput(f"array dtype {dtype} is not numeric: send float32, float64 or integer pixels")
    if not all(type(d) is int and d >= 0 for d in shape):  # bool is an int subclass: (True,) is not a shape
        raise InvalidInput(f".npy header declares shape {shape!r}: expected non-negative integers")
    limit = artifact.max_batch_size * math.prod(artifact.input_shape)
    if math.prod(shape) > limit:
        raise InvalidInput(
            f".npy header declares shape {list(shape)}: more values than the model's limit of "
            f"{artifact.max_batch_size} instances of {list(artifact.input_shape)}"
        )
    # The header is read already: the data follows it, so take it from the body rather than parse it again.
    data = memoryview(body)[stream.tell() :]
    count = math.prod(shape)
    if len(data) < count * dtype.itemsize:
        raise InvalidInput(
            f"body is not a readable .npy array (it holds {len(data)} data bytes, the header "
            f"declares {count * dtype.itemsize})"
        )
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran_order else "C")
    return to_batch(array, artifact)


def decode_image(body: bytes, media_type: str, artifact: Artifact) -> np.ndarray:
    """One PNG or JPEG image of exactly the model's size; converted to its colour mode, never resized."""
    from PIL import Image, UnidentifiedImageError

    mode, (_, height, width) = image_mode(artifact), artifact.input_shape
    expected = IMAGE_FORMATS[media_type]
    try:
        with open_image(body, formats=[expected]) as image:
            # The size is in the header: checked before any pixel is decoded, so a huge image costs nothing.
            if image.size != (width, height):
                raise InvalidInput(f"image is {image.size[0]}x{image.size[1]} pixels: expected {width}x{height}")
            array = np.asarray(image.convert(mode), dtype=np.float32)
    except InvalidInput:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"body is not a readable {expected} image ({_first_line(exc)})") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return array[None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def to_batch(payload: Any, artifact: Artifact, finite: bool = False) -> np.ndarray:
    """Validate dtype, rank, shape and range and return a float32 batch of shape (N, *input_shape).
    ``finite``: the caller knows there is no NaN or infinity (simdjson refuses them)."""
    shape = artifact.input_shape
    expected = f"shape {list(shape)}" + (f" (or {list(shape[1:])} for one channel)" if shape[0] == 1 else "")
    expected += ", or a batch of those"
    try:
        # No dtype here: numpy would turn "12" into 12.0. Numbers only: strings, bools and nulls are refused.
        array = np.asarray(payload)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input must be a rectangular array of numbers of {expected}") from None
    if array.dtype.kind not in "iuf":
        raise InvalidInput(f"{_not_numbers(payload)}: expected {expected}")
    array = array.astype(np.float64, copy=False)
    if array.size == 0:
        raise InvalidInput(f"input is empty: expected {expected}")
    if not finite and not np.isfinite(array).all():
        raise InvalidInput("input holds NaN or Infinity: send finite values")
    if array.shape == shape:
        array = array[None]  # one instance
    elif shape[0] == 1 and len(shape) > 1 and array.shape == shape[1:]:
        array = array[None, None]  # one single-channel instance given without its channel axis
    elif shape[0] == 1 and len(shape) > 1 and array.ndim == len(shape) and array.shape[1:] == shape[1:]:
        array = array[:, None]  # a batch of those
    if array.ndim != len(shape) + 1 or array.shape[1:] != shape:
        raise InvalidInput(f"input has shape {list(array.shape)}: expected {expected}")
    if len(array) > artifact.max_batch_size:
        raise InvalidInput(f"batch of {len(array)} is larger than the model's limit of {artifact.max_batch_size}")
    low, high = artifact.pixel_range
    if array.min() < low or array.max() > high:
        raise InvalidInput(f"input values must lie in [{low:g}, {high:g}], got [{array.min():g}, {array.max():g}]")
    return array.astype(np.float32)


def _not_numbers(payload: Any) -> str:
    """What is wrong with an input that numpy did not read as numbers (the first such value, for the message)."""
    for leaf in _leaves(payload):
        if isinstance(leaf, str):
            return f"input values must be numbers, not strings (got {leaf[:20]!r})"
        if isinstance(leaf, bool) or leaf is None:
            return f"input values must be numbers, not {json.dumps(leaf)}"
    return "input must be a rectangular array of numbers"


def _leaves(value: Any, limit: int = 100_000):
    """The scalars of a nested list, depth first (at most ``limit`` of them: only for the message)."""
    stack = [value]
    while stack and limit:
        item = stack.pop()
        if isinstance(item, list | tuple | dict):
            stack.extend(reversed(list(item.values()) if isinstance(item, dict) else item))
        else:
            limit -= 1
            yield item


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def response_type(accept: str | None) -> str:
    """The response media type for an ``Accept`` header: JSON unless npy is asked for (406 if neither)."""
    if not accept:
        return JSON
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        if any(_q_is_zero(p) for p in params):
            continue  # q=0 means "not this one"
        if media in (JSON, "*/*", "application/*", ""):
            return JSON
        if media == NPY:
            return NPY
    raise NotAcceptable(f"Accept {accept!r} names no type this server writes: use {JSON} or {NPY}")


def _q_is_zero(param: str) -> bool:
    name, _, value = param.partition("=")
    try:
        return name.strip().lower() == "q" and float(value) == 0
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a response is written from, for one request or a whole batch. Computed on the inference thread
    over the whole batch at once (one numpy call each, not one per request on the event loop)."""

    probs: np.ndarray
    """Softmax probabilities, float32 ``(n, classes)``: the ``.npy`` response."""
    rounded: np.ndarray
    """The same as float64 rounded to 6 digits, NaN and infinities as 0: the JSON response."""
    index: np.ndarray
    """The most probable class of each instance."""

    def split(self, sizes: list[int]) -> list[Prediction]:
        bounds = np.cumsum(sizes)[:-1]
        return [
            Prediction(*parts)
            for parts in zip(
                np.split(self.probs, bounds), np.split(self.rounded, bounds), np.split(self.index, bounds), strict=True
            )
        ]


def postprocess(logits: np.ndarray) -> Prediction:
    probs = softmax(logits)
    rounded = np.round(np.nan_to_num(probs.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0), 6)
    return Prediction(probs.astype(np.float32, copy=False), rounded, probs.argmax(axis=1))


def encode(artifact: Artifact, prediction: Prediction, media_type: str) -> bytes:
    """The response body: JSON predictions, or the float32 probabilities as an ``.npy`` file."""
    if media_type == NPY:
        buffer = io.BytesIO()
        np.save(buffer, prediction.probs, allow_pickle=False)
        return buffer.getvalue()
    return orjson.dumps(_response(artifact, prediction))


def encode_response(artifact: Artifact, logits: np.ndarray) -> dict[str, Any]:
    """The JSON response for a batch of logits, as a dict."""
    return _response(artifact, postprocess(logits))


def _response(artifact: Artifact, prediction: Prediction) -> dict[str, Any]:
    labels = artifact.labels
    return {
        "predictions": [
            {"label": labels[i], "index": i, "probabilities": row}
            for i, row in zip(prediction.index.tolist(), prediction.rounded.tolist(), strict=True)
        ]
    }
