"""The region store: per-photo region features for a re-ranker, beside the catalog.

A re-ranker that looks inside photos (words attending to regions) needs a few dozen
small vectors per photo. They are computed at index time, in the encoder's own CNN pass,
and kept here so that a query never decodes an image:

- one SQLite file `regions.db` in the data dir (WAL): a torn write is rolled back by
  SQLite's journal, never leaving a half row, and earlier rows are untouched;
- rows are keyed by (space, content hash): `space` is the re-ranker's `regions_key`
  (it names the encoder and the re-ranker's projection, so features of other weights
  never mix), the content hash is the photo's identity (a moved photo keeps its rows;
  catalog ids can be reused after a purge, hashes cannot);
- values are float16 (rows x cols), e.g. xattn's (49 cells + 1 row of per-photo numbers)
  x 256 = 25.6 KB a photo.

It is a separate file so that it can be deleted (and rebuilt by indexing) without
touching the catalog, and so that its pages never dilute the catalog's cache. Writes come
from the library's writer thread; reads from any thread (a connection per thread).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS regions (space TEXT NOT NULL, hash TEXT NOT NULL, rows INTEGER NOT NULL, "
    "cols INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (space, hash))"
)


class RegionStoreError(RuntimeError):
    pass


class RegionStore:
    """float16 (rows, cols) arrays per (space, photo hash) in one SQLite file."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if not readonly:
            with self._conn() as c:
                c.execute(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.readonly:
                    conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                else:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    conn = sqlite3.connect(self.path, check_same_thread=False)
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise RegionStoreError(f"{self.path}: cannot open the region store ({exc})") from exc
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def put(self, space: str, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store (hash, (rows, cols) array) pairs as float16, in one transaction."""
        if self.readonly:
            raise RegionStoreError(f"{self.path}: the region store is open read-only")
        rows = []
        for h, arr in items:
            a = np.ascontiguousarray(arr, dtype=np.float16)
            if a.ndim != 2:
                raise ValueError(f"region features of {h} must be 2-D (rows, cols), got shape {a.shape}")
            rows.append((space, h, a.shape[0], a.shape[1], a.tobytes()))
        with self._conn() as c:
            c.executemany("INSERT OR REPLACE INTO regions VALUES (?, ?, ?, ?, ?)", rows)
        return len(rows)

    def get(self, space: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """hash -> float16 (rows, cols) for those that are stored."""
        out: dict[str, np.ndarray] = {}
        if not hashes or not self._exists():
            return out
        conn = self._conn()
        uniq = list(dict.fromkeys(hashes))
        for s in range(0, len(uniq), 500):
            chunk = uniq[s : s + 500]
            try:
                cur = conn.execute(
                    f"SELECT hash, rows, cols, data FROM regions WHERE space=? AND hash IN ({','.join('?' * len(chunk))})",
                    (space, *chunk))
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # a read-only open before the writer made it
                    return out
                raise
            for h, r, c, data in cur:
                out[h] = np.frombuffer(data, np.float16).reshape(r, c)
        return out

    def hashes(self, space: str) -> set[str]:
        if not self._exists():
            return set()
        try:
            return {r[0] for r in self._conn().execute("SELECT hash FROM regions WHERE space=?", (space,))}
        except sqlite3.OperationalError:
            return set()

    def count(self, space: str | None = None) -> int:
        if not self._exists():
            return 0
        q, args = ("SELECT COUNT(*) FROM regions", ()) if space is None else (
            "SELECT COUNT(*) FROM regions WHERE space=?", (space,))
        try:
            return int(self._conn().execute(q, args).fetchone()[0])
        except sqlite3.OperationalError:
            return 0

    def spaces(self) -> set[str]:
        """The keys that have rows (one per encoder x re-ranker file that wrote here)."""
        if not self._exists():
            return set()
        try:
            return {r[0] for r in self._conn().execute("SELECT DISTINCT space FROM regions")}
        except sqlite3.OperationalError:
            return set()

    def drop(self, space: str) -> None:
        """Delete every row of `space` and give the disk space back (VACUUM)."""
        conn = self._conn()
        with conn:
            conn.execute("DELETE FROM regions WHERE space=?", (space,))
        conn.execute("VACUUM")

    def prune(self, space: str, keep: set[str]) -> int:
        """Delete the rows of `space` whose photo is no longer in the catalog."""
        gone = [h for h in self.hashes(space) if h not in keep]
        with self._conn() as c:
            for s in range(0, len(gone), 500):
                chunk = gone[s : s + 500]
                c.execute(f"DELETE FROM regions WHERE space=? AND hash IN ({','.join('?' * len(chunk))})",
                          (space, *chunk))
        return len(gone)

    def _exists(self) -> bool:
        return not self.readonly or self.path.exists()

    def close(self) -> None:
        with self._lock:
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        self._local = threading.local()
