"""Image -> text, for organizing: a caption and tags for every photo, found by keyword
(SQLite FTS5) and by meaning, saved searches ("smart albums"), edits, and export.

Qt-free. Every function takes a `Library`; catalog writes go through its writer thread.

- Captioners are plugins (`lumen.captioners`). A plugin whose `create()` takes an
  `encoder` argument (the `retrieval` one) is given the library's encoder, and one that
  offers `caption_vectors()` captions from the vectors indexing already stored: no decode.
- Tags come from the encoder: zero-shot over `resources/tags.txt` for joint encoders, and
  the encoder's own classifier labels when it is a `Tagger` (bert_resnet: ImageNet).
- Machine output is stored per (photo, source); the user's own caption and tag set live
  under source "user" and win over every machine (see catalog.py, schema v2).
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from desktop import images
from desktop.catalog import Album, CatalogError, PhotoText
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
from desktop.library import Filters, Hit, Library, LibraryError, Progress
from desktop.model_host import RemoteEncoder, end_process
from desktop.settings import encoder_slug

log = logging.getLogger(__name__)

DEFAULT_CAPTIONER = "retrieval"  # works with any joint encoder, needs no extra weights
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
VOCABULARY = RESOURCES / "tags.txt"
DECODE_SIZE = 256
BATCH = 32
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009); damps the top ranks' lead
MEANING_DEPTH = 200  # meaning hits fused with the word hits (and an album's default)
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


def taggers_for(lib: Library, vocabulary: Vocabulary | str | os.PathLike | None = None) -> list[Any]:
    encoder = lib.encoder
    out: list[Any] = []
    if encoder.joint and vocabulary is None and not understands_meaning(encoder):
        log.info("%s matches no general concepts: no zero-shot tags from %s", encoder.id, VOCABULARY.name)
    elif encoder.joint:
        if isinstance(vocabulary, Vocabulary):
            out.append(ZeroShotTagger(encoder, vocabulary, lib.paths.cache))
        elif vocabulary is not None or VOCABULARY.exists():
            out.append(ZeroShotTagger(encoder, load_vocabulary(vocabulary), lib.paths.cache))
        else:  # an install without the resources folder: say so, keep the other taggers
            log.warning("no tag vocabulary at %s: zero-shot tags are off", VOCABULARY)
    if isinstance(encoder, Tagger):
        out.append(ClassifierTagger(encoder))
    return out


# ---- captioning -------------------------------------------------------------------------
_captioners: weakref.WeakKeyDictionary[Library, dict[tuple[str, str], Captioner]] = (
    weakref.WeakKeyDictionary()
)
_captioners_lock = threading.Lock()


def make_captioner(lib: Library, spec: str | None = None, **kwargs: Any) -> Captioner:
    """A captioner for this library (cached per spec and encoder: models load once).
    Plugins that take `encoder` / `cache_dir` get the library's."""
    spec = spec or lib.catalog.get_meta("captioner.spec") or DEFAULT_CAPTIONER
    encoder = lib.encoder
    key = (spec + (json.dumps(kwargs, sort_keys=True, default=str) if kwargs else ""), encoder.id)
    with _captioners_lock:
        cached = _captioners.setdefault(lib, {}).get(key)
        if cached is not None:
            return cached
        name, model = split_spec(spec)
        plugin = get_plugin(name, CAPTIONER_GROUP)
        params = inspect.signature(plugin.create).parameters
        if "encoder" in params:
            kwargs.setdefault("encoder", encoder)
        if "cache_dir" in params:
            kwargs.setdefault("cache_dir", lib.paths.cache)
        captioner = plugin.create(model=model, weights=None, device=lib.device, **kwargs)
        if lib.model_process and isinstance(captioner, LazyModel) and "encoder" not in kwargs:
            # Like the encoder, a captioner with a model of its own runs in a child process.
            captioner = RemoteEncoder(captioner, spec, None, lib.device, lib.model_nice, kind="captioner",
                                      options=kwargs, idle_unload_s=lib.model_idle_s)
        _captioners[lib][key] = captioner
        return captioner


def forget_captioners(lib: Library) -> None:
    """Drop this library's cached captioners, ending any model process they run in."""
    with _captioners_lock:
        for captioner in _captioners.pop(lib, {}).values():
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
    lib: Library,
    captioner_spec: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    redo: bool = False,
    *,
    captions: bool = True,
    tags: bool = True,
    vocabulary: Vocabulary | str | os.PathLike | None = None,
    batch_size: int = BATCH,
) -> CaptionReport:
    """Caption and tag every indexed photo that lacks them (all of them with `redo`),
    in batches: resumable, cancellable between batches, one transaction per batch.
    A user's own caption or tags are never touched (they live under source "user")."""
    started = time.monotonic()
    encoder = lib.encoder
    captioner = None
    if captions:
        try:
            captioner = make_captioner(lib, captioner_spec)
        except EncoderError as exc:
            if captioner_spec is not None:
                raise
            # The default captioner needs a joint encoder; tags (e.g. ImageNet labels) still work.
            log.warning("no captions with %s: %s; tagging only", lib.encoder.id, exc)
    taggers = taggers_for(lib, vocabulary) if tags else []
    source = captioner.id if captioner is not None else None
    report = CaptionReport(captioner=source)
    tag_sources = [t.source for t in taggers]
    total = lib.catalog.count_needing(source, tag_sources, redo, encoder.id)
    done, after = 0, 0
    while total and not (cancel and cancel.is_set()):
        todo = lib.catalog.photos_needing(source, tag_sources, batch_size, after, redo, encoder.id)
        if not todo:
            break
        after = todo[-1].photo_id
        vectors = lib.catalog.vectors_for([p.photo_id for p in todo], encoder.id)
        by_vector = captioner is not None and _from_vectors(captioner, encoder)
        want_images = [
            p
            for p in todo
            if (p.need_caption and not by_vector)
            or any(need and t.needs_images for t, need in zip(taggers, p.need_tags, strict=True))
        ]
        decoded = (
            dict(images.iter_decoded([p.path for p in want_images], size=DECODE_SIZE)) if want_images else {}
        )
        ok = [p for p in todo if not isinstance(decoded.get(p.path), images.ImageError)]
        report.skipped += len(todo) - len(ok)
        caps: list[tuple[int, str, float | None]] = []
        rows = [p for p in ok if p.need_caption]
        if captioner is not None and rows:
            if by_vector:
                out = captioner.caption_vectors(np.stack([vectors[p.photo_id] for p in rows]))  # type: ignore[attr-defined]
            else:
                out = _caption_images(captioner, [decoded[p.path] for p in rows])
            caps = [(p.photo_id, text, score) for p, (text, score) in zip(rows, out, strict=True)]
        tag_rows: dict[str, list[tuple[int, list[tuple[str, float]]]]] = {}
        for i, tagger in enumerate(taggers):
            rows = [p for p in ok if p.need_tags[i]]
            if rows:
                found = tagger.tag(
                    np.stack([vectors[p.photo_id] for p in rows]),
                    [decoded[p.path] for p in rows] if tagger.needs_images else [],
                )
                tag_rows[tagger.source] = [(p.photo_id, f) for p, f in zip(rows, found, strict=True)]
        lib._write(lambda c, s=source, a=caps, t=tag_rows: c.save_machine_output(s, a, t))
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


def caption_photo(lib: Library, photo_id: int, spec: str | None = None) -> str:
    """Caption one photo now (the detail panel's "Describe") and store it under the
    captioner's source; returns the text."""
    captioner = make_captioner(lib, spec)
    vector = lib.catalog.vector_of(photo_id, lib.encoder.id)
    if vector is not None and _from_vectors(captioner, lib.encoder):
        text, score = captioner.caption_vectors(vector[None, :])[0]  # type: ignore[attr-defined]
    else:
        photo = lib.catalog.photos([photo_id]).get(photo_id)
        if photo is None:
            raise LibraryError(f"photo {photo_id} is not in the library")
        try:
            image = images.load_for_encoding(photo.path, DECODE_SIZE)
        except images.ImageError as exc:
            raise LibraryError(str(exc)) from exc
        text, score = _caption_images(captioner, [image])[0]
    lib._write(lambda c: c.set_caption(photo_id, captioner.id, text, score))
    return text


# ---- editing ----------------------------------------------------------------------------
def set_caption(lib: Library, photo_id: int, text: str | None) -> None:
    """The user's caption ("" or None: back to the machines')."""
    lib._write(lambda c: c.set_user_caption(photo_id, text))


def set_tags(lib: Library, photo_id: int, tags: Sequence[str] | None) -> None:
    """The user's tag set, replacing the machines' (None: back to the machines')."""
    lib._write(lambda c: c.set_user_tags(photo_id, tags))


def edit_tags(lib: Library, photo_id: int, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
    """Add/remove tags starting from what the user sees now; returns the new set."""
    drop = {t.casefold() for t in remove}
    new = {t.casefold(): t for t in lib.catalog.effective_tags(photo_id) if t.casefold() not in drop}
    for tag in add:
        new.setdefault(tag.casefold(), tag)
    set_tags(lib, photo_id, list(new.values()))
    return list(new.values())


def photo_text(lib: Library, photo_id: int) -> PhotoText | None:
    return next(iter(lib.catalog.photo_texts([photo_id])), None)


def parse_tags(text: str) -> list[str]:
    """ "beach, sunset; dog" -> ["beach", "sunset", "dog"] (commas or semicolons)."""
    return [t.strip() for t in re.split(r"[,;\n]", text) if t.strip()]


# ---- finding: words, meaning, both -------------------------------------------------------
@dataclass(frozen=True)
class Found(Hit):
    """A search hit with why it was found: the words matched, and/or its similarity."""

    words: bool = False
    similarity: float | None = None
    snippet: str | None = None


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


def _allowed(lib: Library, filters: Filters | None) -> np.ndarray | None:
    return lib.allowed_ids(filters)


def find_words(lib: Library, text: str, k: int = 1000, filters: Filters | None = None) -> list[Found]:
    """Photos whose shown caption or tags contain the words, best (bm25) first."""
    allowed = _allowed(lib, filters)
    try:
        matches = lib.catalog.find_words(words_query(text), k, None if allowed is None else allowed.tolist())
    except CatalogError as exc:
        raise LibraryError(str(exc)) from exc
    rows = lib.catalog.photos([m.photo_id for m in matches])
    n = len(matches)
    # Score = 1 - rank share, so the best word match scores 1 (bm25 values have no fixed scale).
    return [
        Found(rows[m.photo_id], 1.0 - i / max(n, 1), words=True, snippet=m.snippet)
        for i, m in enumerate(matches)
        if m.photo_id in rows
    ]


def _meaning(lib: Library, text: str, depth: int, filters: Filters | None) -> list[Hit]:
    query = meaning_text(text)
    if not query:
        return []
    try:
        return lib.search(query, k=depth, filters=filters)
    except (LibraryError, EncoderError) as exc:  # e.g. an encoder with no text tower
        log.info("meaning side of %r unavailable, words only: %s", text, exc)
        return []


def fuse(word_hits: Sequence[Found], meaning_hits: Sequence[Hit], k: int | None = None) -> list[Found]:
    """Reciprocal rank fusion: score = sum over the two lists of 1 / (RRF_K + rank)."""
    score: dict[int, float] = {}
    photo: dict[int, Any] = {}
    words: dict[int, Found] = {}
    similarity: dict[int, float] = {}
    for rank, h in enumerate(word_hits, 1):
        score[h.photo_id] = score.get(h.photo_id, 0.0) + 1.0 / (RRF_K + rank)
        photo[h.photo_id], words[h.photo_id] = h.photo, h
    for rank, h in enumerate(meaning_hits, 1):
        score[h.photo_id] = score.get(h.photo_id, 0.0) + 1.0 / (RRF_K + rank)
        photo[h.photo_id], similarity[h.photo_id] = h.photo, h.score
    order = sorted(score, key=lambda pid: (-score[pid], -similarity.get(pid, -2.0)))[:k]
    return [
        Found(
            photo[pid],
            score[pid],
            pid in words,
            similarity.get(pid),
            words[pid].snippet if pid in words else None,
        )
        for pid in order
    ]


def search_mixed(
    lib: Library, text: str, k: int = 50, filters: Filters | None = None, mode: str = "both"
) -> list[Found]:
    """A query matched by words, by meaning, or both (mode), ranked by rank fusion."""
    if mode not in ("words", "meaning", "both"):
        raise LibraryError(f"unknown mode {mode!r}: words, meaning or both")
    word_hits = find_words(lib, text, max(k, MEANING_DEPTH), filters) if mode != "meaning" else []
    meaning_hits = _meaning(lib, text, max(k, MEANING_DEPTH), filters) if mode != "words" else []
    if mode == "meaning":
        return [Found(h.photo, h.score, similarity=h.score) for h in meaning_hits[:k]]
    return fuse(word_hits, meaning_hits, k)


# ---- tags browser and smart albums -------------------------------------------------------
def tag_counts(lib: Library, contains: str | None = None, limit: int | None = None) -> list[tuple[str, int]]:
    return lib.catalog.tag_counts(contains, limit)


def photos_with_tag(lib: Library, tag: str) -> list[Hit]:
    ids = lib.catalog.photos_with_tag(tag)
    rows = lib.catalog.photos(ids)
    return [Hit(rows[i], 1.0) for i in ids if i in rows]


def save_album(
    lib: Library,
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
    if mode not in ("words", "meaning", "both"):
        raise LibraryError(f"unknown mode {mode!r}: words, meaning or both")
    if mode != "meaning":
        words_query(query)  # fail now, not every time the album is opened
    kept = {k: v for k, v in asdict(filters).items() if v} if filters else {}
    album = Album(name, query.strip(), mode, kept, max_photos, min_score)
    lib._write(lambda c: c.save_album(album))
    return album


def albums(lib: Library) -> list[Album]:
    return lib.catalog.albums()


def delete_album(lib: Library, name: str) -> bool:
    return lib._write(lambda c: c.delete_album(name))


def album_photos(lib: Library, album: Album | str) -> list[Found]:
    """The album's photos now: every word match, plus the best meaning matches (at most
    max_photos, at least min_score similar), ranked like search_mixed. Evaluated when
    asked, so photos indexed or captioned since appear without any bookkeeping."""
    if isinstance(album, str):
        found = lib.catalog.album(album)
        if found is None:
            raise LibraryError(f"no smart album named {album!r}")
        album = found
    f = album.filters
    filters = Filters(
        f.get("root"), f.get("folder"), f.get("date_from"), f.get("date_to"), tuple(f.get("exts") or ())
    )
    word_hits = find_words(lib, album.query, 100_000, filters) if album.mode != "meaning" else []
    meaning_hits: list[Hit] = []
    if album.mode != "words":
        meaning_hits = _meaning(lib, album.query, album.max_photos or MEANING_DEPTH, filters)
        if album.min_score is not None:
            meaning_hits = [h for h in meaning_hits if h.score >= album.min_score]
    return fuse(word_hits, meaning_hits)
