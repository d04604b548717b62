"""`Jobs`: the window's one object for background work. Widgets never call a slow `Library`
method themselves: they ask `Jobs`, and the answer comes back as a Qt signal on the GUI
thread. Searches carry a sequence number; an older query finishing late is dropped, so
the grid only ever shows the newest query's results."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from PySide6.QtCore import QObject, Signal

from desktop.catalog import Caption, Photo
from desktop.encoders import (
    CAPTIONER_GROUP,
    ENCODER_GROUP,
    ModelInfo,
    installed,
)
from desktop.jobs.indexing import IndexingJob
from desktop.jobs.thumbnails import ThumbnailLoader
from desktop.jobs.workers import Worker, WorkerPool, encoder_gate, ensure_encoder, log_failure
from desktop.library import Filters, Hit, Library, LibraryStatus
from desktop.timeline import date_terms

log = logging.getLogger(__name__)

SEARCH_K = 500  # results per text/image query; the grid copes with far more
BROWSE_LIMIT = 100_000  # photos shown when there is no query


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
    # "from:2023-05 to:2023-06" / "in:2024" in the bar: date filters, with or without words.
    rest, date_from, date_to = date_terms(query.text)
    filters = Filters(date_from=date_from, date_to=date_to) if date_from or date_to else None
    text = rest.strip() or None
    if filters is not None and not text and not query.images and query.similar_to is None:
        allowed = set(lib.allowed_ids(filters).tolist())  # type: ignore[union-attr]
        return [h for h in browse(lib) if h.photo.id in allowed], True
    ensure_encoder(lib)
    if query.similar_to is not None and not text and not query.images:
        return lib.similar(query.similar_to, k=k, filters=filters), False
    image_paths = list(query.images)
    if query.similar_path:
        image_paths.append(query.similar_path)
    return lib.search(text, image_paths, k=k, filters=filters), False


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
                log_failure(f"plugin {entry.name}", exc)
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
        self.indexing = IndexingJob(lib, parent=self)
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
            self.indexing.request_index()

        return self.run(self.library.add_root, folder, on_result=added)

    def remove_root(self, folder: str) -> Worker:
        def removed(_: object) -> None:
            self.library_changed.emit()
            self.indexing.restart_watch()

        return self.run(self.library.remove_root, folder, on_result=removed)

    def set_watch(self, folder: str, on: bool) -> Worker:
        def done(_: object) -> None:
            self.library_changed.emit()
            self.indexing.restart_watch()

        return self.run(self.library.set_watch, folder, on, on_result=done)

    def status(self, on_result: Callable[[LibraryStatus], None]) -> Worker:
        def status() -> LibraryStatus:
            with encoder_gate:  # status() creates the encoder when nobody has yet
                return self.library.status()

        return self.run(status, on_result=on_result)

    # -- captions --
    def caption(self, photo: Photo, spec: str | None, on_result: Callable[[str], None],
                on_error: Callable[[str], None]) -> Worker:
        return self.run(self._caption, photo, spec, on_result=on_result, on_error=on_error)

    def _caption(self, photo: Photo, spec: str | None) -> str:

        return self.library.caption_photo(photo.id, spec)

    # -- shutdown --
    def shutdown(self) -> None:
        """Stop the watcher and indexer (finished batches are kept) and wait for workers."""
        if self._closed:
            return
        self._closed = True
        started = time.monotonic()
        self.indexing.stop()
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


