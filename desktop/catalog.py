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
- tag_sets: which source has decided a photo's tags (a "user" row: the user's set wins).
- photo_words: FTS5 word index over each photo's shown caption and tags (kept by triggers).
- albums: saved searches ("smart albums"), evaluated when opened.
- problems: folders or files that could not even be read (permission denied, loops).

Only the writer thread (see library.py) calls the write methods; every other thread opens
its own read connection (`Catalog(path, readonly=True)`). The schema is versioned with
`PRAGMA user_version`; each migration runs once, in order, in a transaction.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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


@dataclass(frozen=True)
class Caption:
    photo_id: int
    source: str
    text: str
    score: float | None
    edited: bool


# ---- issue 5: captions, tags, words, albums ------------------------------------------------
@dataclass(frozen=True)
class Pending:
    """A photo the captioning job still has work for, and which work."""

    photo_id: int
    path: str
    need_caption: bool
    need_tags: tuple[bool, ...]  # one per tag source asked about


@dataclass(frozen=True)
class WordMatch:
    photo_id: int
    rank: float  # bm25: lower is better
    snippet: str  # the matching words in [brackets]


@dataclass(frozen=True)
class PhotoText:
    photo_id: int
    paths: list[str]
    caption: str | None
    caption_source: str | None
    caption_edited: bool
    tags: list[str]
    tags_edited: bool


@dataclass(frozen=True)
class Album:
    """A saved search ("smart album"): photos are found when it is opened, so new ones appear."""

    name: str
    query: str
    mode: str = "both"  # words | meaning | both
    filters: dict[str, Any] = field(default_factory=dict)  # desktop.library.Filters fields
    max_photos: int | None = None  # meaning matches kept (the words matches are all kept)
    min_score: float | None = None  # least cosine similarity of a meaning match


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


# ---- schema v2: word index, user tag sets, smart albums (issue 5) -------------------------
USER = "user"  # the source of a user's own caption and tags; no machine writes under it


def _words_insert(ref: str, source: str = "") -> str:
    """SQL that (re)inserts photo `ref`'s row of the word index. What is indexed is what the
    user sees: their own caption when they wrote one (a machine caption they corrected must
    stop matching), else every machine caption; their own tag set when they edited the
    tags, else the machines' tags. `source` is an optional FROM clause that defines `ref`."""
    return (
        "INSERT INTO photo_words(rowid, caption, tags) SELECT id, c, t FROM (SELECT "
        f"{ref} AS id, COALESCE("
        f"(SELECT text FROM captions WHERE photo_id={ref} AND edited=1 ORDER BY created_at DESC LIMIT 1), "
        f"(SELECT group_concat(text, char(10)) FROM captions WHERE photo_id={ref})) AS c, "
        f"(SELECT group_concat(tag, ', ') FROM (SELECT DISTINCT tag FROM tags WHERE photo_id={ref} AND "
        f"(source='{USER}') = EXISTS(SELECT 1 FROM tag_sets WHERE photo_id={ref} AND source='{USER}'))) AS t "
        f"{source}) WHERE c IS NOT NULL OR t IS NOT NULL"
    )


def _words_refresh(ref: str) -> str:
    return f"DELETE FROM photo_words WHERE rowid={ref}; {_words_insert(ref)};"


def _m2(db: sqlite_utils.Database) -> None:
    # Who has set a photo's tags, and when (even to none: a tagger that found nothing above
    # its threshold is done with that photo). A USER row means the user's set replaces the
    # machines' tags for that photo.
    db.execute(
        "CREATE TABLE tag_sets (photo_id INTEGER NOT NULL REFERENCES photos(id), source TEXT NOT NULL, "
        "at REAL NOT NULL, PRIMARY KEY (photo_id, source))"
    )
    db.execute("INSERT INTO tag_sets(photo_id, source, at) SELECT DISTINCT photo_id, source, 0 FROM tags")
    db.execute(
        "CREATE VIEW effective_tags AS SELECT t.photo_id AS photo_id, t.tag AS tag, MAX(t.score) AS score, "
        "MIN(t.rowid) AS pos "  # pos: the user's own order (their tags have no score)
        f"FROM tags t WHERE (t.source='{USER}') = EXISTS(SELECT 1 FROM tag_sets s "
        f"WHERE s.photo_id=t.photo_id AND s.source='{USER}') GROUP BY t.photo_id, t.tag"
    )
    # One row per photo (rowid = photo id), so bm25 ranks photos, not caption rows. Kept in
    # sync by triggers, i.e. in the writing transaction: an edit is findable once saved.
    # Porter stemming: "dogs" finds "dog", "running" finds "run".
    db.execute(
        "CREATE VIRTUAL TABLE photo_words USING fts5(caption, tags, "
        "tokenize='porter unicode61 remove_diacritics 2')"
    )
    # Tags change only together with their tag_sets row (Catalog._put_tags writes it last,
    # purge_gone deletes it last), so the triggers sit on tag_sets, not on every tag row:
    # one refresh per (photo, tagger) instead of one per tag.
    for table in ("captions", "tag_sets"):
        new, old = _words_refresh("NEW.photo_id"), _words_refresh("OLD.photo_id")
        db.execute(f"CREATE TRIGGER {table}_words_ai AFTER INSERT ON {table} BEGIN {new} END")
        db.execute(f"CREATE TRIGGER {table}_words_au AFTER UPDATE ON {table} BEGIN {new} END")
        db.execute(
            f"CREATE TRIGGER {table}_words_move AFTER UPDATE OF photo_id ON {table} "
            f"WHEN OLD.photo_id != NEW.photo_id BEGIN {old} END"
        )
        db.execute(f"CREATE TRIGGER {table}_words_ad AFTER DELETE ON {table} BEGIN {old} END")
    db.execute(
        _words_insert(
            "ids.photo_id", "FROM (SELECT photo_id FROM captions UNION SELECT photo_id FROM tags) ids"
        )
    )
    db.execute(
        "CREATE TABLE albums (name TEXT PRIMARY KEY COLLATE NOCASE, query TEXT NOT NULL, "
        "mode TEXT NOT NULL DEFAULT 'both', filters TEXT NOT NULL DEFAULT '{}', max_photos INTEGER, "
        "min_score REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m1, _m2]
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
        # Linux file names are bytes and need not be UTF-8. Such a path is stored as TEXT
        # holding its raw bytes (see _fs) and read back with surrogateescape, as os does.
        conn.text_factory = _text
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
            # An explicit BEGIN: sqlite3 opens no transaction for DDL by itself, so with a
            # plain `with conn:` each CREATE commits at once and a crash half-way leaves
            # half a schema that the next start cannot migrate ("table already exists").
            with self.db.atomic():
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
                for table in ("vectors", "captions", "tags", "tag_sets"):
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
        """Photos photos_to_encode would hand out. Asked on every re-scan, so the vector test
        comes first: for an encoded library it settles each photo with one primary-key
        lookup, and files and libraries are only joined for photos that have no vector
        (EXISTS instead of a join and COUNT(DISTINCT), which sorted every file)."""
        return self.conn.execute(
            "SELECT COUNT(*) FROM photos p WHERE p.gone_at IS NULL AND p.status!='skipped' "
            "AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.photo_id=p.id AND v.encoder=?) "
            "AND EXISTS (SELECT 1 FROM files f JOIN libraries l ON l.id=f.library_id "
            "WHERE f.photo_id=p.id AND l.online=1)",
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

    def live_photos(self, limit: int | None = None) -> list[Photo]:
        """The newest `limit` live photos by id (all when None), in id order: the window's
        listing with no query. One query, no id list: 2x cheaper than photos(ids) at 100k."""
        sql = self._PHOTO_SQL + "WHERE p.gone_at IS NULL ORDER BY p.id DESC"
        rows = _fetchall_fast(self.conn, sql + (" LIMIT ?" if limit is not None else ""),
                              (limit,) if limit is not None else ())
        rows.reverse()
        return [_photo(r) for r in rows]

    def photo_by_path(self, path: str) -> Photo | None:
        row = self.conn.execute(
            "SELECT p.id, p.hash, f.path, f.library_id, p.size, p.width, p.height, p.format, p.taken_at, p.camera, "
            "p.status, p.reason, l.online, f.mtime FROM files f JOIN photos p ON p.id=f.photo_id "
            "JOIN libraries l ON l.id=f.library_id WHERE f.path=CAST(? AS TEXT)",
            (_fs(os.path.abspath(path)),),
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

    # ==== captions, tags, words, smart albums (issue 5) ======================================
    # Captions and tags are stored per (photo, source), so a better captioner adds rows. The
    # user's own words live under source USER: a caption with edited=1, and a tag set marked
    # in tag_sets. Machines write under their own source and cannot touch either. Every write
    # below runs in one transaction, and the triggers of schema v2 update the word index
    # (photo_words) inside it.

    def set_caption(
        self, photo_id: int, source: str, text: str, score: float | None = None, edited: bool = False
    ) -> None:
        """Store a caption under its source. edited=True (or source USER) is the user's own
        caption; a machine write never replaces a row the user edited."""
        if edited or source == USER:
            self.set_user_caption(photo_id, text)
            return
        with self.conn:
            self._put_caption(photo_id, source, text, score)

    def _put_caption(self, photo_id: int, source: str, text: str, score: float | None) -> None:
        self.conn.execute(
            "INSERT INTO captions(photo_id, source, text, score, edited, created_at) VALUES (?,?,?,?,0,?) "
            "ON CONFLICT(photo_id, source) DO UPDATE SET text=excluded.text, score=excluded.score, "
            "created_at=excluded.created_at WHERE captions.edited=0",
            (photo_id, source, text, score, time.time()),
        )

    def set_user_caption(self, photo_id: int, text: str | None) -> None:
        """The user's caption; empty or None removes it (the machines' caption shows again)."""
        text = " ".join((text or "").split())
        with self.conn:
            if not text:
                self.conn.execute("DELETE FROM captions WHERE photo_id=? AND source=?", (photo_id, USER))
            else:
                self.conn.execute(
                    "INSERT OR REPLACE INTO captions(photo_id, source, text, score, edited, created_at) "
                    "VALUES (?,?,?,NULL,1,?)",
                    (photo_id, USER, text, time.time()),
                )

    def captions(self, photo_id: int) -> list[Caption]:
        """Every caption of a photo; the one to show first (the user's, else the newest)."""
        rows = self.conn.execute(
            "SELECT photo_id, source, text, score, edited FROM captions WHERE photo_id=? "
            "ORDER BY edited DESC, created_at DESC",
            (photo_id,),
        ).fetchall()
        return [Caption(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def caption_of(self, photo_id: int) -> Caption | None:
        found = self.captions(photo_id)
        return found[0] if found else None

    def set_tags(self, photo_id: int, source: str, tags: Sequence[tuple[str, float | None]]) -> None:
        """A machine's tags for a photo (replacing that machine's earlier ones)."""
        if source == USER:
            self.set_user_tags(photo_id, [t for t, _ in tags])
            return
        with self.conn:
            self._put_tags(photo_id, source, tags)

    def _put_tags(self, photo_id: int, source: str, tags: Sequence[tuple[str, float | None]]) -> None:
        self.conn.execute("DELETE FROM tags WHERE photo_id=? AND source=?", (photo_id, source))
        self.conn.executemany(
            "INSERT OR REPLACE INTO tags(photo_id, source, tag, score) VALUES (?,?,?,?)",
            [(photo_id, source, t, s) for t, s in tags],
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO tag_sets(photo_id, source, at) VALUES (?,?,?)",
            (photo_id, source, time.time()),
        )

    def set_user_tags(self, photo_id: int, tags: Sequence[str] | None) -> None:
        """The user's tag set, which replaces the machines' tags for this photo (also when
        empty). None forgets the user's set: the machines' tags show again."""
        with self.conn:
            if tags is None:
                self.conn.execute("DELETE FROM tags WHERE photo_id=? AND source=?", (photo_id, USER))
                self.conn.execute("DELETE FROM tag_sets WHERE photo_id=? AND source=?", (photo_id, USER))
                return
            seen: dict[str, str] = {}
            for tag in tags:
                tag = " ".join(tag.split())
                if tag:
                    seen.setdefault(tag.casefold(), tag)
            self._put_tags(photo_id, USER, [(t, None) for t in seen.values()])

    def tags(self, photo_id: int) -> list[tuple[str, str, float | None]]:
        """Every (tag, source, score) row of a photo, machines' and user's."""
        return [
            tuple(r)
            for r in self.conn.execute(
                "SELECT tag, source, score FROM tags WHERE photo_id=? ORDER BY score DESC", (photo_id,)
            )
        ]

    def effective_tags(self, photo_id: int) -> list[str]:
        """The tags a user sees: their own set if they edited it, else the machines' (best first)."""
        rows = self.conn.execute(
            "SELECT tag FROM effective_tags WHERE photo_id=? ORDER BY score IS NULL, score DESC, pos",
            (photo_id,),
        )
        return [r[0] for r in rows]

    def tags_edited(self, photo_id: int) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM tag_sets WHERE photo_id=? AND source=?", (photo_id, USER)
        ).fetchone()
        return row is not None

    def save_machine_output(
        self,
        caption_source: str | None,
        captions: Sequence[tuple[int, str, float | None]],
        tags: Mapping[str, Sequence[tuple[int, Sequence[tuple[str, float | None]]]]],
    ) -> None:
        """One captioning batch in one transaction: captions under `caption_source`, and per
        tag source the (photo, tags) it decided."""
        with self.conn:
            if caption_source is not None:
                for photo_id, text, score in captions:
                    self._put_caption(photo_id, caption_source, text, score)
            for source, per_photo in tags.items():
                for photo_id, found in per_photo:
                    self._put_tags(photo_id, source, found)

    def photos_needing(
        self,
        caption_source: str | None,
        tag_sources: Sequence[str],
        limit: int,
        after_id: int = 0,
        redo: bool = False,
        encoder: str | None = None,
    ) -> list[Pending]:
        """Live, encoded photos on online roots that lack a caption from `caption_source` or
        tags from one of `tag_sources` (every such photo when `redo`), in id order. With
        `encoder`, only photos that have its vector (the taggers work from vectors)."""
        needs, args = self._needs(caption_source, tag_sources, redo)
        has_vector, vargs = self._has_vector(encoder)
        having = "" if redo else "HAVING " + " OR ".join(f"n{i}" for i in range(len(needs)))
        rows = self.conn.execute(
            f"SELECT p.id, MIN(f.path), {', '.join(f'{n} AS n{i}' for i, n in enumerate(needs))} "
            "FROM photos p JOIN files f ON f.photo_id=p.id JOIN libraries l ON l.id=f.library_id "
            f"WHERE p.gone_at IS NULL AND p.status='ok' AND l.online=1 AND p.id>? {has_vector} "
            f"GROUP BY p.id {having} ORDER BY p.id LIMIT ?",
            [*args, after_id, *vargs, limit],
        ).fetchall()
        return [Pending(r[0], r[1], bool(r[2]), tuple(bool(x) for x in r[3:])) for r in rows]

    def count_needing(
        self,
        caption_source: str | None,
        tag_sources: Sequence[str],
        redo: bool = False,
        encoder: str | None = None,
    ) -> int:
        needs, args = self._needs(caption_source, tag_sources, redo)
        has_vector, vargs = self._has_vector(encoder)
        cond = "" if redo else "AND (" + " OR ".join(needs) + ")"
        return self.conn.execute(
            "SELECT COUNT(*) FROM photos p WHERE p.gone_at IS NULL AND p.status='ok' AND EXISTS "
            "(SELECT 1 FROM files f JOIN libraries l ON l.id=f.library_id WHERE f.photo_id=p.id AND l.online=1) "
            f"{has_vector} {cond}",
            [*vargs, *args],
        ).fetchone()[0]

    @staticmethod
    def _has_vector(encoder: str | None) -> tuple[str, list]:
        if encoder is None:
            return "", []
        return "AND EXISTS (SELECT 1 FROM vectors v WHERE v.photo_id=p.id AND v.encoder=?)", [encoder]

    @staticmethod
    def _needs(caption_source: str | None, tag_sources: Sequence[str], redo: bool) -> tuple[list[str], list]:
        """SQL expressions "this photo still needs X" for the caption and each tag source."""
        if redo:
            return ["1" if caption_source else "0", *["1"] * len(tag_sources)], []
        needs, args = [], []
        if caption_source:
            needs.append("NOT EXISTS (SELECT 1 FROM captions c WHERE c.photo_id=p.id AND c.source=?)")
            args.append(caption_source)
        else:
            needs.append("0")
        for source in tag_sources:
            needs.append("NOT EXISTS (SELECT 1 FROM tag_sets s WHERE s.photo_id=p.id AND s.source=?)")
            args.append(source)
        return needs, args

    def vectors_for(self, ids: Sequence[int], encoder: str) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for chunk in _chunks(list(ids), 500):
            rows = self.conn.execute(
                f"SELECT photo_id, vector FROM vectors WHERE encoder=? AND photo_id IN ({_qs(chunk)})",
                [encoder, *chunk],
            )
            out.update((r[0], np.frombuffer(r[1], np.float32)) for r in rows)
        return out

    def tag_counts(self, contains: str | None = None, limit: int | None = None) -> list[tuple[str, int]]:
        """(tag, number of live photos showing it), most used first."""
        where, args = "", []
        if contains:
            where = "AND t.tag LIKE ? ESCAPE '\\'"
            args.append("%" + _like_prefix(contains)[:-1] + "%")
        rows = self.conn.execute(
            "SELECT t.tag, COUNT(*) AS n FROM effective_tags t JOIN photos p ON p.id=t.photo_id "
            f"WHERE p.gone_at IS NULL {where} GROUP BY t.tag ORDER BY n DESC, t.tag LIMIT ?",
            [*args, -1 if limit is None else limit],
        )
        return [(r[0], r[1]) for r in rows]

    def photos_with_tag(self, tag: str) -> list[int]:
        rows = self.conn.execute(
            "SELECT t.photo_id FROM effective_tags t JOIN photos p ON p.id=t.photo_id "
            "WHERE t.tag=? AND p.gone_at IS NULL ORDER BY t.score IS NULL, t.score DESC, t.photo_id",
            (tag,),
        )
        return [r[0] for r in rows]

    def find_words(
        self, match: str, limit: int = 1000, allowed: Sequence[int] | None = None
    ) -> list[WordMatch]:
        """Live photos whose caption or tags match an FTS5 query, best (bm25) first. A match
        in the tags weighs double: tags are short, deliberate labels."""
        where, args = "", [match]
        if allowed is not None:
            where = "AND w.rowid IN (SELECT value FROM json_each(?))"
            args.append(json.dumps([int(i) for i in allowed]))
        try:
            rows = self.conn.execute(
                "SELECT w.rowid, bm25(photo_words, 1.0, 2.0) AS rank, "
                "snippet(photo_words, -1, '[', ']', '…', 12) FROM photo_words w JOIN photos p ON p.id=w.rowid "
                f"WHERE photo_words MATCH ? AND p.gone_at IS NULL {where} ORDER BY rank LIMIT ?",
                [*args, limit],
            ).fetchall()
        except sqlite3.OperationalError as exc:  # a malformed FTS5 expression
            raise CatalogError(f"cannot search for {match!r}: {exc}") from exc
        return [WordMatch(r[0], r[1], r[2]) for r in rows]

    def photo_texts(self, ids: Sequence[int] | None = None) -> Iterator[PhotoText]:
        """Caption (the one shown), its source, edited flag, tags and paths of live photos."""
        cond, args = "", []
        if ids is not None:
            cond, args = "AND p.id IN (SELECT value FROM json_each(?))", [json.dumps([int(i) for i in ids])]
        photo_ids = [
            r[0]
            for r in self.conn.execute(
                f"SELECT p.id FROM photos p WHERE p.gone_at IS NULL {cond} ORDER BY p.id", args
            )
        ]
        for chunk in _chunks(photo_ids, 500):
            qs = _qs(chunk)
            caps: dict[int, Caption] = {}
            for r in self.conn.execute(
                f"SELECT photo_id, source, text, score, edited FROM captions WHERE photo_id IN ({qs}) "
                "ORDER BY edited, created_at",  # the last one per photo wins: the one shown first
                chunk,
            ):
                caps[r[0]] = Caption(r[0], r[1], r[2], r[3], bool(r[4]))
            tags: dict[int, list[str]] = {}
            for r in self.conn.execute(
                f"SELECT photo_id, tag FROM effective_tags WHERE photo_id IN ({qs}) "
                "ORDER BY photo_id, score IS NULL, score DESC, pos",
                chunk,
            ):
                tags.setdefault(r[0], []).append(r[1])
            paths: dict[int, list[str]] = {}
            for r in self.conn.execute(
                f"SELECT photo_id, path FROM files WHERE photo_id IN ({qs}) ORDER BY id", chunk
            ):
                paths.setdefault(r[0], []).append(r[1])
            for pid in chunk:
                cap = caps.get(pid)
                yield PhotoText(
                    pid,
                    paths.get(pid, []),
                    cap.text if cap else None,
                    cap.source if cap else None,
                    bool(cap and cap.edited),
                    tags.get(pid, []),
                    self.tags_edited(pid),
                )

    # -- smart albums: a saved search, evaluated when opened (desktop.captions.album_photos)
    def save_album(self, album: Album) -> None:
        now = time.time()
        with self.conn:
            self.conn.execute(
                "INSERT INTO albums(name, query, mode, filters, max_photos, min_score, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET query=excluded.query, "
                "mode=excluded.mode, filters=excluded.filters, max_photos=excluded.max_photos, "
                "min_score=excluded.min_score, updated_at=excluded.updated_at",
                (
                    album.name,
                    album.query,
                    album.mode,
                    json.dumps(album.filters, sort_keys=True),
                    album.max_photos,
                    album.min_score,
                    now,
                    now,
                ),
            )

    def albums(self) -> list[Album]:
        rows = self.conn.execute(
            "SELECT name, query, mode, filters, max_photos, min_score FROM albums ORDER BY name COLLATE NOCASE"
        )
        return [Album(r[0], r[1], r[2], json.loads(r[3] or "{}"), r[4], r[5]) for r in rows]

    def album(self, name: str) -> Album | None:
        return next((a for a in self.albums() if a.name.casefold() == name.casefold()), None)

    def delete_album(self, name: str) -> bool:
        with self.conn:
            return self.conn.execute("DELETE FROM albums WHERE name=?", (name,)).rowcount > 0


def _photo(r: Sequence) -> Photo:
    return Photo(*r[:12], bool(r[12]), r[13])


def _qs(items: Sequence) -> str:
    return ",".join("?" * len(items))


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


_IN_RANGE = "({0}>=CAST(? AS TEXT) AND {0}<CAST(? AS TEXT))"  # with the two values of _prefix_range


def _prefix_range(prefix: str) -> tuple[str | bytes, str | bytes]:
    """[lo, hi) of the strings that start with `prefix`. SQLite compares text bytewise, so
    this is exact, case-sensitive and uses the index; LIKE is none of these ("Trip/%" also
    matches "trip/x", and "_" and "%" in folder names are wildcards)."""
    return _fs(prefix), _fs(prefix[:-1] + chr(ord(prefix[-1]) + 1))


def _fs(path: str) -> str | bytes:
    """A path as a query parameter: the str, or for a name that is not valid UTF-8 (os gives
    those as str with surrogate escapes, which sqlite3 cannot bind) its raw bytes. The SQL
    says CAST(? AS TEXT) so both are stored and compared as the same TEXT bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def _text(raw: bytes) -> str:
    """sqlite3 text_factory: UTF-8, with the raw bytes of non-UTF-8 names kept as os does."""
    return raw.decode("utf-8", "surrogateescape")


def _fetchall_fast(conn: sqlite3.Connection, sql: str, args: Sequence = ()) -> list:
    """fetchall() for big results: text decoded in C (text_factory str) rather than by
    _text per value, falling back to _text only when some name is not UTF-8 (sqlite3
    then refuses to decode it)."""
    conn.text_factory = str
    try:
        cursor, rows = conn.execute(sql, args), []
        # In slices, not one fetchall(): between slices the GIL can pass to the GUI thread
        # (one C call building 100 000 rows held it for ~150 ms).
        while chunk := cursor.fetchmany(2000):
            rows += chunk
        return rows
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    finally:
        conn.text_factory = _text
    return conn.execute(sql, args).fetchall()


def _qs_text(items: Sequence) -> str:
    return ",".join(["CAST(? AS TEXT)"] * len(items))


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
