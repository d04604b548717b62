"""Media decoders: how a file becomes pixels to encode and to show.

A plugin role like encoders: decoders are found through the entry-point group `lumen.media`
(our own `image` decoder, plugins/image, is registered the same way in pyproject.toml), so
the next media type (videos, RAW files, a made-up format in a test) is one module and the
indexer never knows about formats. It asks this registry.

Choosing a decoder for a file takes two steps:
- by name, cheaply: `is_media_name` is the scanner's per-file test (a re-scan runs it for
  every file of every library), the union of what every decoder claims by extension;
- by content, when decoding: the first bytes are offered to each decoder's `sniff`, the ones
  that claim the extension first. Content wins over the name, so a `.nef` that is really a
  JPEG is decoded as a JPEG.

Qt-free; a decoder's module must be cheap to import (heavy libraries load on first use).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from desktop.images import ImageError, ImageMeta, checked_path, has_extension, lower_thread_priority

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

MEDIA_GROUP = "lumen.media"
SNIFF_BYTES = 64  # every container we know names itself in its first few bytes
MediaError = ImageError  # a file that cannot be used: `reason` is a short sentence for the user


@dataclass(frozen=True, slots=True)
class MediaMeta(ImageMeta):
    """ImageMeta plus what a video (or a geotagged file) adds. A still's decoder may return a
    plain ImageMeta: every extra field has its default there (see `meta_fields`)."""

    kind: str = "image"  # "image" | "video" | "raw"
    duration_s: float | None = None
    latitude: float | None = None  # WGS84 degrees
    longitude: float | None = None


def meta_fields(meta: ImageMeta) -> dict[str, object]:
    """The catalog's photo columns from any decoder's metadata."""
    return {
        "width": meta.width,
        "height": meta.height,
        "format": meta.format,
        "taken_at": meta.taken_at,
        "camera": meta.camera,
        "kind": getattr(meta, "kind", "image"),
        "duration_s": getattr(meta, "duration_s", None),
        "latitude": getattr(meta, "latitude", None),
        "longitude": getattr(meta, "longitude", None),
    }


@dataclass(frozen=True, slots=True)
class Frame:
    """One picture to encode: the still itself, or a moment of a video."""

    image: Image.Image  # RGB, the right way up
    at_s: float | None = None  # seconds into the item; None for a still


@dataclass(frozen=True, slots=True)
class Decoded:
    frames: list[Frame]  # at least one
    meta: MediaMeta
    decoder: str  # the decoder's name, e.g. "image"

    @property
    def image(self) -> Image.Image:
        """The first frame: a still's pixels, a video's poster."""
        return self.frames[0].image


@runtime_checkable
class MediaDecoder(Protocol):
    name: str  # stable, e.g. "image", "video"
    extensions: frozenset[str]  # lower case with the dot: the names it claims before sniffing

    def sniff(self, head: bytes, path: str) -> bool:
        """Whether these first bytes are a file this decoder reads (path for its name only)."""
        ...

    def read_meta(self, path: str) -> MediaMeta:
        """Size, kind, time taken, camera... without decoding pixels where possible."""
        ...

    def decode(self, path: str, size: int) -> Decoded:
        """Frames for the encoder, each with its short side >= size (never upscaled), and the
        metadata from the same open of the file. Raises MediaError with the reason."""
        ...

    def thumbnail(self, path: str, size: int) -> Image.Image:
        """RGB, longer side `size` at most, the right way up."""
        ...


class Registry:
    """The installed decoders, loaded once from the entry points (reload() to look again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decoders: list[MediaDecoder] | None = None
        self._extensions: frozenset[str] = frozenset()

    def decoders(self) -> list[MediaDecoder]:
        if self._decoders is None:
            with self._lock:
                if self._decoders is None:
                    found: list[MediaDecoder] = []
                    for ep in sorted(entry_points(group=MEDIA_GROUP), key=lambda e: e.name):
                        try:
                            obj = ep.load()
                            decoder = obj() if isinstance(obj, type) else obj
                        except Exception:  # one broken plugin must not stop the others
                            log.exception("media decoder %s (%s) failed to load", ep.name, ep.value)
                            continue
                        found.append(decoder)
                    # The built-in still-image decoder answers last: a specific one wins a tie.
                    found.sort(key=lambda d: d.name == "image")
                    self._extensions = frozenset(e for d in found for e in d.extensions)
                    self._decoders = found
        return self._decoders

    def reload(self) -> None:
        with self._lock:
            self._decoders = None

    @property
    def extensions(self) -> frozenset[str]:
        self.decoders()
        return self._extensions

    def by_name(self, name: str) -> MediaDecoder:
        for d in self.decoders():
            if d.name == name:
                return d
        raise KeyError(f"no media decoder named {name!r} is installed")

    def for_path(self, path: str | os.PathLike[str]) -> MediaDecoder:
        """The decoder for this file's content (MediaError when none reads it)."""
        p = checked_path(path)
        try:
            with open(p, "rb") as f:
                head = f.read(SNIFF_BYTES)
        except FileNotFoundError as e:
            raise MediaError(p, "file vanished") from e
        except OSError as e:
            raise MediaError(p, f"cannot read file ({e.strerror or e})") from e
        ext = os.path.splitext(p)[1].lower()
        ordered = sorted(self.decoders(), key=lambda d: ext not in d.extensions)  # stable
        for d in ordered:
            if d.sniff(head, p):
                return d
        # No decoder knows these bytes: the one named by the extension says why (truncated,
        # corrupt...), which is a better reason for the user than "unrecognised".
        if ordered and ext in ordered[0].extensions:
            return ordered[0]
        raise MediaError(p, "unsupported or unrecognised file format")


registry = Registry()


def is_media_name(name: str) -> bool:
    """The scanner's per-file test on a bare name: an extension some decoder claims."""
    return has_extension(name, registry.extensions)


def is_media_path(path: str | os.PathLike[str]) -> bool:
    return is_media_name(os.path.basename(os.fsdecode(path)))


def decode(path: str | os.PathLike[str], size: int = 256) -> Decoded:
    p = os.fsdecode(path)
    return registry.for_path(p).decode(p, size)


def load_for_encoding(path: str | os.PathLike[str], size: int = 256) -> Image.Image:
    """The first frame, short side >= size: what a query image or a caption needs."""
    return decode(path, size).image


def read_meta(path: str | os.PathLike[str]) -> MediaMeta:
    p = os.fsdecode(path)
    return registry.for_path(p).read_meta(p)


def make_thumbnail(path: str | os.PathLike[str], size: int) -> Image.Image:
    p = os.fsdecode(path)
    return registry.for_path(p).thumbnail(p, size)


# --- videos (issue 15): optional decoder capabilities, asked for by name ---
def frame_at(path: str | os.PathLike[str], at_s: float, size: int) -> Image.Image:
    """The picture at `at_s` seconds of a video (longer side <= size); a still's thumbnail
    for decoders with no notion of time."""
    p = os.fsdecode(path)
    decoder = registry.for_path(p)
    fn = getattr(decoder, "frame_at", None)
    return fn(p, at_s, size) if fn is not None else decoder.thumbnail(p, size)


def clock(seconds: float) -> str:
    """A position or a length as players show it: 0:03.5, 2:03.5, 1:02:03.5."""
    m, s = divmod(max(0.0, seconds), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def player_command(path: str | os.PathLike[str], at_s: float) -> list[str]:
    """A command that plays the file from `at_s`, or [] (open it with the default app)."""
    p = os.fsdecode(path)
    fn = getattr(registry.for_path(p), "player_command", None)
    return list(fn(p, at_s)) if fn is not None else []


def iter_decoded(
    paths: Iterable[str], size: int = 256, workers: int = 2, lookahead: int = 32, nice: int = 0,
) -> Iterator[tuple[str, Decoded | MediaError]]:
    """Decode ahead of the consumer on a few threads; yield (path, Decoded or error) in
    input order.

    Pillow (and FFmpeg) release the GIL while decoding, so this overlaps with encoding. At
    most `lookahead` results exist at once, which bounds memory on a 100k-photo library.
    Only MediaError is turned into a value; anything else is a bug and propagates.
    `paths` is consumed lazily (a generator that pages through the catalog works).
    nice > 0 lowers the decode threads' priority (Linux only) so a CPU-bound consumer, e.g.
    torch's intra-op threads, is not preempted by decoders mid parallel region.
    """

    def work(p: str) -> Decoded | MediaError:
        try:
            return decode(p, size)
        except MediaError as e:
            return e

    if workers < 1:  # handy when debugging: decode in the caller's thread
        for p in paths:
            yield p, work(p)
        return
    pending: deque[tuple[str, Future[Decoded | MediaError]]] = deque()
    pool = ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="lumen-decode", initializer=lower_thread_priority, initargs=(nice, True)
    )
    try:
        for p in paths:
            pending.append((p, pool.submit(work, p)))
            if len(pending) >= max(1, lookahead):
                q, fut = pending.popleft()
                yield q, fut.result()
        while pending:
            q, fut = pending.popleft()
            yield q, fut.result()
    finally:  # also runs when the consumer stops early (generator closed)
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = [
    "Decoded",
    "Frame",
    "MediaDecoder",
    "MediaError",
    "MediaMeta",
    "clock",
    "decode",
    "frame_at",
    "is_media_name",
    "is_media_path",
    "iter_decoded",
    "load_for_encoding",
    "make_thumbnail",
    "meta_fields",
    "player_command",
    "read_meta",
    "registry",
]
