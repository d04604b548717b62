"""Finding photos: the query language, filters, meaning search through the index, word
search through the captions' full-text index, the two fused by rank, and smart albums
(saved searches, evaluated when opened).

Qt-free. Every function takes the data dir's `Store`; the Library facade wraps them.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from desktop import media
from desktop.catalog import Album, CatalogError, Photo
from desktop.encoders import Encoder, EncoderError, decode_size
from desktop.store import LibraryError, Store

if TYPE_CHECKING:
    from desktop.rerank import Reranking

log = logging.getLogger(__name__)

RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009); damps the top ranks' lead
MEANING_DEPTH = 200  # meaning hits fused with the word hits (and an album's default)
MODES = ("words", "meaning", "both")


@dataclass(frozen=True)
class Hit:
    photo: Photo
    score: float
    at_s: float | None = None  # a video: the time of its best-matching frame

    @property
    def photo_id(self) -> int:
        return self.photo.id

    @property
    def path(self) -> str:
        return self.photo.path


@dataclass(frozen=True)
class Found(Hit):
    """A search hit with why it was found: the words matched, and/or its similarity."""

    words: bool = False
    similarity: float | None = None
    snippet: str | None = None


@dataclass(frozen=True)
class Filters:
    root: str | None = None
    folder: str | None = None
    date_from: str | None = None  # ISO date or datetime, compared with EXIF taken-at
    date_to: str | None = None
    exts: tuple[str, ...] = ()

    def empty(self) -> bool:
        return not (self.root or self.folder or self.date_from or self.date_to or self.exts)


# ---- the meaning query language -----------------------------------------------------------
@dataclass(frozen=True)
class Term:
    weight: float
    text: str | None = None
    image: str | None = None


_TERM_RE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*:)?\s*(.*?)\s*$")


def parse_query(query: str) -> list[Term]:
    """rclip-style text queries: "2:dog + beach - people", and "-word" excludes one word.

    Terms are joined by " + " and " - " (spaces around the sign); "w:" weights a term.
    """
    terms: list[Term] = []
    parts = re.split(r"\s+([+-])\s+", " " + query.strip() + " ")
    signs = ["+"] + parts[1::2]
    for sign, part in zip(signs, parts[0::2], strict=True):
        words = [w for w in part.split() if not (w.startswith("-") and len(w) > 1)]
        negatives = [w[1:] for w in part.split() if w.startswith("-") and len(w) > 1]
        m = _TERM_RE.match(" ".join(words))
        weight = float(m.group(1)) if m and m.group(1) else 1.0
        text = m.group(2) if m else ""
        if text:
            terms.append(Term(weight if sign == "+" else -weight, text=text))
        terms.extend(Term(-1.0, text=neg) for neg in negatives)
    return terms


# ---- meaning: vectors through the index ---------------------------------------------------
def encode_query(
    store: Store,
    text: str | None = None,
    image_paths: Sequence[str] = (),
    weights: Sequence[float] | None = None,
    encoder: Encoder | None = None,
) -> np.ndarray:
    """One unit vector for a combined query: weighted text terms and query images."""
    encoder = encoder or store.encoder
    terms = parse_query(text) if text else []
    img_weights = list(weights) if weights is not None else [1.0] * len(image_paths)
    terms += [Term(w, image=p) for p, w in zip(image_paths, img_weights, strict=True)]
    if not terms:
        raise LibraryError("empty query: type some words or drop a photo")
    parts = []
    texts = [t for t in terms if t.text is not None]
    if texts:
        vecs = store.query_text_vectors([t.text for t in texts], encoder)  # type: ignore[misc]  (LRU)
        parts += [t.weight * v for t, v in zip(texts, vecs, strict=True)]
    for term in (t for t in terms if t.image is not None):
        parts.append(term.weight * image_vector(store, term.image, encoder))  # type: ignore[arg-type]
    total = np.sum(parts, axis=0)
    norm = float(np.linalg.norm(total))
    if norm < 1e-9:
        raise LibraryError("the query's terms cancel out")
    return (total / norm).astype(np.float32)


def image_vector(store: Store, path: str, encoder: Encoder | None = None) -> np.ndarray:
    """The vector of any image file: the stored one if the file is in the library."""
    encoder = encoder or store.encoder
    cat = store.read()
    photo = cat.photo_by_path(path)
    if photo is not None:
        stored = cat.vector_of(photo.id, encoder.id)
        if stored is not None:
            return stored
    try:
        image = media.load_for_encoding(path, decode_size(encoder))  # as the indexer decodes
    except media.MediaError as exc:
        raise LibraryError(str(exc)) from exc
    return store.encode_images([image], encoder)[0]


def allowed_ids(store: Store, filters: Filters | None) -> np.ndarray | None:
    """Photo ids that pass the filters, or None when nothing is filtered."""
    if filters is None or filters.empty():
        return None
    cat = store.read()
    root_id = None
    if filters.root:
        root = cat.root_by_path(filters.root)
        if root is None:
            raise LibraryError(f"{filters.root}: not a library")
        root_id = root.id
    return cat.filtered_ids(root_id, filters.folder, filters.date_from, filters.date_to, filters.exts)


def search_vectors(
    store: Store,
    queries: np.ndarray,
    k: int,
    filters: Filters | None = None,
    exact: bool = False,
    encoder_id: str | None = None,
    effort: int | None = None,
) -> list[list[Hit]]:
    """The search path everything shares: the index's search (ANN over the built index +
    exact over vectors added since), gone photos dropped, catalog rows attached.
    `effort`: search as hard as for that many hits (the re-ranker's extra candidates)."""
    eid = encoder_id or store.encoder.id
    cat = store.read()
    idx = store.index(eid, queries.shape[1])
    top = cat.max_vector_rowid(eid)
    if idx.built_version is not None and idx.built_version > top:
        idx.load()  # another process rebuilt it (the writer app while we are read-only)
    if top > idx.version:  # vectors stored since: the index searches them until its next build
        extra_ids, extra_vecs, newest = cat.vectors(eid, since_rowid=idx.version)
        idx.add(extra_ids, extra_vecs, version=max(newest, top))
    want = k + 8  # a few spare for photos deleted since the build
    allowed = allowed_ids(store, filters)
    raw = idx.search(queries.astype(np.float32), want, allowed=allowed, exact=exact,
                     **({"effort": effort + 8} if effort and effort < k else {}))
    moments = _frames(store, eid).best(queries, allowed)
    merged = [_merge(row, best, want) for row, best in zip(raw, moments, strict=True)]
    wanted_ids = {pid for row in merged for pid, _, _ in row}
    rows = cat.photos(sorted(wanted_ids))
    for pid in cat.paired_raws(sorted(wanted_ids)):  # the JPEG of the pair is the one shown
        rows.pop(pid, None)
    return [[Hit(rows[pid], score, at) for pid, score, at in row if pid in rows][:k] for row in merged]


# --- videos and RAW files (issue 15) ---
# Each video frame is matched exactly, not through the ANN index: frames are capped per
# video (32), so even 5 000 videos are 160 000 frames, one matrix-vector product of a few
# milliseconds (bench/media.py measures it), and no moment is lost to the approximation.
# The index keeps one vector per item (a video's is its frames' mean), so photo search
# and its ids are unchanged.
class FrameMatrix:
    """One encoder's frame vectors in memory, reloaded when the catalog's frames change."""

    def __init__(self) -> None:
        self.version = -1
        self.ids = np.zeros(0, np.int64)  # photo id per frame, grouped by photo
        self.at = np.zeros(0, np.float32)
        self.matrix = np.zeros((0, 0), np.float32)
        self.starts = np.zeros(0, np.int64)  # first frame of each video
        self.pad = np.zeros((0, 0), np.int64)
        self.lock = threading.Lock()

    def refresh(self, store: Store, eid: str) -> FrameMatrix:
        cat = store.read()
        version = cat.frames_version(eid)
        with self.lock:
            if version == self.version:
                return self
            if 0 < self.version < version and len(self.ids):
                # Videos indexed since (the usual case while indexing): append theirs only.
                ids, at, matrix = cat.frame_vectors(eid, since_rowid=self.version)
                if not np.isin(ids, self.ids).any() and matrix.shape[1:] in ((self.matrix.shape[1],), (0,)):
                    if len(ids):
                        self.set(np.concatenate([self.ids, ids]), np.concatenate([self.at, at]),
                                 np.concatenate([self.matrix, matrix]))
                    self.version = version
                    return self
            self.set(*cat.frame_vectors(eid))  # first load, or a video's frames were replaced
            self.version = version
        return self

    def set(self, ids: np.ndarray, at: np.ndarray, matrix: np.ndarray) -> None:
        """Frames grouped by photo id (as Catalog.frame_vectors returns them)."""
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
        counts = np.diff(np.r_[starts, len(ids)])
        # (videos, most frames) of frame indices, padded with the video's last frame (a
        # duplicate never changes a maximum): per-video max and argmax in one go.
        width = int(counts.max()) if len(counts) else 0
        pad = starts[:, None] + np.minimum(np.arange(width)[None, :], counts[:, None] - 1)
        self.ids, self.at, self.matrix, self.starts, self.pad = ids, at, matrix, starts, pad

    def best(self, queries: np.ndarray, allowed: np.ndarray | None) -> list[dict[int, tuple[float, float]]]:
        """Per query: video photo id -> (its best frame's score, that frame's at_s)."""
        with self.lock:
            ids, at, matrix, starts, pad = self.ids, self.at, self.matrix, self.starts, self.pad
        if len(ids) == 0 or matrix.shape[1] != queries.shape[1]:
            return [{} for _ in range(len(queries))]
        videos = ids[starts]
        keep = np.isin(videos, allowed) if allowed is not None else np.ones(len(videos), bool)
        scores = queries.astype(np.float32) @ matrix.T  # (queries, frames)
        out = []
        for row in scores:
            per_video = row[pad]  # (videos, width)
            first = pad[np.arange(len(pad)), per_video.argmax(axis=1)]  # earliest best frame
            top = row[first]
            out.append({int(v): (float(s), float(t)) for v, s, t, ok in
                        zip(videos, top, at[first], keep, strict=True) if ok})
        return out


_FRAME_MATRICES: weakref.WeakKeyDictionary[Store, dict[str, FrameMatrix]] = weakref.WeakKeyDictionary()
_FRAME_LOCK = threading.Lock()


def _frames(store: Store, eid: str) -> FrameMatrix:
    with _FRAME_LOCK:
        fm = _FRAME_MATRICES.setdefault(store, {}).setdefault(eid, FrameMatrix())
    return fm.refresh(store, eid)


def _merge(
    ann: Sequence[tuple[int, float]], moments: dict[int, tuple[float, float]], k: int
) -> list[tuple[int, float, float | None]]:
    """The index's hits with every video scored by its best frame (not its mean vector),
    and videos whose moment beats the k-th hit added: top k as (id, score, at_s)."""
    scored: dict[int, tuple[float, float | None]] = {pid: (score, None) for pid, score in ann}
    scored.update(moments)
    order = sorted(scored.items(), key=lambda kv: -kv[1][0])[:k]
    return [(pid, score, at) for pid, (score, at) in order]


def search(
    store: Store,
    text: str | None = None,
    images_: Sequence[str] = (),
    k: int = 20,
    filters: Filters | None = None,
    exact: bool = False,
    reranking: Reranking | None = None,
) -> list[Hit]:
    """Text and/or image query -> top-k photos with cosine scores; with `reranking`, the
    first stage's top N go through the installed re-ranker (desktop/rerank.py)."""
    encoder = store.query_encoder()
    query = encode_query(store, text, images_, encoder=encoder)
    want = reranking.depth(k, encoder.id) if reranking is not None else k  # the second stage sees the top N
    hits = search_vectors(store, query[None, :], want, filters=filters, exact=exact, encoder_id=encoder.id,
                          effort=k)[0]  # the re-ranker's deeper list at the cost of k
    return reranking.photos(text, images_, hits, encoder.id, k) if reranking is not None else hits


def similar(store: Store, path_or_id: str | int, k: int = 20, filters: Filters | None = None) -> list[Hit]:
    """Photos that look like this one (near-duplicates first); the photo itself excluded."""
    encoder = store.query_encoder()
    cat = store.read()
    if isinstance(path_or_id, int):
        vec = cat.vector_of(path_or_id, encoder.id)
        if vec is None:
            raise LibraryError(f"photo {path_or_id} has no vector for {encoder.id} yet")
        own = path_or_id
    else:
        vec = image_vector(store, str(path_or_id), encoder)
        photo = cat.photo_by_path(str(path_or_id))
        own = photo.id if photo else None
    hits = search_vectors(store, vec[None, :], k + 1, filters=filters, encoder_id=encoder.id)[0]
    return [h for h in hits if h.photo_id != own][:k]


# ---- words: captions and tags through FTS5 ------------------------------------------------
_TOKEN = re.compile(r'(-?)(?:(caption|tags?):)?("[^"]*"|\S+)')


def words_query(text: str) -> str:
    """User words -> an FTS5 expression. Every word must match (stemmed: "dogs" finds
    "dog"); "a phrase" in quotes, word* for a prefix, -word to exclude, OR between
    alternatives, tag:word / caption:word for one field. Search weights ("2:") and a
    lone "+" or "-" (the meaning-search syntax) are ignored."""
    pos, neg = [], []
    for m in _TOKEN.finditer(text):
        minus, column, body = m.groups()
        if body == "OR" and not minus and pos:
            pos.append("OR")
            continue
        body = re.sub(r"^\d+(\.\d+)?:", "", body)
        prefix = body.endswith("*") and not body.startswith('"')
        words = body.strip('"').rstrip("*").replace('"', " ").strip()
        if not words or words in "+-":
            continue
        term = f'"{words}"' + ("*" if prefix else "")
        if column:
            term = f"{'tags' if column.startswith('tag') else 'caption'} : {term}"
        (neg if minus else pos).append(term)
    while pos and pos[-1] == "OR":
        pos.pop()
    if not pos:
        raise LibraryError("give at least one word to look for (excluding words alone finds nothing)")
    return " ".join(pos) + "".join(f" NOT {t}" for t in neg)


def meaning_text(text: str) -> str:
    """The same query for the encoder: word-search syntax removed."""
    text = re.sub(r"\b(caption|tags?):", "", text).replace('"', "").replace("*", "")
    return " ".join(w for w in text.split() if w != "OR")


def find_words(store: Store, text: str, k: int = 1000, filters: Filters | None = None) -> list[Found]:
    """Photos whose shown caption or tags contain the words, best (bm25) first."""
    allowed = allowed_ids(store, filters)
    cat = store.read()
    try:
        matches = cat.find_words(words_query(text), k, None if allowed is None else allowed.tolist())
    except CatalogError as exc:
        raise LibraryError(str(exc)) from exc
    rows = cat.photos([m.photo_id for m in matches])
    n = len(matches)
    # Score = 1 - rank share, so the best word match scores 1 (bm25 values have no fixed scale).
    return [
        Found(rows[m.photo_id], 1.0 - i / max(n, 1), words=True, snippet=m.snippet)
        for i, m in enumerate(matches)
        if m.photo_id in rows
    ]


def _meaning(store: Store, text: str, depth: int, filters: Filters | None,
             reranking: Reranking | None = None) -> list[Hit]:
    query = meaning_text(text)
    if not query:
        return []
    try:
        return search(store, query, k=depth, filters=filters, reranking=reranking)
    except (LibraryError, EncoderError) as exc:  # e.g. an encoder with no text tower
        log.info("meaning side of %r unavailable, words only: %s", text, exc)
        return []


def fuse(word_hits: Sequence[Found], meaning_hits: Sequence[Hit], k: int | None = None) -> list[Found]:
    """Reciprocal rank fusion: score = sum over the two lists of 1 / (RRF_K + rank)."""
    score: dict[int, float] = {}
    photo: dict[int, Any] = {}
    words: dict[int, Found] = {}
    similarity: dict[int, float] = {}
    moment: dict[int, float | None] = {}
    for rank, h in enumerate(word_hits, 1):
        score[h.photo_id] = score.get(h.photo_id, 0.0) + 1.0 / (RRF_K + rank)
        photo[h.photo_id], words[h.photo_id] = h.photo, h
    for rank, h in enumerate(meaning_hits, 1):
        score[h.photo_id] = score.get(h.photo_id, 0.0) + 1.0 / (RRF_K + rank)
        photo[h.photo_id], similarity[h.photo_id] = h.photo, h.score
        moment[h.photo_id] = h.at_s
    order = sorted(score, key=lambda pid: (-score[pid], -similarity.get(pid, -2.0)))[:k]
    return [
        Found(
            photo[pid],
            score[pid],
            at_s=moment.get(pid),
            words=pid in words,
            similarity=similarity.get(pid),
            snippet=words[pid].snippet if pid in words else None,
        )
        for pid in order
    ]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise LibraryError(f"unknown mode {mode!r}: words, meaning or both")


def search_mixed(
    store: Store, text: str, k: int = 50, filters: Filters | None = None, mode: str = "both",
    reranking: Reranking | None = None,
) -> list[Found]:
    """A query matched by words, by meaning, or both (mode), ranked by rank fusion."""
    _check_mode(mode)
    word_hits = find_words(store, text, max(k, MEANING_DEPTH), filters) if mode != "meaning" else []
    meaning_hits = _meaning(store, text, max(k, MEANING_DEPTH), filters, reranking) if mode != "words" else []
    if mode == "meaning":
        return [Found(h.photo, h.score, at_s=h.at_s, similarity=h.score) for h in meaning_hits[:k]]
    return fuse(word_hits, meaning_hits, k)


def photos_with_tag(store: Store, tag: str) -> list[Hit]:
    cat = store.read()
    ids = cat.photos_with_tag(tag)
    rows = cat.photos(ids)
    return [Hit(rows[i], 1.0) for i in ids if i in rows]


# ---- smart albums ---------------------------------------------------------------------------
def save_album(
    store: Store,
    name: str,
    query: str,
    mode: str = "both",
    filters: Filters | None = None,
    max_photos: int | None = None,
    min_score: float | None = None,
) -> Album:
    name = " ".join(name.split())
    if not name or not query.strip():
        raise LibraryError("a smart album needs a name and a query")
    _check_mode(mode)
    if mode != "meaning":
        words_query(query)  # fail now, not every time the album is opened
    kept = {k: v for k, v in asdict(filters).items() if v} if filters else {}
    album = Album(name, query.strip(), mode, kept, max_photos, min_score)
    store.write(lambda c: c.save_album(album))
    return album


def album_photos(store: Store, album: Album | str, reranking: Reranking | None = None) -> list[Found]:
    """The album's photos now: every word match, plus the best meaning matches (at most
    max_photos, at least min_score similar), ranked like search_mixed. Evaluated when
    asked, so photos indexed or captioned since appear without any bookkeeping."""
    if isinstance(album, str):
        found = store.read().album(album)
        if found is None:
            raise LibraryError(f"no smart album named {album!r}")
        album = found
    f = album.filters
    filters = Filters(
        f.get("root"), f.get("folder"), f.get("date_from"), f.get("date_to"), tuple(f.get("exts") or ())
    )
    word_hits = find_words(store, album.query, 100_000, filters) if album.mode != "meaning" else []
    meaning_hits: list[Hit] = []
    if album.mode != "words":
        meaning_hits = _meaning(store, album.query, album.max_photos or MEANING_DEPTH, filters, reranking)
        if album.min_score is not None:
            meaning_hits = [h for h in meaning_hits if h.score >= album.min_score]
    return fuse(word_hits, meaning_hits)
