"""Image -> text, for organizing: a caption and tags for every photo, and the user's edits.
Finding photos by those words is desktop/search.py's; export is desktop/export.py's.

Qt-free. Every function takes the data dir's `Store`; catalog writes go through its writer
thread. The Library facade wraps them.

- Captioners are plugins (`lumen.captioners`). A plugin whose `create()` takes an
  `encoder` argument (the `retrieval` one) is given the library's encoder, and one that
  offers `caption_vectors()` captions from the vectors indexing already stored: no decode.
- Tags come from the encoder: zero-shot over `resources/tags.txt` for joint encoders, and
  the encoder's own classifier labels when it is a `Tagger` (bert_resnet: ImageNet).
- Machine output is stored per (photo, source); the user's own caption and tag set live
  under source "user" and win over every machine (see desktop/catalog/text.py).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from desktop import media
from desktop.catalog import PhotoText
from desktop.encoders import (
    CAPTIONER_GROUP,
    Captioner,
    Encoder,
    EncoderError,
    LazyModel,
    Tagger,
    get_plugin,
    split_spec,
    understands_meaning,
)
from desktop.model_host import RemoteEncoder, end_process
from desktop.settings import encoder_slug
from desktop.store import LibraryError, Progress, Store

if TYPE_CHECKING:
    from desktop.rerank import Reranking

log = logging.getLogger(__name__)

DEFAULT_CAPTIONER = "retrieval"  # works with any joint encoder, needs no extra weights
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
VOCABULARY = RESOURCES / "tags.txt"
DECODE_SIZE = 256
BATCH = 32
CLASSIFIER_TOP_K, CLASSIFIER_MIN_PROB = 3, 0.2  # ImageNet labels are often wrong below this


# ---- the vocabulary ---------------------------------------------------------------------
@dataclass(frozen=True)
class Vocabulary:
    tags: tuple[str, ...]
    prompts: tuple[str, ...]  # one per tag: its group's template filled in (or its own)
    digest: str  # sha256 of the file, keys the prompt-vector cache
    threshold: float = 0.05
    temperature: float = 0.01
    max_tags: int = 8
    min_tags: int = 1


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def load_vocabulary(path: str | os.PathLike | None = None) -> Vocabulary:
    """Parse a vocabulary file (format in resources/tags.txt's header)."""
    path = Path(path or VOCABULARY)
    text = path.read_text("utf-8")
    settings: dict[str, float] = {}
    template = "a photo of {a} {tag}."
    tags: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"#\s*@group\s+[^:]+:\s*(.+)$", line):
            template = m.group(1).strip()
        elif m := re.match(r"#\s*@(\w+)\s+([\d.]+)\s*$", line):
            settings[m.group(1)] = float(m.group(2))
        elif line and not line.startswith("#"):
            tag, _, prompt = (part.strip() for part in line.partition("|"))
            if tag and tag not in tags:  # the first definition of a tag wins
                tags[tag] = prompt or template.replace("{a}", _article(tag)).replace("{tag}", tag)
    if not tags:
        raise ValueError(f"{path}: no tags in the vocabulary")
    known = {k: settings[k] for k in ("threshold", "temperature") if k in settings}
    known |= {k: int(settings[k]) for k in ("max_tags", "min_tags") if k in settings}
    digest = hashlib.sha256(text.encode()).hexdigest()
    return Vocabulary(tuple(tags), tuple(tags.values()), digest, **known)  # type: ignore[arg-type]


def cached_text_vectors(
    encoder: Encoder, texts: Sequence[str], digest: str, kind: str, cache_dir: str | os.PathLike | None
) -> np.ndarray:
    """Text vectors of a fixed list (a vocabulary, a caption bank), embedded once per
    (encoder id, content digest) and kept in `cache_dir/text-vectors/` as .npy."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "text-vectors" / encoder_slug(encoder.id) / f"{kind}-{digest[:20]}.npy"
        if path.exists():
            vectors = np.load(path)
            if vectors.shape == (len(texts), encoder.dim):
                return vectors
            log.warning("%s: stale cache (shape %s), re-embedding", path, vectors.shape)
    started = time.monotonic()
    parts = []
    for i in range(0, len(texts), 512):
        parts.append(np.asarray(encoder.encode_texts(list(texts[i : i + 512])), np.float32))
        if len(texts) > 5000:
            log.info("embedding %s: %d/%d texts", kind, min(i + 512, len(texts)), len(texts))
    vectors = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)
    log.info(
        "embedded %d %s texts with %s in %.1fs", len(texts), kind, encoder.id, time.monotonic() - started
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
        np.save(tmp, vectors)
        os.replace(tmp, path)  # two processes embedding the same list: both results are valid
    return vectors


# ---- taggers ----------------------------------------------------------------------------
class ZeroShotTagger:
    """Tags = vocabulary concepts whose prompt is near the photo's vector: a softmax over
    the whole vocabulary (so scores are comparable across encoders with different cosine
    ranges), then the threshold, at most `max_tags`, at least `min_tags`."""

    needs_images = False

    def __init__(self, encoder: Encoder, vocabulary: Vocabulary, cache_dir: str | os.PathLike | None = None):
        self.encoder, self.vocabulary, self.cache_dir = encoder, vocabulary, cache_dir
        self.source = f"zeroshot:{encoder.id}"
        self._prompts: np.ndarray | None = None

    def tag_vectors(self, vectors: np.ndarray) -> list[list[tuple[str, float]]]:
        v = self.vocabulary
        if self._prompts is None:
            self._prompts = cached_text_vectors(
                self.encoder, v.prompts, v.digest, "vocabulary", self.cache_dir
            )
        logits = np.asarray(vectors, np.float32) @ self._prompts.T / v.temperature
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        out = []
        for row in probs:
            order = np.argsort(-row)[: v.max_tags]
            keep = [i for n, i in enumerate(order) if n < v.min_tags or row[i] >= v.threshold]
            out.append([(v.tags[i], round(float(row[i]), 4)) for i in keep])
        return out

    def tag(self, vectors: np.ndarray, imgs: Sequence[Any]) -> list[list[tuple[str, float]]]:
        return self.tag_vectors(vectors)


class ClassifierTagger:
    """The encoder's own labels (bert_resnet: its CNN's ImageNet classifier)."""

    needs_images = True

    def __init__(
        self, encoder: Encoder, top_k: int = CLASSIFIER_TOP_K, min_prob: float = CLASSIFIER_MIN_PROB
    ):
        self.encoder, self.top_k, self.min_prob = encoder, top_k, min_prob
        self.source = f"classifier:{encoder.id}"

    def tag(self, vectors: np.ndarray, imgs: Sequence[Any]) -> list[list[tuple[str, float]]]:
        found = self.encoder.tags(imgs, top_k=self.top_k)  # type: ignore[attr-defined]
        return [[(t, round(s, 4)) for t, s in row if s >= self.min_prob] for row in found]


def taggers_for(store: Store, vocabulary: Vocabulary | str | os.PathLike | None = None) -> list[Any]:
    encoder = store.encoder
    out: list[Any] = []
    if encoder.joint and vocabulary is None and not understands_meaning(encoder):
        log.info("%s matches no general concepts: no zero-shot tags from %s", encoder.id, VOCABULARY.name)
    elif encoder.joint:
        if isinstance(vocabulary, Vocabulary):
            out.append(ZeroShotTagger(encoder, vocabulary, store.paths.cache))
        elif vocabulary is not None or VOCABULARY.exists():
            out.append(ZeroShotTagger(encoder, load_vocabulary(vocabulary), store.paths.cache))
        else:  # an install without the resources folder: say so, keep the other taggers
            log.warning("no tag vocabulary at %s: zero-shot tags are off", VOCABULARY)
    if isinstance(encoder, Tagger):
        out.append(ClassifierTagger(encoder))
    return out


# ---- captioning -------------------------------------------------------------------------
_captioners: weakref.WeakKeyDictionary[Store, dict[tuple[str, str], Captioner]] = (
    weakref.WeakKeyDictionary()
)
_captioners_lock = threading.Lock()


def make_captioner(store: Store, spec: str | None = None, **kwargs: Any) -> Captioner:
    """A captioner for this library (cached per spec and encoder: models load once).
    Plugins that take `encoder` / `cache_dir` get the library's."""
    spec = spec or store.read().get_meta("captioner.spec") or DEFAULT_CAPTIONER
    encoder = store.encoder
    key = (spec + (json.dumps(kwargs, sort_keys=True, default=str) if kwargs else ""), encoder.id)
    with _captioners_lock:
        cached = _captioners.setdefault(store, {}).get(key)
        if cached is not None:
            return cached
        name, model = split_spec(spec)
        plugin = get_plugin(name, CAPTIONER_GROUP)
        params = inspect.signature(plugin.create).parameters
        if "encoder" in params:
            kwargs.setdefault("encoder", encoder)
        if "cache_dir" in params:
            kwargs.setdefault("cache_dir", store.paths.cache)
        captioner = plugin.create(model=model, weights=None, device=store.device, **kwargs)
        if store.model_process and isinstance(captioner, LazyModel) and "encoder" not in kwargs:
            # Like the encoder, a captioner with a model of its own runs in a child process.
            captioner = RemoteEncoder(captioner, spec, None, store.device, store.model_nice, kind="captioner",
                                      options=kwargs, idle_unload_s=store.model_idle_s)
        _captioners[store][key] = captioner
        return captioner


def forget_captioners(store: Store) -> None:
    """Drop this library's cached captioners, ending any model process they run in."""
    with _captioners_lock:
        for captioner in _captioners.pop(store, {}).values():
            end_process(captioner)


def _from_vectors(captioner: Any, encoder: Encoder) -> bool:
    return hasattr(captioner, "caption_vectors") and getattr(captioner, "encoder_id", None) == encoder.id


def _caption_images(captioner: Any, imgs: Sequence[Any]) -> list[tuple[str, float | None]]:
    if hasattr(captioner, "caption_with_scores"):
        return list(captioner.caption_with_scores(imgs))
    return [(text, None) for text in captioner.caption(imgs)]


@dataclass
class CaptionReport:
    captioner: str | None = None
    captioned: int = 0
    tagged: int = 0
    skipped: int = 0
    seconds: float = 0.0
    cancelled: bool = False


def caption_pending(
    store: Store,
    captioner_spec: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    redo: bool = False,
    *,
    captions: bool = True,
    tags: bool = True,
    vocabulary: Vocabulary | str | os.PathLike | None = None,
    batch_size: int = BATCH,
    reranking: Reranking | None = None,
) -> CaptionReport:
    """Caption and tag every indexed photo that lacks them (all of them with `redo`),
    in batches: resumable, cancellable between batches, one transaction per batch.
    A user's own caption or tags are never touched (they live under source "user").
    With `reranking` and a re-ranker for the encoder, a bank captioner's top candidates
    go through it (image -> text's second stage) and its best is kept."""
    started = time.monotonic()
    encoder = store.encoder
    captioner = None
    if captions:
        try:
            captioner = make_captioner(store, captioner_spec)
        except EncoderError as exc:
            if captioner_spec is not None:
                raise
            # The default captioner needs a joint encoder; tags (e.g. ImageNet labels) still work.
            log.warning("no captions with %s: %s; tagging only", store.encoder.id, exc)
    taggers = taggers_for(store, vocabulary) if tags else []
    source = captioner.id if captioner is not None else None
    report = CaptionReport(captioner=source)
    tag_sources = [t.source for t in taggers]
    total = store.read().count_needing(source, tag_sources, redo, encoder.id)
    done, after = 0, 0
    while total and not (cancel and cancel.is_set()):
        todo = store.read().photos_needing(source, tag_sources, batch_size, after, redo, encoder.id)
        if not todo:
            break
        after = todo[-1].photo_id
        vectors = store.read().vectors_for([p.photo_id for p in todo], encoder.id)
        by_vector = captioner is not None and _from_vectors(captioner, encoder)
        want_images = [
            p
            for p in todo
            if (p.need_caption and not by_vector)
            or any(need and t.needs_images for t, need in zip(taggers, p.need_tags, strict=True))
        ]
        decoded = (
            dict(media.iter_decoded([p.path for p in want_images], size=DECODE_SIZE)) if want_images else {}
        )
        ok = [p for p in todo if not isinstance(decoded.get(p.path), media.MediaError)]
        report.skipped += len(todo) - len(ok)
        caps: list[tuple[int, str, float | None]] = []
        rows = [p for p in ok if p.need_caption]
        if captioner is not None and rows:
            if by_vector and _can_rerank(captioner, reranking, encoder.id):
                out = _reranked_captions(store, reranking, captioner, rows, vectors, encoder.id)  # type: ignore[arg-type]
            elif by_vector:
                out = captioner.caption_vectors(np.stack([vectors[p.photo_id] for p in rows]))  # type: ignore[attr-defined]
            else:
                out = _caption_images(captioner, [decoded[p.path].image for p in rows])
            caps = [(p.photo_id, text, score) for p, (text, score) in zip(rows, out, strict=True)]
        tag_rows: dict[str, list[tuple[int, list[tuple[str, float]]]]] = {}
        for i, tagger in enumerate(taggers):
            rows = [p for p in ok if p.need_tags[i]]
            if rows:
                found = tagger.tag(
                    np.stack([vectors[p.photo_id] for p in rows]),
                    [decoded[p.path].image for p in rows] if tagger.needs_images else [],
                )
                tag_rows[tagger.source] = [(p.photo_id, f) for p, f in zip(rows, found, strict=True)]
        store.write(lambda c, s=source, a=caps, t=tag_rows: c.save_machine_output(s, a, t))
        report.captioned += len(caps)
        report.tagged += len({pid for per_photo in tag_rows.values() for pid, _ in per_photo})
        done += len(todo)
        if progress:
            rate = done / max(time.monotonic() - started, 1e-6)
            eta = max(total - done, 0) / rate
            progress(Progress("caption", done, max(total, done), rate, eta, message=source or "tags"))
    report.cancelled = bool(cancel and cancel.is_set())
    report.seconds = time.monotonic() - started
    return report


def _can_rerank(captioner: Any, reranking: Reranking | None, encoder_id: str) -> bool:
    return (reranking is not None and hasattr(captioner, "top") and hasattr(captioner, "bank_vectors")
            and reranking.active(encoder_id) is not None)


def _reranked_captions(store: Store, reranking: Reranking, captioner: Any, rows: Sequence[Any],
                       vectors: dict[int, np.ndarray], encoder_id: str) -> list[tuple[str, float]]:
    """The captioner's top TOP_N bank captions per photo, re-ranked (the photo's regions
    against each caption's words, and captions that match every photo corrected for);
    the best is kept with its first-stage cosine. The bank captioner's own consensus
    re-ranking is replaced, not stacked. A photo without regions keeps the first stage."""
    from desktop.rerank import TOP_N

    photos = store.read().photos([p.photo_id for p in rows])
    tops = captioner.top(np.stack([vectors[p.photo_id] for p in rows]), TOP_N)
    out: list[tuple[str, float]] = []
    for p, cands in zip(rows, tops, strict=True):
        if not cands or p.photo_id not in photos:
            out.append(cands[0] if cands else ("", 0.0))
            continue
        texts = [t for t, _ in cands]
        order = reranking.captions(p.photo_id, photos[p.photo_id].hash, texts,
                                   np.array([sc for _, sc in cands], np.float32), encoder_id,
                                   captioner.bank_vectors(texts))
        out.append(cands[int(order[0])])
    return out


def caption_photo(store: Store, photo_id: int, spec: str | None = None) -> str:
    """Caption one photo now (the detail panel's "Describe") and store it under the
    captioner's source; returns the text."""
    captioner = make_captioner(store, spec)
    vector = store.read().vector_of(photo_id, store.encoder.id)
    if vector is not None and _from_vectors(captioner, store.encoder):
        text, score = captioner.caption_vectors(vector[None, :])[0]  # type: ignore[attr-defined]
    else:
        photo = store.read().photos([photo_id]).get(photo_id)
        if photo is None:
            raise LibraryError(f"photo {photo_id} is not in the library")
        try:
            image = media.load_for_encoding(photo.path, DECODE_SIZE)
        except media.MediaError as exc:
            raise LibraryError(str(exc)) from exc
        text, score = _caption_images(captioner, [image])[0]
    store.write(lambda c: c.set_caption(photo_id, captioner.id, text, score))
    return text


# ---- editing ----------------------------------------------------------------------------
def set_caption(store: Store, photo_id: int, text: str | None) -> None:
    """The user's caption ("" or None: back to the machines')."""
    store.write(lambda c: c.set_user_caption(photo_id, text))


def set_tags(store: Store, photo_id: int, tags: Sequence[str] | None) -> None:
    """The user's tag set, replacing the machines' (None: back to the machines')."""
    store.write(lambda c: c.set_user_tags(photo_id, tags))


def edit_tags(store: Store, photo_id: int, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
    """Add/remove tags starting from what the user sees now; returns the new set."""
    drop = {t.casefold() for t in remove}
    new = {t.casefold(): t for t in store.read().effective_tags(photo_id) if t.casefold() not in drop}
    for tag in add:
        new.setdefault(tag.casefold(), tag)
    set_tags(store, photo_id, list(new.values()))
    return list(new.values())


def photo_text(store: Store, photo_id: int) -> PhotoText | None:
    return next(iter(store.read().photo_texts([photo_id])), None)


def parse_tags(text: str) -> list[str]:
    """ "beach, sunset; dog" -> ["beach", "sunset", "dog"] (commas or semicolons)."""
    return [t.strip() for t in re.split(r"[,;\n]", text) if t.strip()]
