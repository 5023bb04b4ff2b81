"""A deterministic corpus of malformed requests for a server of digits-shaped models ([1, 8, 8], pixels 0-255).

``corpus(n, seed)`` yields ``n`` :class:`Probe` s, the same ones for the same seed, spread over the kinds in
:data:`COUNTS`. Each probe says which statuses are right for it; all of them are client mistakes, so the
right answers are 4xx (a few well-formed oddities, a Fortran-ordered .npy or a lenient Accept, may be 200).
Large bodies are built once and shared between probes, so the corpus costs little memory.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import string
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache

import numpy as np

MAX_BODY_BYTES = 6 * 1024 * 1024
"""The server's default body limit (SageMaker's 6 MB)."""
JSON, NPY, PNG, JPEG = "application/json", "application/x-npy", "image/png", "image/jpeg"
MODEL_PATHS = ("/invocations", "/predictions/digits", "/predictions/digits/1", "/predictions/digits/2")
BAD_REQUEST, NOT_FOUND, NOT_ALLOWED, NOT_ACCEPTABLE, TOO_LARGE, UNSUPPORTED = (
    frozenset({400}),
    frozenset({404}),
    frozenset({405}),
    frozenset({406}),
    frozenset({413}),
    frozenset({415}),
)


@dataclass(frozen=True, slots=True)
class Probe:
    kind: str
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    expect: frozenset[int] = BAD_REQUEST
    chunked: bool = False
    """Send the body with Transfer-Encoding: chunked (64 KiB chunks), no Content-Length."""
    declared_length: int | None = None
    """Send this Content-Length but only ``body``, then wait for the answer (the server must not wait for more)."""
    json_error: bool = True
    """An error answer must be our JSON {code, message}; False where the HTTP parser answers before the app."""

    def describe(self) -> str:
        body = "no body" if self.body is None else f"{len(self.body)} bytes {self.body[:60]!r}"
        return f"{self.kind}: {self.method} {self.path} {self.headers} {body}"


# --- building blocks -------------------------------------------------------------------------------------------


def _image(rng: random.Random) -> list[list[int]]:
    return [[rng.randrange(256) for _ in range(8)] for _ in range(8)]


def _valid_json(rng: random.Random) -> bytes:
    image = _image(rng)
    payload = rng.choice([[image], [[image]], {"instances": [image]}, {"instances": [[image], [image]]}, image])
    return json.dumps(payload).encode()


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npy_header(header: str, data: bytes = b"\0" * 256, version: int = 1) -> bytes:
    """A hand-written .npy file: magic, version, the header padded as numpy pads it, then ``data``."""
    raw = header.encode("latin1")
    prefix = 8 + (2 if version == 1 else 4)
    raw += b" " * (64 - (prefix + len(raw) + 1) % 64) + b"\n"
    length = len(raw).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + length + raw + data


def _header(descr: str = "'<f4'", shape: str = "(1, 1, 8, 8)", fortran: str = "False") -> str:
    return f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"


@cache
def _picture(fmt: str, size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, 7).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grey pixels, with one tiny IDAT: a decompression-bomb header."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    """The 8x8 JPEG with its SOF0 frame header rewritten to claim ``width`` x ``height``."""
    jpeg = bytearray(_picture("JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(jpeg)


@cache
def _oversize_json(extra: int) -> bytes:
    """A JSON array of zeros ``extra`` bytes over the body limit (``extra`` 0: exactly at the limit)."""
    target = MAX_BODY_BYTES + extra
    body = b"[" + b"0," * ((target - 3) // 2) + b"0]"
    body += b" " * (target - len(body))
    assert len(body) == target
    return body


@cache
def _deep(levels: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}", '[{"a":': "}]"}[opener]
    inner = "1" if opener != "[" else ""
    return (opener * levels + inner + closer * levels).encode()


def _with_token(rng: random.Random, token: bytes) -> bytes:
    """A valid single-image body with one pixel replaced by ``token`` (raw JSON text)."""
    image = _image(rng)
    row, col = rng.randrange(8), rng.randrange(8)
    image[row][col] = "@@"
    return json.dumps([image]).encode().replace(b'"@@"', token)


def _pick(rng: random.Random, options):
    return options[rng.randrange(len(options))]


def _path(rng: random.Random) -> str:
    return _pick(rng, MODEL_PATHS)


# --- the kinds of malformed request --------------------------------------------------------------------------------


def truncated_json(rng: random.Random) -> Probe:
    body = _valid_json(rng)
    return Probe("truncated_json", "POST", _path(rng), body[: rng.randrange(len(body) - 1)], {"Content-Type": JSON})


INVALID_JSON = [
    b"{",
    b"}",
    b"[1,]",
    b"[,1]",
    b"{'instances': []}",
    b'{"instances": [1 2]}',
    b"[01]",
    b"[1.]",
    b"[.5]",
    b"[+1]",
    b"[0x10]",
    b'["unterminated]',
    b"[1] [2]",
    b"[1]x",
    b"nul",
    b"tru",
    b"[nan]",
    b"[inf]",
    b"[Inf]",
    b"[-]",
    b'{"instances"}',
    b"[1e]",
    b"[1e+]",
    b"/* */[1]",
    b"// x\n[1]",
    b"[\x00]",
    b"\x00",
    b"[-NaN]",
    b'{"instances": [[1]],}',
    b"[[1]]]",
    b"[[[1]]",
    b"'[1]'",
    b'{"instances": [1], "instances"',
    b"[True]",
    b"[None]",
    b"\\u005b1]",
]


def invalid_json(rng: random.Random) -> Probe:
    if rng.random() < 0.5:
        body = _pick(rng, INVALID_JSON)
    else:  # printable garbage that is not JSON (a leading '#' rules out every JSON value)
        body = ("#" + "".join(rng.choices(string.printable, k=rng.randrange(1, 200)))).encode()
    return Probe("invalid_json", "POST", _path(rng), body, {"Content-Type": JSON})


def wrong_types(rng: random.Random) -> Probe:
    image = _image(rng)
    payloads = [
        "abc",
        123,
        1.5,
        True,
        None,
        {},
        {"instances": "x"},
        {"instances": None},
        {"instances": {}},
        {"instances": 5},
        {"inputs": [image]},
        {"data": image},
        [["a"] * 8] * 8,
        [[None] * 8] * 8,
        [[{}] * 8] * 8,
        [[[]] * 8] * 8,
        [[1, "a", 3, 4, 5, 6, 7, 8]] * 8,
        {"instances": [{"b64": "AAAA"}]},
        {"instances": {"instances": [image]}},
        [[str(p) for p in row] for row in image],
        {"instances": [[[str(p) for p in row] for row in image]]},
        [[[p] for p in row] for row in image],
    ]
    return Probe("wrong_types", "POST", _path(rng), json.dumps(_pick(rng, payloads)).encode(), {"Content-Type": JSON})


HUGE_NUMBERS = [
    b"1e309",
    b"-1e309",
    b"1E400",
    b"1" + b"0" * 400,
    b"-" + b"9" * 400,
    b"1.7976931348623157e308",
    b"1" + b"0" * 4300,
    b"9" * 5000,
    b"1e" + b"9" * 400,
    b"123456789012345678901234567890",
]


def huge_numbers(rng: random.Random) -> Probe:
    return Probe("huge_numbers", "POST", _path(rng), _with_token(rng, _pick(rng, HUGE_NUMBERS)), {"Content-Type": JSON})


def nan_tokens(rng: random.Random) -> Probe:
    token = _pick(rng, [b"NaN", b"Infinity", b"-Infinity", b"null", b"1e999", b"-1e999"])
    if rng.random() < 0.2:  # bare, not inside an image
        return Probe("nan_tokens", "POST", _path(rng), b"[" + token + b"]", {"Content-Type": JSON})
    return Probe("nan_tokens", "POST", _path(rng), _with_token(rng, token), {"Content-Type": JSON})


def deep_nesting(rng: random.Random) -> Probe:
    levels = _pick(rng, [33, 100, 1000, 10_000, 100_000])
    body = _deep(levels, _pick(rng, ["[", '{"a":', '[{"a":']))
    if rng.random() < 0.3:
        body = b'{"instances": ' + body + b"}"
    return Probe("deep_nesting", "POST", _path(rng), body, {"Content-Type": JSON})


def wrong_shapes(rng: random.Random) -> Probe:
    image = _image(rng)
    payloads = [
        [image[:7]],
        [[row[:7] for row in image]],
        [[[p] for p in row] for row in image],
        [[[image]]],
        [],
        [[]],
        [[[]]],
        5,
        [5],
        [[image, image, image]],
        [[image, image]],
        image[:1],
        [[*row, 0] for row in image],
        [image[:4] + [row[:5] for row in image[4:]]],
        {"instances": [image, image[:7]]},
        {"instances": []},
        [[image], [[row[:7] for row in image]]],
        [[[[image]]]],
        list(range(64)),
        [list(range(64))],
    ]
    payload = _pick(rng, payloads)
    if rng.random() < 0.01:
        payload = np.zeros((4097, 8, 8), dtype=np.uint8).tolist()  # one over the artifact's max_batch_size
    return Probe("wrong_shapes", "POST", _path(rng), json.dumps(payload).encode(), {"Content-Type": JSON})


def out_of_range(rng: random.Random) -> Probe:
    value = _pick(rng, [-1, 256, 255.5, -0.001, 1e6, -1e6, 1000, -255])
    if rng.random() < 0.3:
        dtype = _pick(rng, ["float32", "float64", "int64", "int16"])
        if dtype.startswith("int"):  # whole values only: an int array would truncate 255.5 to a valid 255
            value = _pick(rng, [-1, 256, 1000, -255, -32768, 32767])
        array = np.asarray([_image(rng)], dtype=dtype)
        array[0, rng.randrange(8), rng.randrange(8)] = value
        return Probe("out_of_range", "POST", _path(rng), _npy(array), {"Content-Type": NPY})
    return Probe(
        "out_of_range", "POST", _path(rng), _with_token(rng, json.dumps(value).encode()), {"Content-Type": JSON}
    )


def empty_body(rng: random.Random) -> Probe:
    media = _pick(rng, [JSON, NPY, PNG, JPEG, None])
    headers = {"Content-Type": media} if media else {}
    body = _pick(rng, [b"", None])
    return Probe("empty_body", "POST", _path(rng), body, headers, BAD_REQUEST if media else UNSUPPORTED)


def random_binary(rng: random.Random) -> Probe:
    body = rng.randbytes(rng.randrange(1, 4096))
    if body.lstrip()[:1] in (b"[", b"{") or body[:1] in b'-0123456789tfn"':  # keep it from being valid JSON
        body = b"\x01" + body
    return Probe("random_binary", "POST", _path(rng), body, {"Content-Type": _pick(rng, [JSON, NPY, PNG, JPEG])})


INVALID_UTF8 = [
    b'["\xff"]',
    b"[1, 2]\xff",
    b"\xc3\x28",
    b'["\xc0\xaf"]',
    b'["\xed\xa0\x80"]',
    b"\xef\xbb\xbf[\xfe]",
    b'{"instances": "\xf8\x88\x80\x80\x80"}',
    b'["\xe2\x82"]',
    b"\x80",
    b'{"\xff": 1}',
]


def invalid_utf8(rng: random.Random) -> Probe:
    return Probe("invalid_utf8", "POST", _path(rng), _pick(rng, INVALID_UTF8), {"Content-Type": JSON})


WRONG_CONTENT_TYPES = [
    "text/plain",
    "text/csv",
    "application/xml",
    "application/octet-stream",
    "image/gif",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "image/webp",
    "application/jsonl",
    "json",
    "application",
    "*/*",
    "application/*",
    "",
    ";",
    "application/json-patch+json",
    "application/vnd.api+json",
    "text/json",
    "image/*",
    "application/x-npy2",
    "application/npy",
]


def wrong_content_type(rng: random.Random) -> Probe:
    body = _valid_json(rng)
    roll = rng.random()
    if roll < 0.1:  # no Content-Type at all
        return Probe("wrong_content_type", "POST", _path(rng), body, {}, UNSUPPORTED)
    if roll < 0.3:  # a type the model reads, but not what the body is
        media, body = _pick(
            rng,
            [
                (NPY, body),
                (PNG, body),
                (JPEG, body),
                (JSON, _npy(np.zeros((1, 8, 8)))),
                (JSON, _picture("PNG")),
                (PNG, _picture("JPEG")),
                (JPEG, _picture("PNG")),
                (NPY, _picture("PNG")),
            ],
        )
        return Probe("wrong_content_type", "POST", _path(rng), body, {"Content-Type": media}, BAD_REQUEST)
    return Probe(
        "wrong_content_type", "POST", _path(rng), body, {"Content-Type": _pick(rng, WRONG_CONTENT_TYPES)}, UNSUPPORTED
    )


def _bad_npy_bodies() -> list[tuple[bytes, frozenset[int]]]:
    good = _npy(np.zeros((1, 1, 8, 8), dtype=np.float32))
    npz = io.BytesIO()
    np.savez(npz, x=np.zeros((1, 8, 8)))
    bodies = [
        (good[:8], BAD_REQUEST),
        (good[:20], BAD_REQUEST),
        (good[:100], BAD_REQUEST),
        (good[:-1], BAD_REQUEST),
        (good[: len(good) // 2], BAD_REQUEST),
        (_npy(np.array([{"a": 1}, [1, 2]], dtype=object), allow_pickle=True), BAD_REQUEST),  # pickled payload
        (_npy(np.array(["x"] * 64, dtype=object).reshape(1, 8, 8), allow_pickle=True), BAD_REQUEST),
        (pickle.dumps(np.zeros((1, 8, 8))), BAD_REQUEST),  # a bare pickle
        (_npy(np.zeros((1, 8, 8), dtype=np.complex64)), BAD_REQUEST),
        (_npy(np.zeros((1, 8, 8), dtype=np.complex128)), BAD_REQUEST),
        (_npy(np.array(["1"] * 64).reshape(1, 8, 8)), BAD_REQUEST),
        (_npy(np.array([b"1"] * 64).reshape(1, 8, 8)), BAD_REQUEST),
        (_npy(np.zeros((1, 8, 8), dtype="datetime64[D]")), BAD_REQUEST),
        (_npy(np.zeros((1, 8, 8), dtype=[("a", "<f4")])), BAD_REQUEST),
        (_npy(np.zeros((1, 8, 8), dtype="V4")), BAD_REQUEST),
        (_npy(np.full((1, 8, 8), np.nan, dtype=np.float16)), BAD_REQUEST),
        (_npy(np.asfortranarray(np.zeros((8, 8, 1), dtype=np.float32))), BAD_REQUEST),  # Fortran order, wrong shape
        (_npy(np.asfortranarray(np.arange(64, dtype=np.float32).reshape(1, 8, 8) % 256)), frozenset({200})),
        (_npy(np.zeros((0, 1, 8, 8), dtype=np.float32)), BAD_REQUEST),
        (_npy(np.zeros((1, 1, 1, 8, 8), dtype=np.float32)), BAD_REQUEST),
        (_npy(np.float32(3)), BAD_REQUEST),
        (npz.getvalue(), BAD_REQUEST),
        (b"PK\x03\x04" + b"\0" * 100, BAD_REQUEST),  # claims to be an .npz (zip) archive, is not one
        (b"\x93NUMPY\x09\x00\x10\x00" + b" " * 16, BAD_REQUEST),  # unknown format version
        (b"\x93NUMPY\x01\x00\xff\xff" + b" " * 16, BAD_REQUEST),  # header length past the end
        (b"\x93NUMPY\x02\x00\xff\xff\xff\xff" + b" " * 16, BAD_REQUEST),
        (b"\x93NUMPZ\x01\x00" + good[8:], BAD_REQUEST),
    ]
    headers = [  # hand-written headers: bad dtypes, bad shapes, huge declared shapes, not a dict at all
        _header(shape="(1099511627776,)"),
        _header(shape="(1000000, 1000000)"),
        _header(shape="(18446744073709551616,)"),
        _header(shape="(4611686018427387904,)"),
        _header(shape="(2147483648, 2147483648)"),
        _header(shape="(-64,)"),
        _header(shape="'abc'"),
        _header(shape="(1.5, 8)"),
        _header(shape="(True,)"),
        _header(shape="((1,), 8)"),
        _header(shape="(" + "1," * 64 + ")"),
        _header(descr="'<x9'"),
        _header(descr="5"),
        _header(descr="'|O'"),
        _header(descr="'<U1099511627776'", shape="(1,)"),
        _header(descr="[('a', '<f4', (1099511627776,))]", shape="(1,)"),
        _header(fortran="'yes'"),
        "[1, 2]",
        "(" * 300 + ")" * 300,
        "",
        "{'descr': '<f4', 'fortran_order': False}",
        _header() + "'extra': 1}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8), 'x': 1}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8), ",  # unterminated
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8) 'x'}",  # not Python
        "{'descr': b'<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8), }",
    ]
    for header in headers:
        for version in (1, 2):
            bodies.append((_npy_header(header, version=version), BAD_REQUEST))
    return bodies


BAD_NPY: list[tuple[bytes, frozenset[int]]] = []


def bad_npy(rng: random.Random) -> Probe:
    if rng.random() < 0.2:  # a valid file with a few characters of its header text changed
        mutated = bytearray(_npy(np.zeros((1, 1, 8, 8), dtype=np.float32)))
        end = mutated.index(b"\n")
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(10, end)] = _pick(rng, b"0123456789(),'<>fiub: {}[]-+eE.xjLV")
        return Probe(
            "bad_npy", "POST", _path(rng), bytes(mutated), {"Content-Type": NPY}, BAD_REQUEST | frozenset({200})
        )  # a change may leave a valid header
    if not BAD_NPY:
        BAD_NPY.extend(_bad_npy_bodies())
    body, expect = _pick(rng, BAD_NPY)
    return Probe("bad_npy", "POST", _path(rng), body, {"Content-Type": NPY}, expect)


def bad_images(rng: random.Random) -> Probe:
    fmt, media = _pick(rng, [("PNG", PNG), ("JPEG", JPEG)])
    good = _picture(fmt)
    roll = rng.random()
    if roll < 0.3:  # truncated
        cut = rng.randrange(len(good) - 1)
        # A PNG cut no earlier than 20 bytes from its end loses only IEND, IDAT's CRC or the zlib checksum, not a
        # pixel: decoders read it, so a 200 is right too.
        expect = BAD_REQUEST | frozenset({200}) if fmt == "PNG" and cut >= len(good) - 20 else BAD_REQUEST
        return Probe("bad_images", "POST", _path(rng), good[:cut], {"Content-Type": media}, expect)
    if roll < 0.45:
        body = _picture(fmt, _pick(rng, [(7, 8), (8, 7), (16, 16), (1, 1), (64, 64), (8, 9)]))  # wrong size
    elif roll < 0.55:  # decompression-bomb-sized header
        side = _pick(rng, [100_000, 65_535, 40_000, 20_000])
        body = _png_claiming(side, side) if fmt == "PNG" else _jpeg_claiming(min(side, 65_535), min(side, 65_535))
    elif roll < 0.65:  # the other format, or another image format, under this content type
        body = _pick(
            rng,
            [
                _picture("JPEG" if fmt == "PNG" else "PNG"),
                _picture("GIF"),
                _picture("BMP"),
                _picture("TIFF"),
                _picture("WEBP"),
            ],
        )
    else:  # a few bytes overwritten
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        body = bytes(data)
        # JPEG decoders shrug off most damage to the scan data, and a PNG byte flip can land in a spare byte:
        # a changed image may still be a valid 8x8 one.
        return Probe("bad_images", "POST", _path(rng), body, {"Content-Type": media}, BAD_REQUEST | frozenset({200}))
    return Probe("bad_images", "POST", _path(rng), body, {"Content-Type": media})


def oversize(rng: random.Random) -> Probe:
    extra = _pick(rng, [1, 2, 1000, 65536])
    how = _pick(rng, ["content-length", "chunked", "declared", "at-limit"])
    headers = {"Content-Type": JSON}
    if how == "at-limit":  # exactly at the limit: read and decoded (a 400: no such shape), not refused
        return Probe("oversize", "POST", _path(rng), _oversize_json(0), headers, BAD_REQUEST)
    if how == "declared":  # a Content-Length over the limit and only a little of the body: refused from the header
        return Probe("oversize", "POST", _path(rng), b"[[", headers, TOO_LARGE, declared_length=MAX_BODY_BYTES + extra)
    return Probe("oversize", "POST", _path(rng), _oversize_json(extra), headers, TOO_LARGE, chunked=how == "chunked")


UNWRITABLE_ACCEPT = [
    "text/html",
    "application/xml",
    "image/png",
    "text/plain",
    "application/json;q=0",
    "application/x-npy;q=0",
    "application/json;q=0, application/x-npy;q=0",
    "text/*",
    "application/jsonx",
    "x/y",
    "application/json;q=0.0, */*;q=0",
    "image/*",
]
ODD_ACCEPT = [
    ";;;",
    ",,,",
    "application/json;q=abc",
    "*/*;q=-1",
    "q=1",
    "application/json;;q=1",
    "*",
    "/",
    "application/json;q=1;q=0",
    "APPLICATION/JSON",
    "*/*;q=0.001",
    "application/x-npy;q=0.5, text/html",
]


def bad_accept(rng: random.Random) -> Probe:
    headers = {"Content-Type": JSON}
    if rng.random() < 0.6:
        return Probe(
            "bad_accept",
            "POST",
            _path(rng),
            _valid_json(rng),
            {**headers, "Accept": _pick(rng, UNWRITABLE_ACCEPT)},
            NOT_ACCEPTABLE,
        )
    # Syntactically odd: the server may read it leniently (200) or refuse it (406), never fail on it
    return Probe(
        "bad_accept",
        "POST",
        _path(rng),
        _valid_json(rng),
        {**headers, "Accept": _pick(rng, ODD_ACCEPT)},
        NOT_ACCEPTABLE | frozenset({200}),
    )


UNKNOWN_MODELS = [
    "/predictions/nope",
    "/predictions/DIGITS",
    "/predictions/digits2",
    "/predictions/%2e%2e",
    "/predictions/digits%00",
    "/predictions/%F0%9F%92%A9",
    "/predictions/" + "a" * 1000,
    "/predictions/digits/3",
    "/predictions/digits/0",
    "/predictions/digits/01",
    "/predictions/digits/1.0",
    "/predictions/digits/-1",
    "/predictions/digits/%20",
    "/predictions/digits/1/2",
    "/predictions/nope/1",
    "/predictions/%20",
    "/predictions/digits/latest",
    "/predictions/model",
    "/predictions/digits/" + "9" * 300,
    "/predictions/digits/1%00",
]


def unknown_model(rng: random.Random) -> Probe:
    return Probe(
        "unknown_model", "POST", _pick(rng, UNKNOWN_MODELS), _valid_json(rng), {"Content-Type": JSON}, NOT_FOUND
    )


WRONG_METHODS = [
    ("GET", "/invocations"),
    ("PUT", "/invocations"),
    ("DELETE", "/predictions/digits"),
    ("PATCH", "/predictions/digits/1"),
    ("POST", "/ping"),
    ("POST", "/metrics"),
    ("PUT", "/ping"),
    ("DELETE", "/metrics"),
    ("OPTIONS", "/invocations"),
    ("TRACE", "/invocations"),
    ("FOO", "/invocations"),
    ("HEAD", "/invocations"),
    ("GET", "/predictions/digits"),
    ("GET", "/predictions/digits/2"),
    ("POST", "/openapi.json"),
    ("BREW", "/predictions/digits"),
]
UNKNOWN_PATHS = ["/nope", "/invocations/extra", "/predictions", "/ping/1", "/%00", "/..%2f..%2fetc%2fpasswd"]


def wrong_method(rng: random.Random) -> Probe:
    if rng.random() < 0.15:
        return Probe(
            "unknown_path",
            _pick(rng, ["GET", "POST"]),
            _pick(rng, UNKNOWN_PATHS),
            _valid_json(rng),
            {"Content-Type": JSON},
            NOT_FOUND,
        )
    method, path = _pick(rng, WRONG_METHODS)
    body = _valid_json(rng) if rng.random() < 0.5 else None
    if method in ("FOO", "BREW"):
        # Not a registered method: uvicorn's httptools parser answers a plain-text 400 before the app sees it
        # (h11 would pass it on and the app answer 405). Either way a 4xx, never a crash.
        return Probe(
            "unknown_method", method, path, body, {"Content-Type": JSON}, frozenset({400, 405}), json_error=False
        )
    return Probe("wrong_method", method, path, body, {"Content-Type": JSON}, NOT_ALLOWED)


COUNTS: dict[Callable[[random.Random], Probe], int] = {
    truncated_json: 800,
    invalid_json: 900,
    wrong_types: 800,
    huge_numbers: 500,
    nan_tokens: 500,
    deep_nesting: 150,
    wrong_shapes: 800,
    out_of_range: 600,
    empty_body: 300,
    random_binary: 700,
    invalid_utf8: 400,
    wrong_content_type: 700,
    bad_npy: 900,
    bad_images: 700,
    oversize: 20,
    bad_accept: 400,
    unknown_model: 500,
    wrong_method: 330,
}
"""Probes of each kind in a corpus of sum(COUNTS.values()) == 10,000; smaller corpora scale them down."""


def corpus(n: int = 10_000, seed: int = 0) -> Iterator[Probe]:
    """``n`` probes in a shuffled but fixed order: the same seed, the same requests."""
    rng = random.Random(seed)
    total = sum(COUNTS.values())
    schedule = [kind for kind, count in COUNTS.items() for _ in range(max(1, count * n // total))]
    rng.shuffle(schedule)
    for kind in schedule[:n]:
        yield kind(rng)
