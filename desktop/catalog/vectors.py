"""Vectors: one per (photo, encoder id); switching encoders adds rows, never wipes. A video
also has one vector per sampled frame (table frames), with the frame's time."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

import numpy as np
import sqlite_utils

from desktop.catalog.db import (
    _chunks,
    _qs,
)

# A RAW shown through its JPEG is not encoded: the JPEG is the same shot, decoded in a
# fraction of the time. If the JPEG goes, the RAW stands alone and is encoded then.
_NOT_PAIRED = "NOT EXISTS (SELECT 1 FROM raw_pairs rp WHERE rp.raw_id=p.id)"


class VectorsMixin:
    conn: sqlite3.Connection
    db: sqlite_utils.Database

    # ---- encoding side ------------------------------------------------------------------
    def photos_to_encode(self, encoder: str, limit: int, after_id: int = 0) -> list[tuple[int, str]]:
        """(photo id, a readable path) for live, not-skipped photos on online roots that
        have no vector for `encoder` yet, in id order (resumable after a crash)."""
        rows = self.conn.execute(
            "SELECT p.id, MIN(f.path) FROM photos p JOIN files f ON f.photo_id=p.id "
            "JOIN libraries l ON l.id=f.library_id "
            "WHERE p.gone_at IS NULL AND p.status!='skipped' AND l.online=1 AND p.id>? "
            "AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.photo_id=p.id AND v.encoder=?) "
            f"AND {_NOT_PAIRED} GROUP BY p.id ORDER BY p.id LIMIT ?",
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
            f"WHERE f.photo_id=p.id AND l.online=1) AND {_NOT_PAIRED}",
            (encoder,),
        ).fetchone()[0]

    def save_encoded(
        self,
        encoder: str,
        done: Sequence[tuple[int, np.ndarray, dict[str, object]]],
        skipped: Sequence[tuple[int, str]],
        frames: Mapping[int, Sequence[tuple[float, np.ndarray]]] | None = None,
    ) -> None:
        """One transaction per batch: vectors + photo metadata, a video's frame vectors
        ((at_s, vector) per frame, by photo id), and skip reasons."""
        frames = frames or {}
        with self.conn:
            for photo_id, vector, meta in done:
                self.conn.execute(
                    "UPDATE photos SET status='ok', reason=NULL, width=?, height=?, format=?, taken_at=?, camera=?, "
                    "kind=?, duration_s=?, latitude=?, longitude=? WHERE id=?",
                    (
                        meta.get("width"),
                        meta.get("height"),
                        meta.get("format"),
                        meta.get("taken_at"),
                        meta.get("camera"),
                        meta.get("kind") or "image",
                        meta.get("duration_s"),
                        meta.get("latitude"),
                        meta.get("longitude"),
                        photo_id,
                    ),
                )
                self.conn.execute(
                    "INSERT OR REPLACE INTO vectors(photo_id, encoder, vector) VALUES (?, ?, ?)",
                    (photo_id, encoder, np.asarray(vector, np.float32).tobytes()),
                )
                if photo_id in frames:
                    self.conn.execute("DELETE FROM frames WHERE photo_id=? AND encoder=?", (photo_id, encoder))
                    self.conn.executemany(
                        "INSERT INTO frames(photo_id, encoder, frame_index, at_s, vector) VALUES (?, ?, ?, ?, ?)",
                        [(photo_id, encoder, i, float(at), np.asarray(v, np.float32).tobytes())
                         for i, (at, v) in enumerate(frames[photo_id])],
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

    def encoded_stills(self, encoder: str) -> list[tuple[int, str, str]]:
        """(photo id, content hash, one path) of the live non-video photos that have a
        vector for an encoder, by id; reads no vector."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT p.id, p.hash, f.path FROM vectors v JOIN photos p ON p.id=v.photo_id "
            "JOIN files f ON f.id=(SELECT MIN(id) FROM files WHERE photo_id=p.id) "
            "WHERE v.encoder=? AND p.gone_at IS NULL AND p.kind != 'video' ORDER BY p.id", (encoder,))]

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


    def vectors_for(self, ids: Sequence[int], encoder: str) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for chunk in _chunks(list(ids), 500):
            rows = self.conn.execute(
                f"SELECT photo_id, vector FROM vectors WHERE encoder=? AND photo_id IN ({_qs(chunk)})",
                [encoder, *chunk],
            )
            out.update((r[0], np.frombuffer(r[1], np.float32)) for r in rows)
        return out

    # --- videos and RAW files (issue 15) ---
    def frame_vectors(self, encoder: str, since_rowid: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(photo ids, at_s, (n, dim) matrix) of live videos' frames (those written after
        `since_rowid`), grouped by photo."""
        rows = self.conn.execute(
            "SELECT fr.photo_id, fr.at_s, fr.vector FROM frames fr JOIN photos p ON p.id=fr.photo_id "
            "WHERE fr.encoder=? AND fr.rowid>? AND p.gone_at IS NULL ORDER BY fr.photo_id, fr.frame_index",
            (encoder, since_rowid),
        ).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        at = np.fromiter((r[1] for r in rows), np.float32, len(rows))
        matrix = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), -1)
        return ids, at, matrix

    def frames_version(self, encoder: str) -> int:
        """The newest frame's rowid: grows with every frame written (a re-encoded video's
        frames are new rows). One index lookup: it is asked on every search. Purged frames
        do not change it; their videos are gone from `photos`, so search drops them."""
        return int(self.conn.execute(
            "SELECT COALESCE(MAX(rowid), 0) FROM frames WHERE encoder=?", (encoder,)).fetchone()[0])

    def frame_times(self, photo_id: int, encoder: str) -> list[float]:
        return [r[0] for r in self.conn.execute(
            "SELECT at_s FROM frames WHERE photo_id=? AND encoder=? ORDER BY frame_index", (photo_id, encoder))]
