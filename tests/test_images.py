"""Image tokens: sizes read from real image bytes, each provider's documented formula, and a
conservative maximum when the size is unknown."""

from __future__ import annotations

import base64
import math
import struct
import zlib
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from budgetguard.pricing.images import (
    UNKNOWN_IMAGE_TOKENS,
    image_size,
    image_tokens,
    is_image_part,
    size_of_part,
)

CLAUDE_WRAPPER = 20
"""What one image bills above its patches, at most (18 recorded, on Claude 3.5 Haiku)."""

# -- real images, built byte by byte ------------------------------------------


def png(width: int, height: int, *, pixels: bool = True) -> bytes:
    """A valid RGB PNG (with its pixel data when ``pixels``; a header alone reads the same)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = b""
    if pixels:
        rows = b"".join(b"\x00" + bytes([x % 256, 0, 0]) * width for x in range(height))
        body = chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + header + body


def gif(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + palette + image + b"\x3b"


def jpeg(width: int, height: int, *, app_bytes: int = 16, progressive: bool = False) -> bytes:
    """SOI, an APP0 and an APP1 segment of ``app_bytes`` (EXIF-like), then the frame header."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    app1 = b"\xff\xe1" + struct.pack(">H", app_bytes + 2) + b"\xab" * app_bytes
    sof = b"\xff\xc2" if progressive else b"\xff\xc0"
    frame = sof + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00" * 3
    return b"\xff\xd8" + app0 + app1 + b"\xff\xfe\x00\x04hi" + frame + b"\xff\xd9"


def webp_vp8(width: int, height: int) -> bytes:
    frame = b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    payload = b"\x00\x00\x00" + frame + b"\x00" * 10
    chunk = b"VP8 " + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + bits.to_bytes(4, "little") + b"\x00" * 8
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_extended(width: int, height: int) -> bytes:
    payload = b"\x10\x00\x00\x00" + (width - 1).to_bytes(3, "little")
    payload += (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def openai_part(data: bytes, detail: str | None = None) -> dict[str, Any]:
    url: dict[str, Any] = {"url": data_url(data)}
    if detail is not None:
        url["detail"] = detail
    return {"type": "image_url", "image_url": url}


@pytest.mark.parametrize(
    ("build", "size"),
    [
        (png, (640, 480)),
        (gif, (320, 200)),
        (jpeg, (1024, 768)),
        (lambda w, h: jpeg(w, h, progressive=True), (1500, 1001)),
        (webp_vp8, (800, 600)),
        (webp_lossless, (16383, 7)),
        (webp_extended, (4000, 3000)),
    ],
    ids=["png", "gif", "jpeg", "jpeg-progressive", "webp-vp8", "webp-vp8l", "webp-vp8x"],
)
def test_sizes_read_from_every_format(build: Any, size: tuple[int, int]) -> None:
    data = build(*size)
    assert image_size(data) == size
    assert size_of_part(openai_part(data)) == size


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00", png(0, 10), b"GIF8"],
)
def test_garbage_and_truncated_headers_have_no_size(data: bytes) -> None:
    assert image_size(data) is None


def test_jpeg_frame_far_behind_a_large_exif_segment_is_found() -> None:
    data = jpeg(3000, 2000, app_bytes=60_000)  # the frame header sits ~60 KB in
    assert size_of_part(openai_part(data)) == (3000, 2000)
    wrapped = base64.encodebytes(data).decode()  # MIME line breaks every 76 characters
    part = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg"}}
    part["source"]["data"] = wrapped
    assert size_of_part(part) == (3000, 2000)


def test_every_provider_format_reads_its_size() -> None:
    data = png(300, 200)
    encoded = base64.b64encode(data).decode()
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": data_url(data), "detail": "high"}},
        {"type": "image_url", "image_url": data_url(data)},
        {"type": "input_image", "image_url": data_url(data), "detail": "auto"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": encoded}},
        {"inline_data": {"mime_type": "image/png", "data": data}},
        {"inline_data": {"mime_type": "image/png", "data": encoded}},
        {"inlineData": {"mimeType": "image/png", "data": encoded}},
    ]
    for part in parts:
        assert is_image_part(part), part
        assert size_of_part(part) == (300, 200), part
    unknown: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "input_image", "file_id": "file-123"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_01"}},
        {"file_data": {"mime_type": "image/jpeg", "file_uri": "gs://bucket/cat.jpg"}},
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml,%3Csvg%3E"}},
    ]
    for part in unknown:
        assert is_image_part(part), part
        assert size_of_part(part) is None, part
    assert not is_image_part({"inline_data": {"mime_type": "audio/wav", "data": b"RIFF"}})
    assert not is_image_part({"type": "text", "text": "an image of a cat"})


# -- OpenAI -------------------------------------------------------------------


def tokens(model: str, data: bytes | None, detail: str | None = None, **kw: Any) -> int:
    family = kw.pop("family", "openai")
    part: dict[str, Any] = (
        openai_part(data, detail)
        if data is not None
        else {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}
    )
    if data is None and detail is not None:
        part["image_url"]["detail"] = detail
    return image_tokens(model, part, family=family, **kw)


@pytest.mark.parametrize(
    ("model", "size", "detail", "documented"),
    [
        ("gpt-4o", (1024, 1024), "high", 765),  # OpenAI's worked examples
        ("gpt-4o", (2048, 4096), "high", 1105),
        ("gpt-4o", (4096, 8192), "low", 85),
        ("gpt-4o", (1024, 1024), None, 765),  # auto is high for tile models
        ("gpt-4.1", (512, 512), "high", 85 + 170),
        ("gpt-4o-mini", (1024, 1024), "high", 2833 + 4 * 5667),
        ("gpt-5", (1024, 1024), "high", 70 + 4 * 140),
        ("o3", (1024, 1024), "low", 75),
        ("computer-use-preview", (1024, 1024), "high", 65 + 4 * 129),
    ],
)
def test_openai_tile_models_follow_the_documented_examples(
    model: str, size: tuple[int, int], detail: str | None, documented: int
) -> None:
    assert tokens(model, png(*size, pixels=False), detail) == documented


@pytest.mark.parametrize(
    ("model", "size", "detail", "documented"),
    [
        ("gpt-5.4", (1024, 1024), "high", 1229),  # ceil(1024 x 1.2)
        ("gpt-5.4", (2048, 2048), "high", 3000),  # 2500-patch budget: 1600 x 1600
        ("gpt-5.4", (2048, 2048), None, 3000),  # auto is high on gpt-5.4
        ("gpt-5.4", (4096, 4096), "original", 12_000),  # 10,000 patches x 1.2
        ("gpt-5.5", (4096, 4096), None, 12_000),  # auto is original on gpt-5.5
        ("gpt-5.5", (4096, 4096), "low", math.ceil(256 * 1.2)),  # fits 512 x 512
        ("gpt-5.6", (4096, 4096), None, math.ceil(128 * 128 * 1.2)),  # no patch budget
        ("gpt-5.6", (4096, 4096), "high", 3000),
        ("gpt-5.2", (1024, 1024), "low", math.ceil(1024 * 1.2)),
    ],
)
def test_openai_patch_models_follow_the_documented_rules(
    model: str, size: tuple[int, int], detail: str | None, documented: int
) -> None:
    counted = tokens(model, png(*size, pixels=False), detail)
    assert documented <= counted <= documented + 1  # the docs allow billing one token off


def test_patch_models_take_the_larger_of_the_2025_and_2026_rules() -> None:
    # 2025 docs: 1800 x 2400 is 1452 patches (1536 budget, no pixel limit), x 1.62.
    # 2026 docs: fit in 2048 px (1536 x 2048), 3072 patches under the 6144 budget, x 1.62.
    counted = tokens("gpt-4.1-mini", png(1800, 2400, pixels=False), "high")
    assert counted >= math.ceil(1452 * 1.62)
    assert counted == math.ceil(3072 * 1.62) + 1
    # A long thin strip: the 2025 rule (no pixel limit) is the larger one.
    strip = tokens("o4-mini", png(100, 10_000, pixels=False))
    assert strip == math.ceil(4 * 313 * 1.72) + 1


@pytest.mark.parametrize(
    ("model", "detail", "maximum"),
    [
        ("gpt-4o", None, 85 + 8 * 170),  # 768 x 2048: 8 tiles
        ("gpt-4o", "low", 85),
        ("gpt-4o-mini", None, 2833 + 8 * 5667),
        ("gpt-5.4", None, 3001),
        ("gpt-5.4", "low", math.ceil(6144 * 1.2) + 1),  # low can cost more than high
        ("gpt-4.1-mini", None, math.ceil(6144 * 1.62) + 1),
        ("gpt-5.5", None, 12_001),
    ],
)
def test_unknown_sizes_cost_the_most_one_image_can(
    model: str, detail: str | None, maximum: int
) -> None:
    assert tokens(model, None, detail) == maximum


def test_unbounded_models_are_capped_by_the_context_window() -> None:
    assert tokens("gpt-5.6", None) > 5_000_000  # 65,535 px a side, no patch budget
    assert tokens("gpt-5.6", None, cap=400_000) == 400_000
    assert tokens("gpt-5.9", None) == tokens("gpt-5.6", None)  # newer: the dearest rule
    assert tokens("gpt-5.3-codex", None) == tokens("gpt-5.6", None)


# -- Claude -------------------------------------------------------------------

CLAUDE_TABLE = [  # Anthropic's vision docs: size -> (standard tier, high-resolution tier)
    ((200, 200), 64, 64),
    ((1000, 1000), 1296, 1296),
    ((1092, 1092), 1521, 1521),
    ((1920, 1080), 1560, 2691),
    ((2000, 1500), 1564, 3888),
    ((3840, 2160), 1560, 4784),
]


@pytest.mark.parametrize(("size", "standard", "high"), CLAUDE_TABLE)
def test_claude_follows_anthropics_table_on_both_tiers(
    size: tuple[int, int], standard: int, high: int
) -> None:
    data = png(*size, pixels=False)
    for model in ["claude-sonnet-4-5", "claude-3-5-sonnet-20241022", "claude-haiku-4-5"]:
        counted = tokens(model, data, family="claude")
        assert standard <= counted <= standard + CLAUDE_WRAPPER, model
    for model in ["claude-opus-4-7", "claude-opus-4-8", "claude-sonnet-5", "claude-future"]:
        counted = tokens(model, data, family="claude")
        assert high <= counted <= high + CLAUDE_WRAPPER, model


def test_claude_resizes_by_the_token_limit_too() -> None:
    # Anthropic's A4 example: 1075 x 1520 fits the edge but not the 1568-token budget,
    # and is resized to 924 x 1307: 33 x 47 patches.
    counted = tokens("claude-sonnet-4-5", png(1075, 1520, pixels=False), family="claude")
    assert 33 * 47 <= counted <= 33 * 47 + CLAUDE_WRAPPER
    assert tokens("claude-sonnet-4-5", None, family="claude") == 1568 + CLAUDE_WRAPPER
    assert tokens("claude-opus-4-7", None, family="claude") == 4784 + CLAUDE_WRAPPER


# -- Gemini -------------------------------------------------------------------


def gemini_part(data: bytes | None, resolution: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = (
        {"inline_data": {"mime_type": "image/png", "data": data}}
        if data is not None
        else {"file_data": {"mime_type": "image/png", "file_uri": "gs://b/x.png"}}
    )
    if resolution is not None:
        part["media_resolution"] = {"level": resolution}
    return part


def test_gemini_2_counts_258_per_tile_and_one_for_the_whole_image() -> None:
    def count(model: str, part: dict[str, Any]) -> int:
        return image_tokens(model, part, family="gemini")

    for model in ["gemini-2.0-flash", "gemini-2.5-flash"]:
        assert count(model, gemini_part(png(384, 384))) == 258
        assert count(model, gemini_part(png(100, 50))) == 258
        assert count(model, gemini_part(None)) == 13 * 258
    # Recorded Gemini 2.0 Flash bills (tests/corpus): the crop-unit tiles plus one.
    assert count("gemini-2.0-flash", gemini_part(png(640, 480, pixels=False))) == 5 * 258
    assert count("gemini-2.0-flash", gemini_part(png(540, 360, pixels=False))) == 7 * 258
    assert count("gemini-2.0-flash", gemini_part(png(3008, 2000, pixels=False))) == 13 * 258
    # Gemini 2.5 billed 258 for every image recorded (up to 640 x 566); larger ones keep
    # the documented tiling.
    assert count("gemini-2.5-flash", gemini_part(png(640, 480, pixels=False))) == 258
    assert count("gemini-2.5-flash", gemini_part(png(1024, 1024, pixels=False))) == 5 * 258
    assert count("gemini-2.5-flash", gemini_part(png(1536, 768, pixels=False))) >= 3 * 258


@pytest.mark.parametrize(
    ("resolution", "expected"),
    [
        (None, 1120),
        ("MEDIA_RESOLUTION_LOW", 280),
        ("media_resolution_medium", 560),
        ("MEDIA_RESOLUTION_HIGH", 1120),
        ("MEDIA_RESOLUTION_ULTRA_HIGH", 2240),
    ],
)
def test_gemini_3_counts_the_media_resolution_cap(resolution: str | None, expected: int) -> None:
    for data in [png(64, 64), None]:
        part = gemini_part(data, resolution)
        assert image_tokens("gemini-3-pro-preview", part, family="gemini") == expected


def test_unknown_families_pay_the_flat_default() -> None:
    assert tokens("mistral-large", png(10, 10), family="other") == UNKNOWN_IMAGE_TOKENS


# -- never under the documented reference implementations ---------------------


def reference_tiles(width: int, height: int, base: int, tile: int) -> int:
    """OpenAI's tile rule as the docs word it, with the rounding a server may use."""
    if max(width, height) > 2048:
        scale = 2048 / max(width, height)
        width, height = int(width * scale), int(height * scale)
    if min(width, height) > 768:
        scale = 768 / min(width, height)
        width, height = int(width * scale), int(height * scale)
    return base + tile * math.ceil(width / 512) * math.ceil(height / 512)


def reference_claude(width: int, height: int, max_edge: int, max_tokens: int) -> int:
    """Anthropic's published ``resized_size`` and ``count_image_tokens``, verbatim."""

    def count(w: int, h: int) -> int:
        return math.ceil(w / 28) * math.ceil(h / 28)

    def fits(w: int, h: int) -> bool:
        return (
            math.ceil(w / 28) * 28 <= max_edge
            and math.ceil(h / 28) * 28 <= max_edge
            and count(w, h) <= max_tokens
        )

    def resized(w: int, h: int) -> tuple[int, int]:
        if fits(w, h):
            return w, h
        if h > w:
            rh, rw = resized(h, w)
            return rw, rh
        aspect = w / h
        lo, hi = 1, w
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            if fits(mid, max(round(mid / aspect), 1)):
                lo = mid
            else:
                hi = mid
        return lo, max(round(lo / aspect), 1)

    return count(*resized(width, height))


sizes = st.tuples(st.integers(1, 8000), st.integers(1, 8000))


@settings(max_examples=300, deadline=None)
@given(sizes)
@example((3993, 7992))  # rounded up first, 6 tiles; rounded down, 8 (found by hypothesis)
def test_never_under_the_reference_formulas(size: tuple[int, int]) -> None:
    data = png(*size, pixels=False)
    assert tokens("gpt-4o", data) >= reference_tiles(*size, 85, 170)
    assert tokens("gpt-4o-mini", data) >= reference_tiles(*size, 2833, 5667)
    assert tokens("gpt-4o", data) <= tokens("gpt-4o", None)  # the unknown-size maximum holds
    claude = tokens("claude-sonnet-4-5", data, family="claude")
    assert claude >= reference_claude(*size, 1568, 1568)
    assert claude <= tokens("claude-sonnet-4-5", None, family="claude")
    high = tokens("claude-opus-4-7", data, family="claude")
    assert reference_claude(*size, 2576, 4784) <= high <= 4784 + CLAUDE_WRAPPER
    for model in ["gpt-5.4", "gpt-4.1-mini", "gpt-5.5"]:
        assert tokens(model, data) <= tokens(model, None), model
