"""Indexing: scan the roots, hash what changed, encode what is new, keep the ANN index fresh.

All of it runs in the caller's thread (the CLI's main thread or the window's IndexingJob, desktop/jobs/indexing.py)
and hands every catalog write to the library's writer thread, one short task per batch,
so a run can be cancelled between batches and a crash loses at most the batch in flight.
The Library facade exposes these as `lib.index()`, `lib.watch()` and friends. Formats are
the media decoders' business (desktop/media.py): the indexer asks the registry.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from desktop import images, media
from desktop.catalog import Catalog, Root
from desktop.encoders import DECODE_SIZE, decode_size
from desktop.scanner import Change, Watcher, plan
from desktop.store import Progress, Store

if TYPE_CHECKING:
    from desktop.rerank import Reranking

log = logging.getLogger(__name__)
T = TypeVar("T")

ENCODE_BATCH = 32
# Decode threads run below torch's: with as many intra-op threads as cores, a decoder that
# preempts one of them stalls the whole parallel region at its barrier (measured on 2 cores).
DECODE_NICE = 10
HASH_WORKERS = 4
WRITE_CHUNK = 500
RESCAN_INTERVAL_S = 300.0  # roots whose watcher failed are rescanned this often
ROOT_POLL_S = 5.0  # while watching, roots are checked for unmounts and returns this often
VANISHED = "file vanished"  # media.MediaError.reason of a path that no longer exists


@dataclass
class IndexReport:
    seen: int = 0
    hashed: int = 0
    new_photos: int = 0
    removed: int = 0
    encoded: int = 0
    skipped: int = 0
    frames: int = 0  # video frames encoded (each video brings several)
    regions: int = 0  # photos given the re-ranker's region features afterwards (backfill)
    problems: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0
    cancelled: bool = False
    offline: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0


@dataclass
class EncodedBatch:
    """What an encode backend hands back for one batch: `count` photos handled (including
    those that vanished and are left for the next scan), rows for Catalog.save_encoded
    (photo id, its vector, its metadata), skip reasons, and a video's frames (photo id ->
    [(seconds, vector)])."""

    count: int
    rows: list[tuple[int, np.ndarray, dict[str, object]]]
    skipped: list[tuple[int, str]]
    frames: dict[int, list[tuple[float, np.ndarray]]] = field(default_factory=dict)


class EncodeBackend(Protocol):
    """Decodes and encodes batches of (photo id, path) for encode_pending; the Indexer itself
    is the local one, desktop.cluster.RayBackend runs the same work on a Ray cluster."""

    def encode_batches(self, rows: Iterable[tuple[int, str]], size: int) -> Iterator[EncodedBatch]: ...


def encode_decoded(
    encode_images: Callable[[list[Any]], np.ndarray], dim: int, items: Sequence[tuple[int, media.Decoded]],
    encode_stills: Callable[[list[Any], list[int]], np.ndarray] | None = None,
) -> tuple[list[tuple[int, np.ndarray, dict[str, object]]], dict[int, list[tuple[float, np.ndarray]]]]:
    """Encode every frame of decoded items: (rows for save_encoded, video frames).
    A still's vector is its picture's; a video's is its frames' normalised mean (for
    "similar" and the ANN index), and text queries are matched against each frame (search.py).
    `encode_stills(pictures, photo_ids)`, when given, encodes the stills (the re-ranker's
    seam: it also stores their region features from the same pass). Shared by the local
    backend and the cluster's workers, so both store the same thing."""
    frames_of = [d.frames for _, d in items]
    still = [frames[0].at_s is None for frames in frames_of]
    pictures = [f.image for frames in frames_of for f in frames]
    vectors = np.zeros((len(pictures), dim), np.float32)
    if pictures and encode_stills is not None and any(still):
        positions = np.cumsum([0] + [len(f) for f in frames_of])[:-1]
        at = [int(positions[i]) for i, s in enumerate(still) if s]
        vectors[at] = encode_stills([pictures[i] for i in at], [items[i][0] for i, s in enumerate(still) if s])
        taken = set(at)
        rest = [i for i in range(len(pictures)) if i not in taken]
        if rest:
            vectors[rest] = encode_images([pictures[i] for i in rest])
    elif pictures:
        vectors = np.asarray(encode_images(pictures), np.float32)
    rows: list[tuple[int, np.ndarray, dict[str, object]]] = []
    frames: dict[int, list[tuple[float, np.ndarray]]] = {}
    start = 0
    for (photo_id, decoded), own_frames in zip(items, frames_of, strict=True):
        own = vectors[start : start + len(own_frames)]
        start += len(own_frames)
        meta = media.meta_fields(decoded.meta)
        if own_frames[0].at_s is not None:
            mean = own.mean(axis=0)
            rows.append((photo_id, mean / max(float(np.linalg.norm(mean)), 1e-9), meta))
            frames[photo_id] = list(zip([float(f.at_s or 0.0) for f in own_frames], own, strict=True))
        else:
            rows.append((photo_id, own[0], meta))
    return rows, frames


class Indexer:
    """The indexing pipeline of one data dir. `reranking` (desktop/rerank.py), when given,
    encodes stills so that the re-ranker's region features come from the same CNN pass."""

    def __init__(self, store: Store, reranking: Reranking | None = None) -> None:
        self.store = store
        self.reranking = reranking
        self.watcher: Watcher | None = None  # while watch() runs: status() shows its notices

    # ---- indexing -----------------------------------------------------------------------
    def index(
        self,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        backend: EncodeBackend | None = None,
    ) -> IndexReport:
        """Scan every root, encode what is new, rebuild the ANN index. Resumable: a run that
        is cancelled or killed keeps every finished batch and continues where it stopped."""
        started = time.monotonic()
        report = self.scan(progress, cancel)
        if not (cancel and cancel.is_set()):
            # Photos with no file left for a day were deleted, not moved: forget them now.
            self.store.write(lambda c: c.purge_gone())
            self.encode_pending(progress, cancel, report, backend)
        if not (cancel and cancel.is_set()):
            self.build_index(progress=progress, cancel=cancel)
        if not (cancel and cancel.is_set()) and backend is None:
            self.backfill_regions(progress, cancel, report)  # after the build: search is ready first
        report.cancelled = bool(cancel and cancel.is_set())
        report.seconds = time.monotonic() - started
        return report

    def scan(
        self,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        report: IndexReport | None = None,
    ) -> IndexReport:
        report = report or IndexReport()
        for root in self.store.read().roots():
            if cancel and cancel.is_set():
                break
            if self._root_missing(root):
                # An unmounted disk looks exactly like "everything deleted": never delete.
                if root.online:
                    log.warning("%s: library folder is missing or empty; marked offline, photos kept", root.path)
                    self.store.write(lambda c, r=root: c.update_root(r.id, online=0))
                report.offline.append(root.path)
                continue
            if not root.online:
                log.info("%s: library folder is back online", root.path)
                self.store.write(lambda c, r=root: c.update_root(r.id, online=1))
            self._scan_root(root, report, progress, cancel)
        return report

    def _scan_root(
        self, root: Root, report: IndexReport, progress: Callable | None, cancel: threading.Event | None
    ) -> None:
        if progress:
            progress(Progress("scan", 0, 0, message=root.path))
        result = plan(root.path, self.store.read().file_states(root.id))
        report.seen += result.seen
        report.problems += len(result.problems)
        self.store.write(lambda c: c.clear_problems_under(root.path))
        for path, reason in result.problems:
            self.store.write(lambda c, p=path, r=reason: c.record_problem(p, r))
        self._hash_and_record(root, result.to_hash, report, progress, cancel)
        if result.deleted and not (cancel and cancel.is_set()) and not self._root_missing(root):
            report.removed += self.store.write(lambda c: c.remove_files(result.deleted))
        if not (cancel and cancel.is_set()):
            self.store.write(lambda c: c.update_root(root.id, scanned_at=time.time()))

    def _hash_and_record(
        self,
        root: Root,
        items: Sequence[tuple[str, int, float]],
        report: IndexReport,
        progress: Callable | None,
        cancel: threading.Event | None,
    ) -> None:
        if not items:
            return
        started = time.monotonic()
        pending: list[tuple[str, int, float, str]] = []

        def flush() -> None:
            if pending:
                batch = list(pending)
                report.new_photos += self.store.write(lambda c: c.record_files(root.id, batch))
                pending.clear()

        with cf.ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="lumen-hash") as pool:
            for chunk_start in range(0, len(items), WRITE_CHUNK):
                if cancel and cancel.is_set():
                    break
                chunk = items[chunk_start : chunk_start + WRITE_CHUNK]
                for (path, size, mtime), result in zip(
                    chunk, pool.map(_safe_hash, [p for p, _, _ in chunk]), strict=True
                ):
                    if isinstance(result, images.ImageError):
                        if result.reason != "file vanished":
                            self.store.write(lambda c, p=path, r=result.reason: c.record_problem(p, r))
                        continue
                    pending.append((path, size, mtime, result))
                report.hashed += len(chunk)
                flush()
                if progress:
                    done = min(chunk_start + len(chunk), len(items))
                    rate = done / max(time.monotonic() - started, 1e-6)
                    progress(
                        Progress("hash", done, len(items), rate, (len(items) - done) / rate if rate else None)
                    )
        flush()

    def encode_pending(
        self,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        report: IndexReport | None = None,
        backend: EncodeBackend | None = None,
    ) -> IndexReport:
        """Decode and encode every live photo that has no vector for the active encoder;
        `backend` (e.g. desktop.cluster.RayBackend) does the decoding and encoding instead
        of this process. Every catalog write stays here: one transaction per batch."""
        report = report or IndexReport()
        encoder = self.store.encoder
        eid = encoder.id
        total = self.store.read().count_to_encode(eid)
        if total == 0:
            self._mark_complete(eid)
            return report
        started = time.monotonic()
        done = 0

        def rows_to_encode() -> Iterator[tuple[int, str]]:
            # One stream over every page of the catalog: the decode look-ahead never drains
            # between pages, so the encoder never waits for a cold start of the decoders.
            after = 0
            while not (cancel and cancel.is_set()):
                page = self.store.read().photos_to_encode(eid, limit=ENCODE_BATCH * 8, after_id=after)
                if not page:
                    return
                after = page[-1][0]
                yield from page

        results = (backend or self).encode_batches(rows_to_encode(), decode_size(encoder))
        try:
            for batch in results:
                self.store.write(lambda c, b=batch: c.save_encoded(eid, b.rows, b.skipped, b.frames))
                done += batch.count
                report.encoded += len(batch.rows)
                report.frames += int(sum(len(v) for v in batch.frames.values()))
                report.skipped += len(batch.skipped)
                if progress:
                    elapsed = time.monotonic() - started
                    rate = done / max(elapsed, 1e-6)
                    progress(Progress("encode", done, total, rate, (total - done) / rate if rate else None))
                if cancel and cancel.is_set():
                    break
        finally:
            results.close()  # stops the decoders (or the cluster's work) now, also on cancel or error
        report.encode_seconds += time.monotonic() - started
        if not (cancel and cancel.is_set()) and self.store.read().count_to_encode(eid) == 0:
            self._mark_complete(eid)
        return report

    def backfill_regions(
        self,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        report: IndexReport | None = None,
    ) -> IndexReport:
        """Region features for photos indexed before the active re-ranker (a new re-ranker
        file, an upgrade): decode them again and run the encoder's CNN pass, keeping only
        the regions (the vectors are already stored). Resumable batch by batch; until a
        photo has its regions it keeps its first-stage score."""
        report = report or IndexReport()
        if self.reranking is None:
            return report
        encoder = self.store.encoder
        todo = self.reranking.missing(encoder.id)
        if not todo:
            return report
        log.info("re-ranker: computing region features of %d photos indexed before it", len(todo))
        started, done = time.monotonic(), 0
        decoded = media.iter_decoded([p for _, p in todo], size=decode_size(encoder), nice=DECODE_NICE)
        try:
            for batch in _batches(zip(todo, decoded, strict=False), ENCODE_BATCH):
                ok = [(pid, r.frames[0].image) for (pid, _), (_, r) in batch
                      if not isinstance(r, media.MediaError) and r.frames and r.frames[0].at_s is None]
                if ok:
                    self.reranking.encode_images([im for _, im in ok], [pid for pid, _ in ok])
                report.regions += len(ok)
                done += len(batch)
                if progress:
                    rate = done / max(time.monotonic() - started, 1e-6)
                    progress(Progress("regions", done, len(todo), rate, (len(todo) - done) / rate))
                if cancel and cancel.is_set():
                    break
        finally:
            decoded.close()
        return report

    def encode_batches(self, rows: Iterable[tuple[int, str]], size: int) -> Iterator[EncodedBatch]:
        """The local backend: decode on a few threads here, encode with the library's encoder."""
        encoder = self.store.encoder
        todo: deque[tuple[int, str]] = deque()  # (photo id, path) handed to the decoder, in order

        def paths() -> Iterator[str]:
            for row in rows:
                todo.append(row)
                yield row[1]

        # The metadata (size, EXIF) comes from the decoder's own open of the file.
        decoded = media.iter_decoded(paths(), size=size, nice=DECODE_NICE)
        try:
            # ENCODE_BATCH counts frames, not items: a video brings up to 32 of them.
            for batch in _batches(((todo.popleft(), r) for r in decoded), ENCODE_BATCH, _frame_count):
                ok: list[tuple[int, media.Decoded]] = []
                skipped: list[tuple[int, str]] = []
                for (photo_id, path), (_, result) in batch:
                    if isinstance(result, media.MediaError) and result.reason == VANISHED:
                        # Moved or deleted since the scan: not a bad photo. Use another copy,
                        # else leave it for the next scan, which sees the move or the deletion.
                        found = self._decode_elsewhere(photo_id, path, size)
                        if found is None:
                            continue
                        path, result = found
                    if isinstance(result, media.MediaError):
                        skipped.append((photo_id, result.reason))
                        log.info("skipped %s: %s", path, result.reason)
                        continue
                    ok.append((photo_id, result))
                stills = self.reranking.encode_images if self.reranking is not None else None
                rows_out, frames = encode_decoded(self.store.encode_images, encoder.dim, ok, stills)
                yield EncodedBatch(len(batch), rows_out, skipped, frames)
        finally:
            decoded.close()  # stops the decoders now, also on cancel or error

    def _decode_elsewhere(
        self, photo_id: int, vanished: str, size: int = DECODE_SIZE
    ) -> tuple[str, media.Decoded | media.MediaError] | None:
        """(path, decoded or error) from another path of the photo (a copy), or None."""
        for other in self.store.read().paths_of(photo_id):
            if other == vanished:
                continue
            try:
                return other, media.decode(other, size)
            except media.MediaError as exc:
                if exc.reason != VANISHED:
                    return other, exc
        log.info("%s vanished before it was decoded; the next scan finds where it went", vanished)
        return None

    def _mark_complete(self, eid: str) -> None:
        value = json.dumps({"id": eid, "spec": self.store.encoder_spec, "weights": self.store.weights})
        if not self.store.readonly and self.store.read().get_meta("encoder.complete") != value:
            self.store.write(lambda c: c.set_meta("encoder.complete", value))

    def build_index(
        self,
        encoder_id: str | None = None,
        force: bool = False,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> bool:
        """Rebuild the ANN index from the catalog when it is stale. True if it rebuilt."""
        eid = encoder_id or self.store.encoder.id
        with self.store.build_lock:
            cat = self.store.read()
            top = cat.max_vector_rowid(eid)
            idx = self.store.index(
                eid, self.store.encoder.dim if eid == self.store.encoder.id else _dim_of(cat, eid)
            )
            if not force and idx.built_version == top and top > 0:
                idx.sweep()  # the index is current, but a killed run may have left files behind
                return False
            ids, matrix, top = cat.vectors(eid)
            if progress:
                progress(Progress("index", 0, len(ids), message=f"building index of {len(ids)} vectors"))
            if len(ids) == 0:
                return False
            idx.build(ids, matrix, version=top, cancel=cancel)
            if progress:
                progress(Progress("index", len(ids), len(ids)))
            return True

    def _index_stale(self, eid: str) -> bool:
        idx = self.store.indexes.get(eid)
        built = (idx.built_version or 0) if idx else 0
        pending = self.store.read().max_vector_rowid(eid) - built
        return pending > max(1000, 0.05 * (idx.size if idx else 0))

    # ---- watching -----------------------------------------------------------------------
    def watch(
        self,
        stop: threading.Event,
        on_batch: Callable[[list[Change], IndexReport], None] | None = None,
        progress: Callable[[Progress], None] | None = None,
        quiet_s: float = 0.5,
    ) -> Watcher:
        """Watch every online root until `stop` is set; each coalesced batch of changes is
        applied, encoded and made searchable. Runs in the caller's thread."""
        watcher = Watcher(quiet_s=quiet_s)
        self.watcher = watcher
        last_rescan = last_poll = time.monotonic()
        try:
            for root in self.store.read().roots():
                if root.watch and root.online:
                    watcher.watch(root.path)
            while not stop.is_set():
                changes = watcher.next_batch(timeout=0.2, stop=stop)
                if time.monotonic() - last_poll > ROOT_POLL_S:
                    last_poll = time.monotonic()
                    self._poll_roots(watcher, progress, stop)
                if watcher.degraded and time.monotonic() - last_rescan > RESCAN_INTERVAL_S:
                    last_rescan = time.monotonic()
                    self.index(progress=progress, cancel=stop)
                if not changes:
                    continue
                report = self.apply_changes(changes, progress=progress, cancel=stop)
                if on_batch:
                    on_batch(changes, report)
        finally:
            watcher.stop()
            self.watcher = None
        return watcher

    def _poll_roots(self, watcher: Watcher, progress: Callable | None, stop: threading.Event) -> None:
        """Notice unmounts and returns while watching: an unmounted disk sends no events for
        its files (and its watch dies), and one that comes back sends none at all."""
        for root in self.store.read().roots():
            if not root.watch:
                continue
            missing = self._root_missing(root)
            if root.online and missing:
                log.warning("%s: library folder is gone; marked offline, photos kept", root.path)
                self.store.write(lambda c, r=root: c.update_root(r.id, online=0))
                watcher.unwatch(root.path)
            elif not missing and (
                not root.online or not (watcher.watching(root.path) or root.path in watcher.degraded)
            ):  # back from offline, or a library added since watching began
                log.info("%s: library folder is here; watching it and catching up", root.path)
                watcher.unwatch(root.path)
                watcher.watch(root.path)  # first, so nothing that changes during the scan is lost
                self.index(progress=progress, cancel=stop)  # marks it online, finds what changed

    def _root_missing(self, root: Root) -> bool:
        """True for a library folder that is gone or unreadable, and for one that is empty
        while the catalog has files there: an unmounted disk often leaves its empty mount
        point behind, and that must read as "offline", never as "every photo deleted"."""
        try:
            with os.scandir(root.path) as entries:
                empty = next(entries, None) is None
        except OSError:
            return True
        return empty and self.store.read().has_files(root.id)

    def apply_changes(
        self,
        changes: Iterable[Change],
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> IndexReport:
        """Apply one coalesced batch from the watcher, then encode what it made new."""
        report = IndexReport()
        cat = self.store.read()
        upserts: dict[int, list[tuple[str, int, float]]] = {}
        roots = {r.id: r for r in cat.roots()}
        for change in changes:
            root = cat.root_for(change.dest or change.path)
            if root is None:
                continue
            if not os.path.isdir(root.path):
                # The whole root vanished (unmount): mark offline, delete nothing.
                if roots[root.id].online:
                    self.store.write(lambda c, r=root: c.update_root(r.id, online=0))
                    roots[root.id] = root
                report.offline.append(root.path)
                continue
            if change.kind == "moved":
                self._apply_move(change, upserts, report)
            elif change.kind == "deleted":
                if change.is_dir:
                    report.removed += self.store.write(lambda c, p=change.path: c.remove_folder(p))
                elif not os.path.exists(change.path):
                    report.removed += self.store.write(lambda c, p=change.path: c.remove_files([p]))
            elif change.is_dir:
                self._upsert_tree(change.path, root, upserts)
            else:
                _stat_into(change.path, root.id, upserts)
        for root_id, items in upserts.items():
            unique = list({path: (path, size, mtime) for path, size, mtime in items}.values())
            self._hash_and_record(roots[root_id], unique, report, progress, cancel)
        self.encode_pending(progress, cancel, report)
        if self._index_stale(self.store.encoder.id):
            self.build_index(progress=progress, cancel=cancel)
        return report

    def _apply_move(self, change: Change, upserts: dict, report: IndexReport) -> None:
        src, dest = change.path, change.dest or ""
        dest_root = self.store.read().root_for(dest)
        if change.is_dir:
            # Move every file below the folder by path prefix: ids, vectors, captions stay.
            if dest_root is None:
                report.removed += self.store.write(lambda c: c.remove_folder(src))
                return
            # Rewrite the paths in place (no window in which the photos look deleted), then
            # let the walk pick up whatever the catalog did not know (it stats, not hashes).
            self.store.write(lambda c: c.move_folder(src, dest, dest_root.id))
            self._upsert_tree(dest, dest_root, upserts)
            return
        if dest_root is None or not media.is_media_path(dest):
            report.removed += self.store.write(lambda c: c.remove_files([src]))
            return
        try:
            st = os.stat(dest)
        except OSError:
            return
        moved = self.store.write(lambda c: c.move_file(src, dest, dest_root.id, st.st_size, st.st_mtime))
        if not moved:
            known = self.store.read().file_state(dest)
            if known and known.photo_id is not None and (known.size, known.mtime) == (st.st_size, st.st_mtime):
                return  # a file below a moved folder: move_folder has already moved it
            upserts.setdefault(dest_root.id, []).append((dest, st.st_size, st.st_mtime))

    def _upsert_tree(self, folder: str, root: Root, upserts: dict) -> None:
        known = self.store.read().file_states(root.id)
        sub = plan(folder, {p: s for p, s in known.items() if p.startswith(folder.rstrip(os.sep) + os.sep)})
        upserts.setdefault(root.id, []).extend(sub.to_hash)


def _safe_hash(path: str) -> str | images.ImageError:
    try:
        return images.content_hash(path)
    except images.ImageError as exc:
        return exc
    except OSError as exc:
        return images.ImageError(path, exc.strerror or str(exc))


def _stat_into(path: str, root_id: int, upserts: dict) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return  # vanished already; its delete event follows
    upserts.setdefault(root_id, []).append((path, st.st_size, st.st_mtime))


def _batches(items: Iterable[T], size: int, weight: Callable[[T], int] | None = None) -> Iterable[list[T]]:
    """Lists of items whose weights (1 each by default) add up to about `size`: a batch
    closes when the next item would pass it (an item heavier than `size` goes alone)."""
    batch: list[T] = []
    total = 0
    for item in items:
        w = weight(item) if weight else 1
        if batch and total + w > size:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += w
        if total >= size:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def _frame_count(item: tuple[object, tuple[str, media.Decoded | media.MediaError]]) -> int:
    result = item[1][1]
    return len(result.frames) if isinstance(result, media.Decoded) else 1


def _dim_of(cat: Catalog, encoder_id: str) -> int:
    row = cat.conn.execute(
        "SELECT LENGTH(vector) FROM vectors WHERE encoder=? LIMIT 1", (encoder_id,)
    ).fetchone()
    return row[0] // 4 if row else 0
