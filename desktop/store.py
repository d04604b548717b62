"""One open Lumen data dir: the writer thread, per-thread readers, the indexes, the encoder.

This is the state the pipelines share (indexer.py, captions.py, search.py); library.py is
the facade that wraps it for the window, the CLI and the HTTP server. It sits below them,
so none of them imports the facade back.

Threads: every catalog write runs on the single writer thread, as a short task per batch,
so a user's edit never waits for a whole indexing run. Long jobs run in the caller's
thread and hand their writes to the writer. Reads use a per-thread read-only connection.
Only one process may write a data dir: the second attaches read-only (a file lock,
released by the OS even when a process is killed).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from filelock import FileLock, Timeout

from desktop.catalog import Catalog
from desktop.encoders import AUTO, Encoder, LazyModel, choose_default_encoder, create_encoder
from desktop.index import AnnoyBackend, IndexBackend
from desktop.model_host import RemoteEncoder, end_process
from desktop.settings import DEFAULT_ENCODER, Paths, encoder_slug, paths

log = logging.getLogger(__name__)
T = TypeVar("T")


class LibraryError(RuntimeError):
    """A user-facing failure: the message says what and where."""


class ReadOnlyError(LibraryError):
    pass


@dataclass(frozen=True)
class Progress:
    stage: str  # scan | hash | encode | index | caption
    done: int
    total: int
    rate: float = 0.0  # items per second
    eta_s: float | None = None
    message: str = ""


class Store:
    """A data dir opened for reading, and for writing unless another Lumen holds it."""

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
    ) -> None:
        """`index_backend(directory, dim)` makes each encoder's index (Annoy unless told)."""
        self.paths: Paths = paths(home)
        self.index_backend = index_backend
        self.model_process, self.model_nice, self.model_idle_s = model_process, model_nice, model_idle_s
        self.readonly_why = "opened read-only"
        try:
            self.paths.ensure()
        except OSError as exc:  # a read-only medium or folder: searching an existing catalog still works
            if not self.paths.catalog.exists():
                raise LibraryError(
                    f"{self.paths.home}: cannot create the data folder ({exc.strerror or exc})"
                ) from exc
        self._lock = FileLock(str(self.paths.lock))
        self.readonly = self._take_writer_lock(readonly)
        self._closed = False
        self._writer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lumen-writer")
        self._wcat: Catalog | None = None
        self._local = threading.local()
        self._readers: list[Catalog] = []
        self._readers_lock = threading.Lock()
        self._encoder_lock = threading.Lock()  # a query waits at most one indexing batch
        self._create_lock = threading.Lock()
        self.build_lock = threading.Lock()  # one index build at a time
        self.indexes: dict[str, IndexBackend] = {}
        self._query_cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # issue 16
        self._query_lock = threading.Lock()
        self._query_stats = {"hits": 0, "misses": 0}
        if not self.readonly:
            self.write(lambda c: None)  # creates / migrates the catalog on the writer thread
        cat = self.read()
        self.encoder_spec = encoder or cat.get_meta("encoder.spec") or DEFAULT_ENCODER
        self.weights = (
            weights if weights is not None else (None if encoder else cat.get_meta("encoder.weights"))
        )
        # --- issue 13: the default encoder by what is on this machine ---
        # Why this encoder (the window's status bar says it); `auto` is resolved once and saved.
        self.encoder_reason = "chosen with --encoder" if encoder else "this library's encoder"
        if self.encoder_spec == AUTO:
            choice = choose_default_encoder()
            self.encoder_spec, self.encoder_reason = choice.spec, choice.reason
            encoder = encoder or (None if self.readonly else choice.spec)  # remember it
        self.device = device
        self._encoder: Encoder | None = None
        self._previous: Encoder | None = None  # answers queries while a new encoder catches up
        if not self.readonly and (encoder or weights):
            self.write(
                lambda c: (
                    c.set_meta("encoder.spec", self.encoder_spec),
                    c.set_meta("encoder.weights", self.weights),
                )
            )

    def _take_writer_lock(self, readonly: bool | None) -> bool:
        """True when this instance is read-only (asked to be, or another Lumen writes here)."""
        if readonly:
            return True
        try:
            self._lock.acquire(timeout=0)
            return False
        except Timeout:
            if readonly is False:
                raise LibraryError(
                    f"{self.paths.home}: another Lumen is indexing this library; close it first "
                    "(or open this one read-only)"
                ) from None
            log.warning("%s: another Lumen is writing here; opened read-only", self.paths.home)
            self.readonly_why = "another Lumen is indexing this library"
        except OSError as exc:  # the lock file cannot be made: the data folder is read-only
            why = f"the data folder is read-only ({exc.strerror or exc})"
            if readonly is False or not self.paths.catalog.exists():
                raise LibraryError(f"{self.paths.home}: {why}; Lumen cannot index here") from exc
            log.warning("%s: %s; opened read-only", self.paths.home, why)
            self.readonly_why = why
        return True

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

    def _close_writer(self) -> None:
        if self._wcat is not None:
            self._wcat.close()
            self._wcat = None

    # ---- catalog access -----------------------------------------------------------------
    def write(self, fn: Callable[[Catalog], T]) -> T:
        """Run fn(catalog) on the writer thread and wait for it (errors propagate)."""
        if self.readonly:
            raise ReadOnlyError(f"{self.paths.home}: {self.readonly_why}; this instance is read-only")

        def task() -> T:
            if self._wcat is None:
                self._wcat = Catalog(self.paths.catalog)
            return fn(self._wcat)

        with self.storage_errors():
            return self._writer.submit(task).result()

    def read(self) -> Catalog:
        """This thread's read-only connection."""
        cat = getattr(self._local, "cat", None)
        if cat is None:
            cat = Catalog(self.paths.catalog, readonly=True)
            self._local.cat = cat
            with self._readers_lock:
                self._readers.append(cat)
        return cat

    @contextlib.contextmanager
    def storage_errors(self) -> Iterator[None]:
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

    def require_writer(self) -> None:
        """Refuse indexing work up front in a read-only instance: it would fail at its first
        catalog write after a long walk, and its index builds would race the writer's."""
        if self.readonly:
            raise ReadOnlyError(
                f"{self.paths.home}: {self.readonly_why}; this instance is read-only (search works, "
                "indexing does not)"
            )

    def index(self, encoder_id: str, dim: int) -> IndexBackend:
        """The nearest-neighbour index of one encoder's vectors (loaded once)."""
        idx = self.indexes.get(encoder_id)
        if idx is None:
            idx = self.index_backend(self.paths.index_dir / encoder_slug(encoder_id), dim)
            idx.load()
            self.indexes[encoder_id] = idx
        return idx

    # ---- the encoder --------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._create_lock:  # two workers asking at once must not build two encoders
                if self._encoder is None:
                    self._encoder = self.create_encoder(self.encoder_spec, self.weights)
        return self._encoder

    def create_encoder(self, spec: str, weights: str | None) -> Encoder:
        enc = create_encoder(spec, weights=weights, device=self.device)
        if self.model_process and isinstance(enc, LazyModel):  # nothing to gain for a model-free one
            return RemoteEncoder(enc, spec, weights, self.device, self.model_nice,  # type: ignore[return-value]
                                 idle_unload_s=self.model_idle_s)
        return enc

    def set_encoder(self, spec: str, weights: str | None = None, device: str | None = None) -> None:
        """Switch encoders (and the device models run on). Old vectors stay; search uses
        them until the new ones are complete."""
        if device is not None:
            self.device = device
        enc = self.create_encoder(spec, weights)
        self.write(lambda c: (c.set_meta("encoder.spec", spec), c.set_meta("encoder.weights", weights)))
        old, self.encoder_spec, self.weights, self._encoder = self._encoder, spec, weights, enc
        end_process(old)  # query_encoder() makes the previous one again if search still needs it

    def query_encoder(self) -> Encoder:
        """The encoder whose vectors answer queries: the active one once it has covered
        the library, else the last one that had (so a model swap never blanks search)."""
        active = self.encoder
        raw = self.read().get_meta("encoder.complete")
        done = json.loads(raw) if raw else None
        if done is None or done["id"] == active.id:
            if self._previous is not None:  # the new encoder has caught up
                end_process(self._previous)
                self._previous = None
            return active
        if self._previous is None or self._previous.id != done["id"]:
            end_process(self._previous)
            self._previous = self.create_encoder(done["spec"], done["weights"])
        return self._previous

    def using_encoder(self, fn: Callable[[Encoder], T]) -> T:
        """fn(encoder) while no other thread uses it (a query waits at most one batch)."""
        with self._encoder_lock:
            return fn(self.encoder)

    def encode_images(self, imgs: Sequence[Any], encoder: Encoder | None = None) -> np.ndarray:
        with self._encoder_lock:
            return (encoder or self.encoder).encode_images(imgs)

    def encode_texts(self, texts: Sequence[str], encoder: Encoder | None = None) -> np.ndarray:
        encoder = encoder or self.encoder
        if not encoder.joint:
            raise LibraryError(
                f"the encoder {encoder.id} has no text tower joined to its images "
                "(for bert_resnet: train projection heads with `lumen train-heads`); image search still works"
            )
        with self._encoder_lock:
            return encoder.encode_texts(texts)

    # --- issue 16: query-embedding cache ---
    QUERY_CACHE_SIZE = 512  # text terms; 512 x 512-d float32 is 1 MB

    def query_text_vectors(self, texts: Sequence[str], encoder: Encoder | None = None) -> np.ndarray:
        """encode_texts for query terms, through an LRU keyed by (encoder id, text): a repeated
        query (paging, the words+meaning mix, many HTTP clients) skips the text tower."""
        encoder = encoder or self.encoder
        keys = [(encoder.id, t) for t in texts]
        with self._query_lock:
            found = {key: self._query_cache[key] for key in keys if key in self._query_cache}
            for key in found:
                self._query_cache.move_to_end(key)
        missing = list(dict.fromkeys(key for key in keys if key not in found))
        if missing:  # encoded outside the lock: a slow model never holds up cached queries
            found.update(zip(missing, self.encode_texts([text for _, text in missing], encoder), strict=True))
        with self._query_lock:
            for key in missing:
                self._query_cache[key] = found[key]
            while len(self._query_cache) > self.QUERY_CACHE_SIZE:
                self._query_cache.popitem(last=False)
            self._query_stats["hits"] += len(keys) - len(missing)
            self._query_stats["misses"] += len(missing)
        return np.stack([found[key] for key in keys])

    def query_cache_stats(self) -> dict[str, int]:
        """Hits and misses of the query-embedding cache since opening, and its size."""
        with self._query_lock:
            return {**self._query_stats, "size": len(self._query_cache)}


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
