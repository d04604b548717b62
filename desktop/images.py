"""Opening photos safely: metadata, oriented RGB decodes, thumbnails, content hashes.

Everything that reads pixels goes through here, so every other module can rely on two
promises: a returned image is RGB, fully decoded and the right way up; and a file that
cannot be used raises `ImageError` (with a reason a user can read) and nothing else.
Qt-free by design: the UI turns these PIL images into QImages itself.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import stat
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError, features

log = logging.getLogger(__name__)

try:
    import pillow_heif
except ImportError:  # the app still works; HEIC files then fail with a clear reason
    log.warning("pillow-heif is not installed: HEIC/HEIF photos cannot be opened")
else:
    pillow_heif.register_heif_opener()
    # Pillow >= 11.2 decodes AVIF itself; older pillow-heif releases can do it instead.
    if not ("avif" in features.modules and features.check_module("avif")):
        if hasattr(pillow_heif, "register_avif_opener"):
            pillow_heif.register_avif_opener()

# Raw formats (.dng, .cr2, .nef ...) are left out on purpose: Pillow only sees their small
# embedded preview, which would look like a bug. PSD/TGA/ICO are not photos.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    ".jpg .jpeg .jpe .jfif .mpo .png .webp .gif .tif .tiff .bmp .heic .heif .hif .avif .jp2 .j2k".split()
)

# Pillow's default (~89 MP) warns on real 100 MP medium-format files and refuses
# stitched panoramas; 250 MP still stops a crafted header from eating all memory.
MAX_PIXELS = 250_000_000
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own guard, only ever raised, never lowered

# How to undo each EXIF orientation (same table as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _tiff_orients_itself() -> bool:
    """Recent Pillow turns TIFFs upright while loading (and reports the turned size); older
    Pillow leaves that to us. Ask it with a 2x1 TIFF rather than trusting version numbers."""
    buf = io.BytesIO()
    Image.new("L", (2, 1)).save(buf, "TIFF", tiffinfo={ExifTags.Base.Orientation: 6})
    with Image.open(buf) as im:
        return im.size == (1, 2)


_TIFF_ORIENTS_ITSELF = _tiff_orients_itself()
_EXIF_DATETIME = re.compile(r"(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?")
_EXIF_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")


class ImageError(Exception):
    """A file that cannot be used as a photo; `reason` is a short sentence for the user."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fsdecode(path)
        self.reason = reason
        super().__init__(self.path, reason)  # args round-trip through pickle

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ImageMeta:
    width: int  # display size: EXIF orientation applied, full resolution
    height: int
    format: str  # Pillow's format name, e.g. "JPEG", "HEIF"
    taken_at: str | None  # ISO 8601, from DateTimeOriginal / DateTimeDigitized / DateTime
    camera: str | None  # "Make Model", tidied
    orientation: int | None  # EXIF orientation tag as stored in the file, 1..8
    frames: int  # >1 for animations and multi-page files; we only ever use the first


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return is_image_name(os.path.basename(os.fsdecode(path)))


def is_image_name(name: str) -> bool:
    """is_image_path for a bare file name (str)."""
    return has_extension(name, IMAGE_EXTENSIONS)


def has_extension(name: str, extensions: frozenset[str]) -> bool:
    """Whether a bare file name ends in one of `extensions`, not counting hidden names'
    leading dots; kept cheap because a re-scan runs it for every file of every library."""
    # "._IMG_1234.jpg" are macOS resource forks on external disks, not photos.
    dot = name.rfind(".")
    # Same answer as os.path.splitext: leading dots do not start an extension (".jpg", "..jpg").
    return (dot > 0 and name[dot:].lower() in extensions and not name.startswith("._")
            and (name[0] != "." or bool(name[:dot].lstrip("."))))


def read_meta(path: str | os.PathLike[str]) -> ImageMeta:
    """Size, format and EXIF from the header only (no pixel decode)."""
    p = checked_path(path)
    try:
        with Image.open(p) as im:
            return _meta(p, im)[0]
    except ImageError:
        raise
    except Exception as e:
        raise _wrap(p, e) from e


def open_image(path: str | os.PathLike[str], max_side: int | None = None) -> tuple[Image.Image, ImageMeta]:
    """Fully decoded RGB first frame, the right way up, longer side <= max_side."""
    return _decode(path, max_side=max_side)


def load_for_encoding(path: str | os.PathLike[str], size: int = 256) -> Image.Image:
    """Small RGB image whose *short* side is >= size (encoders resize + centre-crop that)."""
    return _decode(path, min_short=size)[0]


def decode_for_encoding(path: str | os.PathLike[str], size: int = 256) -> tuple[Image.Image, ImageMeta]:
    """load_for_encoding plus the header facts, from the same open of the file."""
    return _decode(path, min_short=size)


def make_thumbnail(path: str | os.PathLike[str], size: int) -> Image.Image:
    """RGB thumbnail whose longer side is `size` (never upscaled)."""
    return _decode(path, max_side=size)[0]


def content_hash(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """blake2b-128 of the file bytes: the photo's identity, whatever its path."""
    p = os.fsdecode(path)
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)  # hashlib drops the GIL for big blocks
    except FileNotFoundError as e:
        raise ImageError(p, "file vanished") from e
    except OSError as e:
        raise ImageError(p, f"cannot read file ({e.strerror or e})") from e
    return h.hexdigest()


# --- internals ---------------------------------------------------------------------------


def lower_thread_priority(nice: int, relative: bool = False) -> None:
    """Make the calling thread at least `nice` nice (idempotent: pool threads call it per
    task), or `relative`ly `nice` nicer than now. Threads it starts inherit it. Linux only:
    there setpriority() on a thread id touches that thread alone; elsewhere the id would
    name the whole process."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + nice if relative else max(now, nice)))
    except OSError:  # e.g. a sandbox that forbids it: running at normal priority still works
        log.debug("cannot lower a thread's priority", exc_info=True)


def checked_path(path: str | os.PathLike[str]) -> str:
    """The path as str if it is a non-empty regular file, else ImageError with the reason."""
    p = os.fsdecode(path)
    try:
        st = os.stat(p)
    except FileNotFoundError as e:
        raise ImageError(p, "file vanished") from e
    except OSError as e:
        raise ImageError(p, f"cannot read file ({e.strerror or e})") from e
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(p, "not a regular file")
    if st.st_size == 0:
        raise ImageError(p, "empty file")
    return p


def _decode(
    path: str | os.PathLike[str], max_side: int | None = None, min_short: int | None = None
) -> tuple[Image.Image, ImageMeta]:
    p = checked_path(path)
    try:
        with Image.open(p) as im:
            meta, turn = _meta(p, im)
            w, h = im.size  # as stored, before orientation; the long side is the same
            if min_short is not None:  # keep the short side >= min_short, but cap panoramas
                max_side = min(math.ceil(min_short * max(w, h) / min(w, h)), 8 * min_short)
            target = _fit_short(w, h, min_short) if min_short is not None else None
            target = target or _fit(w, h, max_side)
            if target is not None:
                im.draft(None, target)  # JPEG only: DCT-domain 1/2..1/8 scaling, stays >= target
            im.load()  # force the whole decode here, inside the guard
            out = _to_rgb(im)
            if target is not None and out.size != target:
                out = out.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)  # = CLIP preprocessing
            if turn in _TRANSPOSE:
                out = out.transpose(_TRANSPOSE[turn])
    except ImageError:
        raise
    except Exception as e:  # Pillow raises OSError, ValueError, TypeError, SyntaxError, struct.error ...
        raise _wrap(p, e) from e
    return out, meta


def _fit(w: int, h: int, max_side: int | None) -> tuple[int, int] | None:
    if max_side is None or max(w, h) <= max_side:
        return None
    r = max_side / max(w, h)
    return (max_side, max(1, round(h * r))) if w >= h else (max(1, round(w * r)), max_side)


def _fit_short(w: int, h: int, short: int) -> tuple[int, int] | None:
    """Short side exactly `short`, long side as torchvision's Resize(short) computes it, so an
    encoder whose preprocessing resizes to `short` finds the size already right and skips its
    own (second, costly) bicubic pass. None for panoramas past the 8:1 cap and small images."""
    s, long_ = min(w, h), max(w, h)
    if s <= short or long_ > 8 * s:
        return None
    other = int(short * long_ / s)
    return (short, other) if w <= h else (other, short)


def _meta(p: str, im: Image.Image) -> tuple[ImageMeta, int | None]:
    """Header facts plus the orientation still to apply (some decoders apply it themselves)."""
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(p, "image has no pixels")
    if w * h > MAX_PIXELS:
        raise ImageError(p, f"decompression bomb: {_sci(w * h)} pixels")
    try:
        frames = int(getattr(im, "n_frames", 1))
    except Exception:  # a broken later frame must not cost us the first one
        log.debug("cannot count frames of %s", p, exc_info=True)
        frames = 1
    taken_at = camera = None
    orientation: int | None = None
    try:
        exif = im.getexif()  # also reads XMP tiff:Orientation (PNG, WebP)
        orientation = exif.get(ExifTags.Base.Orientation)
        camera = _camera(exif.get(ExifTags.Base.Make), exif.get(ExifTags.Base.Model))
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        taken_at = (
            _iso(sub.get(ExifTags.Base.DateTimeOriginal), sub.get(ExifTags.Base.OffsetTimeOriginal))
            or _iso(sub.get(ExifTags.Base.DateTimeDigitized), None)
            or _iso(exif.get(ExifTags.Base.DateTime), None)
        )
    except Exception:  # broken EXIF is common and never fatal
        log.debug("unreadable EXIF in %s", p, exc_info=True)
    turn = orientation if isinstance(orientation, int) else None
    if "original_orientation" in im.info:  # pillow-heif rotated already and reset the tag
        orientation, turn = im.info["original_orientation"], None
    elif im.format == "TIFF" and _TIFF_ORIENTS_ITSELF:  # im.size is already the display size
        turn = None
    if not (isinstance(orientation, int) and 1 <= orientation <= 8):
        orientation = None
    if turn in (5, 6, 7, 8):
        w, h = h, w
    return ImageMeta(w, h, im.format or "unknown", taken_at, camera, orientation, max(1, frames)), turn


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode.startswith(("I", "F")):  # Pillow's own conversion clips 16-bit to white
        return Image.fromarray(_to_8bit(np.asarray(im), im.mode), "L").convert("RGB")
    if im.has_transparency_data:  # composite on white: black behind transparent logos looks broken
        rgba = im.convert("RGBA")
        out = Image.new("RGB", im.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return im.convert("RGB")  # L, 1, P, CMYK (Adobe inverted CMYK is handled by the decoder), YCbCr


def _to_8bit(a: np.ndarray, mode: str) -> np.ndarray:
    a = np.nan_to_num(a.astype(np.float32))
    if mode.startswith("I;16"):
        a = a / 257.0
    else:  # 32-bit "I" and "F" do not say their range: guess the common ones, else stretch
        lo, hi = float(a.min()), float(a.max())
        if mode == "I" and lo >= 0 and hi <= 255:
            pass
        elif mode == "I" and lo >= 0 and hi <= 65535:
            a = a / 257.0
        elif mode == "F" and lo >= 0 and hi <= 1:
            a = a * 255.0
        else:
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def _wrap(p: str, e: BaseException) -> ImageError:
    msg = str(e)
    if isinstance(e, FileNotFoundError):
        reason = "file vanished"
    elif isinstance(e, Image.DecompressionBombError):
        m = re.search(r"\((\d+) pixels\)", msg)
        reason = f"decompression bomb: {_sci(int(m.group(1)))} pixels" if m else "decompression bomb"
    elif isinstance(e, UnidentifiedImageError):
        reason = "not an image (no decoder recognises it)"
    elif isinstance(e, MemoryError):
        reason = "too large to decode (out of memory)"
    elif "truncated" in msg or "but only got" in msg:
        reason = "truncated file"
    elif isinstance(e, OSError) and e.errno is not None:  # EACCES, EIO on a failing disk ...
        reason = f"cannot read file ({e.strerror or msg})"
    elif isinstance(e, OSError):  # Pillow's decoders report corrupt data as bare OSErrors
        reason = f"corrupt image data ({msg[:160] or 'no details'})"
    else:
        reason = f"corrupt or unsupported image ({type(e).__name__}: {msg[:160] or 'no details'})"
    log.debug("cannot use %s: %s", p, reason, exc_info=e)
    return ImageError(p, reason)


def _sci(n: int) -> str:
    mantissa, exponent = f"{n:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _text(v: Any) -> str | None:
    if isinstance(v, bytes):
        v = v.decode("latin-1")
    if not isinstance(v, str):
        return None
    return " ".join(v.replace("\x00", " ").split()) or None


def _camera(make: Any, model: Any) -> str | None:
    make, model = _text(make), _text(model)
    if make and model:
        # "Canon"/"Canon EOS 40D", "NIKON CORPORATION"/"NIKON D70", "EASTMAN KODAK COMPANY"/"KODAK CX7530"
        if model.lower().startswith(make.lower()) or model.split()[0].lower() in make.lower().split():
            return model
        return f"{make} {model}"
    return make or model


def _iso(value: Any, offset: Any) -> str | None:
    text = _text(value)
    m = _EXIF_DATETIME.match(text) if text else None
    if m is None:
        return None
    try:
        dt = datetime(*(int(g or 0) for g in m.groups()))  # type: ignore[misc]
    except ValueError:  # "0000:00:00 00:00:00" and friends
        return None
    if dt.year < 1826:  # older than photography: a camera with an unset clock
        return None
    off = _text(offset)
    return dt.isoformat() + (off if off and _EXIF_OFFSET.fullmatch(off) else "")
