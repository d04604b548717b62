"""The second stage of search: a re-ranker's new scores for the first stage's top N.

The library owns one `Reranking` (lib.reranking) over its data dir's `Store`, and hands it
to the search (search.search) and the indexer (Indexer.encode_batches). It
- finds the re-ranker for the active encoder: the first installed `lumen.rerankers`
  plugin (by name) whose `accepts(encoder_id)` is true; none installed or none accepting
  means search behaves exactly as without this module;
- re-ranks text -> image hits (`photos`) and image -> text caption lists (`captions`):
  the top `TOP_N` candidates are put in the re-ranker's order (each keeps its
  first-stage similarity as its score: one scale for thresholds), the rest follow;
- at index time (`encode_images`, the indexer's seam) asks the encoder for its vectors
  *and* its CNN maps in one pass, turns the maps into the re-ranker's region features and
  queues them to the region store (desktop/catalog/regions.py) on the writer thread, ahead of
  the batch's vectors: a photo with a vector has its regions, unless it was indexed
  before the re-ranker was installed (then it keeps its first-stage score);
- explains a match (`explain`): the re-ranker's per-word attention over a photo.

The setting (`rerank.enabled` in the catalog's meta, on by default) is the Settings
switch and the CLI's `--rerank/--no-rerank`; a Library opened with `rerank=` overrides it
for that session.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from desktop.catalog.regions import RegionStore
from desktop.encoders import (
    RERANKER_GROUP,
    EncoderError,
    RerankCandidates,
    Reranker,
    RerankQuery,
    create_reranker,
    installed,
)

if TYPE_CHECKING:
    from desktop.store import Store

log = logging.getLogger(__name__)

TOP_N = 50  # first-stage candidates a re-ranker sees (SCAN-style models re-rank a short list)
META_ENABLED = "rerank.enabled"


class Reranking:
    def __init__(self, store: Store, enabled: bool | None = None) -> None:
        self.data_dir = store  # read(), write(), device, paths, the encoder
        self.override = enabled
        self._store: RegionStore | None = None
        self._by_encoder: dict[str, Reranker | None] = {}
        self._complete: dict[str, tuple[int, int]] = {}  # key -> (max vector rowid, rows) when none was missing
        self._lock = threading.Lock()

    # ---- setting ------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        if self.override is not None:
            return self.override
        return self.data_dir.read().get_meta(META_ENABLED) != "off"

    def set_enabled(self, on: bool) -> None:
        """The persistent setting (Settings dialog); a session override is dropped."""
        self.override = None
        self.data_dir.write(lambda c: c.set_meta(META_ENABLED, "on" if on else "off"))

    # ---- which re-ranker ----------------------------------------------------------------
    def reranker(self, encoder_id: str) -> Reranker | None:
        """The installed re-ranker for this encoder (created once; its model loads lazily)."""
        with self._lock:
            if encoder_id not in self._by_encoder:
                self._by_encoder[encoder_id] = self._find(encoder_id)
            return self._by_encoder[encoder_id]

    def _find(self, encoder_id: str) -> Reranker | None:
        for entry in installed(RERANKER_GROUP):
            try:
                local = create_reranker(entry.name, device=self.data_dir.device)
                if not local.accepts(encoder_id):
                    continue
            except (EncoderError, OSError) as exc:  # a broken plugin never breaks search or indexing
                log.warning("re-ranker %s unavailable: %s", entry.name, exc)
                continue
            log.info("re-ranker %s for %s", local.id, encoder_id)
            if self.data_dir.model_process:  # the window's process never imports torch
                from desktop.model_host import RemoteEncoder

                remote: Any = RemoteEncoder(local, entry.name, None, self.data_dir.device, self.data_dir.model_nice,
                                            kind="reranker", idle_unload_s=self.data_dir.model_idle_s)
                return remote
            return local
        return None

    def active(self, encoder_id: str) -> Reranker | None:
        return self.reranker(encoder_id) if self.enabled else None

    def depth(self, k: int, encoder_id: str) -> int:
        """How many first-stage hits a search for `k` should fetch."""
        return max(k, TOP_N) if self.active(encoder_id) is not None else k

    @property
    def store(self) -> RegionStore:
        if self._store is None:
            self._store = RegionStore(self.data_dir.paths.home / "regions.db", readonly=self.data_dir.readonly)
        return self._store

    def close(self) -> None:
        for rr in self._by_encoder.values():
            unload = getattr(rr, "unload", None)
            if callable(unload):
                unload()
        if self._store is not None:
            self._store.close()

    # ---- search -------------------------------------------------------------------------
    def regions_of(self, rr: Reranker, encoder_id: str, hashes: Sequence[str]) -> tuple[np.ndarray | None, ...]:
        key = rr.regions_key(encoder_id)
        if key is None:
            return tuple(None for _ in hashes)
        got = self.store.get(key, list(hashes))
        return tuple(got.get(h) for h in hashes)

    def photos(self, text: str | None, images: Sequence[str], hits: list[Any], encoder_id: str,
               k: int) -> list[Any]:
        """Text/image query -> the top `TOP_N` hits re-scored, best first, cut to k."""
        rr = self.active(encoder_id)
        if rr is None or len(hits) < 2:
            return hits[:k]
        head, tail = hits[:TOP_N], hits[TOP_N:]
        cands = RerankCandidates(np.array([h.score for h in head], np.float32),
                                 photo_ids=tuple(h.photo_id for h in head),
                                 regions=self.regions_of(rr, encoder_id, [h.photo.hash for h in head]))
        scores = rr.rerank(RerankQuery(text=text, images=tuple(images), encoder_id=encoder_id), cands)
        if scores is None:
            return hits[:k]
        # The order is the re-ranker's; each hit keeps its first-stage similarity as its
        # score, so scores keep one scale (albums' min_score, the detail panel's "Match").
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        return ([head[i] for i in order] + tail)[:k]

    def captions(self, photo_id: int, photo_hash: str, texts: Sequence[str], scores: np.ndarray,
                 encoder_id: str, vectors: np.ndarray | None = None) -> np.ndarray:
        """Image -> text: positions of `texts` (first-stage order, best first) re-ranked;
        unchanged without a re-ranker or region features for the photo. `vectors`: the
        texts' first-stage vectors, when the caller has them (lets a re-ranker correct
        for captions that match every photo)."""
        rr = self.active(encoder_id)
        n = min(TOP_N, len(texts))
        identity = np.arange(len(texts))
        if rr is None or n < 2:
            return identity
        (regions,) = self.regions_of(rr, encoder_id, [photo_hash])
        if rr.regions_key(encoder_id) is not None and regions is None:
            return identity
        new = rr.rerank(RerankQuery(photo_id=photo_id, regions=regions, encoder_id=encoder_id),
                        RerankCandidates(np.asarray(scores[:n], np.float32), texts=tuple(texts[:n]),
                                         vectors=None if vectors is None else np.asarray(vectors[:n])))
        if new is None:
            return identity
        return np.concatenate([np.argsort(-np.asarray(new, np.float64), kind="stable"), identity[n:]])

    def explain(self, text: str, hits: Sequence[Any], encoder_id: str) -> list[dict[str, Any] | None]:
        """Per hit: {"grid": [h, w], "heatmap": h x w, "words": [{"word", "score", "attention"}]}
        from a re-ranker that can explain (None per hit otherwise, or without regions)."""
        rr = self.reranker(encoder_id)
        explain = getattr(rr, "explain", None) if rr is not None else None
        if explain is None or not hits:
            return [None] * len(hits)
        regions = self.regions_of(rr, encoder_id, [h.photo.hash for h in hits])  # type: ignore[arg-type]
        return list(explain(text, list(regions)))

    # ---- indexing -----------------------------------------------------------------------
    def missing(self, encoder_id: str) -> list[tuple[int, str]]:
        """(photo id, path) of the stills that have a vector for this encoder but no region
        features under the active re-ranker's key (indexed before it was installed, or
        under an earlier re-ranker file): what a backfill encodes. Videos have none.
        Once nothing is missing, asked again with no new vector and no row gone since, it
        reads two counts, not every photo."""
        rr = self.active(encoder_id)
        key = rr.regions_key(encoder_id) if rr is not None else None
        if key is None or not hasattr(self.data_dir.encoder, "encode_images_with_maps"):
            return []
        cat = self.data_dir.read()
        state = (cat.max_vector_rowid(encoder_id), self.store.count(key))
        if self._complete.get(key) == state:
            return []
        have = self.store.hashes(key)
        todo = [(pid, path) for pid, h, path in cat.encoded_stills(encoder_id) if h not in have]
        if not todo:
            self._complete[key] = state
        return todo

    def encode_images(self, images: Sequence[Any], photo_ids: Sequence[int]) -> np.ndarray:
        """The indexer's encode step: vectors, plus region features in the same CNN pass
        when the active encoder and an installed re-ranker support them."""
        store = self.data_dir
        encoder = store.encoder
        rr = self.reranker(encoder.id)
        key = rr.regions_key(encoder.id) if rr is not None else None
        with_maps = getattr(encoder, "encode_images_with_maps", None) if key else None
        if with_maps is None:
            return store.encode_images(images)
        vectors, maps = store.using_encoder(lambda _: with_maps(images))
        regions = rr.regions_from_maps(maps, vectors, encoder.id)  # type: ignore[union-attr]
        rows = store.read().photos(list(photo_ids))
        items = [(rows[pid].hash, r) for pid, r in zip(photo_ids, regions, strict=True) if pid in rows]
        store.write(lambda c: self.store.put(key, items))  # before the vectors: same writer queue
        return vectors
