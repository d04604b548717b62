"""Libraries (the watched roots), files on disk and the photos they hold: the scan side
(record, move, remove, purge) and the reading side (rows, filters, counts)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import sqlite_utils

from desktop.catalog.db import (
    _IN_RANGE,
    CatalogError,
    _chunks,
    _fetchall_fast,
    _fs,
    _prefix_range,
    _qs,
    _qs_text,
)

log = logging.getLogger("desktop.catalog")

GONE_GRACE_S = 24 * 3600  # a photo with no file left is purged after this (a slow move can come back)


@dataclass(frozen=True)
class Root:
    id: int
    path: str
    online: bool
    watch: bool
    added_at: float
    scanned_at: float | None


@dataclass(frozen=True)
class Photo:
    id: int
    hash: str
    path: str  # one current path (copies: the first one found)
    library_id: int
    size: int
    width: int | None
    height: int | None
    format: str | None
    taken_at: str | None
    camera: str | None
    status: str  # new | ok | skipped
    reason: str | None
    online: bool
    mtime: float
    # --- videos and RAW files (issue 15) ---
    kind: str = "image"  # image | video | raw (what the decoder said; "image" until encoded)
    duration_s: float | None = None
    latitude: float | None = None
    longitude: float | None = None

    @property
    def is_video(self) -> bool:
        return self.kind == "video"


class FileState(NamedTuple):
    """What the catalog remembers of a path, for the stat-first reconcile. A NamedTuple,
    not a dataclass: a re-scan makes one per file (100 000+), and a tuple is 10x cheaper."""

    id: int
    size: int
    mtime: float
    photo_id: int | None


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


class ItemsMixin:
    conn: sqlite3.Connection
    db: sqlite_utils.Database

    # ---- libraries ----------------------------------------------------------------------
    def add_root(self, path: str) -> Root:
        path = os.path.abspath(path)
        for root in self.roots():
            if path == root.path:
                return root
            if path.startswith(root.path.rstrip(os.sep) + os.sep):
                raise CatalogError(f"{path}: already inside the library {root.path}")
            if root.path.startswith(path.rstrip(os.sep) + os.sep):
                raise CatalogError(f"{path}: contains the library {root.path}; remove that one first")
        with self.conn:
            self.conn.execute(
                "INSERT INTO libraries(root, online, watch, added_at) VALUES (CAST(? AS TEXT), 1, 1, ?)",
                (_fs(path), time.time()),
            )
        return self.root_by_path(path)  # type: ignore[return-value]

    def remove_root(self, root_id: int) -> None:
        """Forget a library: its files go; photos left with no file are purged."""
        with self.conn:
            self.conn.execute("DELETE FROM files WHERE library_id=?", (root_id,))
            self.conn.execute("DELETE FROM libraries WHERE id=?", (root_id,))
            self._mark_orphans_gone()
        self.purge_gone(older_than=0)

    def roots(self) -> list[Root]:
        rows = self.conn.execute(
            "SELECT id, root, online, watch, added_at, scanned_at FROM libraries ORDER BY id"
        ).fetchall()
        return [Root(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5]) for r in rows]

    def root_by_path(self, path: str) -> Root | None:
        path = os.path.abspath(path)
        return next((r for r in self.roots() if r.path == path), None)

    def root_for(self, path: str) -> Root | None:
        """The library a file path lies in, if any."""
        path = os.path.abspath(path)
        for root in self.roots():
            if path == root.path or path.startswith(root.path.rstrip(os.sep) + os.sep):
                return root
        return None

    def update_root(self, root_id: int, **fields: object) -> None:
        allowed = {"online", "watch", "scanned_at"}
        bad = set(fields) - allowed
        if bad:
            raise CatalogError(f"cannot update library fields {sorted(bad)}")
        with self.conn:
            self.db["libraries"].update(root_id, fields)

    # ---- files and photos (scan side) ---------------------------------------------------
    def file_states(self, root_id: int) -> dict[str, FileState]:
        """path -> FileState of every file of a library: what a re-scan compares with."""
        # One query for the whole library (100 000+ rows), so per-row costs count.
        rows = _fetchall_fast(self.conn, "SELECT path, id, size, mtime, photo_id FROM files WHERE library_id=?",
                              (root_id,))
        return {path: FileState(i, size, mtime, photo) for path, i, size, mtime, photo in rows}

    def has_files(self, root_id: int) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM files WHERE library_id=? LIMIT 1", (root_id,)).fetchone()
            is not None
        )

    def file_state(self, path: str) -> FileState | None:
        row = self.conn.execute(
            "SELECT id, size, mtime, photo_id FROM files WHERE path=CAST(? AS TEXT)", (_fs(path),)
        ).fetchone()
        return FileState(*row) if row else None

    def record_files(self, root_id: int, found: Sequence[tuple[str, int, float, str]]) -> int:
        """Upsert (path, size, mtime, content hash) rows in one transaction.

        A hash already known reuses that photo (a move, a rename or a copy: no re-encode);
        a photo that was gone comes back with everything it had. Returns new photos made.
        """
        made = 0
        with self.conn:
            for path, size, mtime, digest in found:
                row = self.conn.execute("SELECT id FROM photos WHERE hash=?", (digest,)).fetchone()
                if row:
                    photo_id = row[0]
                    self.conn.execute(
                        "UPDATE photos SET gone_at=NULL WHERE id=? AND gone_at IS NOT NULL", (photo_id,)
                    )
                else:
                    photo_id = self.conn.execute(
                        "INSERT INTO photos(hash, size, status, added_at) VALUES (?, ?, 'new', ?)",
                        (digest, size, time.time()),
                    ).lastrowid
                    made += 1
                self.conn.execute(
                    "INSERT INTO files(path, library_id, photo_id, size, mtime, folder, ext, reason) "
                    "VALUES (CAST(? AS TEXT), ?, ?, ?, ?, CAST(? AS TEXT), ?, NULL) ON CONFLICT(path) DO UPDATE SET "
                    "library_id=excluded.library_id, photo_id=excluded.photo_id, size=excluded.size, "
                    "mtime=excluded.mtime, reason=NULL",
                    (
                        _fs(path),
                        root_id,
                        photo_id,
                        size,
                        mtime,
                        _fs(os.path.dirname(path)),
                        os.path.splitext(path)[1].lower(),
                    ),
                )
                self.conn.execute("DELETE FROM problems WHERE path=CAST(? AS TEXT)", (_fs(path),))
            self._mark_orphans_gone()
        return made

    def record_problem(self, path: str, reason: str) -> None:
        """A folder or file that could not be read at all (not even hashed)."""
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO problems(path, reason, at) VALUES (CAST(? AS TEXT), ?, ?)",
                (_fs(path), reason, time.time()),
            )

    def clear_problems_under(self, folder: str) -> None:
        with self.conn:
            self.conn.execute(
                f"DELETE FROM problems WHERE path=CAST(? AS TEXT) OR {_IN_RANGE.format('path')}",
                (_fs(folder), *_prefix_range(folder.rstrip(os.sep) + os.sep)),
            )

    def move_file(self, src: str, dst: str, root_id: int, size: int, mtime: float) -> bool:
        """Rename a path in place (watcher move events). False when src was unknown."""
        with self.conn:
            if not self.conn.execute(
                "SELECT 1 FROM files WHERE path=CAST(? AS TEXT)", (_fs(src),)
            ).fetchone():
                return False
            # `mv a.jpg b.jpg` over a catalogued b.jpg: b's old content is gone from that path
            # (its photo is marked gone if no copy is left); without this the UPDATE breaks
            # the unique path and the whole watch batch fails.
            self.conn.execute("DELETE FROM files WHERE path=CAST(? AS TEXT)", (_fs(dst),))
            self.conn.execute("DELETE FROM problems WHERE path=CAST(? AS TEXT)", (_fs(dst),))
            cur = self.conn.execute(
                "UPDATE files SET path=CAST(? AS TEXT), library_id=?, folder=CAST(? AS TEXT), ext=?, size=?, "
                "mtime=? WHERE path=CAST(? AS TEXT)",
                (
                    _fs(dst),
                    root_id,
                    _fs(os.path.dirname(dst)),
                    os.path.splitext(dst)[1].lower(),
                    size,
                    mtime,
                    _fs(src),
                ),
            )
            self._mark_orphans_gone()
            return cur.rowcount > 0

    def remove_files(self, paths: Iterable[str]) -> int:
        """Forget paths (deleted on disk). Photos left with no file are marked gone."""
        paths = list(paths)
        with self.conn:
            for chunk in _chunks(paths, 500):
                args = [_fs(p) for p in chunk]
                self.conn.execute(f"DELETE FROM files WHERE path IN ({_qs_text(chunk)})", args)
                self.conn.execute(f"DELETE FROM problems WHERE path IN ({_qs_text(chunk)})", args)
            self._mark_orphans_gone()
        return len(paths)

    def remove_folder(self, folder: str) -> int:
        """A deleted directory: every file below it goes."""
        prefix = folder.rstrip(os.sep) + os.sep
        rows = self.conn.execute(
            "SELECT path FROM files WHERE " + _IN_RANGE.format("path"), _prefix_range(prefix)
        ).fetchall()
        return self.remove_files(r[0] for r in rows)

    def move_folder(self, src: str, dst: str, root_id: int) -> int:
        """A renamed or moved directory: every path below it is rewritten in one transaction
        (ids, vectors, captions stay; nothing is re-hashed). Returns the files moved."""
        old, new = src.rstrip(os.sep) + os.sep, dst.rstrip(os.sep) + os.sep
        with self.conn:
            # rename(2) only replaces an empty folder, so rows under dst are stale leftovers.
            self.conn.execute("DELETE FROM files WHERE " + _IN_RANGE.format("path"), _prefix_range(new))
            rows = self.conn.execute(
                "SELECT id, path FROM files WHERE " + _IN_RANGE.format("path"), _prefix_range(old)
            ).fetchall()
            moved = [(_fs(new + path[len(old) :]), root_id, fid) for fid, path in rows]
            self.conn.executemany("UPDATE files SET path=CAST(? AS TEXT), library_id=? WHERE id=?", moved)
            self.conn.executemany(
                "UPDATE files SET folder=CAST(? AS TEXT) WHERE id=?",
                [(_fs(os.path.dirname(new + path[len(old) :])), fid) for fid, path in rows],
            )
            self.conn.execute("DELETE FROM problems WHERE " + _IN_RANGE.format("path"), _prefix_range(old))
            self._mark_orphans_gone()
            return len(rows)

    def _mark_orphans_gone(self) -> None:
        self.conn.execute(
            "UPDATE photos SET gone_at=? WHERE gone_at IS NULL AND NOT EXISTS "
            "(SELECT 1 FROM files f WHERE f.photo_id=photos.id)",
            (time.time(),),
        )

    def purge_gone(self, older_than: float = GONE_GRACE_S) -> int:
        """Delete photos (and their vectors, captions, tags) gone for longer than the grace."""
        cutoff = time.time() - older_than
        with self.conn:
            ids = [
                r[0]
                for r in self.conn.execute(
                    "SELECT id FROM photos WHERE gone_at IS NOT NULL AND gone_at<=?", (cutoff,)
                )
            ]
            for chunk in _chunks(ids, 500):
                for table in ("vectors", "frames", "captions", "tags", "tag_sets"):
                    self.conn.execute(f"DELETE FROM {table} WHERE photo_id IN ({_qs(chunk)})", chunk)
                self.conn.execute(f"DELETE FROM photos WHERE id IN ({_qs(chunk)})", chunk)
        return len(ids)


    # ---- reading photos -----------------------------------------------------------------
    _PHOTO_SQL = (
        "SELECT p.id, p.hash, f.path, f.library_id, p.size, p.width, p.height, p.format, p.taken_at, p.camera, "
        "p.status, p.reason, l.online, f.mtime, p.kind, p.duration_s, p.latitude, p.longitude FROM photos p "
        "JOIN files f ON f.id=(SELECT MIN(id) FROM files WHERE photo_id=p.id) "
        "JOIN libraries l ON l.id=f.library_id "
    )

    def photos(self, ids: Sequence[int]) -> dict[int, Photo]:
        """Live photos by id (gone ones are simply absent)."""
        out: dict[int, Photo] = {}
        for chunk in _chunks(list(ids), 500):
            rows = self.conn.execute(
                self._PHOTO_SQL + f"WHERE p.gone_at IS NULL AND p.id IN ({_qs(chunk)})", chunk
            ).fetchall()
            for r in rows:
                out[r[0]] = _photo(r)
        return out

    def live_photos(self, limit: int | None = None) -> list[Photo]:
        """The newest `limit` live photos by id (all when None), in id order: the window's
        listing with no query. One query, no id list: 2x cheaper than photos(ids) at 100k."""
        # A RAW shown through its JPEG is listed once, as the JPEG (its file is in paths_of).
        sql = self._PHOTO_SQL + (
            "WHERE p.gone_at IS NULL AND NOT EXISTS (SELECT 1 FROM raw_pairs rp WHERE rp.raw_id=p.id) "
            "ORDER BY p.id DESC"
        )
        rows = _fetchall_fast(self.conn, sql + (" LIMIT ?" if limit is not None else ""),
                              (limit,) if limit is not None else ())
        rows.reverse()
        return [_photo(r) for r in rows]

    def photo_by_path(self, path: str) -> Photo | None:
        row = self.conn.execute(
            "SELECT p.id, p.hash, f.path, f.library_id, p.size, p.width, p.height, p.format, p.taken_at, p.camera, "
            "p.status, p.reason, l.online, f.mtime, p.kind, p.duration_s, p.latitude, p.longitude "
            "FROM files f JOIN photos p ON p.id=f.photo_id "
            "JOIN libraries l ON l.id=f.library_id WHERE f.path=CAST(? AS TEXT)",
            (_fs(os.path.abspath(path)),),
        ).fetchone()
        return _photo(row) if row else None

    def paths_of(self, photo_id: int) -> list[str]:
        """The photo's files; for a JPEG shot with a RAW beside it, the RAW files after."""
        own = [
            r[0]
            for r in self.conn.execute("SELECT path FROM files WHERE photo_id=? ORDER BY id", (photo_id,))
        ]
        return own + [p for p in self.raw_files_of(photo_id) if p not in own]

    # --- videos and RAW files (issue 15) ---
    def raw_files_of(self, photo_id: int) -> list[str]:
        """RAW files of the same shot as this JPEG (same folder and stem)."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT raw_path FROM raw_pairs WHERE shown_id=? ORDER BY raw_path", (photo_id,))]

    def paired_raws(self, ids: Sequence[int]) -> set[int]:
        """Which of these photos are RAWs shown through their JPEG (search shows the JPEG)."""
        out: set[int] = set()
        for chunk in _chunks(list(ids), 500):
            out.update(r[0] for r in self.conn.execute(
                f"SELECT DISTINCT raw_id FROM raw_pairs WHERE raw_id IN ({_qs(chunk)})", chunk))
        return out

    def filtered_ids(
        self,
        root_id: int | None = None,
        folder: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        exts: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Photo ids matching every given filter (dates compare as ISO strings)."""
        where, args = ["p.gone_at IS NULL"], []
        if root_id is not None:
            where.append("f.library_id=?")
            args.append(root_id)
        if folder:
            folder = os.path.abspath(folder).rstrip(os.sep)
            where.append(f"(f.folder=CAST(? AS TEXT) OR {_IN_RANGE.format('f.folder')})")
            args += [_fs(folder), *_prefix_range(folder + os.sep)]
        if date_from:
            where.append("p.taken_at>=?")
            args.append(date_from)
        if date_to:
            where.append("p.taken_at<=?")
            args.append(date_to + "\uffff" if len(date_to) <= 10 else date_to)
        if exts:
            norm = [e.lower() if e.startswith(".") else "." + e.lower() for e in exts]
            where.append(f"f.ext IN ({_qs(norm)})")
            args += norm
        rows = self.conn.execute(
            "SELECT DISTINCT p.id FROM photos p JOIN files f ON f.photo_id=p.id WHERE " + " AND ".join(where),
            args,
        ).fetchall()
        return np.array(sorted(r[0] for r in rows), np.int64)

    def skipped(self, limit: int = 1000) -> list[Skipped]:
        rows = self.conn.execute(
            "SELECT MIN(f.path), p.reason FROM photos p JOIN files f ON f.photo_id=p.id "
            "WHERE p.status='skipped' AND p.gone_at IS NULL GROUP BY p.id "
            "UNION ALL SELECT path, reason FROM problems LIMIT ?",
            (limit,),
        ).fetchall()
        return [Skipped(r[0], r[1] or "unknown") for r in rows]

    def counts(self, root_id: int | None = None) -> dict[str, int]:
        """files, photos, ok, skipped, new for one library (or all)."""
        cond, args = ("WHERE f.library_id=?", [root_id]) if root_id is not None else ("", [])
        files = self.conn.execute(f"SELECT COUNT(*) FROM files f {cond}", args).fetchone()[0]
        # A RAW shown through its JPEG is part of that photo, not a photo waiting to be encoded.
        paired = "NOT EXISTS (SELECT 1 FROM raw_pairs rp WHERE rp.raw_id=p.id)"
        rows = self.conn.execute(
            f"SELECT p.status, COUNT(DISTINCT p.id) FROM photos p JOIN files f ON f.photo_id=p.id "
            f"{cond + ' AND' if cond else 'WHERE'} {paired} GROUP BY p.status",
            args,
        ).fetchall()
        by = dict(rows)
        return {
            "files": files,
            "photos": sum(by.values()),
            "ok": by.get("ok", 0),
            "skipped": by.get("skipped", 0),
            "new": by.get("new", 0),
        }

    # --- duplicates review (issue 15) ---
    def copies(self) -> dict[int, list[tuple[str, float]]]:
        """Live photos with several files: photo id -> [(path, file mtime)] in file order."""
        rows = self.conn.execute(
            "SELECT f.photo_id, f.path, f.mtime FROM files f JOIN photos p ON p.id=f.photo_id "
            "WHERE p.gone_at IS NULL AND f.photo_id IN "
            "(SELECT photo_id FROM files WHERE photo_id IS NOT NULL GROUP BY photo_id HAVING COUNT(*) > 1) "
            "ORDER BY f.photo_id, f.id"
        ).fetchall()
        out: dict[int, list[tuple[str, float]]] = {}
        for pid, path, mtime in rows:
            out.setdefault(pid, []).append((path, mtime))
        return out

    def edited_ids(self, ids: Sequence[int]) -> set[int]:
        """Those of `ids` with the user's own caption or tags."""
        out: set[int] = set()
        for chunk in _chunks(list(ids), 500):
            rows = self.conn.execute(
                f"SELECT photo_id FROM captions WHERE source='user' AND photo_id IN ({_qs(chunk)}) "
                f"UNION SELECT photo_id FROM tag_sets WHERE source='user' AND photo_id IN ({_qs(chunk)})",
                chunk + chunk,
            ).fetchall()
            out |= {r[0] for r in rows}
        return out

    # ==== captions, tags, words, smart albums (issue 5) ======================================
    # Captions and tags are stored per (photo, source), so a better captioner adds rows. The
    # user's own words live under source USER: a caption with edited=1, and a tag set marked


def _photo(r: Sequence) -> Photo:
    return Photo(*r[:12], bool(r[12]), r[13], r[14] or "image", *r[15:18])


