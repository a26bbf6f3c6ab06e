"""How long an audio or video file plays, read from its own header: WAV, MP4 (and MOV),
MP3 frames; anything else at a floor bit rate, so a file never counts as shorter than it
could be."""

from __future__ import annotations

import re
import struct

__all__ = ["MP3_SYNC", "seconds_of"]

MP3_SYNC = re.compile(rb"ID3|\xff[\xe0-\xff]")  # an ID3 tag or a frame's sync bits
_FLOOR_RATE = 750  # bytes a second: 6 kbit/s
_MP3_FLOOR_RATE = 1_000  # 8 kbit/s


_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MP3_KBPS = {  # Layers II and III (Layer I is not walked: 8 kbit/s), by MPEG-1 and index
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}


def _mp3_seconds(raw: bytes) -> float:
    """Seconds of the MP3 frames walked from the start; bytes not walked at 8 kbit/s."""
    index, seconds = 0, 0.0
    if raw[:3] == b"ID3" and len(raw) >= 10:
        index = 10 + sum((raw[6 + i] & 0x7F) << (21 - 7 * i) for i in range(4))
    while index + 4 <= len(raw):
        header = int.from_bytes(raw[index : index + 4], "big")
        version, layer = (header >> 19) & 3, (header >> 17) & 3
        rate, slot, padding = (header >> 12) & 15, (header >> 10) & 3, (header >> 9) & 1
        if header >> 21 != 0x7FF or version == 1 or layer in (0, 3) or rate in (0, 15) or slot == 3:
            break
        mpeg1 = version == 3
        bits = _MP3_KBPS[(mpeg1, layer if mpeg1 else 1)][rate] * 1000
        sample_rate = _MP3_RATES[version][slot]
        samples = 1152 if layer == 2 or mpeg1 else 576
        size = samples // 8 * bits // sample_rate + padding
        seconds += samples / sample_rate
        index += max(size, 4)
    return seconds + max(0, len(raw) - index) / _MP3_FLOOR_RATE


def _wav_seconds(raw: bytes) -> float | None:
    index, byte_rate = 12, 0
    while index + 8 <= len(raw):
        chunk, size = raw[index : index + 4], int.from_bytes(raw[index + 4 : index + 8], "little")
        if chunk == b"fmt " and index + 20 <= len(raw):
            byte_rate = int.from_bytes(raw[index + 16 : index + 20], "little")
        elif chunk == b"data" and byte_rate > 0:
            present = len(raw) - index - 8
            return (present if size in (0, 0xFFFFFFFF) else max(size, present)) / byte_rate
        index += 8 + size + (size & 1)
    return None


def _mp4_seconds(raw: bytes) -> float | None:
    """The longest of the movie's and its tracks' durations (``mvhd``, ``mdhd`` boxes)."""
    found: list[float] = []
    stack = [(0, len(raw))]
    while stack:
        index, end = stack.pop()
        while index + 8 <= end:
            size, box = int.from_bytes(raw[index : index + 4], "big"), raw[index + 4 : index + 8]
            head = 8
            if size == 1 and index + 16 <= end:
                size, head = int.from_bytes(raw[index + 8 : index + 16], "big"), 16
            size = end - index if size == 0 else size
            if size < head:
                break
            if box in (b"moov", b"trak", b"mdia"):
                stack.append((index + head, min(index + size, end)))
            elif box in (b"mvhd", b"mdhd"):
                layout = ">QQIQ" if raw[index + head : index + head + 1] == b"\x01" else ">IIII"
                if index + head + 4 + struct.calcsize(layout) <= end:
                    _, _, scale, length = struct.unpack_from(layout, raw, index + head + 4)
                    if scale and length not in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
                        found.append(length / scale)
            index += size
    return max(found) if found else None


def seconds_of(raw: bytes) -> float:
    """Seconds of audio or video: from a WAV, MP4 or MP3 header, else at 6 kbit/s."""
    found: float | None = None
    if raw[:4] == b"RIFF" and raw[8:12] == b"WAVE":
        found = _wav_seconds(raw)
    elif raw[4:8] == b"ftyp":
        found = _mp4_seconds(raw)
    elif MP3_SYNC.match(raw):
        found = _mp3_seconds(raw)
    return found if found is not None else len(raw) / _FLOOR_RATE
