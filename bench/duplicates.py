"""Near-duplicate threshold: precision and recall of "same object" pairs on UKBench.

UKBench (../shared/data/ukbench): files sorted by name form groups of 4 views of one
object. Every pair of photos whose cosine is at or above a threshold is a predicted
duplicate pair; a pair is right when both views show the same object. The window's
default threshold (desktop/duplicates.py DEFAULT_THRESHOLD) is the best-F1 one here.

    python -m bench.duplicates [--encoder bert_resnet] [--images DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from bench.common import SHARED
from desktop.duplicates import pair_precision_recall, vector_pairs
from desktop.library import Library

log = logging.getLogger("bench.duplicates")
THRESHOLDS = [round(t, 2) for t in np.arange(0.60, 1.0, 0.02)]


def run(images: Path, encoder: str, group_size: int = 4) -> list[tuple[float, float, float, float]]:
    names = sorted(p.name for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with tempfile.TemporaryDirectory(prefix="lumen-dupbench-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for name in names:
            (photos / name).symlink_to(images / name)
        with Library.open(Path(tmp) / "home", encoder=encoder) as lib:
            lib.add_root(photos)
            lib.index()
            ids, vecs, _ = lib.catalog.vectors(lib.encoder.id)
            order = {pid: names.index(Path(lib.photo(int(pid)).path).name) for pid in ids.tolist()}
            item = np.array([order[int(p)] for p in ids.tolist()])
            pairs = [(int(np.nonzero(ids == a)[0][0]), int(np.nonzero(ids == b)[0][0]), s)
                     for a, b, s in vector_pairs(ids, vecs, floor=min(THRESHOLDS))]
            labels = (item // group_size).tolist()
            print(f"encoder {lib.encoder.id}: {len(ids)} photos, "
                  f"{sum(1 for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j])}"
                  " same-object pairs")
            return pair_precision_recall(labels, pairs, THRESHOLDS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="bert_resnet")
    ap.add_argument("--images", type=Path, default=SHARED / "data" / "ukbench")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = run(args.images, args.encoder)
    best = max(rows, key=lambda r: r[3])
    print(f"{'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>6}")
    for t, p, r, f in rows:
        print(f"{t:9.2f} {p:9.3f} {r:7.3f} {f:6.3f}" + ("  <- best F1" if (t, p, r, f) == best else ""))


if __name__ == "__main__":
    main()
