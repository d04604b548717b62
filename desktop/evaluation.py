"""Retrieval quality: metric functions (pure numpy) and the eval runners behind
`lumen eval` and `lumen eval-duplicates`.

Metrics take one ranking per query (item ids, best first; may be truncated to the top k)
and the set of relevant ids per query:
- R@K: share of queries with at least one relevant item in the top K (in %).
- median rank: median (1-based) position of the first relevant item.
- MRR: mean of 1 / rank of the first relevant item (0 when none was returned).
- mAP: mean over queries of average precision over *all* relevant items (image->text has
  5 relevant captions per image); a relevant item the ranking does not contain counts as
  missed (AP@k), which is exact when rankings are complete.

The runners index real files into a throwaway Library and search through the same code
the app uses (Library.search_vectors: Annoy + exact re-rank; AnnoyBackend for captions), so
the numbers describe what a user gets, and ANN loss is measured, not assumed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

KS: tuple[int, ...] = (1, 5, 10)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}


# --------------------------------------------------------------------------- metrics


def first_relevant_ranks(rankings: Sequence[Sequence[int]], relevant: Sequence[Iterable[int]]) -> np.ndarray:
    """1-based rank of the first relevant item per query; inf when the ranking misses all."""
    out = np.full(len(rankings), np.inf)
    for q, (ranking, rel) in enumerate(zip(rankings, relevant, strict=True)):
        rel_set = set(rel)
        for pos, item in enumerate(ranking):
            if item in rel_set:
                out[q] = pos + 1
                break
    return out


def average_precision(ranking: Sequence[int], relevant: Iterable[int]) -> float:
    """AP over all relevant items: mean of precision@rank at each relevant hit."""
    rel_set = set(relevant)
    if not rel_set:
        return 0.0
    hits, total = 0, 0.0
    for pos, item in enumerate(ranking):
        if item in rel_set:
            hits += 1
            total += hits / (pos + 1)
            if hits == len(rel_set):
                break
    return total / len(rel_set)


def recall_at(first_ranks: np.ndarray, k: int) -> float:
    return float(np.mean(first_ranks <= k) * 100.0) if len(first_ranks) else 0.0


def median_rank(first_ranks: np.ndarray) -> float:
    return float(np.median(first_ranks)) if len(first_ranks) else math.nan


def mean_reciprocal_rank(first_ranks: np.ndarray) -> float:
    return float(np.mean(1.0 / first_ranks)) if len(first_ranks) else 0.0


def mean_average_precision(rankings: Sequence[Sequence[int]], relevant: Sequence[Iterable[int]]) -> float:
    aps = [average_precision(r, rel) for r, rel in zip(rankings, relevant, strict=True)]
    return float(np.mean(aps)) if aps else 0.0


@dataclass(frozen=True)
class RetrievalMetrics:
    queries: int
    recall: dict[int, float]  # K -> R@K in %
    median_rank: float  # inf when more than half the queries found nothing in their ranking
    mrr: float
    map: float

    def row(self, ks: Sequence[int] = KS) -> list[str]:
        return [*(f"{self.recall[k]:.1f}" for k in ks), _fmt_rank(self.median_rank), f"{self.mrr:.3f}",
                f"{self.map:.3f}"]

    def to_json(self) -> dict[str, Any]:
        return {"queries": self.queries, **{f"r@{k}": round(v, 2) for k, v in self.recall.items()},
                "median_rank": None if math.isinf(self.median_rank) else self.median_rank,
                "mrr": round(self.mrr, 4), "map": round(self.map, 4)}


def _fmt_rank(r: float) -> str:
    return ">k" if math.isinf(r) else f"{r:g}"


def retrieval_metrics(rankings: Sequence[Sequence[int]], relevant: Sequence[Iterable[int]],
                      ks: Sequence[int] = KS) -> RetrievalMetrics:
    relevant = [set(r) for r in relevant]
    first = first_relevant_ranks(rankings, relevant)
    return RetrievalMetrics(
        queries=len(rankings),
        recall={k: recall_at(first, k) for k in ks},
        median_rank=median_rank(first),
        mrr=mean_reciprocal_rank(first),
        map=mean_average_precision(rankings, relevant),
    )


def rankings_from_scores(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """(queries, items) similarity -> (queries, k) item indices, best first (stable ties)."""
    k = scores.shape[1] if k is None else min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        return np.take_along_axis(part, order, 1)
    return np.argsort(-scores, axis=1, kind="stable")


def quick_recall(img: np.ndarray, txt: np.ndarray, txt_img: np.ndarray) -> dict[str, float]:
    """Exact T->I and I->T R@1/5/10 from unit vectors (used while training heads)."""
    sims = txt @ img.T  # (captions, images)
    t2i = rankings_from_scores(sims, 10)
    i2t = rankings_from_scores(sims.T, 10)
    owners = [np.flatnonzero(txt_img == i) for i in range(len(img))]
    a = retrieval_metrics(t2i, [[int(i)] for i in txt_img])
    b = retrieval_metrics(i2t, owners)
    return {**{f"t2i_r{k}": a.recall[k] for k in KS}, **{f"i2t_r{k}": b.recall[k] for k in KS}}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CaptionSet:
    images: list[str]  # file names (relative to the images dir), in split order
    captions: list[str]
    caption_image: np.ndarray  # caption index -> image index

    def captions_of(self, image_index: int) -> list[int]:
        return np.flatnonzero(self.caption_image == image_index).tolist()


def read_split(path: str | os.PathLike) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def load_captions(captions_tsv: str | os.PathLike, split: str | os.PathLike | None = None,
                  images_dir: str | os.PathLike | None = None) -> CaptionSet:
    """`image<TAB>caption` rows (header optional) restricted to a split file's images, in the
    split's order; images without captions or missing on disk are left out with a warning."""
    by_image: dict[str, list[str]] = {}
    with open(captions_tsv, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if len(row) < 2 or (i == 0 and row[0].strip().lower() == "image"):
                continue
            by_image.setdefault(row[0].strip(), []).append(row[1].strip())
    names = read_split(split) if split else sorted(by_image)
    missing = [n for n in names if n not in by_image]
    if images_dir is not None:
        missing += [n for n in names if n in by_image and not (Path(images_dir) / n).is_file()]
    if missing:
        log.warning("%d images of the split have no captions or no file (e.g. %s); left out", len(missing),
                    missing[0])
    gone = set(missing)
    images = [n for n in names if n not in gone]
    captions: list[str] = []
    owner: list[int] = []
    for i, name in enumerate(images):
        for cap in by_image[name]:
            captions.append(cap)
            owner.append(i)
    return CaptionSet(images, captions, np.asarray(owner, dtype=np.int64))


# --------------------------------------------------------------------------- runners


@dataclass
class EvalResult:
    encoder: str
    images: int
    captions: int
    index_seconds: float
    images_per_s: float  # encode throughput while indexing (decode overlapped)
    texts_per_s: float
    t2i: dict[str, RetrievalMetrics]  # "exact" / "ann" -> metrics
    i2t: dict[str, RetrievalMetrics]
    depth: int  # ranking depth the metrics saw
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder, "images": self.images, "captions": self.captions,
            "index_seconds": round(self.index_seconds, 2), "images_per_s": round(self.images_per_s, 1),
            "texts_per_s": round(self.texts_per_s, 1), "depth": self.depth,
            "text_to_image": {m: r.to_json() for m, r in self.t2i.items()},
            "image_to_text": {m: r.to_json() for m, r in self.i2t.items()},
            "notes": self.notes,
        }

    def table(self) -> str:
        head = ["direction", "search", "R@1", "R@5", "R@10", "med r", "MRR", "mAP"]
        rows = [[name, mode, *res.row()] for name, d in (("text->image", self.t2i), ("image->text", self.i2t))
                for mode, res in d.items()]
        widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
        line = lambda cells: "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        out = [f"encoder {self.encoder}: {self.images} images, {self.captions} captions",
               line(head), line(["-" * w for w in widths]), *map(line, rows),
               f"indexing {self.images_per_s:.1f} images/s ({self.index_seconds:.1f} s), "
               f"text encoding {self.texts_per_s:.0f} captions/s"]
        return "\n".join(out + [f"note: {n}" for n in self.notes])


@dataclass
class DuplicatesResult:
    encoder: str
    images: int
    group_size: int
    ns_score: dict[str, float]  # "exact" / "ann" -> mean group members in the top group_size
    images_per_s: float

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ns_score": {k: round(v, 3) for k, v in self.ns_score.items()},
                "images_per_s": round(self.images_per_s, 1)}

    def table(self) -> str:
        s = "  ".join(f"{m} {v:.3f}" for m, v in self.ns_score.items())
        return (f"encoder {self.encoder}: {self.images} images in groups of {self.group_size}\n"
                f"N-S score (mean of {self.group_size} group members in the top {self.group_size}, max "
                f"{self.group_size}): {s}\nindexing {self.images_per_s:.1f} images/s")


class _AnnBudget:
    """Make the ANN column exercise Annoy on a small collection: index.py searches exactly
    below EXACT_MAX_ITEMS items and whenever its candidate budget covers the collection,
    so by default ANN == exact at Flickr8k size. With a budget, the same code walks the
    trees and inspects `search_k` candidates per query (a stress test of ANN loss)."""

    def __init__(self, search_k: int | None) -> None:
        self.search_k = search_k
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        if self.search_k is None:
            return
        from desktop import index

        for name, value in (("EXACT_MAX_ITEMS", 0), ("SEARCH_K_MIN", self.search_k), ("SEARCH_K_PER_RESULT", 0),
                            ("ANN_CANDIDATE_COST", 0)):
            self.saved[name] = getattr(index, name)
            setattr(index, name, value)

    def __exit__(self, *exc: object) -> None:
        from desktop import index

        for name, value in self.saved.items():
            setattr(index, name, value)


def _link_images(names: Sequence[str], images_dir: Path, target: Path) -> list[Path]:
    """The eval's library root: links to just the split's images (the dir may hold more)."""
    out = []
    for name in names:
        dst = target / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = (images_dir / name).resolve()
        try:
            os.symlink(src, dst)
        except OSError:  # no symlinks (Windows without developer mode): copy
            import shutil

            shutil.copyfile(src, dst)
        out.append(dst)
    return out


def _index_library(lib: Any, progress: Callable[[str, int, int], None] | None) -> Any:
    def report(p: Any) -> None:
        if progress:
            progress(p.stage, p.done, p.total)

    return lib.index(progress=report)


def _rank_photos(lib: Any, queries: np.ndarray, k: int, exact: bool, photo_index: dict[int, int],
                 batch: int = 256) -> list[list[int]]:
    out: list[list[int]] = []
    for s in range(0, len(queries), batch):
        for hits in lib.search_vectors(queries[s : s + batch], k, exact=exact):
            out.append([photo_index[h.photo_id] for h in hits if h.photo_id in photo_index])
    return out


def run_eval(images_dir: str | os.PathLike, captions_tsv: str | os.PathLike, split: str | os.PathLike | None = None,
             encoder: str | None = None, weights: str | None = None, device: str = "auto",
             depth: int | None = None, ann_search_k: int | None = None, workdir: str | os.PathLike | None = None,
             progress: Callable[[str, int, int], None] | None = None, rerank: bool = True) -> EvalResult:
    """Index the split's images into a throwaway library and run every caption as a text
    query (text->image) and every image against all captions (image->text), exact and
    through the ANN path, with `depth`-deep rankings (default: everything); with `rerank`
    and a re-ranker installed for the encoder, also the exact ranking re-ranked."""
    from desktop.index import AnnoyBackend
    from desktop.library import Library

    data = load_captions(captions_tsv, split, images_dir)
    if not data.images:
        raise ValueError(f"no captioned images found in {images_dir}")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lumen-eval-", dir=workdir) as tmp:
        tmp_path = Path(tmp)
        links = _link_images(data.images, Path(images_dir), tmp_path / "photos")
        with Library.open(tmp_path / "home", encoder=encoder, weights=weights, device=device, rerank=rerank) as lib:
            enc = lib.encoder
            if not enc.joint:
                raise ValueError(f"{enc.id} has no joint text/image space, so captions cannot be ranked "
                                 "(bert_resnet: train heads with `lumen train-heads`)")
            lib.add_root(tmp_path / "photos")
            t0 = time.monotonic()
            report = _index_library(lib, progress)
            index_s = time.monotonic() - t0
            cat = lib.catalog
            by_path = {str(p): i for i, p in enumerate(links)}
            photo_index: dict[int, int] = {}
            for pid, vec_path in _photo_paths(cat, lib.encoder.id):
                if vec_path in by_path:
                    photo_index[pid] = by_path[vec_path]
            if len(photo_index) < len(data.images):
                notes.append(f"{len(data.images) - len(photo_index)} images were not indexed (unreadable or "
                             "identical bytes to another image)")
            ids, vecs, _ = cat.vectors(enc.id)
            img_vecs = np.zeros((len(data.images), enc.dim), np.float32)
            for pid, v in zip(ids.tolist(), vecs, strict=True):
                if pid in photo_index:
                    img_vecs[photo_index[pid]] = v
            t1 = time.monotonic()
            txt_vecs = np.concatenate([enc.encode_texts(data.captions[s : s + 256])
                                       for s in range(0, len(data.captions), 256)])
            texts_per_s = len(data.captions) / max(time.monotonic() - t1, 1e-9)
            k_img = depth or len(data.images)
            k_txt = depth or len(data.captions)
            t2i_rel = [[int(i)] for i in data.caption_image]
            i2t_rel = [data.captions_of(i) for i in range(len(data.images))]
            cap_index = AnnoyBackend(tmp_path / "caption-index", enc.dim)
            cap_index.build(np.arange(len(data.captions)), txt_vecs, version=1)
            t2i: dict[str, RetrievalMetrics] = {}
            i2t: dict[str, RetrievalMetrics] = {}
            for mode in ("exact", "ann"):
                exact = mode == "exact"
                with _AnnBudget(None if exact else ann_search_k):
                    t2i[mode] = retrieval_metrics(_rank_photos(lib, txt_vecs, k_img, exact, photo_index), t2i_rel)
                    ranked = cap_index.search(img_vecs, k_txt, exact=exact)
                    i2t[mode] = retrieval_metrics([[cid for cid, _ in row] for row in ranked], i2t_rel)
            if rerank and lib.reranking.reranker(enc.id) is not None:
                t2i["exact+rerank"], i2t["exact+rerank"] = _reranked(lib, data, txt_vecs, img_vecs, cap_index,
                                                                     photo_index, k_img, k_txt, progress)
                notes.append(f"exact+rerank: the exact ranking's top {_top_n()} re-ranked by "
                             f"{lib.reranking.reranker(enc.id).id} (the app's second stage)")
            if ann_search_k is None:
                from desktop import index as index_mod

                if max(len(data.images), len(data.captions)) <= index_mod.EXACT_MAX_ITEMS:
                    notes.append(f"ann = the app's search path; below {index_mod.EXACT_MAX_ITEMS} items it "
                                 "searches exactly, so ann == exact here (--ann-search-k N forces Annoy)")
            else:
                notes.append(f"ann: Annoy forced, {ann_search_k} candidates inspected per query")
    return EvalResult(enc.id, len(data.images), len(data.captions), index_s, report.images_per_s, texts_per_s,
                      t2i, i2t, max(k_img, k_txt) if depth is None else depth, notes)


def _top_n() -> int:
    from desktop.rerank import TOP_N

    return TOP_N


def _reranked(lib: Any, data: CaptionSet, txt_vecs: np.ndarray, img_vecs: np.ndarray, cap_index: Any,
              photo_index: dict[int, int], k_img: int, k_txt: int,
              progress: Callable[[str, int, int], None] | None) -> tuple[RetrievalMetrics, RetrievalMetrics]:
    """Both directions through the search path's second stage (lib.reranking: what
    Library.search applies to its hits, and what caption ranking applies to its list)."""
    eid = lib.encoder.id
    t2i: list[list[int]] = []
    for s in range(0, len(txt_vecs), 256):
        rows = lib.search_vectors(txt_vecs[s : s + 256], k_img, exact=True)
        for j, hits in enumerate(rows):
            hits = lib.reranking.photos(data.captions[s + j], (), hits, eid, k_img)
            t2i.append([photo_index[h.photo_id] for h in hits if h.photo_id in photo_index])
        if progress:
            progress("re-rank text->image", len(t2i), len(txt_vecs))
    by_index = {i: pid for pid, i in photo_index.items()}
    rows_ = lib.catalog.photos(sorted(photo_index))
    ranked = cap_index.search(img_vecs, k_txt, exact=True)
    i2t: list[list[int]] = []
    for i, row in enumerate(ranked):
        ids = [cid for cid, _ in row]
        pid = by_index.get(i)
        if pid is not None and pid in rows_:
            order = lib.reranking.captions(pid, rows_[pid].hash, [data.captions[c] for c in ids],
                                           np.array([sc for _, sc in row], np.float32), eid,
                                           txt_vecs[ids[:_top_n()]])
            ids = [ids[o] for o in order]
        i2t.append(ids)
        if progress and (i % 50 == 0 or i == len(ranked) - 1):
            progress("re-rank image->text", i + 1, len(ranked))
    return (retrieval_metrics(t2i, [[int(i)] for i in data.caption_image]),
            retrieval_metrics(i2t, [data.captions_of(i) for i in range(len(data.images))]))


def _photo_paths(cat: Any, encoder_id: str) -> list[tuple[int, str]]:
    """(photo id, path) of every live photo (public catalog reads only)."""
    ids, _, _ = cat.vectors(encoder_id)
    rows = cat.photos(sorted(ids.tolist()))
    return [(pid, rows[pid].path) for pid in ids.tolist() if pid in rows]


def run_duplicates_eval(images_dir: str | os.PathLike, group_size: int = 4, encoder: str | None = None,
                        weights: str | None = None, device: str = "auto", workdir: str | os.PathLike | None = None,
                        progress: Callable[[str, int, int], None] | None = None) -> DuplicatesResult:
    """UKBench-style near-duplicate retrieval: files sorted by name form consecutive groups
    of `group_size` views of one object; each image queries the library (itself included,
    as in Nister & Stewenius) and scores the number of its group in the top `group_size`."""
    from desktop.library import Library

    names = sorted(p.name for p in Path(images_dir).iterdir()
                   if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    if len(names) < group_size or len(names) % group_size:
        raise ValueError(f"{images_dir}: {len(names)} images is not a whole number of groups of {group_size}")
    with tempfile.TemporaryDirectory(prefix="lumen-dups-", dir=workdir) as tmp:
        tmp_path = Path(tmp)
        links = _link_images(names, Path(images_dir), tmp_path / "photos")
        with Library.open(tmp_path / "home", encoder=encoder, weights=weights, device=device) as lib:
            lib.add_root(tmp_path / "photos")
            report = _index_library(lib, progress)
            by_path = {str(p): i for i, p in enumerate(links)}
            photo_index = {pid: by_path[p] for pid, p in _photo_paths(lib.catalog, lib.encoder.id) if p in by_path}
            ids, vecs, _ = lib.catalog.vectors(lib.encoder.id)
            order = np.argsort([photo_index.get(pid, -1) for pid in ids.tolist()])
            queries = vecs[order]
            query_items = [photo_index[pid] for pid in ids[order].tolist()]
            scores = {}
            for mode in ("exact", "ann"):
                ranked = _rank_photos(lib, queries, group_size, mode == "exact", photo_index)
                found = [sum(1 for j in row if j // group_size == q // group_size)
                         for q, row in zip(query_items, ranked, strict=True)]
                scores[mode] = float(np.mean(found))
            enc_id = lib.encoder.id
    return DuplicatesResult(enc_id, len(names), group_size, scores, report.images_per_s)


# --------------------------------------------------------------------------- CLI


def register_cli(sub: Any, common: Callable[[Any], None]) -> None:
    """`lumen eval` and `lumen eval-duplicates` (desktop.cli calls this)."""
    p = sub.add_parser("eval", help="retrieval benchmark: captions <-> images (R@K, median rank, MRR, mAP)")
    p.add_argument("--images", required=True, help="folder with the images")
    p.add_argument("--captions", required=True, help="TSV: image<TAB>caption (header optional)")
    p.add_argument("--split", help="only the images named in this file (default: every captioned image)")
    p.add_argument("--depth", type=int, help="rank only the top N (default: everything)")
    p.add_argument("--ann-search-k", type=int, metavar="N",
                   help="force Annoy with N candidates per query (default: the app's own settings)")
    p.add_argument("--rerank", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="also measure the exact ranking re-ranked by the installed re-ranker (default on)")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("eval-duplicates", help="near-duplicate benchmark (UKBench N-S score) for image search")
    p.add_argument("--images", required=True, help="folder whose sorted files form groups of views")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(handler=cmd_eval_duplicates)


class _Progress:
    def __init__(self) -> None:
        self.tty = __import__("sys").stderr.isatty()
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        import sys

        now = time.monotonic()
        if not self.tty or (now - self.last < 0.3 and done < total):
            return
        self.last = now
        sys.stderr.write(f"\r\033[K{stage} {done}/{total}" + ("\n" if total and done >= total else ""))
        sys.stderr.flush()


def cmd_eval(args: Any) -> int:
    res = run_eval(args.images, args.captions, args.split, args.encoder, args.weights, args.device,
                   depth=args.depth, ann_search_k=args.ann_search_k, progress=_Progress(), rerank=args.rerank)
    print(json.dumps(res.to_json(), indent=1) if args.json else res.table())
    return 0


def cmd_eval_duplicates(args: Any) -> int:
    res = run_duplicates_eval(args.images, args.group_size, args.encoder, args.weights, args.device,
                              progress=_Progress())
    print(json.dumps(res.to_json(), indent=1) if args.json else res.table())
    return 0
