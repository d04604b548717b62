"""Thumbnails and previews for the window: a pool of its own, newest request first, so a
fast scroll shows the thumbnails the user is looking at, not the ones scrolled past."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QImage

from desktop import images
from desktop.catalog import Photo
from desktop.jobs.workers import user_message
from desktop.library import Library, LibraryError

log = logging.getLogger(__name__)

THUMB_DISK_SIZE = 256  # cached on disk (hash + size); scaled to the cell in the worker
PREVIEW_SIZE = 1024
THUMBNAIL_NICE = 5  # ...and so do thumbnails, a little less (they are what the user waits for)


def thumb_key(photo: Photo) -> str:
    return photo.hash


class ThumbnailLoader(QObject):
    """Makes grid thumbnails off the GUI thread, most recent request first.

    The disk cache (Library.thumbnail: reduced-size decode, EXIF orientation, keyed by
    content hash and size) does the heavy part once; the worker then scales the cached
    JPEG to the cell so the GUI thread only wraps it in a QPixmap.
    """

    loaded = Signal(str, QImage)  # key, image fitted to the cell
    failed = Signal(str, str)  # key, reason a user can read

    MAX_QUEUE = 400  # older requests than this were scrolled past long ago

    def __init__(self, lib: Library, cell: int, dpr: float = 1.0, threads: int = 2,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.lib = lib
        self.dpr = dpr
        self.cell = round(cell * dpr)  # device pixels, the longer side of a grid thumbnail
        self.disk_size = THUMB_DISK_SIZE if self.cell <= THUMB_DISK_SIZE else 2 * THUMB_DISK_SIZE
        self._threads = threads
        self._executor = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lumen-thumbs")
        self._lock = threading.Lock()
        self._queue: OrderedDict[str, Photo] = OrderedDict()
        self._inflight: set[str] = set()
        self._running = 0
        self._stopped = False
        self.requested = 0  # how many thumbnails were asked for (tests: only visible ones)

    def request(self, photo: Photo) -> None:
        key = thumb_key(photo)
        with self._lock:
            if self._stopped or key in self._inflight:
                return
            if key not in self._queue:
                self.requested += 1
            self._queue[key] = photo
            self._queue.move_to_end(key)
            while len(self._queue) > self.MAX_QUEUE:
                self._queue.popitem(last=False)
            if self._running < self._threads:
                self._running += 1
                self._executor.submit(self._drain)

    def retain(self, keys: Iterable[str]) -> None:
        """Forget queued requests for items that are no longer on screen."""
        keep = set(keys)
        with self._lock:
            for key in [k for k in self._queue if k not in keep]:
                del self._queue[key]

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + len(self._inflight)

    def _drain(self) -> None:
        images.lower_thread_priority(THUMBNAIL_NICE)  # the GUI thread is served first
        while True:
            with self._lock:
                if self._stopped or not self._queue:
                    self._running -= 1
                    return
                key, photo = self._queue.popitem(last=True)
                self._inflight.add(key)
            try:
                self.loaded.emit(key, self._make(photo))
            except LibraryError as exc:
                log.info("no thumbnail: %s", exc)
                self.failed.emit(key, str(exc))
            except Exception as exc:  # noqa: BLE001 - logged with traceback and shown in the tooltip
                log.error("thumbnail of %s failed", photo.path, exc_info=exc)
                self.failed.emit(key, user_message(exc))
            finally:
                with self._lock:
                    self._inflight.discard(key)

    def _make(self, photo: Photo) -> QImage:
        path = self.lib.thumbnail(photo, self.disk_size)
        image = QImage(str(path))
        if image.isNull():
            raise LibraryError(f"{photo.path}: the cached thumbnail {path} cannot be read")
        if max(image.width(), image.height()) > self.cell:
            image = image.scaled(self.cell, self.cell, Qt.AspectRatioMode.KeepAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
        return image

    def shutdown(self) -> None:
        with self._lock:
            self._stopped = True
            self._queue.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)



def load_preview(lib: Library, photo: Photo, size: int = PREVIEW_SIZE, at_s: float | None = None) -> QImage:
    """at_s: a video's picture at that moment (the frame a search matched)."""
    path = lib.thumbnail(photo, size, at_s=at_s)
    image = QImage(str(path))
    if image.isNull():
        raise LibraryError(f"{photo.path}: preview cannot be read")
    return image


def load_small_image(path: str, size: int = 64) -> QImage:
    """A small oriented image of any file (search-bar chips), via the core's decoder."""
    im = images.make_thumbnail(path, size)
    data = im.tobytes()
    image = QImage(data, im.width, im.height, im.width * 3, QImage.Format.Format_RGB888)
    return image.copy()  # detach from `data`, which Python frees


