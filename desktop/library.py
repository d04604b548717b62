"""The one facade the UI and the CLI use: libraries, indexing, watching, search.

Threads: every catalog write runs on the single writer thread (`self._writer`), as a
short task per batch, so a user's edit never waits for a whole indexing run. Long jobs
(scan, encode, index build) run in the caller's thread — the CLI's main thread or a Qt
worker from jobs.py — and hand their writes to the writer. Reads use a per-thread
read-only connection. Only one process may write a data dir: the second attaches
read-only (a file lock, released by the OS even when a process is killed).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from filelock import FileLock, Timeout

from desktop import images
from desktop.catalog import Catalog, CatalogError, Photo, Root, Skipped
from desktop.encoders import Encoder, EncoderError, LazyModel, create_encoder
from desktop.index import AnnIndex
from desktop.indexer import Indexer, IndexReport, Progress, decode_size
from desktop.model_host import RemoteEncoder, end_process
from desktop.rerank import Reranking
from desktop.scanner import Change, Watcher
from desktop.settings import DEFAULT_ENCODER, Paths, encoder_slug, paths

log = logging.getLogger(__name__)
T = TypeVar("T")


class LibraryError(RuntimeError):
    """A user-facing failure: the message says what and where."""


class ReadOnlyError(LibraryError):
    pass


@dataclass(frozen=True)
class Hit:
    photo: Photo
    score: float

    @property
    def photo_id(self) -> int:
        return self.photo.id

    @property
    def path(self) -> str:
        return self.photo.path


@dataclass(frozen=True)
class Filters:
    root: str | None = None
    folder: str | None = None
    date_from: str | None = None  # ISO date or datetime, compared with EXIF taken-at
    date_to: str | None = None
    exts: tuple[str, ...] = ()

    def empty(self) -> bool:
        return not (self.root or self.folder or self.date_from or self.date_to or self.exts)


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


@dataclass(frozen=True)
class Term:
    weight: float
    text: str | None = None
    image: str | None = None


_TERM_RE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*:)?\s*(.*?)\s*$")


def parse_query(query: str) -> list[Term]:
    """rclip-style text queries: "2:dog + beach - people", and "-word" excludes one word.

    Terms are joined by " + " and " - " (spaces around the sign); "w:" weights a term.
    """
    terms: list[Term] = []
    parts = re.split(r"\s+([+-])\s+", " " + query.strip() + " ")
    signs = ["+"] + parts[1::2]
    for sign, part in zip(signs, parts[0::2], strict=True):
        words = [w for w in part.split() if not (w.startswith("-") and len(w) > 1)]
        negatives = [w[1:] for w in part.split() if w.startswith("-") and len(w) > 1]
        m = _TERM_RE.match(" ".join(words))
        weight = float(m.group(1)) if m and m.group(1) else 1.0
        text = m.group(2) if m else ""
        if text:
            terms.append(Term(weight if sign == "+" else -weight, text=text))
        terms.extend(Term(-1.0, text=neg) for neg in negatives)
    return terms


class Library:
    """A Lumen data dir: catalog + indexes + the active encoder."""

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
        rerank: bool | None = None,
    ) -> None:
        """`model_process`: run models in a child process (the window does: its process then
        never imports torch, see model_host.py); `model_nice` lowers that process's priority
        and `model_idle_s` ends it after that long unused (the next request restarts it).
        `rerank` overrides the re-ranking setting for this session (desktop/rerank.py)."""
        self.paths: Paths = paths(home)
        self.model_process, self.model_nice, self.model_idle_s = model_process, model_nice, model_idle_s
        self._readonly_why = "opened read-only"
        try:
            self.paths.ensure()
        except OSError as exc:  # a read-only medium or folder: searching an existing catalog still works
            if not self.paths.catalog.exists():
                raise LibraryError(
                    f"{self.paths.home}: cannot create the data folder ({exc.strerror or exc})"
                ) from exc
        self._lock = FileLock(str(self.paths.lock))
        if readonly:
            self.readonly = True
        else:
            try:
                self._lock.acquire(timeout=0)
                self.readonly = False
            except Timeout:
                if readonly is False:
                    raise LibraryError(
                        f"{self.paths.home}: another Lumen is indexing this library; close it first "
                        "(or open this one read-only)"
                    ) from None
                log.warning("%s: another Lumen is writing here; opened read-only", self.paths.home)
                self.readonly = True
                self._readonly_why = "another Lumen is indexing this library"
            except OSError as exc:  # the lock file cannot be made: the data folder is read-only
                why = f"the data folder is read-only ({exc.strerror or exc})"
                if readonly is False or not self.paths.catalog.exists():
                    raise LibraryError(f"{self.paths.home}: {why}; Lumen cannot index here") from exc
                log.warning("%s: %s; opened read-only", self.paths.home, why)
                self.readonly = True
                self._readonly_why = why
        self._closed = False
        self._writer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lumen-writer")
        self._wcat: Catalog | None = None
        self._local = threading.local()
        self._readers: list[Catalog] = []
        self._readers_lock = threading.Lock()
        self._encoder_lock = threading.Lock()  # a query waits at most one indexing batch
        self._create_lock = threading.Lock()
        self._build_lock = threading.Lock()
        self.indexer = Indexer(self)
        self._indexes: dict[str, AnnIndex] = {}
        if not self.readonly:
            self._write(lambda c: None)  # creates / migrates the catalog on the writer thread
        cat = self._cat()
        self.encoder_spec = encoder or cat.get_meta("encoder.spec") or DEFAULT_ENCODER
        self.weights = (
            weights if weights is not None else (None if encoder else cat.get_meta("encoder.weights"))
        )
        self.device = device
        self._encoder: Encoder | None = None
        self._previous: Encoder | None = None  # answers queries while a new encoder catches up
        self.reranking = Reranking(self, rerank)
        if not self.readonly and (encoder or weights):
            self._write(
                lambda c: (
                    c.set_meta("encoder.spec", self.encoder_spec),
                    c.set_meta("encoder.weights", self.weights),
                )
            )

    @classmethod
    def open(cls, home: str | os.PathLike | None = None, **kwargs: Any) -> Library:
        return cls(home, **kwargs)

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish pending writes, close connections, release the writer lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._writer.submit(self._close_writer).result()
        self._writer.shutdown(wait=True)
        with self._readers_lock:
            for reader in self._readers:
                try:
                    reader.close()
                except Exception:  # noqa: BLE001 - a connection of a finished thread
                    pass
            self._readers.clear()
        if self._lock.is_locked:
            self._lock.release()
        for enc in (self._encoder, self._previous):
            end_process(enc)
        self.reranking.close()
        if self.model_process:
            from desktop.captions import forget_captioners  # captions imports this module

            forget_captioners(self)

    def _close_writer(self) -> None:
        if self._wcat is not None:
            self._wcat.close()
            self._wcat = None

    # ---- plumbing -----------------------------------------------------------------------
    def _write(self, fn: Callable[[Catalog], T]) -> T:
        """Run fn(catalog) on the writer thread and wait for it (errors propagate)."""
        if self.readonly:
            raise ReadOnlyError(f"{self.paths.home}: {self._readonly_why}; this instance is read-only")

        def task() -> T:
            if self._wcat is None:
                self._wcat = Catalog(self.paths.catalog)
            return fn(self._wcat)

        with self._storage_errors():
            return self._writer.submit(task).result()

    @contextlib.contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """Turn a write that the data folder's disk refused (full, read-only, failing) into a
        LibraryError that says so. SQLite rolls the batch back, so the catalog stays as it
        was after the last finished batch, and the next run resumes from there."""
        try:
            yield
        except (sqlite3.OperationalError, OSError) as exc:
            problem = _storage_problem(exc, self.paths.home)
            if problem is None:
                raise
            message = (
                f"{self.paths.home}: {problem}. Indexing stopped; everything indexed before this is kept "
                "and the next run continues from there"
            )
            log.error("%s (%s)", message, exc)
            raise LibraryError(message) from exc

    def _require_writer(self) -> None:
        """Refuse indexing work up front in a read-only instance: it would fail at its first
        catalog write after a long walk, and its index builds would race the writer's."""
        if self.readonly:
            raise ReadOnlyError(
                f"{self.paths.home}: {self._readonly_why}; this instance is read-only (search works, "
                "indexing does not)"
            )

    def _cat(self) -> Catalog:
        """This thread's read connection."""
        cat = getattr(self._local, "cat", None)
        if cat is None:
            cat = Catalog(self.paths.catalog, readonly=True)
            self._local.cat = cat
            with self._readers_lock:
                self._readers.append(cat)
        return cat

    @property
    def catalog(self) -> Catalog:
        """A read-only catalog connection for the calling thread."""
        return self._cat()

    # ---- encoder ------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._create_lock:  # two workers asking at once must not build two encoders
                if self._encoder is None:
                    self._encoder = self._create_encoder(self.encoder_spec, self.weights)
        return self._encoder

    def _create_encoder(self, spec: str, weights: str | None) -> Encoder:
        enc = create_encoder(spec, weights=weights, device=self.device)
        if self.model_process and isinstance(enc, LazyModel):  # nothing to gain for a model-free one
            return RemoteEncoder(enc, spec, weights, self.device, self.model_nice,  # type: ignore[return-value]
                                 idle_unload_s=self.model_idle_s)
        return enc

    def set_encoder(self, spec: str, weights: str | None = None) -> None:
        """Switch encoders. Old vectors stay; search uses them until the new ones are complete."""
        enc = self._create_encoder(spec, weights)
        self._write(lambda c: (c.set_meta("encoder.spec", spec), c.set_meta("encoder.weights", weights)))
        old, self.encoder_spec, self.weights, self._encoder = self._encoder, spec, weights, enc
        end_process(old)  # query_encoder() makes the previous one again if search still needs it

    def query_encoder(self) -> Encoder:
        """The encoder whose vectors answer queries: the active one once it has covered
        the library, else the last one that had (so a model swap never blanks search)."""
        active = self.encoder
        raw = self._cat().get_meta("encoder.complete")
        done = json.loads(raw) if raw else None
        if done is None or done["id"] == active.id:
            if self._previous is not None:  # the new encoder has caught up
                end_process(self._previous)
                self._previous = None
            return active
        if self._previous is None or self._previous.id != done["id"]:
            end_process(self._previous)
            self._previous = self._create_encoder(done["spec"], done["weights"])
        return self._previous

    def _index(self, encoder_id: str, dim: int) -> AnnIndex:
        idx = self._indexes.get(encoder_id)
        if idx is None:
            idx = AnnIndex(self.paths.index_dir / encoder_slug(encoder_id), dim)
            idx.load()
            self._indexes[encoder_id] = idx
        return idx

    # ---- libraries ----------------------------------------------------------------------
    def roots(self) -> list[Root]:
        return self._cat().roots()

    def add_root(self, path: str | os.PathLike) -> Root:
        folder = os.path.abspath(os.fspath(path))
        if not os.path.isdir(folder):
            raise LibraryError(f"{folder}: not a folder")
        if not os.access(folder, os.R_OK | os.X_OK):
            raise LibraryError(f"{folder}: permission denied")
        try:
            return self._write(lambda c: c.add_root(folder))
        except CatalogError as exc:
            raise LibraryError(str(exc)) from exc

    def remove_root(self, path: str | os.PathLike) -> None:
        root = self._cat().root_by_path(os.fspath(path))
        if root is None:
            raise LibraryError(f"{path}: not a library")
        self._write(lambda c: c.remove_root(root.id))

    def set_watch(self, path: str | os.PathLike, on: bool) -> None:
        root = self._cat().root_by_path(os.fspath(path))
        if root is None:
            raise LibraryError(f"{path}: not a library")
        self._write(lambda c: c.update_root(root.id, watch=int(on)))

    # ---- indexing (desktop/indexer.py does the work) -----------------------------------
    def index(
        self, progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None
    ) -> IndexReport:
        """Scan every root, encode what is new, rebuild the ANN index. Resumable."""
        self._require_writer()
        with self._storage_errors():
            return self.indexer.index(progress, cancel)

    def scan(
        self, progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None
    ) -> IndexReport:
        self._require_writer()
        return self.indexer.scan(progress, cancel)

    def encode_pending(
        self, progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None
    ) -> IndexReport:
        self._require_writer()
        with self._storage_errors():
            return self.indexer.encode_pending(progress, cancel)

    def build_index(
        self,
        encoder_id: str | None = None,
        force: bool = False,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> bool:
        self._require_writer()
        with self._storage_errors():
            return self.indexer.build_index(encoder_id, force, progress, cancel)

    def watch(
        self,
        stop: threading.Event,
        on_batch: Callable[[list[Change], IndexReport], None] | None = None,
        progress: Callable[[Progress], None] | None = None,
        quiet_s: float = 0.5,
    ) -> Watcher:
        """Watch every online root until `stop` is set (runs in the caller's thread)."""
        self._require_writer()
        with self._storage_errors():
            return self.indexer.watch(stop, on_batch, progress, quiet_s)

    def apply_changes(
        self,
        changes: Iterable[Change],
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> IndexReport:
        self._require_writer()
        with self._storage_errors():
            return self.indexer.apply_changes(changes, progress, cancel)

    def _encode_images(self, imgs: Sequence[Any], encoder: Encoder | None = None) -> np.ndarray:
        with self._encoder_lock:
            return (encoder or self.encoder).encode_images(imgs)

    def _encode_texts(self, texts: Sequence[str], encoder: Encoder | None = None) -> np.ndarray:
        encoder = encoder or self.encoder
        if not encoder.joint:
            raise LibraryError(
                f"the encoder {encoder.id} has no text tower joined to its images "
                "(for bert_resnet: train projection heads with `lumen train-heads`); image search still works"
            )
        with self._encoder_lock:
            return encoder.encode_texts(texts)

    # ---- search -------------------------------------------------------------------------
    def encode_query(
        self,
        text: str | None = None,
        image_paths: Sequence[str] = (),
        weights: Sequence[float] | None = None,
        encoder: Encoder | None = None,
    ) -> np.ndarray:
        """One unit vector for a combined query: weighted text terms and query images."""
        encoder = encoder or self.encoder
        terms = parse_query(text) if text else []
        img_weights = list(weights) if weights is not None else [1.0] * len(image_paths)
        terms += [Term(w, image=p) for p, w in zip(image_paths, img_weights, strict=True)]
        if not terms:
            raise LibraryError("empty query: type some words or drop a photo")
        parts = []
        texts = [t for t in terms if t.text is not None]
        if texts:
            vecs = self._encode_texts([t.text for t in texts], encoder)  # type: ignore[misc]
            parts += [t.weight * v for t, v in zip(texts, vecs, strict=True)]
        for term in (t for t in terms if t.image is not None):
            parts.append(term.weight * self.image_vector(term.image, encoder))  # type: ignore[arg-type]
        total = np.sum(parts, axis=0)
        norm = float(np.linalg.norm(total))
        if norm < 1e-9:
            raise LibraryError("the query's terms cancel out")
        return (total / norm).astype(np.float32)

    def image_vector(self, path: str, encoder: Encoder | None = None) -> np.ndarray:
        """The vector of any image file: the stored one if the file is in the library."""
        encoder = encoder or self.encoder
        eid = encoder.id
        photo = self._cat().photo_by_path(path)
        if photo is not None:
            stored = self._cat().vector_of(photo.id, eid)
            if stored is not None:
                return stored
        try:
            image = images.load_for_encoding(path, decode_size(encoder))  # as the indexer decodes
        except images.ImageError as exc:
            raise LibraryError(str(exc)) from exc
        return self._encode_images([image], encoder)[0]

    def search(
        self,
        text: str | None = None,
        images_: Sequence[str] = (),
        k: int = 20,
        filters: Filters | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """Text and/or image query -> top-k photos with cosine scores."""
        encoder = self.query_encoder()
        query = self.encode_query(text, images_, encoder=encoder)
        want = self.reranking.depth(k, encoder.id)  # the second stage sees the top N
        hits = self.search_vectors(query[None, :], want, filters=filters, exact=exact, encoder_id=encoder.id)[0]
        return self.reranking.photos(text, images_, hits, encoder.id, k)

    def explain(self, text: str, hits: Sequence[Hit]) -> list[dict[str, Any] | None]:
        """Why each hit matched `text`: the re-ranker's per-word attention over the photo's
        grid ({"grid", "heatmap", "words", "top_words", "score"}), None where it cannot say."""
        return self.reranking.explain(text, hits, self.query_encoder().id)

    def similar(self, path_or_id: str | int, k: int = 20, filters: Filters | None = None) -> list[Hit]:
        """Photos that look like this one (near-duplicates first); the photo itself excluded."""
        encoder = self.query_encoder()
        if isinstance(path_or_id, int):
            vec = self._cat().vector_of(path_or_id, encoder.id)
            if vec is None:
                raise LibraryError(f"photo {path_or_id} has no vector for {encoder.id} yet")
            own = path_or_id
        else:
            vec = self.image_vector(str(path_or_id), encoder)
            photo = self._cat().photo_by_path(str(path_or_id))
            own = photo.id if photo else None
        hits = self.search_vectors(vec[None, :], k + 1, filters=filters, encoder_id=encoder.id)[0]
        return [h for h in hits if h.photo_id != own][:k]

    def allowed_ids(self, filters: Filters | None) -> np.ndarray | None:
        """Photo ids that pass the filters, or None when nothing is filtered."""
        if filters is None or filters.empty():
            return None
        cat = self._cat()
        root_id = None
        if filters.root:
            root = cat.root_by_path(filters.root)
            if root is None:
                raise LibraryError(f"{filters.root}: not a library")
            root_id = root.id
        return cat.filtered_ids(root_id, filters.folder, filters.date_from, filters.date_to, filters.exts)

    def search_vectors(
        self,
        queries: np.ndarray,
        k: int,
        filters: Filters | None = None,
        exact: bool = False,
        encoder_id: str | None = None,
    ) -> list[list[Hit]]:
        """The search path everything shares: ANN over the built index + exact over vectors
        added since, re-ranked exactly, gone photos dropped, catalog rows attached."""
        eid = encoder_id or self.encoder.id
        cat = self._cat()
        idx = self._index(eid, queries.shape[1])
        if idx.built_version is not None and idx.built_version > cat.max_vector_rowid(eid):
            idx.load()  # another process rebuilt it (the writer app while we are read-only)
        extra_ids, extra_vecs, _ = cat.vectors(eid, since_rowid=idx.built_version or 0)
        allowed = self.allowed_ids(filters)
        want = k + 8  # a few spare for photos deleted since the build
        raw = idx.search(
            queries.astype(np.float32),
            want,
            extra_ids=extra_ids if len(extra_ids) else None,
            extra_vectors=extra_vecs if len(extra_ids) else None,
            allowed=allowed,
            exact=exact,
        )
        wanted_ids = {pid for row in raw for pid, _ in row}
        rows = cat.photos(sorted(wanted_ids))
        return [[Hit(rows[pid], score) for pid, score in row if pid in rows][:k] for row in raw]

    # ---- photos, words, captions, tags, albums ------------------------------------------
    # The one surface the window, the CLI and the HTTP server call; desktop/captions.py and
    # desktop/search.py do the work.
    def photo(self, photo_id: int) -> Photo | None:
        return self._cat().photos([photo_id]).get(photo_id)

    def paths_of(self, photo_id: int) -> list[str]:
        """Every path holding this photo's bytes (copies are one photo)."""
        return self._cat().paths_of(photo_id)

    def find(self, text: str, k: int = 50, filters: Filters | None = None, mode: str = "both") -> list[Any]:
        """Words (captions and tags), meaning (the encoder), or both fused by rank: list[Found]."""
        from desktop import captions
        return captions.search_mixed(self, text, k, filters, mode)

    def find_words(self, text: str, k: int = 1000, filters: Filters | None = None) -> list[Any]:
        from desktop import captions
        return captions.find_words(self, text, k, filters)

    def caption_pending(self, captioner_spec: str | None = None, progress: Callable[[Progress], None] | None = None,
                        cancel: threading.Event | None = None, redo: bool = False, **options: Any) -> Any:
        """Caption and tag every photo that lacks them (resumable): a CaptionReport."""
        from desktop import captions
        self._require_writer()
        return captions.caption_pending(self, captioner_spec, progress, cancel, redo, **options)

    def caption_photo(self, photo_id: int, spec: str | None = None) -> str:
        from desktop import captions
        return captions.caption_photo(self, photo_id, spec)

    def set_caption(self, photo_id: int, text: str | None) -> None:
        from desktop import captions
        captions.set_caption(self, photo_id, text)

    def set_tags(self, photo_id: int, tags: Sequence[str] | None) -> None:
        from desktop import captions
        captions.set_tags(self, photo_id, tags)

    def edit_tags(self, photo_id: int, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        from desktop import captions
        return captions.edit_tags(self, photo_id, add, remove)

    def photo_text(self, photo_id: int) -> Any:
        from desktop import captions
        return captions.photo_text(self, photo_id)

    def tag_counts(self, contains: str | None = None, limit: int | None = None) -> list[tuple[str, int]]:
        return self._cat().tag_counts(contains, limit)

    def photos_with_tag(self, tag: str) -> list[Hit]:
        from desktop import captions
        return captions.photos_with_tag(self, tag)

    def save_album(self, name: str, query: str, mode: str = "both", filters: Filters | None = None,
                   max_photos: int | None = None, min_score: float | None = None) -> Any:
        from desktop import captions
        return captions.save_album(self, name, query, mode, filters, max_photos, min_score)

    def albums(self) -> list[Any]:
        return self._cat().albums()

    def delete_album(self, name: str) -> bool:
        return self._write(lambda c: c.delete_album(name))

    def album_photos(self, album: Any) -> list[Any]:
        from desktop import captions
        return captions.album_photos(self, album)

    # ---- thumbnails ---------------------------------------------------------------------
    def thumbnail(self, photo: Photo, size: int = 256) -> Path:
        """A cached JPEG thumbnail (keyed by content hash and size; oriented). Safe from any
        thread; raises LibraryError when the photo cannot be read (offline, corrupt)."""
        target = self.paths.thumbs / photo.hash[:2] / f"{photo.hash}-{size}.jpg"
        if target.exists():
            return target
        try:
            image = images.make_thumbnail(photo.path, size)
        except images.ImageError as exc:
            raise LibraryError(str(exc)) from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{threading.get_ident()}.tmp")
        image.save(tmp, "JPEG", quality=85)
        os.replace(tmp, target)  # two threads making the same thumbnail: last one wins, both valid
        return target

    # ---- status -------------------------------------------------------------------------
    def status(self, watcher: Watcher | None = None) -> LibraryStatus:
        """Counts, problems and encoder state; `watching` per root says why a root is not
        watched live (e.g. the inotify limit), taken from `watcher` or the running watch()."""
        watcher = watcher or self.indexer.watcher
        cat = self._cat()
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
        idx = self._index(encoder_id, self.encoder.dim) if encoder_id else None
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
        )


def _storage_problem(exc: BaseException, home: Path) -> str | None:
    """What a user should hear when a write failed because of the disk, else None (a bug)."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
        return {
            13: "the disk is full (SQLite: database or disk is full); free some space",
            8: "the catalog cannot be written (read-only file or folder)",
            10: "the disk failed while writing the catalog (I/O error)",
            14: "the catalog file cannot be opened for writing",
        }.get(code)
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"the disk is full ({exc.strerror}); free some space"
        if exc.errno == errno.EROFS:
            return "the data folder is on a read-only disk"
        ours = bool(exc.filename) and Path(os.fsdecode(exc.filename)).is_relative_to(home)
        if exc.errno in (errno.EACCES, errno.EPERM) and ours:
            return f"no permission to write {exc.filename}"
        if exc.errno == errno.EIO and ours:
            return f"the disk failed while writing ({exc.strerror})"
    return None


__all__ = [
    "Filters",
    "Hit",
    "IndexReport",
    "Library",
    "LibraryError",
    "LibraryStatus",
    "Progress",
    "ReadOnlyError",
    "Term",
    "parse_query",
]

