"""A tiny DNG writer for the RAW tests: a real Bayer (RGGB) mosaic, 16-bit, uncompressed,
with the DNG tags LibRaw needs (CFA pattern, levels, a colour matrix, the white balance),
optionally followed by an embedded JPEG preview in a second IFD as cameras write one, so
both of the RAW decoder's paths (preview, demosaic) run on real files that rawpy opens.

Written by hand on purpose (about 80 lines of TIFF): the PyPI DNG writers ship as source
with a C extension, which a clean CI machine would have to compile.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence

import numpy as np
from PIL import Image

Rgb16 = tuple[int, int, int]  # 12-bit sensor values, 0..4095
BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
Entry = tuple[int, int, object]  # (tag, TIFF type, value(s))


def write_dng(
    path: str, top: Rgb16, bottom: Rgb16, size: tuple[int, int] = (256, 192), preview: Image.Image | None = None,
    make: str = "Lumen", model: str = "Test DNG", orientation: int = 1, taken: str | None = None,
) -> str:
    """A DNG of a picture whose top half is `top` and bottom half `bottom` (camera RGB).
    taken: "YYYY:MM:DD HH:MM:SS" as cameras write DateTimeOriginal."""
    w, h = size
    rgb = np.zeros((h, w, 3), np.uint16)
    rgb[: h // 2] = top
    rgb[h // 2 :] = bottom
    bayer = np.zeros((h, w), np.uint16)  # RGGB: each 2x2 block samples R, G, G, B
    bayer[0::2, 0::2] = rgb[0::2, 0::2, 0]
    bayer[0::2, 1::2] = rgb[0::2, 1::2, 1]
    bayer[1::2, 0::2] = rgb[1::2, 0::2, 1]
    bayer[1::2, 1::2] = rgb[1::2, 1::2, 2]
    raw: list[Entry] = [
        (254, LONG, [0]), (256, LONG, [w]), (257, LONG, [h]), (258, SHORT, [16]), (259, SHORT, [1]),
        (262, SHORT, [32803]),  # PhotometricInterpretation: CFA
        (271, ASCII, make), (272, ASCII, model), (274, SHORT, [orientation]),
        (277, SHORT, [1]), (278, LONG, [h]),
        (33421, SHORT, [2, 2]), (33422, BYTE, [0, 1, 1, 2]),  # CFARepeatPatternDim, CFAPattern RGGB
        (50706, BYTE, [1, 4, 0, 0]), (50707, BYTE, [1, 2, 0, 0]),  # DNGVersion, DNGBackwardVersion
        (50714, LONG, [0]), (50717, LONG, [4095]),  # BlackLevel, WhiteLevel
        (50721, SRATIONAL, [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]),  # ColorMatrix1
        (50728, RATIONAL, [(1, 1), (1, 1), (1, 1)]),  # AsShotNeutral
        (50778, SHORT, [21]),  # CalibrationIlluminant1: D65
    ]
    if taken:
        raw.append((36867, ASCII, taken))
    ifds: list[tuple[list[Entry], bytes]] = [(raw, bayer.astype("<u2").tobytes())]
    if preview is not None:
        jpeg = io.BytesIO()
        preview.convert("RGB").save(jpeg, "JPEG", quality=90)
        pw, ph = preview.size
        ifds.append(([(254, LONG, [1]), (256, LONG, [pw]), (257, LONG, [ph]), (258, SHORT, [8, 8, 8]),
                      (259, SHORT, [7]), (262, SHORT, [6]), (277, SHORT, [3]), (278, LONG, [ph])], jpeg.getvalue()))
    with open(path, "wb") as f:
        f.write(_tiff(ifds))
    return path


def _pack(kind: int, value: object) -> tuple[int, bytes]:
    """(count, bytes) of a tag's value."""
    if kind == ASCII:
        data = str(value).encode("ascii") + b"\x00"
        return len(data), data
    values = list(value)  # type: ignore[call-overload]
    if kind == BYTE:
        return len(values), bytes(values)
    if kind in (RATIONAL, SRATIONAL):
        flat = [x for pair in values for x in pair]
        return len(values), struct.pack(f"<{len(flat)}{'I' if kind == RATIONAL else 'i'}", *flat)
    return len(values), struct.pack(f"<{len(values)}{'H' if kind == SHORT else 'I'}", *values)


def _ifd(entries: Sequence[Entry], at: int) -> bytes:
    """One IFD at offset `at`, its out-of-line values right after it (word-aligned)."""
    entries = sorted(entries, key=lambda e: e[0])  # TIFF wants ascending tags
    table, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
    data_at = at + 2 + 12 * len(entries) + 4
    for tag, kind, value in entries:
        count, data = _pack(kind, value)
        if len(data) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\x00")
        else:
            table += struct.pack("<HHII", tag, kind, count, data_at + len(extra))
            extra += data + b"\x00" * (len(data) % 2)
    return bytes(table + b"\x00\x00\x00\x00" + extra)  # next-IFD pointer: patched by _tiff


def _tiff(ifds: Sequence[tuple[list[Entry], bytes]]) -> bytes:
    """Little-endian TIFF: each IFD, then its one strip; the IFDs chained in order."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    previous_next = 4  # where the pointer to the next IFD goes (the header's, first)
    for entries, strip in ifds:
        at = len(out)
        probe = _ifd([*entries, (273, LONG, [0]), (279, LONG, [len(strip)])], at)  # sizes only
        block = _ifd([*entries, (273, LONG, [at + len(probe)]), (279, LONG, [len(strip)])], at)
        struct.pack_into("<I", out, previous_next, at)
        n = struct.unpack_from("<H", block)[0]
        previous_next = at + 2 + 12 * n
        out += block + strip
        out += b"\x00" * (len(out) % 2)
    return bytes(out)
