"""The catalog's connection, schema and migrations. The catalog is one SQLite file (WAL),
the source of truth for everything Lumen knows.

Tables
- libraries: the watched roots (online/offline, watch on/off). The active encoder is in `meta`.
- files: one row per path on disk -> the photo (content) it holds.
- photos: one row per distinct content (identity = content hash). A move or rename only
  changes `files.path`; the photo keeps its id, vectors, captions and tags. Two copies of
  the same content are two files and one photo (search shows it once, with both paths).
- vectors: one per (photo, encoder id). Switching encoders adds rows, never wipes.
- frames: a video's sampled frames, one vector each with its time (v3); the video's row
  in `vectors` is their normalised mean. photos.kind/duration_s/latitude/longitude (v3).
- raw_pairs (a view, v3): a RAW file beside a JPEG of the same stem -> the JPEG's photo.
- captions / tags: per (photo, source), so a better captioner adds rows; `edited` marks
  a user's own words, which no machine overwrites.
- tag_sets: which source has decided a photo's tags (a "user" row: the user's set wins).
- photo_words: FTS5 word index over each photo's shown caption and tags (kept by triggers).
- albums: saved searches ("smart albums"), evaluated when opened.
- problems: folders or files that could not even be read (permission denied, loops).

Only the writer thread (see store.py) calls the write methods; every other thread opens
its own read connection (`Catalog(path, readonly=True)`). The schema is versioned with
`PRAGMA user_version`; each migration runs once, in order, in a transaction.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import sqlite_utils

log = logging.getLogger("desktop.catalog")


class CatalogError(RuntimeError):
    pass


USER = "user"  # the source of a user's own caption and tags; no machine writes under it


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


# --- videos and RAW files (issue 15) ---
# Files whose content is a camera RAW, and the still formats a camera writes beside one.
# A RAW with a companion of the same folder and stem (IMG_1.CR2 + IMG_1.JPG) is shown as
# that companion's second file (see raw_pairs); the lists are here, not in the plugin, so
# the catalog can say it in SQL without importing plugins.
RAW_EXTENSIONS = (".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".dng", ".orf", ".rw2",
                  ".raf", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".rwl")
RAW_COMPANIONS = (".jpg", ".jpeg", ".heic", ".heif", ".hif", ".tif", ".tiff")


def _m3(db: sqlite_utils.Database) -> None:
    # What the decoder says the item is, and a video's length; GPS where the file has it.
    for column, kind in (("kind", "TEXT"), ("duration_s", "REAL"), ("latitude", "REAL"), ("longitude", "REAL")):
        db.execute(f"ALTER TABLE photos ADD COLUMN {column} {kind}")
    # A video's sampled frames, one vector each with its time. The video's row in `vectors`
    # is their normalised mean (for "similar" and the ANN index); a text query is matched
    # against every frame (desktop/search.py), so a moment of a long video is found.
    # The rowid is the frame cache's watermark, as for vectors.
    db.execute(
        "CREATE TABLE frames (photo_id INTEGER NOT NULL REFERENCES photos(id), encoder TEXT NOT NULL, "
        "frame_index INTEGER NOT NULL, at_s REAL NOT NULL, vector BLOB NOT NULL, "
        "PRIMARY KEY (photo_id, encoder, frame_index))"
    )
    db.execute("CREATE INDEX idx_frames_encoder ON frames(encoder)")
    # RAW+JPEG pairs are derived from the files, never stored: a move, a rename or a deleted
    # JPEG changes the pairing with no bookkeeping. Identity stays the content hash: the RAW
    # and the JPEG remain two photos; the pair only decides which one is shown.
    raws, companions = (",".join(f"'{e}'" for e in exts) for exts in (RAW_EXTENSIONS, RAW_COMPANIONS))
    db.execute(
        "CREATE VIEW raw_pairs AS SELECT r.photo_id AS raw_id, j.photo_id AS shown_id, r.path AS raw_path "
        "FROM files r JOIN files j ON j.folder=r.folder AND j.id!=r.id AND j.photo_id!=r.photo_id "
        f"AND j.ext IN ({companions}) "
        "AND substr(j.path, 1, length(j.path)-length(j.ext))=substr(r.path, 1, length(r.path)-length(r.ext)) "
        f"WHERE r.ext IN ({raws})"
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m1, _m2, _m3]
SCHEMA_VERSION = len(MIGRATIONS)


class Database:
    """The connection: opened read-only or as the writer (which migrates). The Catalog
    class adds each concept's queries on top of it (see __init__.py)."""

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

