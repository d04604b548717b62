"""The camera RAW decoder (.nef .cr2 .cr3 .arw .dng .orf .rw2 .raf .pef .srw ...): rawpy
(LibRaw) behind the media-decoder contract of desktop/media.py.

Pixels, fastest first:
- the JPEG preview the camera embedded, when its short side is at least the size asked
  for (most cameras embed a full-size or 1620 px one: decoding it is a JPEG decode);
- else a half-size demosaic (`postprocess(half_size=True, use_camera_wb=True)`): each 2x2
  Bayer block becomes one pixel, 4x less work than a full demosaic and still >= 1000 px
  on any camera of this century.
EXIF (camera, time taken) comes from the RAW itself (exifread reads the TIFF-based RAWs),
else from the embedded preview's EXIF. Content decides, not the name: a `.nef` that is a
JPEG is not sniffed here, so the still-image decoder reads it.

rawpy is imported on first use, so this module costs nothing to import.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import numpy as np
from PIL import ExifTags, Image

from desktop import images
from desktop.catalog.db import RAW_EXTENSIONS
from desktop.media import Decoded, Frame, MediaError, MediaMeta

log = logging.getLogger(__name__)

# LibRaw's `sizes.flip` -> the transpose that shows the picture the right way up.
_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def sniff_raw(head: bytes) -> bool:
    """TIFF-based RAWs (NEF, CR2, DNG, ARW, PEF, SRW...) and the ones with their own magic."""
    return (
        head[:4] in (b"II*\x00", b"MM\x00*")  # TIFF: only offered for RAW extensions first
        or head[:4] in (b"IIRO", b"IIRS", b"MMOR")  # Olympus ORF
        or head[:4] == b"IIU\x00"  # Panasonic RW2
        or head[:15] == b"FUJIFILMCCD-RAW"  # Fujifilm RAF
        or (head[4:8] == b"ftyp" and head[8:12] == b"crx ")  # Canon CR3
        or head[:4] == b"FOVb"  # Sigma X3F
    )


def _rawpy() -> Any:
    try:
        import rawpy
    except ImportError as e:  # the optional extra is not installed
        raise RuntimeError("RAW files need rawpy: pip install 'lumen[media]'") from e
    return rawpy


def _open(path: str) -> Any:
    rawpy = _rawpy()
    try:
        return rawpy.imread(path)
    except rawpy.LibRawFileUnsupportedError as e:
        raise MediaError(path, "unsupported RAW file (LibRaw does not know this camera or format)") from e
    except rawpy.LibRawIOError as e:
        raise MediaError(path, "truncated or unreadable RAW file") from e
    except rawpy.LibRawError as e:
        raise MediaError(path, f"cannot read RAW file ({type(e).__name__})") from e
    except OSError as e:
        raise MediaError(path, f"cannot read file ({e.strerror or e})") from e


def _preview(raw: Any) -> Image.Image | None:
    """The embedded preview, or None when the file has none we can use."""
    rawpy = _rawpy()
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        log.debug("unreadable embedded preview", exc_info=True)
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            im = Image.open(io.BytesIO(thumb.data))
            im.size  # noqa: B018 - the header is read here; a broken preview fails now
            return im
        except Exception:  # a broken preview is not a broken RAW: demosaic instead
            log.debug("broken embedded JPEG preview", exc_info=True)
            return None
    return Image.fromarray(np.ascontiguousarray(thumb.data)).convert("RGB")


def _exif(path: str, preview: Image.Image | None) -> tuple[str | None, str | None]:
    """(taken_at, camera) from the RAW's own EXIF, else from the preview's."""
    try:
        import exifread

        with open(path, "rb") as f:
            tags = exifread.process_file(f, details=False)
        when = tags.get("EXIF DateTimeOriginal") or tags.get("Image DateTimeOriginal") or tags.get("Image DateTime")
        taken = images._iso(str(when or ""),
                            str(tags.get("EXIF OffsetTimeOriginal") or "") or None)
        camera = images._camera(str(tags.get("Image Make") or "") or None, str(tags.get("Image Model") or "") or None)
        if taken or camera:
            return taken, camera
    except Exception:  # broken EXIF is common and never fatal
        log.debug("exifread failed on %s", path, exc_info=True)
    if preview is not None and hasattr(preview, "getexif"):
        try:
            exif = preview.getexif()
            sub = exif.get_ifd(ExifTags.IFD.Exif)
            taken = images._iso(sub.get(ExifTags.Base.DateTimeOriginal), sub.get(ExifTags.Base.OffsetTimeOriginal))
            return taken, images._camera(exif.get(ExifTags.Base.Make), exif.get(ExifTags.Base.Model))
        except Exception:
            log.debug("unreadable EXIF in the preview of %s", path, exc_info=True)
    return None, None


class RawDecoder:
    name = "raw"
    extensions = frozenset(RAW_EXTENSIONS)

    def __init__(self) -> None:
        self.stats = {"preview": 0, "demosaic": 0}  # how pixels were obtained (bench, tests)

    def sniff(self, head: bytes, path: str) -> bool:
        # A TIFF header alone means a RAW only under a RAW name; a .tif stays the image decoder's.
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return os.path.splitext(path)[1].lower() in self.extensions
        return sniff_raw(head)

    def _meta(self, path: str, raw: Any, preview: Image.Image | None) -> MediaMeta:
        s = raw.sizes
        w, h = s.width, s.height
        if s.flip in (5, 6):
            w, h = h, w
        taken, camera = _exif(path, preview)
        fmt = os.path.splitext(path)[1].lstrip(".").upper() or "RAW"
        return MediaMeta(w, h, fmt, taken, camera, None, 1, kind="raw")

    def read_meta(self, path: str) -> MediaMeta:
        p = images.checked_path(path)
        with _open(p) as raw:
            return self._meta(p, raw, _preview(raw))

    def _pixels(self, path: str, raw: Any, short: int | None, longest: int | None,
                preview: Image.Image | None) -> Image.Image:
        """RGB, the right way up, short side >= short (or long side <= longest)."""
        flip = raw.sizes.flip
        big_enough = preview is not None and (
            min(preview.size) >= short if short is not None else max(preview.size) >= (longest or 0))
        if preview is not None and big_enough:
            target = short or longest or 0
            if preview.format == "JPEG":
                preview.draft("RGB", (target, target) if longest is None else (longest, longest))
            im = images._to_rgb(preview.convert("RGB") if preview.mode not in ("RGB", "L") else preview)
            turn = preview.getexif().get(ExifTags.Base.Orientation) if hasattr(preview, "getexif") else None
            if isinstance(turn, int) and turn in images._TRANSPOSE and turn != 1:
                im = im.transpose(images._TRANSPOSE[turn])
            elif flip in _FLIP:  # LibRaw's flip is the RAW's orientation; previews rarely carry one
                im = im.transpose(_FLIP[flip])
            self.stats["preview"] += 1
        else:
            rawpy = _rawpy()
            try:
                rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)  # applies flip
            except rawpy.LibRawError as e:
                raise MediaError(path, f"cannot demosaic RAW file ({type(e).__name__})") from e
            im = Image.fromarray(rgb)
            self.stats["demosaic"] += 1
        w, h = im.size
        if short is not None and min(w, h) > short:
            r = short / min(w, h)
        elif longest is not None and max(w, h) > longest:
            r = longest / max(w, h)
        else:
            return im
        return im.resize((max(1, round(w * r)), max(1, round(h * r))), Image.Resampling.BICUBIC, reducing_gap=2.0)

    def decode(self, path: str, size: int) -> Decoded:
        p = images.checked_path(path)
        with _open(p) as raw:
            preview = _preview(raw)
            meta = self._meta(p, raw, preview)
            return Decoded([Frame(self._pixels(p, raw, size, None, preview))], meta, self.name)

    def thumbnail(self, path: str, size: int) -> Image.Image:
        p = images.checked_path(path)
        with _open(p) as raw:
            return self._pixels(p, raw, None, size, _preview(raw))


decoder_plugin = RawDecoder
