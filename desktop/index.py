"""Nearest-neighbour indexes, one per encoder (Qt-free, no torch): the `IndexBackend`
interface the search code uses, and Annoy's implementation of it (`AnnoyBackend`).

Vectors are L2-normalised float32, so cosine similarity is a dot product. The catalog is
the source of truth; this module only keeps a derived, rebuildable copy on disk:

    <directory>/current.json             the "current" pointer (manifest), replaced atomically
    <directory>/gen-<name>.ann           Annoy trees (memory-mapped)
    <directory>/gen-<name>.vectors.npy   the same vectors, float32, for exact re-ranking
    <directory>/gen-<name>.ids.npy       position -> photo id (int64)

A build writes a whole new generation next to the current one and switches the pointer
with os.replace, so a reader sees the old index or the new one, never half of either.
One writer per directory (the library's indexer thread); any number of readers.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import numpy as np
from annoy import AnnoyIndex

log = logging.getLogger(__name__)

# 'angular' on unit vectors ranks exactly like cosine; 'dot' adds an extra dimension to
# handle unequal norms, which buys nothing here.
METRIC = "angular"
# More trees make each inspected candidate likelier to be a true neighbour, so fewer are
# needed. Measured on 512-d vectors in 1000 Gaussian clusters (tests/test_index.py): with
# 80 trees, recall@10 >= 0.99 needs ~3k candidates at 100k items and ~12k at 1M. Cost:
# build CPU time and ~20 MB of disk per tree per million 512-d items.
N_TREES = 80
# Candidates Annoy inspects per query ("search_k"): SEARCH_K_PER_RESULT per result wanted,
# at least SEARCH_K_MIN, times sqrt(n / SEARCH_K_REF_N): near neighbours spread over more
# leaves as the collection grows (measured: 4k -> 0.998 at 100k, 12.6k -> 0.995 at 1M).
SEARCH_K_MIN = 4_000
SEARCH_K_PER_RESULT = 200
SEARCH_K_REF_N = 100_000
# Below this many vectors one BLAS matmul beats walking the trees, and is exact.
EXACT_MAX_ITEMS = 10_000
# One Annoy candidate costs about this many rows of a streamed exact scan (tree walk,
# random reads, its own sort); when search_k would cost more than a scan, scan instead.
ANN_CANDIDATE_COST = 2.0
# An `allowed` filter keeping less than this share of the index is searched exactly over
# just those rows: ANN + post-filter needs ~k/share candidates, while gathering rows costs
# ~5-10 streamed rows each (measured crossover ~5% at 1M, higher at 100k).
EXACT_ALLOWED_SHARE = 0.05
BUILD_JOBS = -1  # annoy builds trees on all cores (it releases the GIL); a background job anyway
_CHUNK_ELEMENTS = 1 << 22  # score-matrix elements per exact-search chunk (16 MB of float32)
_ADD_BATCH = 10_000  # items added between cancel checks / progress reports
MANIFEST = "current.json"
FORMAT = 1

Hits = list[list[tuple[int, float]]]


def search_k_for(n_results: int, n_items: int) -> int:
    """Annoy's search_k for `n_results` results from an index of `n_items` (see constants)."""
    grow = max(1.0, math.sqrt(n_items / SEARCH_K_REF_N))
    return int(max(SEARCH_K_MIN, SEARCH_K_PER_RESULT * n_results) * grow)


def _topk(matrix: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of `matrix` per query: (positions, scores), both (q, <=k), best first.
    Chunked so 1M x 512 never builds a (q, n) temporary; rows where mask is False are skipped."""
    n, q = len(matrix), len(queries)
    k = min(k, n)
    best_p, best_s = np.empty((q, 0), np.int64), np.empty((q, 0), np.float32)
    if k <= 0 or q == 0:
        return best_p, best_s
    rows = max(1024, _CHUNK_ELEMENTS // q)
    for start in range(0, n, rows):
        s = queries @ np.asarray(matrix[start : start + rows], dtype=np.float32).T
        if mask is not None:
            s[:, ~mask[start : start + rows]] = -np.inf
        p, s = _best(np.broadcast_to(np.arange(start, start + s.shape[1]), s.shape), s, k)
        best_p, best_s = _best(np.concatenate([best_p, p], 1), np.concatenate([best_s, s], 1), k)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_p, order, 1), np.take_along_axis(best_s, order, 1)


def _best(p: np.ndarray, s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns per row, unordered (argpartition: O(n), not a sort)."""
    if s.shape[1] <= k:
        return p, s
    keep = np.argpartition(s, s.shape[1] - k, axis=1)[:, -k:]
    return np.take_along_axis(p, keep, 1), np.take_along_axis(s, keep, 1)


def _hits(ids: np.ndarray, pos: np.ndarray, scores: np.ndarray) -> Hits:
    return [[(int(ids[p]), float(s)) for p, s in zip(prow, srow, strict=True) if s > -np.inf]
            for prow, srow in zip(pos, scores, strict=True)]


def exact_search(matrix: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> Hits:
    """Brute-force top-k (id, cosine) per query; the reference every ANN answer is held to."""
    pos, scores = _topk(matrix, np.atleast_2d(np.asarray(queries, np.float32)), k)
    return _hits(np.asarray(ids), pos, scores)


@dataclass(frozen=True, eq=False)
class _Generation:
    """One immutable build. Searches hold a reference, so a swap never pulls it from under them."""

    name: str
    ann: AnnoyIndex | None  # None for an empty build
    vectors: np.ndarray  # (n, dim) float32, memory-mapped
    ids: np.ndarray  # (n,) int64: position -> photo id
    sorted_ids: np.ndarray  # ids sorted, with...
    sorted_pos: np.ndarray  # ...their positions: id -> position by searchsorted
    version: int
    built_at: float
    n_trees: int

    @classmethod
    def open(cls, directory: Path, manifest: dict, dim: int) -> _Generation:
        name = manifest["generation"]
        vectors = np.load(directory / f"{name}.vectors.npy", mmap_mode="r")
        ids = np.load(directory / f"{name}.ids.npy")
        if vectors.shape != (len(ids), dim) or vectors.dtype != np.float32:
            raise ValueError(f"{name}: vectors {vectors.shape} {vectors.dtype} do not match {len(ids)} ids x {dim}")
        ann = None
        if len(ids):
            ann = AnnoyIndex(dim, METRIC)
            ann.load(str(directory / f"{name}.ann"))  # mmap, no prefault: opening is instant
            if ann.get_n_items() != len(ids):
                raise ValueError(f"{name}: annoy has {ann.get_n_items()} items, expected {len(ids)}")
        order = np.argsort(ids, kind="stable")
        return cls(name, ann, vectors, ids, ids[order], order, int(manifest["version"]),
                   float(manifest["built_at"]), int(manifest["n_trees"]))

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of those `ids` that are in this build (others are ignored)."""
        if not len(ids) or not len(self.ids):
            return np.empty(0, np.int64)
        i = np.minimum(np.searchsorted(self.sorted_ids, ids), len(self.ids) - 1)
        return self.sorted_pos[i[self.sorted_ids[i] == ids]]


def _ids_array(a: np.ndarray | None) -> np.ndarray:
    return np.empty(0, np.int64) if a is None else np.asarray(a, np.int64).reshape(-1)


def _write(path: Path, write: Callable[[BinaryIO], object] | None = None) -> None:
    """Write (or, with no `write`, just sync) a file durably: the switch must never point
    at data still in the page cache when the machine loses power."""
    with _errno_for_short_writes(path), open(path, "wb" if write else "rb+") as f:
        if write:
            write(f)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _errno_for_short_writes(path: Path) -> Iterator[None]:
    """numpy's tofile and annoy's save report a full disk as an OSError without errno
    ("152000 requested and 992 written", "... No space left on device"): give it ENOSPC, so
    callers can tell the user the disk is full instead of showing an unexplained error."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None and ("requested and" in str(exc) or "No space left" in str(exc)):
            raise OSError(errno.ENOSPC, f"No space left on device ({exc})", str(path)) from exc
        raise


@runtime_checkable
class IndexBackend(Protocol):
    """What search needs from an index of one encoder's vectors. The catalog stays the
    source of truth: versions are the catalog's vector rowids, so a backend always knows
    which rows it has seen, and a lost or stale index is rebuilt, never repaired.

    Another backend (a vector server, say) is one new module implementing this; the store
    picks it (desktop/store.py, `Store.index`)."""

    dim: int

    @property
    def built_version(self) -> int | None:
        """The catalog vector rowid the last completed build covers (None: never built)."""
        ...

    @property
    def version(self) -> int:
        """The newest catalog rowid searched: the build's, or a later add's."""
        ...

    @property
    def size(self) -> int: ...

    @property
    def built_at(self) -> float | None: ...

    def load(self) -> bool:
        """(Re)attach to the current build, e.g. one another process made; False if none."""
        ...

    def build(self, ids: np.ndarray, vectors: np.ndarray, version: int, *,
              on_progress: Callable[[int, int], None] | None = None,
              cancel: threading.Event | None = None) -> bool:
        """Build from the whole set and swap it in atomically (readers see old or new);
        False when cancelled (the old build stays current)."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray, version: int) -> None:
        """Vectors stored since the build (an id already present is replaced), searched
        from now on; `version` is the newest catalog rowid among them."""
        ...

    def remove(self, ids: np.ndarray) -> None:
        """Never return these ids again (until a build includes them once more)."""
        ...

    def search(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               exact: bool = False, effort: int | None = None) -> Hits:
        """Top-k (id, cosine) per query, best first; only `allowed` ids when given.
        `effort`: an approximate index may search as hard as for that many results (the
        top `effort` keep their recall; the rest are the best it met on the way)."""
        ...

    def sweep(self) -> None:
        """Tidy what a killed build left behind (the building process only)."""
        ...


class AnnoyBackend:
    """The Annoy index of one encoder's vectors in `directory` (created if missing).

    Annoy's trees are immutable, so `add` and `remove` keep a small delta in memory that is
    searched exactly next to the trees, until the next build covers it (the indexer
    rebuilds when the delta passes a few percent of the index)."""

    def __init__(self, directory: Path, dim: int) -> None:
        self.directory = Path(directory)
        self.dim = int(dim)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._gen: _Generation | None = None
        self._build_lock = threading.Lock()
        self._delta_lock = threading.Lock()
        self._reset_delta()

    def _reset_delta(self) -> None:
        self._delta: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32))
        self._removed = np.zeros(0, np.int64)
        self._delta_version = 0

    def _use(self, gen: _Generation) -> None:
        with self._delta_lock:
            if self._gen is None or gen.name != self._gen.name:
                self._gen = gen
                self._reset_delta()  # the new build covers the catalog up to its version

    # ---- state ---------------------------------------------------------------------------
    @property
    def built_version(self) -> int | None:
        return gen.version if (gen := self._gen) else None

    @property
    def version(self) -> int:
        return max(self.built_version or 0, self._delta_version)

    @property
    def size(self) -> int:
        return len(gen.ids) if (gen := self._gen) else 0

    @property
    def built_at(self) -> float | None:
        return gen.built_at if (gen := self._gen) else None

    def load(self) -> bool:
        """(Re)load the current generation from disk; False (and nothing loaded) if none."""
        for attempt in range(3):  # a writer in another process may swap and sweep meanwhile
            try:
                manifest = json.loads((self.directory / MANIFEST).read_text("utf-8"))
            except FileNotFoundError:
                return False
            except (OSError, ValueError) as exc:
                log.error("index %s: unreadable manifest: %s", self.directory, exc)
                return False
            if manifest.get("format") != FORMAT or manifest.get("dim") != self.dim:
                log.warning("index %s: format/dim %s/%s, want %s/%s; ignoring it", self.directory,
                            manifest.get("format"), manifest.get("dim"), FORMAT, self.dim)
                return False
            if self._gen is not None and self._gen.name == manifest["generation"]:
                return True
            try:
                self._use(_Generation.open(self.directory, manifest, self.dim))
                return True
            except (OSError, ValueError, KeyError) as exc:
                log.warning("index %s: cannot open %s (try %d): %s", self.directory,
                            manifest.get("generation"), attempt + 1, exc)
        return False

    # ---- build ---------------------------------------------------------------------------
    def build(self, ids: np.ndarray, vectors: np.ndarray, version: int, *, n_trees: int | None = None,
              on_progress: Callable[[int, int], None] | None = None,
              cancel: threading.Event | None = None) -> bool:
        """Build a new generation from (ids, vectors) and make it current.

        on_progress(done, total) is called as items are added and once more with
        (total, total) when the trees are built, before the switch. Returns False if
        cancelled; then, as after any exception, the old generation stays current and
        this build leaves no files behind."""
        ids = _ids_array(ids)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(ids)
        if vectors.shape != (n, self.dim):
            raise ValueError(f"vectors {vectors.shape} do not match {n} ids x dim {self.dim}")
        if n and ((s := np.sort(ids))[1:] == s[:-1]).any():
            raise ValueError("ids must be unique")
        trees = n_trees or N_TREES
        with self._build_lock:
            self._sweep()  # leftovers of a crashed build or of a Windows unlink that failed
            name = f"gen-{time.time_ns():x}{secrets.token_hex(2)}"
            files = [self.directory / f"{name}{ext}" for ext in (".ann", ".vectors.npy", ".ids.npy")]
            started = time.monotonic()
            try:
                _write(files[1], lambda f: np.save(f, vectors))
                _write(files[2], lambda f: np.save(f, ids))
                if n and not self._build_trees(files[0], vectors, trees, on_progress, cancel):
                    self._remove(files)
                    return False
                if on_progress:
                    on_progress(n, n)
                manifest = {"format": FORMAT, "generation": name, "dim": self.dim, "metric": METRIC,
                            "count": n, "version": int(version), "built_at": time.time(), "n_trees": trees}
                gen = _Generation.open(self.directory, manifest, self.dim)  # proves it opens first
                tmp = self.directory / f"{MANIFEST}.{secrets.token_hex(4)}.tmp"
                _write(tmp, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
                os.replace(tmp, self.directory / MANIFEST)  # the switch
            except BaseException:
                self._remove([*files, *self.directory.glob(f"{MANIFEST}.*.tmp")])
                raise
            self._use(gen)
            _fsync_dir(self.directory)
            log.info("index %s: %d vectors, %d trees in %.1fs", self.directory.name, n, trees,
                     time.monotonic() - started)
            self._sweep()  # old generations: readers holding them keep their mmaps (POSIX)
            return True

    def _build_trees(self, path: Path, vectors: np.ndarray, n_trees: int,
                     on_progress: Callable[[int, int], None] | None, cancel: threading.Event | None) -> bool:
        ann = AnnoyIndex(self.dim, METRIC)
        ann.set_seed(42)  # same data -> same trees: reproducible benchmarks
        n = len(vectors)
        # Items sit at dense positions 0..n-1: annoy allocates for the largest item number.
        for start in range(0, n, _ADD_BATCH):
            if cancel is not None and cancel.is_set():
                return False
            if on_progress:
                on_progress(start, n)
            # lists: annoy reads items one element at a time, and numpy scalars are slow
            for i, row in enumerate(vectors[start : start + _ADD_BATCH].tolist(), start):
                ann.add_item(i, row)
        if cancel is not None and cancel.is_set():
            return False
        ann.build(n_trees, n_jobs=BUILD_JOBS)  # one uninterruptible call: cancel is checked around it
        if cancel is not None and cancel.is_set():
            return False
        with _errno_for_short_writes(path):
            ann.save(str(path))
        ann.unload()
        _write(path)  # annoy writes with stdio and never syncs
        return True

    def sweep(self) -> None:
        """Delete what a build killed half-way (or just after its switch) left behind. Only
        the process that builds may call this: another's build in progress looks the same."""
        with self._build_lock:
            self._sweep()

    def _sweep(self) -> None:
        """Delete generation files the manifest does not name (best effort)."""
        try:
            current = json.loads((self.directory / MANIFEST).read_text("utf-8"))["generation"]
        except (OSError, ValueError, KeyError):
            current = None
        stale = [p for p in self.directory.iterdir()
                 if (p.name.startswith("gen-") and p.name.split(".")[0] != current) or p.suffix == ".tmp"]
        self._remove(stale)

    @staticmethod
    def _remove(paths: list[Path]) -> None:
        for p in paths:
            try:
                p.unlink(missing_ok=True)
            except OSError as exc:  # Windows: still mapped by a reader; the next sweep retries
                log.debug("index: cannot remove %s yet: %s", p, exc)

    # ---- changes since the build ---------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray, version: int) -> None:
        ids = _ids_array(ids)
        vectors = np.asarray(vectors, np.float32).reshape(len(ids), self.dim)
        with self._delta_lock:
            if version <= self._delta_version:
                return  # another searching thread added these already
            old_ids, old_vecs = self._delta
            keep = ~np.isin(old_ids, ids)  # a newer vector of the same photo replaces the old
            self._delta = (np.concatenate([old_ids[keep], ids]), np.concatenate([old_vecs[keep], vectors]))
            self._removed = self._removed[~np.isin(self._removed, ids)]
            self._delta_version = int(version)

    def remove(self, ids: np.ndarray) -> None:
        with self._delta_lock:
            self._removed = np.union1d(self._removed, _ids_array(ids))

    # ---- search --------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, *, extra_ids: np.ndarray | None = None,
               extra_vectors: np.ndarray | None = None, allowed: np.ndarray | None = None,
               removed: np.ndarray | None = None, exact: bool = False, effort: int | None = None) -> Hits:
        """Top-k (id, cosine) per query, best first, over the built index plus what was
        added since and `extra_*` (searched exactly; such an id overrides its built copy),
        never returning removed ids and, when `allowed` is given, only allowed ids.
        `effort` < k: Annoy inspects the candidates it would for `effort` results (a
        re-ranker's deeper list costs no extra tree walk; its tail may miss a neighbour)."""
        gen = self._gen  # one generation for the whole search, whatever a build swaps in
        with self._delta_lock:
            (delta_ids, delta_vecs), delta_removed = self._delta, self._removed
        if len(delta_ids) or len(delta_removed):
            if extra_ids is not None and len(extra_ids):
                explicit = _ids_array(extra_ids)
                keep = ~np.isin(delta_ids, explicit)
                extra_ids = np.concatenate([delta_ids[keep], explicit])
                extra_vectors = np.concatenate(
                    [delta_vecs[keep], np.asarray(extra_vectors, np.float32).reshape(len(explicit), self.dim)])
            else:
                extra_ids, extra_vectors = delta_ids, delta_vecs
            removed = delta_removed if removed is None else np.union1d(_ids_array(removed), delta_removed)
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dim {q.shape[1]}, index has {self.dim}")
        if k <= 0 or not len(q):
            return [[] for _ in q]
        removed_ids, extra = _ids_array(removed), _ids_array(extra_ids)
        allow = None if allowed is None else _ids_array(allowed)  # duplicates are harmless
        hits = [[] for _ in q] if gen is None else self._search_built(
            gen, q, k, np.union1d(removed_ids, extra), allow, exact, effort)
        if len(extra):
            keep = ~np.isin(extra, removed_ids)
            if allow is not None:
                keep &= np.isin(extra, allow)
            xv = np.asarray(extra_vectors, np.float32).reshape(len(extra), self.dim)
            for row, more in zip(hits, exact_search(xv[keep], extra[keep], q, k), strict=True):
                row.extend(more)
                row.sort(key=lambda hit: -hit[1])
                del row[k:]
        return hits

    def _search_built(self, gen: _Generation, q: np.ndarray, k: int, drop: np.ndarray,
                      allow: np.ndarray | None, exact: bool, effort: int | None = None) -> Hits:
        n = len(gen.ids)
        valid = np.ones(n, bool)
        drop_pos = gen.positions(drop)
        valid[drop_pos] = False
        if allow is not None:
            valid &= np.bincount(gen.positions(allow), minlength=n).astype(bool)
        n_valid = int(valid.sum())
        if n_valid == 0:
            return [[] for _ in q]
        if allow is not None and n_valid < EXACT_ALLOWED_SHARE * n:
            pos = np.flatnonzero(valid)  # ascending: the gather reads the memmap in order
            return exact_search(gen.vectors[pos], gen.ids[pos], q, k)
        mask = None if n_valid == n else valid
        # Ask Annoy for enough candidates that k survive the filter (2x slack, plus the
        # dropped ids: deleted near-duplicates cluster around the query), then score them
        # exactly with the stored vectors: true cosines, comparable with the extras.
        # Unfiltered, every candidate counts: no slack, which halves search_k (and the
        # query's ANN time) for the common query with no filter at the same recall.
        slack = 2 if n_valid < n else 1

        def needed(results: int) -> int:
            return min(n, math.ceil(slack * results * n / n_valid) + min(len(drop_pos), 10 * results))

        want = needed(k)
        search_k = search_k_for(needed(min(k, effort) if effort else k), n)
        if exact or gen.ann is None or n_valid <= EXACT_MAX_ITEMS or search_k * ANN_CANDIDATE_COST >= n:
            return _hits(gen.ids, *_topk(gen.vectors, q, k, mask))
        hits: Hits = []
        for query in q:
            cand = np.asarray(gen.ann.get_nns_by_vector(query.tolist(), want, search_k=search_k), np.int64)
            cand = np.sort(cand[valid[cand]])
            if len(cand) < min(k, n_valid):  # unlucky filter: fall back to exact for this query
                hits.extend(_hits(gen.ids, *_topk(gen.vectors, query[None], k, mask)))
                continue
            scores = gen.vectors[cand] @ query
            top = np.argsort(-scores, kind="stable")[:k]
            hits.append([(int(gen.ids[cand[i]]), float(scores[i])) for i in top])
        return hits


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); Windows cannot open directories and needs no call."""
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError as exc:  # some file systems refuse; the rename itself already happened
            log.debug("fsync %s: %s", directory, exc)
        finally:
            os.close(fd)
