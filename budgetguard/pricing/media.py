"""Documents, audio and video in a request, sized from their own bytes, never read as text.

Pages or seconds are read from the bytes, each provider's rate applied, erring
high. A part with no bytes here (a URL, a file id, a Gemini ``file_uri``), or
unreadable (logged once), holds the context window; ``unbounded_reason`` says why.

- PDF pages: ``/Type /Page`` objects or the page tree's ``/Count``, also in
  FlateDecode object streams. Claude: a page is an image plus its text
  ("1,500-3,000 tokens per page"), so its largest image (1,576; 4,792 from
  Opus 4.7) + the content streams' text (3,000 a page if unreadable). OpenAI
  sends "the extracted text and an image of each page": the text + the model's
  image formula for the page at 96 dpi, 768 px short or 1,024 px long, the
  dearest (gpt-5.4 chat bills 1,030 a Letter page; Responses has billed
  gpt-4o-mini's 25,501-token pages, chat bills gpt-4o's). Gemini: 258 a page
  on 2.5, the media resolution's cap on 3 (unset: 1,120), 3,096 before 2.5;
  the text is "not charged".
- Audio: WAV header, MP3 frames, else 6 kbit/s (Opus's least bitrate). OpenAI:
  "1 token per 100 ms" + a wrapper; Gemini: 32 a second.
- Video (Gemini): MP4 ``mvhd``/``mdhd`` duration, else 6 kbit/s; ``floor(s x
  fps) + 1`` frames at 258 + 5 (66 + 5 low; Gemini 3: 70 + 5, 280 + 5 high),
  + 32 a second of audio. A request-level ``media_resolution`` is not seen.
- Text (Anthropic text sources, ``text/*``, PDF and Office text) is counted by
  the caller's ``text_tokens``.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .durations import MP3_SYNC, seconds_of
from .images import image_tokens

__all__ = [
    "UNKNOWN_MEDIA_TOKENS",
    "is_media_part",
    "is_sound_part",
    "media_tokens",
    "unbounded_reason",
]

UNKNOWN_MEDIA_TOKENS = 2_000_000
"""A part of unknown size with no context window given: the largest window any model has."""

_Text = Callable[[str], int]
_log = logging.getLogger("budgetguard")
_warned: set[str] = set()

_TEXT_PER_PAGE = 3_000  # Anthropic's upper tokens a page, for text that cannot be read
_PAGE_WRAPPER = 16  # per page (Claude, OpenAI)
_DOC_WRAPPER = 40  # per document: an empty Claude page bills ~30 over its image
_OPENAI_AUDIO = (10, 4)  # tokens a second, and per clip (rounding and a 3-token wrapper)
_GEMINI_AUDIO = (32, 2)  # 2.5 bills 33 for 1.000 s
_FRAME_EXTRA = 5  # Gemini 2.5 bills 263 a frame where the docs say 258
_INFLATE_BUDGET = 64 << 20  # bytes inflated per file before giving up on reading more
_TEXT_MIMES = ("text/", "application/json", "application/xml", "application/javascript")


class _Ask(NamedTuple):
    model: str
    family: str
    cap: int | None
    count: _Text  # tokens of a text


@dataclass(frozen=True, slots=True)
class _Media:
    kind: str  # "pdf", "audio", "video", "text", "content" or "file" (sniffed)
    data: object = None  # base64 (or a data URL, or bytes); the text itself for "text"
    reason: str | None = None  # why the size is unknown: the part only names its media
    label: str = ""  # title, context or filename, sent as text
    chat: bool = False  # an OpenAI chat ``file`` part (Responses parts bill differently)


def _warn_once(key: str, message: str) -> None:
    if key not in _warned and len(_warned) < 256:  # a race can log twice, never raise
        _warned.add(key)
        _log.warning("budgetguard: %s; holding the most it can bill", message)


def _get(mapping: Mapping[str, Any], *keys: str) -> Any:  # snake_case or camelCase
    return next((mapping[key] for key in keys if mapping.get(key) is not None), None)


def _kind_of(mime: str) -> str:
    mime = mime.lower()
    if mime == "application/pdf" or mime.startswith(("audio/", "video/")):
        return "pdf" if mime == "application/pdf" else mime.split("/", 1)[0]
    return "text" if mime.startswith(_TEXT_MIMES) else "file"


def _describe(part: Mapping[str, Any]) -> _Media | None:
    """What a media part carries; ``None`` when it is none (a tool argument that happens to
    say ``"type": "document"`` is not one)."""
    kind = part.get("type")
    if kind == "document" and isinstance(part.get("source"), Mapping):
        source, form = part["source"], str(part["source"].get("type"))
        label = " ".join(str(part[key]) for key in ("title", "context") if part.get(key))
        if form in ("text", "content"):
            return _Media(form, source.get("data" if form == "text" else "content"), label=label)
        if form == "base64":
            kind = _kind_of(str(source.get("media_type") or "application/pdf"))
            return _Media(kind, source.get("data"), label=label)
        where = {"url": "URL", "file": "file id"}.get(form, "reference")
        return _Media("pdf", reason=f"a document by {where}", label=label)
    if kind in ("video_url", "audio_url"):  # OpenRouter, vLLM: a data URL or a link
        holder = part.get(kind)
        url = holder.get("url") if isinstance(holder, Mapping) else holder
        media = "video" if kind == "video_url" else "audio"
        if isinstance(url, str) and url.startswith("data:"):
            return _Media(media, url)
        return _Media(media, reason=f"{'a video' if media == 'video' else 'an audio file'} by URL")
    if kind == "document_url":  # Mistral: a data URL, or a link the host fetches itself
        url, label = part.get("document_url"), str(part.get("document_name") or "")
        if isinstance(url, str) and url.startswith("data:"):
            return _Media("file", url, label=label)
        return _Media("pdf", reason="a document by URL", label=label)
    if kind == "input_audio":
        audio = part.get("input_audio")
        audio = audio if isinstance(audio, Mapping) else part
        return _Media("audio", audio["data"]) if audio.get("data") is not None else None
    if kind in ("file", "input_file"):
        holder = part.get("file") if kind == "file" else part
        if not isinstance(holder, Mapping):
            return None
        name, data = str(holder.get("filename") or ""), holder.get("file_data")
        if isinstance(data, str) and not data.startswith(("http://", "https://")):
            return _Media("file", data, label=name, chat=kind == "file")
        if data is not None or holder.get("file_url") is not None:
            return _Media("file", reason="a file by URL", label=name)
        return _Media("file", reason="a file by id") if holder.get("file_id") else None
    blob = _get(part, "inline_data", "inlineData")
    found = blob if isinstance(blob, Mapping) else _get(part, "file_data", "fileData")
    mime = _get(found, "mime_type", "mimeType") if isinstance(found, Mapping) else None
    if not isinstance(found, Mapping) or not isinstance(mime, str) or mime.startswith("image/"):
        return None
    media = _kind_of(mime)  # Gemini: inline_data carries the bytes, file_data a URI
    if found is blob:
        return _Media(media, found.get("data"))
    noun = {"pdf": "a document", "audio": "an audio file", "video": "a video"}.get(media, "a file")
    return _Media(media, reason=f"{noun} by URI")


def is_media_part(part: Mapping[str, Any]) -> bool:
    """A document, audio or video part of any provider's format (images are ``images``')."""
    return _describe(part) is not None


def is_sound_part(part: Mapping[str, Any]) -> bool:
    """An audio or video part (or a file that may be either): sound some models bill at
    a dearer rate than text."""
    media = _describe(part)
    return media is not None and media.kind in ("audio", "video", "file")


def unbounded_reason(part: Mapping[str, Any]) -> str | None:
    """Why a media part's size is unknown before the call ("a document by URL"), else ``None``."""
    media = _describe(part)
    return media.reason if media is not None else None


def _decode(data: object) -> bytes | None:
    """The bytes of a base64 payload (a data URL, the standard or URL-safe alphabet)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if not isinstance(data, str):
        return None
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if not head.endswith(";base64"):
            return None
    text = "".join(data.split()).replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return binascii.a2b_base64(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _sniff(raw: bytes, data: object, filename: str) -> str:
    """What a file is: its magic number, else its data URL's mime type or its name."""
    head = raw[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or MP3_SYNC.match(head):
        return "audio"
    if head[4:8] == b"ftyp":
        return "video"
    if head[:4] == b"PK\x03\x04":
        return "office"
    mime = data[5 : data.find(";")] if isinstance(data, str) and data.startswith("data:") else ""
    if _kind_of(mime) != "file" or filename.lower().endswith(".pdf"):
        return _kind_of(mime) if _kind_of(mime) != "file" else "pdf"
    return "file" if b"\x00" in raw[:8192] else "text"  # binary, or text in some encoding


_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_PAGES = re.compile(rb"/Type\s*/Pages(?![A-Za-z])")
_COUNT = re.compile(rb"/Count\s+(\d{1,7})")
_STREAM = re.compile(rb"(?<!end)stream(?:\r\n|\n|\r)")
_NUMBER = rb"\s*(-?\d*\.?\d+)"
_BOX = re.compile(rb"/(?:Media|Crop)Box\s*\[" + _NUMBER * 4)
_TEXT_BLOCK = re.compile(rb"\bBT\b(.*?)\bET\b", re.DOTALL)
_STRING = re.compile(rb"\((?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\)|<([0-9A-Fa-f\s]*)>", re.DOTALL)
_ESCAPE = re.compile(rb"\\([0-7]{1,3}|.)", re.DOTALL)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"\n": b""}
_SKIP = (b"/Image", b"/XRef", b"/Metadata", b"/Length1", b"/Length2", b"/FontFile", b"Type1C")
_OTHER_FILTER = re.compile(rb"/(?:ASCII85Decode|A85|LZWDecode|LZW|ASCIIHexDecode|AHx|RunLength)")


_Pdf = tuple[int, str | None, tuple[tuple[float, float], ...]]
"""Pages; their text (``None``: some content could not be read); page sizes in points."""


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    return bytes([int(code, 8) & 0xFF]) if code[:1].isdigit() else _ESCAPES.get(code, code)


def _strings(content: bytes) -> list[str]:
    """What a content stream's text blocks show, as Latin-1: a CID font's 2-byte codes read
    as two characters each, more tokens than its text, never fewer."""
    lines = []
    for block in _TEXT_BLOCK.finditer(content):
        shown = []
        for found in _STRING.finditer(block.group(1)):
            if found.group(1) is not None:
                digits = b"".join(found.group(1).split())
                shown.append(binascii.unhexlify(digits + b"0" * (len(digits) % 2)))
            else:
                shown.append(_ESCAPE.sub(_unescape, found.group(0)[1:-1]))
        lines.append(" ".join(piece.decode("latin-1") for piece in shown))
    return lines


def _inflate(raw: bytes, start: int, budget: int) -> bytes | None:
    """A FlateDecode stream (``None``: corrupt, cut short or over ``budget``), fed 64 kB at a
    time: the rest of the file is not copied."""
    inflater, view, pieces, size = zlib.decompressobj(), memoryview(raw), [], 0
    try:
        for index in range(start, len(raw), 1 << 16):
            pieces.append(inflater.decompress(view[index : index + (1 << 16)]))
            size += len(pieces[-1])
            if inflater.eof or size > budget:
                break
    except zlib.error:
        return None
    return b"".join(pieces) if inflater.eof and size <= budget else None


def _read_pdf(raw: bytes) -> _Pdf | None:
    """Pages, text and page sizes; ``None`` when the pages cannot be counted."""
    pages, trees, lines = len(_PAGE.findall(raw)), [raw], []
    readable, budget = b"/Encrypt" not in raw, _INFLATE_BUDGET
    for match in _STREAM.finditer(raw):
        head = raw[max(0, match.start() - 2048) : match.start()]
        head = head[head.rfind(b"obj") + 3 :]
        objects = b"/ObjStm" in head
        if not objects and any(mark in head for mark in _SKIP):
            continue
        if _OTHER_FILTER.search(head):
            if objects:
                return None  # pages may hide in a stream we cannot read
            readable = False
            continue
        if b"/Fl" in head:
            body = _inflate(raw, match.end(), budget)
            if body is None:
                if objects:
                    return None
                readable = False
                continue
            budget -= len(body)
        else:
            end = raw.find(b"endstream", match.end())
            body = raw[match.end() : end if end >= 0 else len(raw)]
        if objects:
            pages += len(_PAGE.findall(body))
            trees.append(body)
        elif b"BT" in body:
            lines.extend(_strings(body))
    for tree in trees:  # each page-tree node's nearest /Count
        for node in _PAGES.finditer(tree):
            start = max(0, node.start() - 512)
            near = _COUNT.finditer(tree, start, node.end() + 512)
            counts = sorted((abs(m.start() - node.start()), int(m.group(1))) for m in near)
            pages = max(pages, counts[0][1] if counts else 0)
    if pages <= 0:
        return None
    boxes = [[float(n) for n in box.groups()] for tree in trees for box in _BOX.finditer(tree)]
    sizes = {(abs(b[2] - b[0]), abs(b[3] - b[1])) for b in boxes}
    sizes = {size for size in sizes if min(size) >= 1 and max(size) < 1e5}
    return pages, "\n".join(lines) if readable else None, tuple(sorted(sizes))[:16]


def _page_image(model: str, width: float, height: float) -> int:
    """The dearest OpenAI image of a page rendered at 96 dpi, 768 px short or 1,024 px long:
    an image part whose PNG header says its size, for ``images`` to price."""
    tokens = 0
    for scale in (4 / 3, 768 / min(width, height), 1024 / max(width, height)):
        size = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
        header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", *size)
        url = "data:image/png;base64," + base64.b64encode(header).decode("ascii")
        part = {"type": "image_url", "image_url": {"url": url}}
        tokens = max(tokens, image_tokens(model, part, family="openai"))
    return tokens


def _gemini_version(model: str) -> tuple[int, int] | None:
    found = re.search(r"gemini-(\d+)(?:\.(\d+))?", model.rsplit("/", 1)[-1].lower())
    return (int(found.group(1)), int(found.group(2) or 0)) if found else None


def _level(part: Mapping[str, Any]) -> str:
    value = _get(part, "media_resolution", "mediaResolution")
    value = value.get("level") if isinstance(value, Mapping) else value
    return value.upper() if isinstance(value, str) else ""


def _pdf_tokens(pdf: _Pdf, media: _Media, part: Mapping[str, Any], ask: _Ask) -> int:
    (pages, text, sizes), (model, family, _, count) = pdf, ask
    if family == "gemini":
        version = _gemini_version(model)
        if version is not None and (2, 5) <= version < (3, 0):
            return pages * (66 if "LOW" in _level(part) else 258)
        page = {"type": "image", "media_resolution": _level(part) or "HIGH"}
        return pages * image_tokens(model, page, family="gemini")
    if family == "openai":
        name = model.rsplit("/", 1)[-1].lower()
        priced = "gpt-4o" if media.chat and name.startswith("gpt-4o-mini") else model
        image = max(_page_image(priced, *size) for size in sizes or ((612.0, 792.0),))
    else:  # Claude's largest image; a flat allowance for a model of no known family
        image = image_tokens(model, {"type": "image"}, family=family)
    read = pages * _TEXT_PER_PAGE if text is None else count(text)
    return pages * (image + _PAGE_WRAPPER) + read + _DOC_WRAPPER


def _audio_tokens(family: str, seconds: float) -> int:
    rate, extra = _OPENAI_AUDIO if family == "openai" else _GEMINI_AUDIO
    return math.ceil(seconds * rate) + extra


def _video_tokens(model: str, seconds: float, part: Mapping[str, Any]) -> int:
    meta = _get(part, "video_metadata", "videoMetadata")
    fps = meta.get("fps") if isinstance(meta, Mapping) else None
    fps = float(fps) if isinstance(fps, int | float) and 0 < fps <= 60 else 1.0
    version, level = _gemini_version(model), _level(part)
    if version is not None and version >= (3, 0):
        frame = 280 if "HIGH" in level else 70
    else:
        frame = 66 if "LOW" in level else 258
    frames = math.floor(seconds * fps) + 1
    return frames * (frame + _FRAME_EXTRA) + _audio_tokens("gemini", seconds)


def _office_text(raw: bytes) -> str:
    """The text nodes of an Office file's XML parts, one separator token between nodes."""
    pieces: list[str] = []
    budget = _INFLATE_BUDGET  # what the archive says it holds: reading stops there
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".xml") and info.file_size <= budget:
                budget -= info.file_size
                xml = archive.read(info).decode("utf-8", "replace")
                pieces.extend(re.findall(r">([^<]+)<", xml))
    return " | ".join(pieces)


def media_tokens(
    model: str,
    part: Mapping[str, Any],
    *,
    family: str,
    cap: int | None = None,
    text_tokens: _Text | None = None,
) -> int | None:
    """Input tokens of one document, audio or video ``part`` sent to ``model`` of ``family``
    (``"openai"``, ``"claude"``, ``"gemini"``, other), never under the bill; ``None`` when
    ``part`` is not one. ``cap`` (the context window) bounds the count and is what a part of
    unknown size or unreadable holds (``UNKNOWN_MEDIA_TOKENS`` without one). ``text_tokens``
    counts the text a part carries; without it, a token a UTF-8 byte (no tokenizer is above).
    """
    media = _describe(part)
    if media is None:
        return None
    count = text_tokens or (lambda text: len(text.encode("utf-8")))
    tokens = None
    try:
        if media.reason is None:
            tokens = _count(media, part, _Ask(model, family, cap, count))
        if tokens is not None and media.label:
            tokens += count(media.label)
    except Exception as error:  # a malformed payload must not fail the call it guards
        _warn_once(f"{media.kind}:{type(error).__name__}", f"unreadable {media.kind}: {error!r}")
    if tokens is None:
        return max(cap, 1) if cap is not None else UNKNOWN_MEDIA_TOKENS
    return tokens if cap is None else min(tokens, max(cap, 1))


def _count(media: _Media, part: Mapping[str, Any], ask: _Ask) -> int | None:
    model, family, cap, count = ask
    if media.kind == "content":  # Anthropic's own blocks: text, images
        blocks = [{"text": media.data}] if isinstance(media.data, str) else media.data
        return _DOC_WRAPPER + sum(
            image_tokens(model, block, family=family, cap=cap)
            if block.get("type") == "image"
            else count(str(block.get("text") or ""))
            for block in (blocks if isinstance(blocks, list | tuple) else ())
            if isinstance(block, Mapping)
        )
    source = part.get("source")
    if isinstance(source, Mapping) and source.get("type") == "text":  # the text itself
        return count(str(media.data or "")) + _DOC_WRAPPER
    raw = _decode(media.data)
    if raw is None:
        _warn_once(f"{media.kind}:data", f"a {media.kind} part whose data is not base64")
        return None
    kind = _sniff(raw, media.data, media.label) if media.kind == "file" else media.kind
    if kind == "pdf":
        pdf = _read_pdf(raw)
        if pdf is None:
            _warn_once("pdf:pages", "a PDF whose pages cannot be counted")
            return None
        return _pdf_tokens(pdf, media, part, ask)
    if kind == "audio":
        return _audio_tokens(family, seconds_of(raw))
    if kind == "video":
        return _video_tokens(model, seconds_of(raw), part)
    if kind in ("office", "text"):
        text = _office_text(raw) if kind == "office" else raw.decode("utf-8", "replace")
        return count(text) + _DOC_WRAPPER
    return len(raw) + _DOC_WRAPPER  # other binary: its text is at most a token a byte
