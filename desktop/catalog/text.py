"""Captions and tags per (photo, source), the user's own words (source "user", never
overwritten by a machine), and word search over them (FTS5, kept by triggers)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import sqlite_utils

from desktop.catalog.db import (
    USER,
    CatalogError,
    _chunks,
    _like_prefix,
    _qs,
)


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


class TextMixin:
    conn: sqlite3.Connection
    db: sqlite_utils.Database

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

