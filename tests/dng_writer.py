"""A tiny DNG maker for the RAW tests: a Bayer (RGGB) mosaic of a two-colour picture
written by pidng, optionally with an embedded JPEG preview in a second IFD (as cameras
write one), so both of the RAW decoder's paths (preview, demosaic) run on real files."""

from __future__ import annotations

import io
import struct
import numpy as np
from PIL import Image
from pidng.core import RAW2DNG, DNGTags, Tag
from pidng.defs import CFAPattern, CalibrationIlluminant, DNGVersion, PhotometricInterpretation

def write_dng(path, top, bottom, size=(256, 192), preview=None, make="Lumen", model="Test DNG"):
    w, h = size
    rgb = np.zeros((h, w, 3), np.uint16)
    rgb[: h // 2] = top
    rgb[h // 2 :] = bottom
    bayer = np.zeros((h, w), np.uint16)
    bayer[0::2, 0::2] = rgb[0::2, 0::2, 0]
    bayer[0::2, 1::2] = rgb[0::2, 1::2, 1]
    bayer[1::2, 0::2] = rgb[1::2, 0::2, 1]
    bayer[1::2, 1::2] = rgb[1::2, 1::2, 2]
    t = DNGTags()
    for tag, v in [(Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
                   (Tag.Orientation, 1), (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
                   (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16), (Tag.CFARepeatPatternDim, [2, 2]),
                   (Tag.CFAPattern, CFAPattern.RGGB), (Tag.BlackLevel, 0), (Tag.WhiteLevel, 4095),
                   (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
                   (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65), (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
                   (Tag.Make, make), (Tag.Model, model), (Tag.DNGVersion, DNGVersion.V1_4),
                   (Tag.DNGBackwardVersion, DNGVersion.V1_2)]:
        t.set(tag, v)
    r = RAW2DNG()
    r.options(t, path="", compress=False)
    buf = bytes(r.convert(bayer))
    if preview is not None:
        buf = _append_jpeg_ifd(buf, preview)
    with open(path, "wb") as f:
        f.write(buf)
    return path

def _append_jpeg_ifd(buf, im):
    jpeg = io.BytesIO(); im.convert("RGB").save(jpeg, "JPEG", quality=90); jpeg = jpeg.getvalue()
    assert buf[:4] == b"II*\x00"
    ifd0 = struct.unpack_from("<I", buf, 4)[0]
    n = struct.unpack_from("<H", buf, ifd0)[0]
    next_at = ifd0 + 2 + 12 * n
    out = bytearray(buf)
    if len(out) % 2: out += b"\x00"
    data_at = len(out); out += jpeg
    if len(out) % 2: out += b"\x00"
    bps_at = len(out); out += struct.pack("<HHH", 8, 8, 8)
    ifd_at = len(out)
    w, h = im.size
    entries = [(254, 4, 1, 1), (256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, bps_at), (259, 3, 1, 7),
               (262, 3, 1, 6), (273, 4, 1, data_at), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, len(jpeg))]
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        out += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3 and count == 1 else struct.pack("<I", value))
    out += struct.pack("<I", 0)
    struct.pack_into("<I", out, next_at, ifd_at)
    return bytes(out)
