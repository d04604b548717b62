"""`retrieval`: a photo's caption is the best match for it in a bank of captions.

This is the image->text retrieval of the seed literature (Hodosh et al. 2013; the ranking
experiments of Karpathy & Fei-Fei 2015) used as a captioner: it works with any joint
encoder, needs no weights of its own, and its score is the cosine similarity.

Specs: ``retrieval`` is the fallback bank generated from the tag vocabulary
(``resources/tags.txt`` -> "A photo of a dog.", "A photo of people hiking.", ...), because
no caption corpus we could ship may be redistributed; ``retrieval:PATH`` is your own bank,
a text file with one caption per line (``image<TAB>caption`` TSV works too: the last
column is used); ``retrieval:NAME`` is ``<Lumen home>/banks/NAME.txt``.

The bank is embedded once per (encoder id, bank content hash) and cached as .npy beside the
library's other caches; near-identical captions (cosine > 0.95) are dropped, keeping the
first; banks up to 50k captions are searched exactly with numpy, larger ones through an
Annoy index (desktop.index.AnnoyBackend) built once in the cache. Big banks re-rank their top
matches by consensus (see `caption_vectors`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from desktop.encoders import (
    Encoder,
    EncoderError,
    LazyModel,
    ModelInfo,
    WeightsUnavailableError,
    create_encoder,
    understands_meaning,
)

log = logging.getLogger(__name__)

DEFAULT_BANK = "tags"
DEDUP_COSINE = 0.95
EXACT_MAX = 50_000  # below this a matmul is exact and fast enough; above, an ANN index
CANDIDATES = 16  # top matches looked at by the consensus re-ranking
# Consensus weight when not given: on for big banks only. With a few hundred captions the
# 16 "candidates" include poor matches whose agreement means nothing. 1.0 is the middle of
# the plateau measured on Flickr8k dev (bench/caption_quality.py: CIDEr 29.3 without,
# 32.9-33.5 for weights 0.5-2).
AUTO_CONSENSUS, AUTO_CONSENSUS_MIN_BANK = 1.0, 5000


@dataclass(frozen=True)
class Bank:
    name: str
    texts: tuple[str, ...]
    digest: str  # sha256 of the captions as read; keys the vector cache and the captioner id
    path: str | None = None


def _digest(texts: Iterable[str]) -> str:
    """Hash of the bank as read (not of the file's bytes): a change in how files are read
    can never reuse vectors cached for other texts."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def _tidy(text: str) -> str:
    """Flickr-style "A dog runs ." -> "A dog runs." (spaces before punctuation go)."""
    return re.sub(r"\s+([.,!?;:])", r"\1", " ".join(text.split()))


def _key(text: str) -> str:
    return re.sub(r"[^\w ]+", "", text.casefold()).strip()


def read_bank(path: str | os.PathLike) -> Bank:
    """One caption per line; blank lines and #comments skipped; exact repeats (ignoring
    case and punctuation) kept once."""
    path = Path(path)
    seen: dict[str, str] = {}
    for n, line in enumerate(path.read_text("utf-8").splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        text = _tidy(line.rsplit("\t", 1)[-1])
        if n == 0 and "\t" in line and text.lower() == "caption":
            continue  # a TSV header
        if text:
            seen.setdefault(_key(text), text)
    if not seen:
        raise EncoderError(f"{path}: the caption bank is empty")
    return Bank(path.stem, tuple(seen.values()), _digest(seen.values()), str(path))


def tags_bank(vocabulary: str | os.PathLike | None = None) -> Bank:
    from desktop.captions import load_vocabulary  # core helper; imported late (cheap plugin import)

    vocab = load_vocabulary(vocabulary)
    # The prompts' classification hints read badly as captions: ", a type of animal." -> "."
    plain = (re.sub(r", (?:a type of|a) [\w ]+\.$", ".", p) for p in vocab.prompts)
    texts = tuple(dict.fromkeys(p[:1].upper() + p[1:] for p in plain))
    return Bank(DEFAULT_BANK, texts, _digest(texts))


def banks_dir() -> Path:
    from desktop.settings import default_home

    return default_home() / "banks"


def resolve_bank(spec: str | os.PathLike | None) -> Bank:
    if spec in (None, "", DEFAULT_BANK):
        return tags_bank()
    path = Path(os.fspath(spec)).expanduser()  # type: ignore[arg-type]
    if path.is_file():
        return read_bank(path)
    named = banks_dir() / f"{spec}.txt"
    if named.is_file():
        return read_bank(named)
    raise WeightsUnavailableError(
        f"caption bank {spec!r} not found: give a text file with one caption per line "
        f"(retrieval:/path/to/bank.txt) or put NAME.txt in {banks_dir()}"
    )


def near_duplicates(
    vectors: np.ndarray, threshold: float, search: Callable[[np.ndarray, int], list[list[tuple[int, float]]]]
) -> np.ndarray:
    """Keep-mask: a caption goes when an earlier *kept* one is more similar than
    `threshold` (greedy in bank order, over each caption's 10 nearest neighbours)."""
    keep = np.ones(len(vectors), bool)
    for start in range(0, len(vectors), 2048):
        for i, row in enumerate(search(vectors[start : start + 2048], 10), start):
            if any(j < i and s > threshold and keep[j] for j, s in row):
                keep[i] = False
    return keep


@dataclass
class _Loaded:
    texts: list[str]  # kept captions, position = id in the search
    vectors: np.ndarray  # (n, dim) unit rows, kept captions only
    index: Any  # desktop.index.AnnoyBackend for big banks, else None


class RetrievalCaptioner(LazyModel):
    """Captioner (+ caption_vectors for photos whose vectors are already stored)."""

    def __init__(
        self,
        encoder: Encoder,
        bank: Bank,
        dedup: bool = True,
        consensus: float | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if not encoder.joint:
            raise EncoderError(
                f"the retrieval captioner needs a joint image-text encoder; {encoder.id} has no text tower"
            )
        if bank.name == DEFAULT_BANK and bank.path is None and not understands_meaning(encoder):
            # The default bank is general prompts ("A photo of a bear."): this encoder would
            # pick one by noise. A bank the user wrote for it (retrieval:FILE) is their call.
            raise EncoderError(
                f"{encoder.id} does not understand general concepts, so captions from the default "
                "bank would be false; use a meaning encoder (clip, bert_resnet) or your own bank")
        if consensus is None:
            consensus = AUTO_CONSENSUS if len(bank.texts) >= AUTO_CONSENSUS_MIN_BANK else 0.0
        self.encoder, self.bank, self.dedup, self.consensus = encoder, bank, dedup, consensus
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache()
        mix = f"+consensus{consensus:g}" if consensus else ""
        self.id = f"retrieval:{bank.name}-{bank.digest[:8]}{mix}@{encoder.id}"

    @property
    def encoder_id(self) -> str:
        return self.encoder.id

    def __repr__(self) -> str:
        return f"RetrievalCaptioner({self.id}, {len(self.bank.texts)} captions)"

    def _load(self) -> _Loaded:
        from desktop.captions import cached_text_vectors
        from desktop.index import AnnoyBackend, exact_search
        from desktop.settings import encoder_slug

        vectors = cached_text_vectors(self.encoder, self.bank.texts, self.bank.digest, "bank", self.cache_dir)
        texts = list(self.bank.texts)
        folder = self.cache_dir / "retrieval" / f"{encoder_slug(self.encoder.id)}-{self.bank.digest[:20]}"

        def index_of(vecs: np.ndarray, name: str) -> Any:
            if len(vecs) <= EXACT_MAX:
                return None
            idx = AnnoyBackend(folder / name, vecs.shape[1])
            if not idx.load() or idx.size != len(vecs):
                idx.build(np.arange(len(vecs)), vecs, version=len(vecs))
            return idx

        if self.dedup and len(vectors) > 1:
            mask_file = folder / f"dedup{int(DEDUP_COSINE * 100)}.npy"
            keep = np.load(mask_file) if mask_file.exists() else None
            if keep is None or len(keep) != len(vectors):
                full = index_of(vectors, "all")
                ids = np.arange(len(vectors))
                search = full.search if full is not None else (lambda q, k: exact_search(vectors, ids, q, k))
                keep = near_duplicates(vectors, DEDUP_COSINE, search)
                folder.mkdir(parents=True, exist_ok=True)
                np.save(mask_file, keep)
            log.info("%s: %d of %d captions left after de-duplication", self.id, int(keep.sum()), len(keep))
            vectors, texts = vectors[keep], [t for t, k in zip(texts, keep, strict=True) if k]
        return _Loaded(texts, np.ascontiguousarray(vectors), index_of(vectors, "kept"))

    def top(self, vectors: np.ndarray, n: int = 5) -> list[list[tuple[str, float]]]:
        """The n best captions per image vector, best first, with cosine similarities."""
        from desktop.index import exact_search

        m = self.model
        q = np.atleast_2d(np.asarray(vectors, np.float32))
        if m.index is not None:
            hits = m.index.search(q, n)
        else:
            hits = exact_search(m.vectors, np.arange(len(m.texts)), q, n)
        return [[(m.texts[i], s) for i, s in row] for row in hits]

    def bank_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """The bank's vectors of these captions (texts from `top`)."""
        m = self.model
        by_text = m.__dict__.setdefault("by_text", {t: i for i, t in enumerate(m.texts)})
        return m.vectors[[by_text[t] for t in texts]]

    def caption_vectors(self, vectors: np.ndarray) -> list[tuple[str, float]]:
        """Best caption per image vector. With `consensus` > 0 the top CANDIDATES are
        re-ranked by similarity + consensus x (mean similarity to the other candidates):
        a caption many good matches agree with beats an odd one that scored a hair higher
        (Devlin et al. 2015's consensus re-ranking, in embedding space)."""
        if not self.consensus:
            return [row[0] if row else ("", 0.0) for row in self.top(vectors, 1)]
        m = self.model
        by_text = {t: i for i, t in enumerate(m.texts)}
        out = []
        for row in self.top(vectors, CANDIDATES):
            if not row:
                out.append(("", 0.0))
                continue
            cand = m.vectors[[by_text[t] for t, _ in row]]
            agree = (cand @ cand.T).sum(axis=1) - 1.0  # minus the self-similarity
            score = np.array([s for _, s in row]) + self.consensus * agree / max(len(row) - 1, 1)
            out.append(row[int(np.argmax(score))])
        return out

    def caption_with_scores(self, images: Sequence[Any]) -> list[tuple[str, float]]:
        return self.caption_vectors(self.encoder.encode_images(images))

    def caption(self, images: Sequence[Any]) -> list[str]:
        return [text for text, _ in self.caption_with_scores(images)]


def _default_cache() -> Path:
    from desktop.settings import default_home

    return default_home() / "cache"


class RetrievalPlugin:
    """Entry point `lumen.captioners: retrieval`."""

    name = "retrieval"
    default_model = DEFAULT_BANK

    def models(self) -> list[ModelInfo]:
        infos = [
            ModelInfo(
                f"{self.name}:{DEFAULT_BANK}",
                "best match among prompts made from the tag vocabulary "
                "(a fallback: give your own bank of captions)",
                True,
                "resources/tags.txt",
            )
        ]
        folder = banks_dir()
        for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
            infos.append(
                ModelInfo(f"{self.name}:{path.stem}", "best match in your caption bank", True, str(path))
            )
        return infos

    def create(
        self,
        model: str | None = None,
        weights: str | None = None,
        device: str = "auto",
        encoder: Encoder | str | None = None,
        bank: str | os.PathLike | None = None,
        dedup: bool = True,
        consensus: float | None = None,
        cache_dir: str | os.PathLike | None = None,
        **_: Any,
    ) -> RetrievalCaptioner:
        """`model` or `bank` names the bank; `encoder` is the library's encoder (or a spec)."""
        if weights:
            raise EncoderError(
                "the retrieval captioner has no weights; name the caption bank: retrieval:BANK.txt"
            )
        if encoder is None:
            raise EncoderError(
                "the retrieval captioner matches photos with the library's encoder: create it through "
                "desktop.captions.make_captioner(lib), or pass encoder=..."
            )
        if isinstance(encoder, str):
            encoder = create_encoder(encoder, device=device)
        return RetrievalCaptioner(encoder, resolve_bank(bank or model), dedup, consensus, cache_dir)


captioner_plugin = RetrievalPlugin()
