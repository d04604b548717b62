"""Smart albums: saved searches, evaluated when opened (desktop/search.py)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils


@dataclass(frozen=True)
class Album:
    """A saved search ("smart album"): photos are found when it is opened, so new ones appear."""

    name: str
    query: str
    mode: str = "both"  # words | meaning | both
    filters: dict[str, Any] = field(default_factory=dict)  # desktop.library.Filters fields
    max_photos: int | None = None  # meaning matches kept (the words matches are all kept)
    min_score: float | None = None  # least cosine similarity of a meaning match


class AlbumsMixin:
    conn: sqlite3.Connection
    db: sqlite_utils.Database

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


