"""The video decoder (.mp4 .mov .m4v .avi .3gp .mkv .webm): PyAV (FFmpeg's bindings) behind
the media-decoder contract of desktop/media.py.

A video becomes a few frames to encode, each with its time (`Frame.at_s`):
- the stream is decoded with FFmpeg's own threads, B-frames skipped, and only the
  frames kept are converted (at reduced size); videos longer than KEYFRAMES_AFTER_S are
  decoded keyframes only (a phone writes one every second or two,
  and decoding a whole 10-minute 4K clip would take minutes);
- a frame is kept when it differs from the last kept one (mean absolute difference of
  16x16 colour copies above SCENE_DIFF: a cut, a pan to something else), or when the
  floor (FLOOR_S seconds; a quarter of a short clip) passed since the last kept one, so a
  slow change still gets sampled; the floor grows for long videos so that at most
  MAX_FRAMES are kept, thinned evenly;
- the first frame that is not black is the poster (frames[0]): the grid's thumbnail and
  the vector for "similar photos".
Metadata comes from the container: duration, display size (rotation applied), creation
time, camera make/model and GPS (QuickTime ISO 6709 location tags).

PyAV is imported on first use, so this module costs nothing to import.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import numpy as np
from PIL import Image

from desktop.images import checked_path
from desktop.media import Decoded, Frame, MediaError, MediaMeta

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(".mp4 .mov .m4v .avi .3gp .3g2 .mkv .webm".split())
MAX_FRAMES = 32  # per video: a 2-hour film and a 5-second clip both stay a few dozen vectors
FLOOR_S = 5.0  # at least one frame this often (grows for long videos, see _floor)
SCENE_DIFF = 20.0  # mean |difference| of 16x16 RGB copies, 0..255, that counts as a new scene
KEYFRAMES_AFTER_S = 30.0  # longer videos are decoded keyframes only
DARK = 16.0  # mean level below which a frame is too dark to be the poster

# ISO BMFF brands that are stills, not videos (HEIF/AVIF images, Canon CR3 raw files).
_STILL_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"crx ", b"jp2 "}
_QT_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}  # old QuickTime files start with these
_ISO6709 = re.compile(r"([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")
_TURN = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
         -180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270, -270: Image.Transpose.ROTATE_90}


def sniff_video(head: bytes) -> bool:
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return head[8:12] not in _STILL_BRANDS
    if len(head) >= 8 and head[4:8] in _QT_ATOMS:
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return True
    return head[:4] == b"\x1a\x45\xdf\xa3"  # EBML: Matroska and WebM


def _av() -> Any:
    try:
        import av
    except ImportError as e:  # the optional extra is not installed
        raise RuntimeError("videos need PyAV: pip install 'lumen[media]'") from e
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own warnings go to our reasons instead
    return av


def _floor(duration: float | None) -> float:
    """Seconds between frames when nothing changes: FLOOR_S, shorter for short clips (a
    4-second clip still gets ~4 frames), longer for long videos (MAX_FRAMES in all)."""
    if not duration:
        return FLOOR_S
    return max(duration / MAX_FRAMES, min(FLOOR_S, max(1.0, duration / 4)))


def _thin(items: list, keep: int) -> list:
    """`keep` items spread evenly, the first one (the poster candidates) always kept."""
    if len(items) <= keep:
        return items
    picks = np.linspace(0, len(items) - 1, keep).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def _fit_short(w: int, h: int, short: int) -> tuple[int, int]:
    """Output size with the short side = `short`, never upscaled, even numbers for swscale."""
    s = min(w, h)
    if s <= short:
        return w, h
    r = short / s
    return max(2, round(w * r)), max(2, round(h * r))


def _parse_iso6709(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    m = _ISO6709.match(text.strip())
    if not m:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return None  # 0,0 is what cameras write when they had no fix
    return lat, lon


def _iso_time(text: str | None) -> str | None:
    """FFmpeg's creation_time ("2019-07-24T08:25:57.000000Z") -> ISO 8601 without fractions;
    Apple's local creationdate ("2019-07-24T11:25:40+0300") keeps its offset."""
    if not text:
        return None
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|[+-]\d\d:?\d\d)?", text.strip())
    if not m:
        m2 = re.match(r"(\d{4})-(\d\d)-(\d\d)$", text.strip())  # AVI's "date"
        return f"{m2.group(1)}-{m2.group(2)}-{m2.group(3)}T00:00:00" if m2 and int(m2.group(1)) >= 1900 else None
    y, mo, d, hh, mm, ss, tz = m.groups()
    if int(y) < 1900:  # 1904-01-01: QuickTime's epoch, an unset clock
        return None
    if tz and tz != "Z" and ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    return f"{y}-{mo}-{d}T{hh}:{mm}:{ss}" + ("+00:00" if tz == "Z" else tz or "")


def _camera(tags: dict[str, str]) -> str | None:
    make = tags.get("com.apple.quicktime.make") or tags.get("make")
    model = tags.get("com.apple.quicktime.model") or tags.get("model")
    if make and model:
        return model if model.lower().startswith(make.lower()) else f"{make} {model}"
    return make or model or None


class _Opened:
    """One open video: container, its first video stream and the facts about it."""

    def __init__(self, path: str) -> None:
        av = _av()
        self.path = path
        try:
            self.container = av.open(path, metadata_errors="ignore")
        except av.error.InvalidDataError as e:
            # Mostly a copy cut short: MP4/MOV keep their index (moov) at the end.
            raise MediaError(path, f"truncated or damaged video ({_why(e)})") from e
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
            raise MediaError(path, f"not a readable video ({_why(e)})") from e
        try:
            if not self.container.streams.video:
                raise MediaError(path, "the file has no video stream")
            self.stream = self.container.streams.video[0]
            ctx = self.stream.codec_context
            if ctx is None or not ctx.width or not ctx.height:
                raise MediaError(path, f"unsupported video codec ({ctx.name if ctx else 'none'})")
        except BaseException:
            self.container.close()
            raise
        self.stream.thread_type = "AUTO"

    def close(self) -> None:
        self.container.close()

    @property
    def duration(self) -> float | None:
        s = self.stream
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
        if self.container.duration:
            return self.container.duration / 1_000_000
        return None

    def meta(self, rotation: int = 0) -> MediaMeta:
        tags = {k.lower(): v for k, v in {**self.container.metadata, **self.stream.metadata}.items()}
        w, h = self.stream.codec_context.width, self.stream.codec_context.height
        if abs(rotation) in (90, 270):
            w, h = h, w
        gps = _parse_iso6709(tags.get("com.apple.quicktime.location.iso6709") or tags.get("location")
                             or tags.get("location-eng"))
        taken = _iso_time(tags.get("com.apple.quicktime.creationdate")) or _iso_time(tags.get("creation_time")) \
            or _iso_time(tags.get("date"))
        # "mov,mp4,m4a,3gp,3g2,mj2" is one demuxer for many names: say what the file is called.
        fmt = os.path.splitext(self.path)[1].lstrip(".").upper() or self.container.format.name.split(",")[0].upper()
        return MediaMeta(
            w, h, f"{fmt}/{self.stream.codec_context.name}", taken, _camera(tags), None, self.stream.frames or 0,
            kind="video", duration_s=self.duration,
            latitude=gps[0] if gps else None, longitude=gps[1] if gps else None,
        )


def _why(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.split(":")[-1].strip() if "'" in text else text


def _picture(frame: Any, size: int, rotation: int, longer_side: bool = False) -> Image.Image:
    """The frame as an upright RGB image: short side `size` (for the encoder), or with
    `longer_side` at most `size` on its longer side (a thumbnail, a moment to show)."""
    if longer_side:
        r = min(1.0, size / max(frame.width, frame.height))
        w, h = max(2, round(frame.width * r)), max(2, round(frame.height * r))
    else:
        w, h = _fit_short(frame.width, frame.height, size)
    im = frame.to_image(width=w, height=h)
    turn = _TURN.get(rotation)
    return im.transpose(turn) if turn is not None else im


def _tiny(frame: Any) -> np.ndarray:
    """16x16 colour copy: enough to tell scenes apart (grey alone misses red -> blue)."""
    return frame.reformat(width=16, height=16, format="rgb24").to_ndarray().astype(np.float32)


class VideoDecoder:
    name = "video"
    extensions = VIDEO_EXTENSIONS

    def sniff(self, head: bytes, path: str) -> bool:
        return sniff_video(head)

    def read_meta(self, path: str) -> MediaMeta:
        p = checked_path(path)
        opened = _Opened(p)
        try:
            rotation = 0
            for frame in self._frames(opened, keyframes=True):
                rotation = int(getattr(frame, "rotation", 0) or 0)
                break
            return opened.meta(rotation)
        finally:
            opened.close()

    def _frames(self, opened: _Opened, keyframes: bool, every: bool = True) -> Any:
        """Decoded frames: keyframes only, or every frame, or (every=False) the reference
        frames only: B-frames are skipped, which halves the work on cameras that write them
        and moves a sampled scene change by one frame at most."""
        av = _av()
        if keyframes:
            opened.stream.codec_context.skip_frame = "NONKEY"
        elif not every:
            opened.stream.codec_context.skip_frame = "NONREF"
        try:
            yield from opened.container.decode(opened.stream)
        except (av.error.FFmpegError, EOFError) as e:
            # A truncated or damaged tail: what decoded so far is still the video's start.
            log.info("%s: video decoding stopped early (%s)", opened.path, _why(e))

    def decode(self, path: str, size: int) -> Decoded:
        p = checked_path(path)
        opened = _Opened(p)
        try:
            duration = opened.duration
            long_video = bool(duration and duration > KEYFRAMES_AFTER_S)
            frames, rotation = self._sample(opened, size, keyframes=long_video)
            if long_video and len(frames) < min(MAX_FRAMES, (duration or 0) / _floor(duration)) / 2:
                # Keyframes too sparse (a long GOP): decode every frame after all.
                opened.close()
                opened = _Opened(p)
                frames, rotation = self._sample(opened, size, keyframes=False)
            if not frames:
                raise MediaError(p, "no video frame could be decoded (corrupt or truncated file)")
            return Decoded(frames, opened.meta(rotation), self.name)
        finally:
            opened.close()

    def _sample(self, opened: _Opened, size: int, keyframes: bool) -> tuple[list[Frame], int]:
        floor = _floor(opened.duration)
        kept: list[tuple[Frame, float]] = []  # (frame, mean level)
        last_tiny: np.ndarray | None = None
        last_at = -1e9
        rotation = 0
        start: float | None = None
        for frame in self._frames(opened, keyframes, every=False):
            at = float(frame.time) if frame.time is not None else (last_at + floor if kept else 0.0)
            if start is None:
                start = at
                rotation = int(getattr(frame, "rotation", 0) or 0)
            at -= start  # seconds from the first frame: what a player's position means
            tiny = _tiny(frame)
            scene = last_tiny is None or float(np.abs(tiny - last_tiny).mean()) > SCENE_DIFF
            if scene or at - last_at >= floor:
                kept.append((Frame(_picture(frame, size, rotation), round(at, 3)), float(tiny.mean())))
                last_tiny, last_at = tiny, at
                if len(kept) > 4 * MAX_FRAMES:  # a flickering video: thin as we go, bounded memory
                    kept = _thin(kept, 2 * MAX_FRAMES)
        kept = _thin(kept, MAX_FRAMES)
        # The poster: the first frame that is not black (fade-ins), moved to the front.
        bright = next((i for i, (_, level) in enumerate(kept) if level >= DARK), 0)
        frames = [f for f, _ in kept]
        if bright:
            frames.insert(0, frames.pop(bright))
        return frames, rotation

    def frame_at(self, path: str, at_s: float, size: int) -> Image.Image:
        """The picture at `at_s` seconds (as Frame.at_s counts them), longer side <= size:
        the detail panel's view of the moment that matched."""
        p = checked_path(path)
        opened = _Opened(p)
        av = _av()
        try:
            s = opened.stream
            start = float(s.start_time * s.time_base) if s.start_time is not None and s.time_base else 0.0
            target = start + max(0.0, at_s)
            try:
                if s.time_base:
                    opened.container.seek(int(target / s.time_base), stream=s, backward=True)
            except av.error.FFmpegError:
                log.debug("%s: cannot seek; decoding from the start", p)
            picked, rotation = None, 0
            for frame in self._frames(opened, keyframes=False):
                if picked is None:
                    rotation = int(getattr(frame, "rotation", 0) or 0)
                picked = frame
                if frame.time is not None and frame.time >= target - 1e-3:
                    break
            if picked is None:
                raise MediaError(p, "no video frame could be decoded (corrupt or truncated file)")
            return _picture(picked, size, rotation, longer_side=True)
        finally:
            opened.close()

    def player_command(self, path: str, at_s: float) -> list[str]:
        """A command line that plays the video from `at_s`, for a player we know takes a
        start time (mpv, VLC); [] when none is installed (the caller then opens the file
        with the system's default app, from the start)."""
        import shutil

        if exe := shutil.which("mpv"):
            return [exe, f"--start={at_s:.2f}", path]
        mac_vlc = "/Applications/VLC.app/Contents/MacOS/VLC"
        if exe := shutil.which("vlc") or (mac_vlc if os.path.exists(mac_vlc) else None):
            return [exe, f"--start-time={at_s:.2f}", path]
        return []

    def thumbnail(self, path: str, size: int) -> Image.Image:
        p = checked_path(path)
        opened = _Opened(p)
        try:
            rotation, poster = 0, None
            for i, frame in enumerate(self._frames(opened, keyframes=True)):
                if i == 0:
                    rotation = int(getattr(frame, "rotation", 0) or 0)
                    poster = frame
                if _tiny(frame).mean() >= DARK:
                    poster = frame
                    break
                if i >= 8:
                    break
            if poster is None:
                raise MediaError(p, "no video frame could be decoded (corrupt or truncated file)")
            return _picture(poster, size, rotation, longer_side=True)
        finally:
            opened.close()


decoder_plugin = VideoDecoder
