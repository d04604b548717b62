"""The catalog: one SQLite file (WAL) that is the source of truth for everything Lumen knows.

Tables
- libraries: the watched roots (online/offline, watch on/off). The active encoder is in `meta`.
- files: one row per path on disk -> the photo (content) it holds.
- photos: one row per distinct content (identity = content hash). A move or rename only
  changes `files.path`; the photo keeps its id, vectors, captions and tags. Two copies of
  the same content are two files and one photo (search shows it once, with both paths).
- vectors: one per (photo, encoder id). Switching encoders adds rows, never wipes.
- captions / tags: per (photo, source), so a better captioner adds rows; `edited` marks
  a user's own words, which no machine overwrites.
- problems: folders or files that could not even be read (permission denied, loops).

Only the writer thread (see library.py) calls the write methods; every other thread opens
its own read connection (`Catalog(path, readonly=True)`). The schema is versioned with
`PRAGMA user_version`; each migration runs once, in order, in a transaction.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils

log = logging.getLogger(__name__)

GONE_GRACE_S = 24 * 3600  # a photo with no file left is purged after this (a slow move can come back)


class CatalogError(RuntimeError):
    pass


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


@dataclass(frozen=True)
class FileState:
    """What the catalog remembers of a path, for the stat-first reconcile."""

    id: int
    size: int
    mtime: float
    photo_id: int | None


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Caption:
    photo_id: int
    source: str
    text: str
    score: float | None
    edited: bool


def _m1(db: sqlite_utils.Database) -> None:
    db["libraries"].create(
        {"id": int, "root": str, "online": int, "watch": int, "added_at": float, "scanned_at": float},
        pk="id",
        not_null={"root", "online", "watch"},
        defaults={"online": 1, "watch": 1},
    )
    db["libraries"].create_index(["root"], unique=True)
    db["photos"].create(
        {
            "id": int,
            "hash": str,
            "size": int,
            "width": int,
            "height": int,
            "format": str,
            "taken_at": str,
            "camera": str,
            "status": str,
            "reason": str,
            "added_at": float,
            "gone_at": float,
        },
        pk="id",
        not_null={"hash", "status"},
        defaults={"status": "new"},
    )
    db["photos"].create_index(["hash"], unique=True)
    db["photos"].create_index(["status"])
    db["files"].create(
        {
            "id": int,
            "path": str,
            "library_id": int,
            "photo_id": int,
            "size": int,
            "mtime": float,
            "folder": str,
            "ext": str,
            "reason": str,
        },
        pk="id",
        not_null={"path", "library_id"},
        foreign_keys=[("library_id", "libraries", "id"), ("photo_id", "photos", "id")],
    )
    db["files"].create_index(["path"], unique=True)
    db["files"].create_index(["library_id"])
    db["files"].create_index(["photo_id"])
    db["files"].create_index(["folder"])
    # Not WITHOUT ROWID on purpose: the rowid grows with every write and is the index's
    # "built up to" watermark (a replaced vector gets a new rowid and is searched as new).
    db.execute(
        "CREATE TABLE vectors (photo_id INTEGER NOT NULL REFERENCES photos(id), encoder TEXT NOT NULL, "
        "vector BLOB NOT NULL, PRIMARY KEY (photo_id, encoder))"
    )
    db.execute("CREATE INDEX idx_vectors_encoder ON vectors(encoder)")
    db["captions"].create(
        {"photo_id": int, "source": str, "text": str, "score": float, "edited": int, "created_at": float},
        pk=("photo_id", "source"),
        not_null={"text"},
        defaults={"edited": 0},
        foreign_keys=[("photo_id", "photos", "id")],
    )
    db["tags"].create(
        {"photo_id": int, "source": str, "tag": str, "score": float},
        pk=("photo_id", "source", "tag"),
        foreign_keys=[("photo_id", "photos", "id")],
    )
    db["tags"].create_index(["tag"])
    db["problems"].create({"path": str, "reason": str, "at": float}, pk="path")
    db["meta"].create({"key": str, "value": str}, pk="key")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m1]
SCHEMA_VERSION = len(MIGRATIONS)


class Catalog:
    """A connection to the catalog file. Create one per thread."""

    def __init__(self, path: str | os.PathLike, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise CatalogError(f"{self.path}: no catalog yet (nothing has been indexed)")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        self.db = sqlite_utils.Database(conn)
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a power cut may lose the last transactions, never corrupts.
            conn.execute("PRAGMA synchronous=NORMAL")
            self.migrate()
        else:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"{self.path}: catalog schema v{version} is newer than this Lumen (v{SCHEMA_VERSION})"
                )

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def close(self) -> None:
        self.conn.close()

    def migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"{self.path}: catalog schema v{version} is newer than this Lumen (v{SCHEMA_VERSION}); upgrade Lumen"
            )
        for number in range(version, SCHEMA_VERSION):
            log.info("migrating catalog %s to v%d", self.path, number + 1)
            with self.conn:
                MIGRATIONS[number](self.db)
                self.conn.execute(f"PRAGMA user_version={number + 1}")

    def integrity_ok(self) -> bool:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # ---- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str | None) -> None:
        with self.conn:
            if value is None:
                self.conn.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

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
                "INSERT INTO libraries(root, online, watch, added_at) VALUES (?, 1, 1, ?)",
                (path, time.time()),
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
        rows = self.conn.execute(
            "SELECT path, id, size, mtime, photo_id FROM files WHERE library_id=?", (root_id,)
        )
        return {r[0]: FileState(r[1], r[2], r[3], r[4]) for r in rows}

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
                    "VALUES (?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT(path) DO UPDATE SET "
                    "library_id=excluded.library_id, photo_id=excluded.photo_id, size=excluded.size, "
                    "mtime=excluded.mtime, reason=NULL",
                    (
                        path,
                        root_id,
                        photo_id,
                        size,
                        mtime,
                        os.path.dirname(path),
                        os.path.splitext(path)[1].lower(),
                    ),
                )
                self.conn.execute("DELETE FROM problems WHERE path=?", (path,))
            self._mark_orphans_gone()
        return made

    def record_problem(self, path: str, reason: str) -> None:
        """A folder or file that could not be read at all (not even hashed)."""
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO problems(path, reason, at) VALUES (?, ?, ?)",
                (path, reason, time.time()),
            )

    def clear_problems_under(self, folder: str) -> None:
        with self.conn:
            self.conn.execute(
                "DELETE FROM problems WHERE path=? OR path LIKE ? ESCAPE '\\'",
                (folder, _like_prefix(folder.rstrip(os.sep) + os.sep)),
            )

    def move_file(self, src: str, dst: str, root_id: int, size: int, mtime: float) -> bool:
        """Rename a path in place (watcher move events). False when src was unknown."""
        with self.conn:
            cur = self.conn.execute(
                "UPDATE files SET path=?, library_id=?, folder=?, ext=?, size=?, mtime=? WHERE path=?",
                (dst, root_id, os.path.dirname(dst), os.path.splitext(dst)[1].lower(), size, mtime, src),
            )
            return cur.rowcount > 0

    def remove_files(self, paths: Iterable[str]) -> int:
        """Forget paths (deleted on disk). Photos left with no file are marked gone."""
        paths = list(paths)
        with self.conn:
            for chunk in _chunks(paths, 500):
                self.conn.execute(f"DELETE FROM files WHERE path IN ({_qs(chunk)})", chunk)
                self.conn.execute(f"DELETE FROM problems WHERE path IN ({_qs(chunk)})", chunk)
            self._mark_orphans_gone()
        return len(paths)

    def remove_folder(self, folder: str) -> int:
        """A deleted directory: every file below it goes."""
        prefix = folder.rstrip(os.sep) + os.sep
        rows = self.conn.execute(
            "SELECT path FROM files WHERE path LIKE ? ESCAPE '\\'", (_like_prefix(prefix),)
        ).fetchall()
        return self.remove_files(r[0] for r in rows)

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
                for table in ("vectors", "captions", "tags"):
                    self.conn.execute(f"DELETE FROM {table} WHERE photo_id IN ({_qs(chunk)})", chunk)
                self.conn.execute(f"DELETE FROM photos WHERE id IN ({_qs(chunk)})", chunk)
        return len(ids)

    # ---- encoding side ------------------------------------------------------------------
    def photos_to_encode(self, encoder: str, limit: int, after_id: int = 0) -> list[tuple[int, str]]:
        """(photo id, a readable path) for live, not-skipped photos on online roots that
        have no vector for `encoder` yet, in id order (resumable after a crash)."""
        rows = self.conn.execute(
            "SELECT p.id, MIN(f.path) FROM photos p JOIN files f ON f.photo_id=p.id "
            "JOIN libraries l ON l.id=f.library_id "
            "WHERE p.gone_at IS NULL AND p.status!='skipped' AND l.online=1 AND p.id>? "
            "AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.photo_id=p.id AND v.encoder=?) "
            "GROUP BY p.id ORDER BY p.id LIMIT ?",
            (after_id, encoder, limit),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def count_to_encode(self, encoder: str) -> int:
        return self.conn.execute(
            "SELECT COUNT(DISTINCT p.id) FROM photos p JOIN files f ON f.photo_id=p.id "
            "JOIN libraries l ON l.id=f.library_id WHERE p.gone_at IS NULL AND p.status!='skipped' "
            "AND l.online=1 AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.photo_id=p.id AND v.encoder=?)",
            (encoder,),
        ).fetchone()[0]

    def save_encoded(
        self,
        encoder: str,
        done: Sequence[tuple[int, np.ndarray, dict[str, object]]],
        skipped: Sequence[tuple[int, str]],
    ) -> None:
        """One transaction per batch: vectors + photo metadata, and skip reasons."""
        with self.conn:
            for photo_id, vector, meta in done:
                self.conn.execute(
                    "UPDATE photos SET status='ok', reason=NULL, width=?, height=?, format=?, taken_at=?, camera=? "
                    "WHERE id=?",
                    (
                        meta.get("width"),
                        meta.get("height"),
                        meta.get("format"),
                        meta.get("taken_at"),
                        meta.get("camera"),
                        photo_id,
                    ),
                )
                self.conn.execute(
                    "INSERT OR REPLACE INTO vectors(photo_id, encoder, vector) VALUES (?, ?, ?)",
                    (photo_id, encoder, np.asarray(vector, np.float32).tobytes()),
                )
            for photo_id, reason in skipped:
                self.conn.execute(
                    "UPDATE photos SET status='skipped', reason=? WHERE id=?", (reason, photo_id)
                )

    def vectors(self, encoder: str, since_rowid: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
        """(photo ids, (n, dim) matrix, max rowid) of live photos' vectors for an encoder."""
        rows = self.conn.execute(
            "SELECT v.rowid, v.photo_id, v.vector FROM vectors v JOIN photos p ON p.id=v.photo_id "
            "WHERE v.encoder=? AND v.rowid>? AND p.gone_at IS NULL ORDER BY v.rowid",
            (encoder, since_rowid),
        ).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), since_rowid
        ids = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        matrix = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), -1)
        return ids, matrix, rows[-1][0]

    def max_vector_rowid(self, encoder: str) -> int:
        return self.conn.execute(
            "SELECT COALESCE(MAX(rowid), 0) FROM vectors WHERE encoder=?", (encoder,)
        ).fetchone()[0]

    def vector_of(self, photo_id: int, encoder: str) -> np.ndarray | None:
        row = self.conn.execute(
            "SELECT vector FROM vectors WHERE photo_id=? AND encoder=?", (photo_id, encoder)
        ).fetchone()
        return np.frombuffer(row[0], np.float32).copy() if row else None

    def encoders_with_vectors(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT encoder, COUNT(*) FROM vectors GROUP BY encoder").fetchall())

    # ---- reading photos -----------------------------------------------------------------
    _PHOTO_SQL = (
        "SELECT p.id, p.hash, f.path, f.library_id, p.size, p.width, p.height, p.format, p.taken_at, p.camera, "
        "p.status, p.reason, l.online, f.mtime FROM photos p "
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

    def photo_by_path(self, path: str) -> Photo | None:
        row = self.conn.execute(
            "SELECT p.id, p.hash, f.path, f.library_id, p.size, p.width, p.height, p.format, p.taken_at, p.camera, "
            "p.status, p.reason, l.online, f.mtime FROM files f JOIN photos p ON p.id=f.photo_id "
            "JOIN libraries l ON l.id=f.library_id WHERE f.path=?",
            (os.path.abspath(path),),
        ).fetchone()
        return _photo(row) if row else None

    def paths_of(self, photo_id: int) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute("SELECT path FROM files WHERE photo_id=? ORDER BY id", (photo_id,))
        ]

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
            where.append("(f.folder=? OR f.folder LIKE ? ESCAPE '\\')")
            args += [folder, _like_prefix(folder + os.sep)]
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
        rows = self.conn.execute(
            f"SELECT p.status, COUNT(DISTINCT p.id) FROM photos p JOIN files f ON f.photo_id=p.id {cond} "
            "GROUP BY p.status",
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

    # ---- captions and tags (machine and user) --------------------------------------------
    def set_caption(
        self, photo_id: int, source: str, text: str, score: float | None = None, edited: bool = False
    ) -> None:
        """Store a caption under its source. A user's own words go under source "user" with
        edited=True; machines write under their own source, so they can never replace them."""
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO captions(photo_id, source, text, score, edited, created_at) VALUES (?,?,?,?,?,?)",
                (photo_id, source, text, score, int(edited), time.time()),
            )

    def captions(self, photo_id: int) -> list[Caption]:
        rows = self.conn.execute(
            "SELECT photo_id, source, text, score, edited FROM captions WHERE photo_id=? ORDER BY edited DESC, created_at DESC",
            (photo_id,),
        ).fetchall()
        return [Caption(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def set_tags(self, photo_id: int, source: str, tags: Sequence[tuple[str, float | None]]) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM tags WHERE photo_id=? AND source=?", (photo_id, source))
            self.conn.executemany(
                "INSERT OR REPLACE INTO tags(photo_id, source, tag, score) VALUES (?,?,?,?)",
                [(photo_id, source, t, s) for t, s in tags],
            )

    def tags(self, photo_id: int) -> list[tuple[str, str, float | None]]:
        return [
            tuple(r)
            for r in self.conn.execute(
                "SELECT tag, source, score FROM tags WHERE photo_id=? ORDER BY score DESC", (photo_id,)
            )
        ]


def _photo(r: Sequence) -> Photo:
    return Photo(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], bool(r[12]), r[13])


def _qs(items: Sequence) -> str:
    return ",".join("?" * len(items))


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
