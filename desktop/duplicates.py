"""Duplicates review: exact copies (one photo's bytes at several paths) and near-duplicates
(photos whose vectors are more similar than a threshold), and which one to keep.

Qt-free. Pairs are computed once above a floor (`pair_floor`) so the window can move the
threshold without searching again; `group_pairs` joins pairs into groups (connected
components: A~B and B~C make one group).

The default threshold comes from bench/duplicates.py on UKBench (14 objects x 4 views).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from desktop.catalog import Photo
from desktop.store import Store

log = logging.getLogger(__name__)

# Measured with `python -m bench.duplicates` on UKBench (README "Duplicates review"): the
# lowest threshold whose pairs are all right (precision 1.0), i.e. the most recall without
# one wrong pair. bert_resnet: 0.68 (recall 0.94; best F1 0.976 is at 0.66, precision
# 0.988). colors: 0.98 (recall 0.54; best F1 at 0.96, precision 0.943). Other encoders are
# not measured here (no real weights on this machine): FALLBACK_THRESHOLD.
THRESHOLDS = {"bert_resnet": 0.68, "colors": 0.98}
FALLBACK_THRESHOLD = 0.85
DEFAULT_THRESHOLD = THRESHOLDS["bert_resnet"]
FLOOR_BELOW = 0.15  # the slider reaches this far below the default (pairs below: never offered)
EXACT_MAX = 8000  # up to this many vectors pairs are found by one exact matrix product
NEIGHBOURS = 16  # above it, each photo's nearest neighbours through the index


def default_threshold(encoder_id: str) -> float:
    """The measured default for an encoder id ("bert_resnet:..." -> its plugin's value)."""
    return THRESHOLDS.get(encoder_id.split(":", 1)[0], FALLBACK_THRESHOLD)


def pair_floor(encoder_id: str) -> float:
    return round(max(0.5, default_threshold(encoder_id) - FLOOR_BELOW), 2)


@dataclass(frozen=True)
class Item:
    """One file in a group: a path of a photo, with what the keep suggestion weighs."""

    photo: Photo
    path: str
    mtime: float
    edited: bool  # the user wrote a caption or tags for it
    similarity: float | None = None  # to the group's suggested keeper (near-duplicates)

    @property
    def pixels(self) -> int:
        return (self.photo.width or 0) * (self.photo.height or 0)

    @property
    def when(self) -> str:
        """Taken-at, else the file's time: older sorts first."""
        return self.photo.taken_at or datetime.fromtimestamp(self.mtime).isoformat()


@dataclass
class Group:
    kind: str  # "exact" (same bytes) or "near" (similar vectors)
    items: list[Item] = field(default_factory=list)  # the suggested keeper first
    score: float = 1.0  # exact: 1; near: the lowest similarity to the keeper

    @property
    def keep(self) -> Item:
        return self.items[0]

    @property
    def others(self) -> list[Item]:
        return self.items[1:]


def keep_order(items: Iterable[Item]) -> list[Item]:
    """Suggested keeper first: largest resolution, then oldest, then edited (the user's
    caption/tags), then the shortest path (a copy in "Copy of ..." loses)."""
    return sorted(items, key=lambda i: (-i.pixels, i.when, not i.edited, len(i.path), i.path))


def exact_groups(store: Store) -> list[Group]:
    """Photos whose bytes are at several paths (the catalog already knows: one photo row,
    several file rows)."""
    cat = store.read()
    copies = cat.copies()
    if not copies:
        return []
    photos = cat.photos(sorted(copies))
    edited = cat.edited_ids(list(photos))
    groups = []
    for pid, files in copies.items():
        photo = photos.get(pid)
        if photo is None:
            continue
        items = [Item(photo, path, mtime, pid in edited) for path, mtime in files]
        groups.append(Group("exact", keep_order(items)))
    groups.sort(key=lambda g: g.keep.when, reverse=True)
    return groups


def vector_pairs(ids: np.ndarray, vecs: np.ndarray, floor: float) -> list[tuple[int, int, float]]:
    """Every pair (a, b, cosine) with a < b and cosine >= floor, exactly (unit vectors)."""
    out: list[tuple[int, int, float]] = []
    vecs = np.asarray(vecs, dtype=np.float32)
    n = len(ids)
    for start in range(0, n, 1024):
        block = vecs[start : start + 1024] @ vecs.T
        rows, cols = np.nonzero(block >= floor)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if c > i:
                out.append((int(ids[i]), int(ids[c]), float(block[r, c])))
    return out


def near_pairs(store: Store, floor: float | None = None, encoder_id: str | None = None) -> list[tuple[int, int, float]]:
    """Pairs of distinct live photos at least `floor` alike under the active encoder
    (default: pair_floor of the encoder)."""
    from desktop import search  # the index path every search shares

    cat = store.read()
    eid = encoder_id or store.encoder.id
    floor = pair_floor(eid) if floor is None else floor
    ids, vecs, _ = cat.vectors(eid)
    if len(ids) < 2:
        return []
    live = set(cat.photos(ids.tolist()))
    keep = np.array([int(i) in live for i in ids.tolist()], dtype=bool)
    ids, vecs = ids[keep], vecs[keep]
    if len(ids) <= EXACT_MAX:
        return vector_pairs(ids, vecs, floor)
    # Large libraries: each photo's nearest neighbours through the ANN index.
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(ids), 512):
        rows = search.search_vectors(store, vecs[start : start + 512], NEIGHBOURS, encoder_id=eid)
        for pid, hits in zip(ids[start : start + 512].tolist(), rows, strict=True):
            for hit in hits:
                other = hit.photo.id
                if other != pid and hit.score >= floor:
                    key = (min(pid, other), max(pid, other))
                    pairs[key] = max(pairs.get(key, 0.0), float(hit.score))
    return [(a, b, s) for (a, b), s in pairs.items()]


def group_pairs(store: Store, pairs: Sequence[tuple[int, int, float]], threshold: float) -> list[Group]:
    """Near-duplicate groups at `threshold`: the connected components of the pairs at or
    above it, most alike first."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    kept = [(a, b, s) for a, b, s in pairs if s >= threshold]
    for a, b, _ in kept:
        parent[find(a)] = find(b)
    members: dict[int, list[int]] = {}
    for x in list(parent):
        members.setdefault(find(x), []).append(x)
    if not members:
        return []
    sims: dict[tuple[int, int], float] = {}
    for a, b, s in kept:
        sims[(a, b)] = sims[(b, a)] = s
    cat = store.read()
    all_ids = sorted(parent)
    photos = cat.photos(all_ids)
    edited = cat.edited_ids(all_ids)
    groups = []
    for ids in members.values():
        items = [Item(photos[i], photos[i].path, photos[i].mtime, i in edited) for i in ids if i in photos]
        if len(items) < 2:
            continue
        items = keep_order(items)
        keeper = items[0].photo.id
        vec = cat.vectors_for([i.photo.id for i in items], store.encoder.id)
        ref = vec.get(keeper)
        scored = [items[0]]
        for item in items[1:]:
            sim = sims.get((keeper, item.photo.id))
            if sim is None and ref is not None and item.photo.id in vec:
                sim = float(np.dot(ref, vec[item.photo.id]))
            scored.append(Item(item.photo, item.path, item.mtime, item.edited, sim))
        score = min((i.similarity for i in scored[1:] if i.similarity is not None), default=threshold)
        groups.append(Group("near", scored, score))
    groups.sort(key=lambda g: -g.score)
    return groups


def pair_precision_recall(
    labels: Sequence[int], pairs: Sequence[tuple[int, int, float]], thresholds: Sequence[float]
) -> list[tuple[float, float, float, float]]:
    """(threshold, precision, recall, F1) of "these two are one object" pairs, with
    `labels[i]` the group of item i and pairs over item indexes (the benchmark's maths)."""
    positives = sum(1 for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j])
    out = []
    for t in thresholds:
        chosen = [(a, b) for a, b, s in pairs if s >= t]
        hit = sum(1 for a, b in chosen if labels[a] == labels[b])
        precision = hit / len(chosen) if chosen else 1.0
        recall = hit / positives if positives else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append((t, precision, recall, f1))
    return out
