"""The one facade the window, the CLI and the HTTP server use: libraries, indexing,
watching, search, captions, tags and albums.

It wraps one open data dir (desktop/store.py: the writer thread, readers, indexes, the
encoder) and the pipelines that work on it: indexer.py (scan, encode, index), captions.py
(captions and tags), search.py (meaning and word search, smart albums). Those never import
this module; the layering test (tests/test_architecture.py) keeps it so.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from desktop import captions, duplicates, media, search, trash
from desktop.captions import DEFAULT_CAPTIONER, CaptionReport, parse_tags
from desktop.catalog import Album, Catalog, CatalogError, Photo, PhotoText, Root, Skipped
from desktop.duplicates import Group
from desktop.encoders import Encoder, EncoderError, better_encoder
from desktop.index import AnnoyBackend, IndexBackend
from desktop.indexer import Indexer, IndexReport
from desktop.rerank import Reranking
from desktop.scanner import Change, Watcher
from desktop.search import Filters, Found, Hit, Term, parse_query
from desktop.settings import Paths
from desktop.store import LibraryError, Progress, ReadOnlyError, Store
from desktop.trash import Trashed, TrashError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RootStatus:
    root: Root
    counts: dict[str, int]
    watching: str  # "watching", "off", or why not


@dataclass(frozen=True)
class LibraryStatus:
    home: str
    encoder: str
    encoder_id: str | None
    readonly: bool
    roots: list[RootStatus]
    vectors: dict[str, int]
    to_encode: int | None
    index_size: int
    index_built_at: float | None
    skipped: list[Skipped]
    encoder_reason: str = ""


class Library:
    """A Lumen data dir: catalog + indexes + the active encoder, and what can be done with it."""

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        encoder: str | None = None,
        weights: str | None = None,
        device: str = "auto",
        readonly: bool | None = None,
        model_process: bool = False,
        model_nice: int = 0,
        model_idle_s: float | None = None,
        index_backend: Callable[[Path, int], IndexBackend] = AnnoyBackend,
        rerank: bool | None = None,
    ) -> None:
        """`model_process`: run models in a child process (the window does: its process then
        never imports torch, see model_host.py); `model_nice` lowers that process's priority
        and `model_idle_s` ends it after that long unused (the next request restarts it).
        `readonly=None` attaches read-only when another Lumen writes here, False refuses.
        `index_backend(directory, dim)` makes each encoder's index (desktop/index.py).
        `rerank` overrides the re-ranking setting for this session (desktop/rerank.py)."""
        self.store = Store(home, encoder, weights, device, readonly, model_process, model_nice, model_idle_s,
                           index_backend)
        self.reranking = Reranking(self.store, rerank)  # the second stage of search
        self.indexer = Indexer(self.store, self.reranking)

    @classmethod
    def open(cls, home: str | os.PathLike | None = None, **kwargs: Any) -> Library:
        return cls(home, **kwargs)

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish pending writes, close connections, release the writer lock. Idempotent."""
        self.store.close()
        self.reranking.close()
        captions.forget_captioners(self.store)

    # ---- the data dir -------------------------------------------------------------------
    @property
    def paths(self) -> Paths:
        return self.store.paths

    @property
    def readonly(self) -> bool:
        return self.store.readonly

    @property
    def catalog(self) -> Catalog:
        """A read-only catalog connection for the calling thread."""
        return self.store.read()

    @property
    def device(self) -> str:
        return self.store.device

    @property
    def model_process(self) -> bool:
        return self.store.model_process

    # ---- encoder ------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        return self.store.encoder

    @property
    def encoder_spec(self) -> str:
        return self.store.encoder_spec

    @property
    def encoder_reason(self) -> str:
        """Why this encoder: "chosen with --encoder", "this library's encoder", or what `auto` found."""
        return self.store.encoder_reason

    @property
    def encoder_better(self) -> str | None:
        """A preferred encoder whose weights are not here yet (the window offers it)."""
        return better_encoder(self.encoder_spec)

    @property
    def weights(self) -> str | None:
        return self.store.weights

    def set_encoder(self, spec: str, weights: str | None = None, device: str | None = None) -> None:
        """Switch encoders. Old vectors stay; search uses them until the new ones are complete."""
        self.store.set_encoder(spec, weights, device)

    def query_encoder(self) -> Encoder:
        """The encoder whose vectors answer queries (the previous one while a new one catches up)."""
        return self.store.query_encoder()

    # ---- libraries ----------------------------------------------------------------------
    def roots(self) -> list[Root]:
        return self.store.read().roots()

    def add_root(self, path: str | os.PathLike) -> Root:
        folder = os.path.abspath(os.fspath(path))
        if not os.path.isdir(folder):
            raise LibraryError(f"{folder}: not a folder")
        if not os.access(folder, os.R_OK | os.X_OK):
            raise LibraryError(f"{folder}: permission denied")
        try:
            return self.store.write(lambda c: c.add_root(folder))
        except CatalogError as exc:
            raise LibraryError(str(exc)) from exc

    def remove_root(self, path: str | os.PathLike) -> None:
        root = self.store.read().root_by_path(os.fspath(path))
        if root is None:
            raise LibraryError(f"{path}: not a library")
        self.store.write(lambda c: c.remove_root(root.id))

    def set_watch(self, path: str | os.PathLike, on: bool) -> None:
        root = self.store.read().root_by_path(os.fspath(path))
        if root is None:
            raise LibraryError(f"{path}: not a library")
        self.store.write(lambda c: c.update_root(root.id, watch=int(on)))

    # ---- indexing (desktop/indexer.py does the work) -----------------------------------
    def index(
        self,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        cluster: str | None = None,
        cluster_batch: int | None = None,
    ) -> IndexReport:
        """Scan every root, encode what is new, rebuild the ANN index. Resumable.
        `cluster`: a Ray address (auto, ray://host:10001, host:port, or local) that decodes
        and encodes the new photos instead of this process (desktop/cluster.py); the scan
        and every catalog write stay here. `cluster_batch`: photos per Ray task."""
        self.store.require_writer()
        backend = None
        if cluster:
            from desktop.cluster import RayBackend  # Ray is an optional extra: import on use

            backend = RayBackend(self.store, cluster, **({"batch": cluster_batch} if cluster_batch else {}))
        try:
            with self.store.storage_errors():
                return self.indexer.index(progress, cancel, backend)
        finally:
            if backend is not None:
                backend.close()

    def scan(
        self, progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None
    ) -> IndexReport:
        self.store.require_writer()
        return self.indexer.scan(progress, cancel)

    def encode_pending(
        self, progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None
    ) -> IndexReport:
        self.store.require_writer()
        with self.store.storage_errors():
            return self.indexer.encode_pending(progress, cancel)

    def build_index(
        self,
        encoder_id: str | None = None,
        force: bool = False,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> bool:
        self.store.require_writer()
        with self.store.storage_errors():
            return self.indexer.build_index(encoder_id, force, progress, cancel)

    def watch(
        self,
        stop: threading.Event,
        on_batch: Callable[[list[Change], IndexReport], None] | None = None,
        progress: Callable[[Progress], None] | None = None,
        quiet_s: float = 0.5,
    ) -> Watcher:
        """Watch every online root until `stop` is set (runs in the caller's thread)."""
        self.store.require_writer()
        with self.store.storage_errors():
            return self.indexer.watch(stop, on_batch, progress, quiet_s)

    def apply_changes(
        self,
        changes: Iterable[Change],
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> IndexReport:
        self.store.require_writer()
        with self.store.storage_errors():
            return self.indexer.apply_changes(changes, progress, cancel)

    # ---- search (desktop/search.py does the work) ---------------------------------------
    def encode_query(
        self,
        text: str | None = None,
        image_paths: Sequence[str] = (),
        weights: Sequence[float] | None = None,
        encoder: Encoder | None = None,
    ) -> np.ndarray:
        """One unit vector for a combined query: weighted text terms and query images."""
        return search.encode_query(self.store, text, image_paths, weights, encoder)

    def query_cache_stats(self) -> dict[str, int]:
        """Hits, misses and size of the query-embedding LRU (issue 16; store.py)."""
        return self.store.query_cache_stats()

    def image_vector(self, path: str, encoder: Encoder | None = None) -> np.ndarray:
        """The vector of any image file: the stored one if the file is in the library."""
        return search.image_vector(self.store, path, encoder)

    def search(
        self,
        text: str | None = None,
        images_: Sequence[str] = (),
        k: int = 20,
        filters: Filters | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """Text and/or image query -> top-k photos with cosine scores (re-ranked by the
        installed re-ranker unless it is switched off)."""
        return search.search(self.store, text, images_, k, filters, exact, self.reranking)

    def explain(self, text: str, hits: Sequence[Hit]) -> list[dict[str, Any] | None]:
        """Why each hit matched `text`: the re-ranker's per-word attention over the photo's
        grid ({"grid", "heatmap", "words", "top_words", "score"}), None where it cannot say."""
        return self.reranking.explain(text, hits, self.query_encoder().id)

    def similar(self, path_or_id: str | int, k: int = 20, filters: Filters | None = None) -> list[Hit]:
        """Photos that look like this one (near-duplicates first); the photo itself excluded."""
        return search.similar(self.store, path_or_id, k, filters)

    def allowed_ids(self, filters: Filters | None) -> np.ndarray | None:
        """Photo ids that pass the filters, or None when nothing is filtered."""
        return search.allowed_ids(self.store, filters)

    def search_vectors(
        self,
        queries: np.ndarray,
        k: int,
        filters: Filters | None = None,
        exact: bool = False,
        encoder_id: str | None = None,
    ) -> list[list[Hit]]:
        """Vectors -> hits through the index, the path every search shares."""
        return search.search_vectors(self.store, queries, k, filters, exact, encoder_id)

    def find(self, text: str, k: int = 50, filters: Filters | None = None, mode: str = "both") -> list[Found]:
        """Words (captions and tags), meaning (the encoder), or both fused by rank."""
        return search.search_mixed(self.store, text, k, filters, mode, self.reranking)

    def find_words(self, text: str, k: int = 1000, filters: Filters | None = None) -> list[Found]:
        """Photos whose shown caption or tags contain the words, best (bm25) first."""
        return search.find_words(self.store, text, k, filters)

    def photos_with_tag(self, tag: str) -> list[Hit]:
        return search.photos_with_tag(self.store, tag)

    def save_album(self, name: str, query: str, mode: str = "both", filters: Filters | None = None,
                   max_photos: int | None = None, min_score: float | None = None) -> Album:
        """A smart album: a saved search, evaluated whenever it is opened."""
        return search.save_album(self.store, name, query, mode, filters, max_photos, min_score)

    def albums(self) -> list[Album]:
        return self.store.read().albums()

    def delete_album(self, name: str) -> bool:
        return self.store.write(lambda c: c.delete_album(name))

    def album_photos(self, album: Album | str) -> list[Found]:
        return search.album_photos(self.store, album, self.reranking)

    # ---- photos, captions, tags (desktop/captions.py does the work) ----------------------
    def photo(self, photo_id: int) -> Photo | None:
        return self.store.read().photos([photo_id]).get(photo_id)

    def paths_of(self, photo_id: int) -> list[str]:
        """Every path holding this photo's bytes (copies are one photo)."""
        return self.store.read().paths_of(photo_id)

    def caption_pending(self, captioner_spec: str | None = None, progress: Callable[[Progress], None] | None = None,
                        cancel: threading.Event | None = None, redo: bool = False,
                        **options: Any) -> CaptionReport:
        """Caption and tag every photo that lacks them (resumable, cancellable)."""
        self.store.require_writer()
        return captions.caption_pending(self.store, captioner_spec, progress, cancel, redo,
                                        reranking=self.reranking, **options)

    def caption_photo(self, photo_id: int, spec: str | None = None) -> str:
        """Caption one photo now and store it under the captioner's source; returns the text."""
        return captions.caption_photo(self.store, photo_id, spec)

    def make_captioner(self, spec: str | None = None, **options: Any) -> Any:
        """The captioner for this library (cached: its model loads once)."""
        return captions.make_captioner(self.store, spec, **options)

    def set_caption(self, photo_id: int, text: str | None) -> None:
        """The user's caption ("" or None: back to the machines')."""
        captions.set_caption(self.store, photo_id, text)

    def set_tags(self, photo_id: int, tags: Sequence[str] | None) -> None:
        """The user's tag set, replacing the machines' (None: back to the machines')."""
        captions.set_tags(self.store, photo_id, tags)

    def edit_tags(self, photo_id: int, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        """Add/remove tags starting from what the user sees now; returns the new set."""
        return captions.edit_tags(self.store, photo_id, add, remove)

    def photo_text(self, photo_id: int) -> PhotoText | None:
        return captions.photo_text(self.store, photo_id)

    def tag_counts(self, contains: str | None = None, limit: int | None = None) -> list[tuple[str, int]]:
        return self.store.read().tag_counts(contains, limit)

    # ---- duplicates review (desktop/duplicates.py, desktop/trash.py) --------------------
    def exact_duplicates(self) -> list[Group]:
        """Photos whose bytes are at several paths, the suggested keeper first."""
        return duplicates.exact_groups(self.store)

    def duplicate_thresholds(self) -> tuple[float, float]:
        """(default, lowest) near-duplicate threshold for the active encoder (measured on
        UKBench, see desktop/duplicates.py)."""
        spec = self.store.encoder_spec  # "bert_resnet:..." names the plugin, no model loaded
        return duplicates.default_threshold(spec), duplicates.pair_floor(spec)

    def near_duplicate_pairs(self, floor: float | None = None) -> list[tuple[int, int, float]]:
        """(photo, photo, similarity) pairs at least `floor` alike, for near_duplicates()."""
        return duplicates.near_pairs(self.store, floor)

    def near_duplicates(self, pairs: Sequence[tuple[int, int, float]] | None = None,
                        threshold: float | None = None) -> list[Group]:
        """Groups of photos at least `threshold` alike (pairs: from near_duplicate_pairs)."""
        if threshold is None:
            threshold = self.duplicate_thresholds()[0]
        if pairs is None:
            pairs = duplicates.near_pairs(self.store, threshold)
        return duplicates.group_pairs(self.store, pairs, threshold)

    def trash_files(self, paths: Sequence[str]) -> tuple[list[Trashed], list[str]]:
        """Move files to the system trash (never deleted outright) and tell the catalog.
        Returns what went (for restore_files) and a reason per file that could not."""
        self.store.require_writer()
        done: list[Trashed] = []
        failed: list[str] = []
        for path in paths:
            try:
                done.append(trash.move_to_trash(path))
            except TrashError as exc:
                failed.append(str(exc))
        if done:
            self.apply_changes([Change("deleted", t.original) for t in done])
        return done, failed

    def restore_files(self, items: Sequence[Trashed]) -> tuple[list[str], list[str]]:
        """Put trashed files back where they were; the catalog sees them again (same hash:
        the photo keeps its captions, tags and vectors)."""
        self.store.require_writer()
        back: list[str] = []
        failed: list[str] = []
        for item in items:
            try:
                back.append(trash.restore(item))
            except (TrashError, OSError) as exc:
                failed.append(str(exc))
        if back:
            self.apply_changes([Change("created", p) for p in back])
        return back, failed

    # ---- thumbnails ---------------------------------------------------------------------
    def thumbnail(self, photo: Photo, size: int = 256, at_s: float | None = None) -> Path:
        """A cached JPEG thumbnail (keyed by content hash and size; oriented). Safe from any
        thread; raises LibraryError when the photo cannot be read (offline, corrupt).
        at_s: a video's picture at that time (a hit's moment) instead of its poster."""
        moment = "" if at_s is None else f"-at{round(at_s * 1000)}"
        target = self.paths.thumbs / photo.hash[:2] / f"{photo.hash}-{size}{moment}.jpg"
        if target.exists():
            return target
        try:
            image = (media.make_thumbnail(photo.path, size) if at_s is None
                     else media.frame_at(photo.path, at_s, size))
        except media.MediaError as exc:
            raise LibraryError(str(exc)) from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{threading.get_ident()}.tmp")
        image.save(tmp, "JPEG", quality=85)
        os.replace(tmp, target)  # two threads making the same thumbnail: last one wins, both valid
        return target

    def player_command(self, photo: Photo, at_s: float) -> list[str]:
        """A command that plays a video from `at_s` (mpv, VLC), or [] when no player that
        takes a start time is installed: then open the file with the default app."""
        try:
            return media.player_command(photo.path, at_s)
        except media.MediaError as exc:
            raise LibraryError(str(exc)) from exc

    # ---- status -------------------------------------------------------------------------
    def status(self, watcher: Watcher | None = None) -> LibraryStatus:
        """Counts, problems and encoder state; `watching` per root says why a root is not
        watched live (e.g. the inotify limit), taken from `watcher` or the running watch()."""
        watcher = watcher or self.indexer.watcher
        cat = self.store.read()
        roots = []
        for root in cat.roots():
            if not root.watch:
                watching = "off"
            elif watcher and root.path in watcher.degraded:
                watching = watcher.degraded[root.path]
            else:
                watching = "on"
            roots.append(RootStatus(root, cat.counts(root.id), watching))
        encoder_id: str | None
        try:
            encoder_id = self.encoder.id
        except EncoderError as exc:
            encoder_id = None
            log.warning("encoder %s unavailable: %s", self.encoder_spec, exc)
        idx = self.store.index(encoder_id, self.encoder.dim) if encoder_id else None
        return LibraryStatus(
            home=str(self.paths.home),
            encoder=self.encoder_spec,
            encoder_id=encoder_id,
            readonly=self.readonly,
            roots=roots,
            vectors=cat.encoders_with_vectors(),
            to_encode=cat.count_to_encode(encoder_id) if encoder_id else None,
            index_size=idx.size if idx else 0,
            index_built_at=idx.built_at if idx else None,
            skipped=cat.skipped(),
            encoder_reason=self.encoder_reason,
        )


__all__ = [
    "DEFAULT_CAPTIONER",
    "CaptionReport",
    "Filters",
    "Found",
    "Group",
    "Hit",
    "IndexReport",
    "Library",
    "LibraryError",
    "LibraryStatus",
    "Progress",
    "ReadOnlyError",
    "Term",
    "TrashError",
    "Trashed",
    "parse_query",
    "parse_tags",
]
