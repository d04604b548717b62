"""A tiny DNG maker for the RAW tests: a Bayer (RGGB) mosaic of a two-colour picture
written by pidng, optionally with an embedded JPEG preview in a second IFD (as cameras
write one), so both of the RAW decoder's paths (preview, demosaic) run on real files."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

Rgb16 = tuple[int, int, int]  # 12-bit sensor values, 0..4095


def write_dng(
    path: str, top: Rgb16, bottom: Rgb16, size: tuple[int, int] = (256, 192), preview: Image.Image | None = None,
    make: str = "Lumen", model: str = "Test DNG", orientation: int = 1, taken: str | None = None,
) -> str:
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation

    w, h = size
    rgb = np.zeros((h, w, 3), np.uint16)
    rgb[: h // 2] = top
    rgb[h // 2 :] = bottom
    bayer = np.zeros((h, w), np.uint16)  # RGGB: each 2x2 block samples R, G, G, B
    bayer[0::2, 0::2] = rgb[0::2, 0::2, 0]
    bayer[0::2, 1::2] = rgb[0::2, 1::2, 1]
    bayer[1::2, 0::2] = rgb[1::2, 0::2, 1]
    bayer[1::2, 1::2] = rgb[1::2, 1::2, 2]
    tags = DNGTags()
    for tag, value in [
        (Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
        (Tag.Orientation, orientation), (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16), (Tag.CFARepeatPatternDim, [2, 2]),
        (Tag.CFAPattern, CFAPattern.RGGB), (Tag.BlackLevel, 0), (Tag.WhiteLevel, 4095),
        (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65), (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.Make, make), (Tag.Model, model), (Tag.DNGVersion, DNGVersion.V1_4),
        (Tag.DNGBackwardVersion, DNGVersion.V1_2),
    ]:
        tags.set(tag, value)
    if taken:  # "YYYY:MM:DD HH:MM:SS", as cameras write it
        tags.set(Tag.DateTimeOriginal, taken)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    buf = bytes(writer.convert(bayer))
    if preview is not None:
        buf = _append_jpeg_ifd(buf, preview)
    with open(path, "wb") as f:
        f.write(buf)
    return path


def _append_jpeg_ifd(buf: bytes, im: Image.Image) -> bytes:
    """Chain a second IFD (NewSubfileType 1, JPEG) after pidng's IFD0: a camera's preview."""
    jpeg_io = io.BytesIO()
    im.convert("RGB").save(jpeg_io, "JPEG", quality=90)
    jpeg = jpeg_io.getvalue()
    assert buf[:4] == b"II*\x00"
    ifd0 = struct.unpack_from("<I", buf, 4)[0]
    n = struct.unpack_from("<H", buf, ifd0)[0]
    next_at = ifd0 + 2 + 12 * n  # IFD0's "next IFD" pointer
    out = bytearray(buf)
    out += b"\x00" * (len(out) % 2)  # TIFF offsets are word-aligned
    data_at = len(out)
    out += jpeg
    out += b"\x00" * (len(out) % 2)
    bps_at = len(out)
    out += struct.pack("<HHH", 8, 8, 8)
    ifd_at = len(out)
    w, h = im.size
    entries = [(254, 4, 1, 1), (256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, bps_at), (259, 3, 1, 7),
               (262, 3, 1, 6), (273, 4, 1, data_at), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, len(jpeg))]
    out += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        inline = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + inline
    out += struct.pack("<I", 0)
    struct.pack_into("<I", out, next_at, ifd_at)
    return bytes(out)
