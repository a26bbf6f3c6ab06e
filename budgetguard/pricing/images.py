"""Image input tokens: the provider's formula when the size is known, its maximum when not.

The size is read from the bytes the request already carries (base64 data
URLs, Anthropic base64 sources, Gemini ``inline_data``): PNG, GIF and WebP
headers sit in the first 30 bytes, a JPEG's frame header after its APP
segments, so only a growing base64 prefix is decoded. An image behind a URL
or a file id has no size here and costs the most one image can bill.

Formulas, from the providers' current docs (cited in docs/pricing.md):

- OpenAI tile models (gpt-4o, gpt-4.1, gpt-5, gpt-5.1, o1, o3): fit in
  2048 x 2048, shortest side to 768, ``base + tile x 512px-tiles``; ``low``
  is ``base``. At most 8 tiles.
- OpenAI patch models: 32 px patches after the detail level's pixel limit,
  shrunk to the patch budget, times the model's multiplier, plus one token
  for billing's float rounding. Where two published rules differ (the 1536
  patch budget of 2025, the 2048 px / 6144 patch limits of 2026), the
  larger count is taken.
- Claude: ``ceil(w/28) x ceil(h/28)`` after Anthropic's reference resize
  (1568 px / 1568 tokens, or 2576 px / 4784 tokens from Opus 4.7 on).
- Gemini 3 and later: the media resolution's cap (280 / 560 / 1120 / 2240;
  unset means high, 1120). Earlier Gemini: 258 when both sides are at most
  384 px, else 258 per tile, tiles by the larger of the 768 px grid and the
  crop-unit rule (a unit of ``min(w, h) / 1.5``), plus one tile for the whole
  image (Gemini 2.0 billed 5 tiles for 640 x 480, 7 for 540 x 360, 13 for
  3008 x 2000). Gemini 2.5 billed 258 for every image up to 768 px recorded.
"""

from __future__ import annotations

import binascii
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .calibration import claude_high_resolution

__all__ = ["UNKNOWN_IMAGE_TOKENS", "image_size", "image_tokens", "is_image_part", "size_of_part"]

UNKNOWN_IMAGE_TOKENS = 3_000
"""A model outside the known families: one image, whatever its size."""

_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PREFIXES = (64, 4_096, 65_536, 1 << 20)  # bytes decoded before giving up on a header, then all


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG, JPEG, GIF or WebP header, else ``None``."""
    size = _header_size(data)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _header_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            index += 2
            continue
        if marker in _JPEG_FRAMES:
            if index + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return width, height
        index += 2 + int.from_bytes(data[index + 2 : index + 4], "big")
    return None


def _size_of_base64(text: str, start: int) -> tuple[int, int] | None:
    """Decode growing prefixes of the base64 payload at ``text[start:]`` until a header reads."""
    for nbytes in (*_PREFIXES, None):
        chunk = text[start:] if nbytes is None else text[start : start + nbytes // 3 * 4 + 4]
        if any(c in chunk for c in " \n\r\t"):
            chunk = "".join(chunk.split())
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        try:
            size = image_size(binascii.a2b_base64(chunk))
        except (binascii.Error, ValueError):
            return None
        if size is not None or nbytes is None or len(text) - start <= nbytes // 3 * 4:
            return size
    return None  # pragma: no cover - the loop returns on its last pass


def _size_of_data(data: object) -> tuple[int, int] | None:
    if isinstance(data, bytes | bytearray | memoryview):
        return image_size(bytes(data))
    if isinstance(data, str):
        if data.startswith("data:"):
            comma = data.find(",")
            if comma < 0 or not data[:comma].endswith(";base64"):
                return None
            return _size_of_base64(data, comma + 1)
        return _size_of_base64(data, 0)
    return None


def is_image_part(part: Mapping[str, object]) -> bool:
    """An image content part of any provider's format (Gemini parts by their mime type)."""
    if part.get("type") in ("image", "image_url", "input_image", "image_file"):
        return True
    blob = part.get("inline_data") or part.get("inlineData") or part.get("file_data")
    blob = blob or part.get("fileData")
    if isinstance(blob, Mapping):
        mime = blob.get("mime_type") or blob.get("mimeType") or ""
        return isinstance(mime, str) and mime.startswith("image/")
    return False


def size_of_part(part: Mapping[str, object]) -> tuple[int, int] | None:
    """The pixel size of an image part, when its bytes are in the request."""
    kind = part.get("type")
    if kind in ("image_url", "input_image"):
        url = part.get("image_url")
        if isinstance(url, Mapping):
            url = url.get("url")
        return _size_of_data(url) if isinstance(url, str) else None
    if kind == "image":
        source = part.get("source")
        if isinstance(source, Mapping) and source.get("type") == "base64":
            return _size_of_data(source.get("data"))
        return None
    blob = part.get("inline_data") or part.get("inlineData")
    if isinstance(blob, Mapping):
        return _size_of_data(blob.get("data"))
    return None


def _detail(part: Mapping[str, object]) -> str:
    detail = part.get("detail")
    url = part.get("image_url")
    if detail is None and isinstance(url, Mapping):
        detail = url.get("detail")
    return detail.lower() if isinstance(detail, str) else "auto"


# -- OpenAI -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tiles:
    base: int
    tile: int


_Limit = tuple[int | None, int | None]  # (max pixel dimension, patch budget); None: no limit
_LEGACY: tuple[_Limit, ...] = ((None, 1536),)  # the 2025 rule: 1536 patches, no pixel limit
_CURRENT: tuple[_Limit, ...] = ((2048, 6144),)  # the 2026 rule for gpt-5.2 and gpt-4.1-mini


@dataclass(frozen=True, slots=True)
class _Patches:
    multiplier: tuple[int, int]
    limits: Mapping[str, tuple[_Limit, ...]]  # by detail; "auto" is the default


def _patches(multiplier: tuple[int, int], **limits: tuple[_Limit, ...]) -> _Patches:
    return _Patches(multiplier, limits)


_OLD_PATCHES = {"auto": _LEGACY + _CURRENT}
_GPT_5_6 = _patches((6, 5), low=((512, None),), high=((2048, 2500),), auto=((65_535, None),))
_OPENAI: tuple[tuple[str, _Tiles | _Patches], ...] = (
    ("gpt-4o-mini", _Tiles(2833, 5667)),
    ("gpt-4.1-nano", _Patches((123, 50), _OLD_PATCHES)),
    ("gpt-4.1-mini", _Patches((81, 50), _OLD_PATCHES)),
    ("gpt-5-nano", _Patches((123, 50), _OLD_PATCHES)),  # 2.46 (2025 docs) > 1.5 (2026 docs)
    ("gpt-5-mini", _Patches((81, 50), _OLD_PATCHES)),  # 1.62 (2025 docs) > 1.2 (2026 docs)
    ("o4-mini", _Patches((43, 25), _OLD_PATCHES)),
    ("gpt-5.6", _GPT_5_6),
    ("gpt-5.5", _patches((6, 5), low=((512, None),), high=((2048, 2500),), auto=((6000, 10000),))),
    (
        "gpt-5.4",
        _patches((6, 5), low=((2048, 6144),), auto=((2048, 2500),), original=((6000, 10000),)),
    ),
    ("gpt-5.2", _patches((6, 5), auto=_CURRENT)),
    ("gpt-5.1", _Tiles(70, 140)),
    ("gpt-5", _Tiles(70, 140)),
    ("gpt-4o", _Tiles(85, 170)),
    ("chatgpt-4o", _Tiles(85, 170)),
    ("gpt-4.1", _Tiles(85, 170)),
    ("gpt-4.5", _Tiles(85, 170)),
    ("gpt-4-turbo", _Tiles(85, 170)),
    ("gpt-4-vision", _Tiles(85, 170)),
    ("gpt-4-1106-vision", _Tiles(85, 170)),
    ("o1", _Tiles(75, 150)),
    ("o3", _Tiles(75, 150)),
    ("computer-use-preview", _Tiles(65, 129)),
)
_KNOWN_GPT_5 = re.compile(r"gpt-5(?:\.[12456](?!\d)|-|$)")


def _openai_rules(name: str) -> tuple[_Tiles | _Patches, ...]:
    if (name.startswith("gpt-5") and not _KNOWN_GPT_5.match(name)) or name.startswith("gpt-6"):
        return (_GPT_5_6,)  # a newer gpt-5.x or later: the dearest published rule
    for prefix, rule in _OPENAI:
        if name.startswith(prefix):
            return (rule,)
    return tuple(rule for prefix, rule in _OPENAI if prefix != "gpt-4o-mini")


def _tile_tokens(rule: _Tiles, size: tuple[int, int] | None, detail: str) -> int:
    if detail == "low":
        return rule.base
    if size is None:
        return rule.base + 8 * rule.tile  # 768 x 2048 after fitting: 2 x 4 tiles
    # The docs do not say how a server rounds each resize, and rounding the first one up
    # can leave fewer tiles after the second (3993 x 7992: 1024 x 2048 -> 768 x 1536, 6
    # tiles; rounded down, 1023 x 2048 -> 768 x 1537, 8): hold the most of every rounding.
    return rule.base + rule.tile * max(
        _tiles(size, first, second) for first in _ROUNDINGS for second in _ROUNDINGS
    )


_ROUNDINGS: tuple[Callable[[float], int], ...] = (math.floor, math.ceil)


def _tiles(
    size: tuple[int, int], first: Callable[[float], int], second: Callable[[float], int]
) -> int:
    """512 px tiles after fitting in 2048 x 2048 and the shortest side to 768, each resize
    rounded by ``first`` / ``second``."""
    width, height = size
    if max(width, height) > 2048:
        scale = 2048 / max(width, height)
        width, height = max(1, first(width * scale)), max(1, first(height * scale))
    if min(width, height) > 768:
        scale = 768 / min(width, height)
        width, height = max(1, second(width * scale)), max(1, second(height * scale))
    return math.ceil(width / 512) * math.ceil(height / 512)


def _patch_count(width: int, height: int, limit: _Limit) -> int:
    max_dim, budget = limit
    if max_dim is not None and max(width, height) > max_dim:
        scale = max_dim / max(width, height)
        width, height = math.ceil(width * scale), math.ceil(height * scale)
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if budget is None or patches <= budget:
        return patches
    shrink = math.sqrt(32 * 32 * budget / (width * height))
    shrink *= min(
        math.floor(width * shrink / 32) / (width * shrink / 32),
        math.floor(height * shrink / 32) / (height * shrink / 32),
    )
    resized = math.ceil(math.floor(width * shrink) / 32) * math.ceil(
        math.floor(height * shrink) / 32
    )
    return min(resized, budget)


def _patch_tokens(rule: _Patches, size: tuple[int, int] | None, detail: str) -> int:
    limits = rule.limits.get(detail) or rule.limits["auto"]
    if size is None:
        patches = max(
            budget if budget is not None else math.ceil((max_dim or 0) / 32) ** 2
            for max_dim, budget in limits
        )
    else:
        patches = max(_patch_count(size[0], size[1], limit) for limit in limits)
    numerator, denominator = rule.multiplier
    return -(-patches * numerator // denominator) + 1  # billing rounds floats: one token spare


def _openai_tokens(name: str, size: tuple[int, int] | None, detail: str) -> int:
    return max(
        _tile_tokens(rule, size, detail)
        if isinstance(rule, _Tiles)
        else _patch_tokens(rule, size, detail)
        for rule in _openai_rules(name)
    )


# -- Claude, Gemini -----------------------------------------------------------

_CLAUDE_PATCH = 28
_CLAUDE_IMAGE_WRAPPER = 20
"""count_tokens of one image lands a few tokens above its patches; Claude 3.5 Haiku billed
a 640 x 480 PNG 18 above them (the others: 8 at most)."""
_GEMINI_LEVELS = (("ULTRA", 2240), ("HIGH", 1120), ("MEDIUM", 560), ("LOW", 280))


def _claude_patches(width: int, height: int) -> int:
    return math.ceil(width / _CLAUDE_PATCH) * math.ceil(height / _CLAUDE_PATCH)


def _claude_resized(width: int, height: int, max_edge: int, max_tokens: int) -> tuple[int, int]:
    """Anthropic's reference ``resized_size``: the largest aspect-preserving size within limits."""

    def fits(w: int, h: int) -> bool:
        edge = max(math.ceil(w / _CLAUDE_PATCH), math.ceil(h / _CLAUDE_PATCH)) * _CLAUDE_PATCH
        return edge <= max_edge and _claude_patches(w, h) <= max_tokens

    if fits(width, height):
        return width, height
    if height > width:
        resized_h, resized_w = _claude_resized(height, width, max_edge, max_tokens)
        return resized_w, resized_h
    aspect = width / height
    low, high = 1, width
    while low + 1 < high:
        middle = (low + high) // 2
        if fits(middle, max(round(middle / aspect), 1)):
            low = middle
        else:
            high = middle
    return low, max(round(low / aspect), 1)


def _claude_tokens(name: str, size: tuple[int, int] | None) -> int:
    max_edge, max_tokens = (2576, 4784) if claude_high_resolution(name) else (1568, 1568)
    if size is None:
        return max_tokens + _CLAUDE_IMAGE_WRAPPER
    width, height = _claude_resized(size[0], size[1], max_edge, max_tokens)
    return min(_claude_patches(width, height), max_tokens) + _CLAUDE_IMAGE_WRAPPER


def _gemini_major(name: str) -> int | None:
    match = re.search(r"gemini-(\d+)", name)
    return int(match.group(1)) if match else None


def _gemini_minor(name: str) -> int:
    match = re.search(r"gemini-\d+\.(\d+)", name)
    return int(match.group(1)) if match else 0


def _resolution(part: Mapping[str, object]) -> str:
    value = part.get("media_resolution") or part.get("mediaResolution")
    if isinstance(value, Mapping):
        value = value.get("level")
    return value.upper() if isinstance(value, str) else ""


def _gemini_tokens(name: str, size: tuple[int, int] | None, part: Mapping[str, object]) -> int:
    major = _gemini_major(name)
    level = _resolution(part)
    modern = next((tokens for key, tokens in _GEMINI_LEVELS if key in level), 1120)
    if major is not None and major >= 3:
        return modern
    if size is None:
        legacy = 258 * 13  # 12 tiles (any aspect ratio up to 4:1) and the whole-image view
    elif size[0] <= 384 and size[1] <= 384:
        legacy = 258
    elif major == 2 and _gemini_minor(name) >= 5 and max(size) <= 768:
        legacy = 258  # Gemini 2.5 billed 258 for every image recorded, up to 640 x 566
    else:
        width, height = size
        unit = max(1, math.floor(min(width, height) / 1.5))
        grid = math.ceil(width / 768) * math.ceil(height / 768)
        crops = max(grid, math.ceil(width / unit) * math.ceil(height / unit))
        legacy = 258 * (crops + 1)  # the tiles and one view of the whole image
    return legacy if major is not None else max(legacy, modern)


_FAMILIES: dict[str, Callable[[str, tuple[int, int] | None, Mapping[str, object]], int]] = {
    "openai": lambda name, size, part: _openai_tokens(name, size, _detail(part)),
    "claude": lambda name, size, part: _claude_tokens(name, size),
    "gemini": _gemini_tokens,
}


def image_tokens(
    model: str, part: Mapping[str, object], *, family: str, cap: int | None = None
) -> int:
    """Input tokens of one image ``part`` sent to ``model`` of ``family``, never under the bill.

    ``family`` is ``"openai"``, ``"claude"``, ``"gemini"`` or anything else (a flat
    ``UNKNOWN_IMAGE_TOKENS``); ``cap`` (the context window) bounds an image whose
    size is unknown to a model with no per-image limit.
    """
    counter = _FAMILIES.get(family)
    if counter is None:
        return UNKNOWN_IMAGE_TOKENS
    name = model.rsplit("/", 1)[-1].lower()
    tokens = counter(name, size_of_part(part), part)
    return tokens if cap is None else min(tokens, max(cap, 1))
