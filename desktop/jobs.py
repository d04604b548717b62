"""THE threading boundary between Qt and the core.

Widgets never call a slow `Library` method themselves: they ask `Jobs`, and the answer
comes back as a Qt signal on the GUI thread. Three kinds of thread live here:

- `Indexer`: one long-running QThread that owns `Library.index` and `Library.watch`
  (and loads the model before the first batch). Pause, resume, re-index, encoder
  switches and shutdown are requests it picks up between batches.
- `WorkerPool`: a small pool for interactive work — searches, photo details, previews,
  captions, library edits. Searches carry a sequence number; an older query finishing
  late is dropped, so the grid only ever shows the newest query's results.
- `ThumbnailLoader`: its own pool, newest request first, so a fast scroll shows the
  thumbnails the user is looking at, not the ones scrolled past.

Workers report errors by signal and log them; nothing is swallowed. Workers produce
QImages or plain data, never QPixmaps (those are GUI-thread only).

Why Python threads and not QThreadPool: a QRunnable's Python thread state is created and
destroyed around every run(), which empties `threading.local` — and Library keeps each
thread's read-only SQLite connection there. On QThreadPool every job would open (and
leak) a new connection; long-lived Python threads keep theirs.
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal
from PySide6.QtGui import QImage

from desktop import images
from desktop.catalog import Caption, Photo
from desktop.encoders import (
    CAPTIONER_GROUP,
    ENCODER_GROUP,
    Encoder,
    EncoderError,
    ModelInfo,
    UnknownPluginError,
    WeightsUnavailableError,
    installed,
)
from desktop.library import Hit, IndexReport, Library, LibraryError, LibraryStatus, Progress
from desktop.ui import compat  # noqa: F401 - guards against a PySide6 refcount bug before any Qt work

log = logging.getLogger(__name__)

SEARCH_K = 500  # results per text/image query; the grid copes with far more
BROWSE_LIMIT = 100_000  # photos shown when there is no query
THUMB_DISK_SIZE = 256  # cached on disk (hash + size); scaled to the cell in the worker
PREVIEW_SIZE = 1024
INDEXER_NICE = 10  # background work yields the CPU to the GUI thread...
THUMBNAIL_NICE = 5  # ...and so do thumbnails, a little less (they are what the user waits for)
PROGRESS_INTERVAL_S = 0.1  # progress signals per second are capped: the GUI repaints, not counts

# Library.encoder creates the encoder on first access without a lock; two workers
# asking at once would build two. Everything in this module goes through the gate.
_encoder_gate = threading.Lock()


def ensure_encoder(lib: Library) -> Encoder:
    with _encoder_gate:
        return lib.encoder


def encoder_message(spec: str, exc: BaseException) -> str:
    """What a user reads when the encoder cannot be used, with what to do about it."""
    if isinstance(exc, WeightsUnavailableError):
        return (f"No weights offline for the “{spec}” encoder: choose an encoder in Settings "
                f"or give --weights PATH. ({exc})")
    if isinstance(exc, UnknownPluginError):
        return f"The encoder “{spec}” is not installed: choose an encoder in Settings. ({exc})"
    return f"The encoder “{spec}” cannot be used: choose an encoder in Settings or give --weights PATH. ({exc})"


def user_message(exc: BaseException) -> str:
    if isinstance(exc, LibraryError | EncoderError | images.ImageError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    return f"Unexpected error: {type(exc).__name__}: {exc} (details in the log)"


def _log_failure(what: str, exc: BaseException) -> None:
    # Expected, user-facing failures need no traceback; anything else is a bug.
    if isinstance(exc, LibraryError | EncoderError | images.ImageError | OSError):
        log.warning("%s failed: %s", what, exc)
    else:
        log.error("%s failed", what, exc_info=exc)


# ---- generic workers ------------------------------------------------------------------
class WorkerSignals(QObject):
    progressed = Signal(object)
    returned = Signal(object)
    failed = Signal(str)  # a sentence for the user; the log has the details
    finished = Signal()


class Worker:
    """One job on a pool thread: `fn(*args, **kwargs)`.

    A generator function reports progress by yielding (each value is emitted as
    `progressed`) and is cancelled between yields; its `return` value is the result. A
    function with a `cancel` parameter gets the worker's `threading.Event`.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.signals = WorkerSignals()
        self.name = getattr(fn, "__name__", repr(fn))
        self.cancel_event = threading.Event()
        try:
            if "cancel" in inspect.signature(fn).parameters:
                kwargs["cancel"] = self.cancel_event
        except (TypeError, ValueError):  # builtins without a signature
            pass
        self._call = lambda: fn(*args, **kwargs)

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def run(self) -> None:
        try:
            result = self._call()
            if inspect.isgenerator(result):
                result = self._drive(result)
            if not self.cancelled:
                self.signals.returned.emit(result)
        except Exception as exc:  # noqa: BLE001 - reported to the user and logged, never swallowed
            _log_failure(self.name, exc)
            if not self.cancelled:
                self.signals.failed.emit(user_message(exc))
        finally:
            self.signals.finished.emit()

    def _drive(self, gen: Generator[Any, None, Any]) -> Any:
        while True:
            if self.cancelled:
                gen.close()
                return None
            try:
                value = next(gen)
            except StopIteration as stop:
                return stop.value
            self.signals.progressed.emit(value)


class WorkerPool:
    """A few long-lived Python threads running Workers (see the module note on why)."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self._executor = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._live: set[Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self, worker: Worker) -> Worker:
        with self._lock:
            if self._closed:
                log.debug("%s is shut down; %s not started", self.name, worker.name)
                return worker
            # Hold the worker until its `finished` reaches the GUI thread: if its signals
            # object were collected earlier, Qt would drop the queued results with it.
            self._live.add(worker)
        worker.signals.finished.connect(lambda: self._release(worker))
        self._executor.submit(worker.run)
        return worker

    def _release(self, worker: Worker) -> None:
        with self._lock:
            self._live.discard(worker)

    def active(self) -> int:
        with self._lock:
            return len(self._live)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            for worker in self._live:
                worker.cancel()
        self._executor.shutdown(wait=wait, cancel_futures=True)


# ---- thumbnails -----------------------------------------------------------------------
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


# ---- the indexer ----------------------------------------------------------------------
class _Throttle:
    """Passes on at most one Progress per interval, but always stage changes and ends."""

    def __init__(self, emit_fn: Callable[[Progress], None], interval: float = PROGRESS_INTERVAL_S) -> None:
        self.emit = emit_fn
        self.interval = interval
        self.last = 0.0
        self.stage = ""

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        end = p.total > 0 and p.done >= p.total
        if p.stage != self.stage or end or now - self.last >= self.interval:
            self.last, self.stage = now, p.stage
            self.emit(p)


class _LoopThread(QThread):
    def __init__(self, target: Callable[[], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target = target
        self.setObjectName("lumen-indexer")

    def run(self) -> None:
        self._target()


class Indexer(QObject):
    """The one long-running worker: loads the model, indexes, then watches.

    Requests (index again, pause, resume, switch encoder, stop) are flags read between
    batches; the cancel event of a running `Library.index` or `Library.watch` is set to
    make it return early. Library.index is resumable, so pausing is cancelling: every
    finished batch is in the catalog and resume continues from there.
    """

    progressed = Signal(object)  # Progress
    indexed = Signal(object)  # IndexReport (also for a cancelled run)
    changed = Signal(int, object)  # a watcher batch: number of changes, IndexReport
    model_loading = Signal(str)  # encoder spec
    model_loaded = Signal(str)  # encoder id
    model_failed = Signal(str)  # actionable message (no weights offline, ...)
    encoder_switched = Signal(str)  # new spec
    failed = Signal(str)
    state_changed = Signal(str)  # loading | indexing | watching | idle | paused | stopped

    def __init__(self, lib: Library, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.lib = lib
        self._cond = threading.Condition()
        self._interrupt = threading.Event()
        self._want_index = False
        self._want_watch = False
        self._paused = False
        self._stopping = False
        self._pending_encoder: tuple[str, str | None, str] | None = None
        self._model_ok = False
        self._state = "idle"
        self._thread = _LoopThread(self._loop)
        self.last_report: IndexReport | None = None

    # -- requests (GUI thread) --
    def start(self) -> None:
        """Start the thread and index once (which resumes an interrupted run)."""
        with self._cond:
            self._want_index = True
        if not self._thread.isRunning():
            self._thread.start()

    def request_index(self) -> None:
        with self._cond:
            self._want_index = True
            if self._state in ("watching", "idle"):
                self._interrupt.set()
            self._cond.notify_all()

    def restart_watch(self) -> None:
        """Watch settings changed: restart the watcher with the current roots."""
        with self._cond:
            self._want_watch = True
            if self._state == "watching":
                self._interrupt.set()
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._interrupt.set()
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._want_index = True
            self._cond.notify_all()

    def switch_encoder(self, spec: str, weights: str | None, device: str) -> None:
        with self._cond:
            self._pending_encoder = (spec, weights, device)
            self._interrupt.set()
            self._cond.notify_all()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop the watcher, cancel indexing between batches and wait. True once stopped."""
        with self._cond:
            self._stopping = True
            self._interrupt.set()
            self._cond.notify_all()
        if not self._thread.isRunning():
            return True
        ok = self._thread.wait() if timeout_s is None else self._thread.wait(int(timeout_s * 1000))
        if not ok:
            log.warning("the indexer did not stop within %.0f s", timeout_s or 0)
        return bool(ok)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def state(self) -> str:
        return self._state

    def is_running(self) -> bool:
        return self._thread.isRunning()

    # -- the loop (indexer thread) --
    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    def _loop(self) -> None:
        log.debug("indexer started")
        images.lower_thread_priority(INDEXER_NICE)  # and its hash/decode pools
        try:
            while True:
                with self._cond:
                    while not self._stopping and (
                        self._paused or not (self._want_index or self._want_watch or self._pending_encoder)
                    ):
                        self._state = "paused" if self._paused else "idle"
                        self.state_changed.emit(self._state)
                        self._cond.wait()
                    if self._stopping:
                        break
                    self._interrupt.clear()
                    pending, self._pending_encoder = self._pending_encoder, None
                    run_index, self._want_index = self._want_index, False
                    self._want_watch = False
                if pending is not None:
                    if not self._switch(*pending):
                        continue
                    run_index = True  # the new encoder's vectors, while search keeps the old ones
                if not self._model_ok:
                    self._model_ok = self._load_model()
                ok = True
                if run_index:
                    ok = self._index()
                if ok and self._model_ok and not self._interrupt.is_set():
                    self._watch()
        except Exception as exc:  # noqa: BLE001 - the loop itself must never die silently
            log.error("indexer crashed", exc_info=exc)
            self.failed.emit(user_message(exc))
        finally:
            self._set_state("stopped")
            log.debug("indexer stopped")

    def _switch(self, spec: str, weights: str | None, device: str) -> bool:
        try:
            self.lib.device = device
            with _encoder_gate:
                self.lib.set_encoder(spec, weights)
        except Exception as exc:  # noqa: BLE001
            _log_failure(f"switching to encoder {spec}", exc)
            self.model_failed.emit(encoder_message(spec, exc))
            return False
        log.info("encoder switched to %s; re-indexing in the background", spec)
        self._model_ok = False
        self.encoder_switched.emit(spec)
        return True

    def _load_model(self) -> bool:
        spec = self.lib.encoder_spec
        self._set_state("loading")
        self.model_loading.emit(spec)
        try:
            encoder = ensure_encoder(self.lib)
            load = getattr(encoder, "load", None)
            if callable(load):
                load()  # weights now, in this thread, not at the first query
        except Exception as exc:  # noqa: BLE001
            _log_failure(f"loading encoder {spec}", exc)
            self.model_failed.emit(encoder_message(spec, exc))
            return False
        self.model_loaded.emit(encoder.id)
        return True

    def _index(self) -> bool:
        self._set_state("indexing")
        throttle = _Throttle(self.progressed.emit)
        try:
            if self._model_ok:
                report = self.lib.index(progress=throttle, cancel=self._interrupt)
            else:
                # No usable encoder: still find and record the photos, so the user sees
                # them; encoding waits until an encoder is chosen.
                report = self.lib.scan(progress=throttle, cancel=self._interrupt)
                report.cancelled = self._interrupt.is_set()
        except Exception as exc:  # noqa: BLE001
            self._report_failure("indexing", "Indexing stopped", exc)
            return False
        self.last_report = report
        self.indexed.emit(report)
        if self._model_ok and not report.cancelled:
            self._caption_new(throttle)
        return not report.cancelled

    def _caption_new(self, progress: Callable[[Progress], None]) -> None:
        """Captions and tags for photos that have none yet, after each indexing pass.
        A captioner that cannot run is reported; the photos stay indexed and searchable."""
        from desktop import captions

        try:
            captions.caption_pending(self.lib, None, progress=progress, cancel=self._interrupt)
        except Exception as exc:  # noqa: BLE001
            _log_failure("captioning", exc)
            self.failed.emit(f"Captioning stopped: {user_message(exc)}")

    def _on_watch_batch(self, changes: list, report: IndexReport) -> None:
        self.changed.emit(len(changes), report)
        if report.encoded and self._model_ok:
            self._caption_new(_Throttle(self.progressed.emit))

    def _watch(self) -> None:
        roots = [r for r in self.lib.roots() if r.watch and r.online]
        if not roots:
            return
        with self._cond:
            # Under the lock that requests take: a request either sees "watching" (and
            # interrupts the watcher) or is seen here (and the loop serves it first).
            if self._want_index or self._pending_encoder or self._stopping or self._paused:
                return
            self._state = "watching"
        self.state_changed.emit("watching")
        try:
            self.lib.watch(
                self._interrupt,
                on_batch=self._on_watch_batch,
                progress=_Throttle(self.progressed.emit),
            )
        except Exception as exc:  # noqa: BLE001
            self._report_failure("watching", "Watching for changes stopped", exc)

    def _report_failure(self, what: str, stopped: str, exc: Exception) -> None:
        """Log it; an encoder failure marks the model unusable (the user can pick another),
        anything else is shown as `stopped: reason`."""
        _log_failure(what, exc)
        if isinstance(exc, EncoderError):
            self._model_ok = False
            self.model_failed.emit(encoder_message(self.lib.encoder_spec, exc))
        else:
            self.failed.emit(f"{stopped}: {user_message(exc)}")


# ---- queries --------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """What the search bar holds: words, dropped images, and maybe "similar to" a photo."""

    text: str = ""
    images: tuple[str, ...] = ()
    similar_to: int | None = None  # photo id ("Find similar")
    similar_path: str | None = None

    def empty(self) -> bool:
        return not (self.text.strip() or self.images or self.similar_to is not None)


@dataclass(frozen=True)
class Results:
    query: Query
    hits: list[Hit]
    seq: int
    seconds: float
    browsing: bool  # no query: the whole library, newest first


@dataclass(frozen=True)
class Details:
    photo: Photo
    paths: list[str]
    captions: list[Caption]  # the one to show first
    tags: list[str]  # what the user sees: their own set if they edited it, else the machines'


@dataclass
class PluginModels:
    name: str
    group: str
    default: str | None
    models: list[ModelInfo] = field(default_factory=list)
    error: str | None = None


def _run_query(lib: Library, query: Query, k: int) -> tuple[list[Hit], bool]:
    if query.empty():
        return browse(lib), True
    ensure_encoder(lib)
    text = query.text.strip() or None
    if query.similar_to is not None and not text and not query.images:
        return lib.similar(query.similar_to, k=k), False
    image_paths = list(query.images)
    if query.similar_path:
        image_paths.append(query.similar_path)
    return lib.search(text, image_paths, k=k), False


def browse(lib: Library, limit: int = BROWSE_LIMIT) -> list[Hit]:
    """Every live photo, newest first (taken-at, else file time)."""
    photos = lib.catalog.live_photos(limit)

    def when(p: Photo) -> str:
        return p.taken_at or datetime.fromtimestamp(p.mtime).isoformat()

    photos.sort(key=lambda p: (when(p), p.id), reverse=True)
    return [Hit(p, 0.0) for p in photos]


def photo_details(lib: Library, photo_id: int) -> Details | None:
    cat = lib.catalog
    photo = cat.photos([photo_id]).get(photo_id)
    if photo is None:
        return None
    effective = getattr(cat, "effective_tags", None)
    tags = effective(photo_id) if effective else list(dict.fromkeys(t for t, _, _ in cat.tags(photo_id)))
    return Details(photo, cat.paths_of(photo_id), cat.captions(photo_id), tags)


def load_preview(lib: Library, photo: Photo, size: int = PREVIEW_SIZE) -> QImage:
    path = lib.thumbnail(photo, size)
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


def list_plugins() -> list[PluginModels]:
    """Installed encoders and captioners with their models (imports the plugin modules,
    which is cheap by contract: no torch at module top)."""
    out = []
    for group in (ENCODER_GROUP, CAPTIONER_GROUP):
        for entry in installed(group):
            try:
                plugin = entry.load()
                out.append(PluginModels(entry.name, group, plugin.default_model, list(plugin.models())))
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
                _log_failure(f"plugin {entry.name}", exc)
                out.append(PluginModels(entry.name, group, None, [], f"{type(exc).__name__}: {exc}"))
    return out


class Jobs(QObject):
    """What the widgets use to reach the library without blocking the GUI thread."""

    searched = Signal(object)  # Results — only the newest query's
    search_failed = Signal(str)
    library_changed = Signal()  # roots added/removed/edited
    failed = Signal(str)  # a library edit that did not work

    def __init__(self, lib: Library, thumb_cell: int = 168, dpr: float = 1.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.library = lib
        self.pool = WorkerPool("lumen-jobs", threads=2)
        self.thumbnails = ThumbnailLoader(lib, thumb_cell, dpr, parent=self)
        self.indexer = Indexer(lib, parent=self)
        self._seq = 0
        self._search_worker: Worker | None = None
        self._closed = False

    # -- generic --
    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_progress: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> Worker:
        worker = Worker(fn, *args, **kwargs)
        if on_result is not None:
            worker.signals.returned.connect(on_result)
        worker.signals.failed.connect(on_error if on_error is not None else self.failed.emit)
        if on_progress is not None:
            worker.signals.progressed.connect(on_progress)
        return self.pool.start(worker)

    # -- search --
    def search(self, query: Query, k: int = SEARCH_K) -> int:
        """Start a query; returns its sequence number. Results of older ones are dropped."""
        self._seq += 1
        seq = self._seq
        if self._search_worker is not None:
            self._search_worker.cancel()  # only suppresses its signals: the core call has no cancel
        started = time.monotonic()

        def done(result: tuple[list[Hit], bool]) -> None:
            self._searched(seq, query, result, time.monotonic() - started)

        self._search_worker = self.run(
            _run_query, self.library, query, k,
            on_result=done, on_error=lambda message: self._search_error(seq, message),
        )
        return seq

    @property
    def latest_seq(self) -> int:
        return self._seq

    def _searched(self, seq: int, query: Query, result: tuple[list[Hit], bool], seconds: float) -> None:
        if seq != self._seq:
            log.debug("dropping results of stale query #%d (newest is #%d)", seq, self._seq)
            return
        hits, browsing = result
        self.searched.emit(Results(query, hits, seq, seconds, browsing))

    def _search_error(self, seq: int, message: str) -> None:
        if seq == self._seq:
            self.search_failed.emit(message)

    # -- library edits (a write waits for the writer thread: never on the GUI thread) --
    def add_root(self, folder: str) -> Worker:
        def added(_: object) -> None:
            self.library_changed.emit()
            self.indexer.request_index()

        return self.run(self.library.add_root, folder, on_result=added)

    def remove_root(self, folder: str) -> Worker:
        def removed(_: object) -> None:
            self.library_changed.emit()
            self.indexer.restart_watch()

        return self.run(self.library.remove_root, folder, on_result=removed)

    def set_watch(self, folder: str, on: bool) -> Worker:
        def done(_: object) -> None:
            self.library_changed.emit()
            self.indexer.restart_watch()

        return self.run(self.library.set_watch, folder, on, on_result=done)

    def status(self, on_result: Callable[[LibraryStatus], None]) -> Worker:
        def status() -> LibraryStatus:
            with _encoder_gate:  # status() creates the encoder when nobody has yet
                return self.library.status()

        return self.run(status, on_result=on_result)

    # -- captions --
    def caption(self, photo: Photo, spec: str | None, on_result: Callable[[str], None],
                on_error: Callable[[str], None]) -> Worker:
        return self.run(self._caption, photo, spec, on_result=on_result, on_error=on_error)

    def _caption(self, photo: Photo, spec: str | None) -> str:
        from desktop import captions  # the captioning feature: Qt-free, stores under its source

        return captions.caption_photo(self.library, photo.id, spec)

    # -- shutdown --
    def shutdown(self) -> None:
        """Stop the watcher and indexer (finished batches are kept) and wait for workers."""
        if self._closed:
            return
        self._closed = True
        started = time.monotonic()
        self.indexer.stop()
        self.thumbnails.shutdown()
        self.pool.shutdown(wait=True)
        log.info("background work stopped in %.2f s", time.monotonic() - started)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


__all__ = [
    "Details", "Indexer", "Jobs", "PluginModels", "Query", "Results", "ThumbnailLoader", "Worker",
    "WorkerPool", "browse", "encoder_message", "ensure_encoder", "format_duration", "list_plugins",
    "load_preview", "load_small_image", "photo_details", "user_message",
]
