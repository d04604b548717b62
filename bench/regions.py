"""Indexing throughput with the attention re-ranker's region features, against without.

    python -m bench.regions [--photos 96] [--rounds 3]

Real Flickr8k photos (../shared), the real bert_resnet encoder and its shipped re-ranker.
The photos are scanned into a throwaway library and decoded once; then each round
encodes every batch twice, interleaved (so both see the same machine noise): the plain
encoder (`encode_images`, what indexing did before) and the indexer's new encode step
(`lib.reranking.encode_images`: the same CNN pass also returning its last map, the
re-ranker's region projection, and the region store's write). Decoding is the same for
both and left out, so the ratio is a lower bound on the whole pipeline's.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Table, add_common_args, emit, machine_line, median, verdict

TARGET = 0.8  # indexing throughput with region features / without


def run(n_photos: int, rounds: int) -> dict[str, Any]:
    from desktop import images
    from desktop.evaluation import read_split
    from desktop.indexer import decode_size
    from desktop.library import Library

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
    names = read_split(shared / "dev.txt")[:n_photos]
    with tempfile.TemporaryDirectory(prefix="lumen-bench-regions-") as tmp:
        root = Path(tmp) / "photos"
        root.mkdir()
        for n in names:
            (root / n).symlink_to(shared / "images" / n)
        with Library(Path(tmp) / "home", encoder="bert_resnet", device="cpu") as lib:
            lib.add_root(root)
            lib.scan()
            rows = {Path(p.path).name: p.id for p in lib.catalog.photos(
                [pid for pid, _ in lib.catalog.photos_to_encode(lib.encoder.id, limit=10_000)]).values()}
            size = decode_size(lib.encoder)
            decoded = [(rows[n], images.load_for_encoding(str(root / n), size)) for n in names if n in rows]
            rr = lib.reranking.reranker(lib.encoder.id)
            if rr is None:
                raise RuntimeError(f"no re-ranker accepts {lib.encoder.id}")
            batches = [decoded[s : s + 32] for s in range(0, len(decoded), 32)]
            lib.encoder.encode_images([decoded[0][1]])  # load the model outside the timings
            lib.reranking.encode_images([decoded[0][1]], [decoded[0][0]])
            plain, with_regions = [], []
            for _ in range(rounds):
                for b in batches:
                    ids, imgs = [i for i, _ in b], [im for _, im in b]
                    t = time.perf_counter()
                    lib.encoder.encode_images(imgs)
                    plain.append(len(b) / (time.perf_counter() - t))
                    t = time.perf_counter()
                    lib.reranking.encode_images(imgs, ids)
                    with_regions.append(len(b) / (time.perf_counter() - t))
            stored = lib.reranking.store.count(rr.regions_key(lib.encoder.id))
            from bench.query import _store_bytes

            size_b = _store_bytes(Path(tmp) / "home" / "regions.db")
    return {"plain": plain, "regions": with_regions, "stored": stored, "photos": len(decoded),
            "reranker": rr.id, "bytes": size_b}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--photos", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    n = 32 if args.quick else args.photos
    r = run(n, 1 if args.quick else args.rounds)
    ratio = median(r["regions"]) / median(r["plain"])
    t = Table("Indexing with region features (bert_resnet encode step, images/s)",
              ["photos", "encode alone p50", "encode + regions + store p50", "ratio", "target"])
    t.add(r["photos"], median(r["plain"]), median(r["regions"]), f"{ratio:.2f}×",
          f"≥ {TARGET}× " + verdict(ratio >= TARGET))
    t.notes.append(f"re-ranker {r['reranker']}; {r['stored']} photos' regions stored, "
                   f"{r['bytes'] / max(r['stored'], 1) / 1024:.1f} KiB each on disk "
                   f"(= {r['bytes'] / max(r['stored'], 1) * 100_000 / 2**30:.2f} GiB per 100 000)")
    t.notes.append(f"{machine_line()}; batches of 32, interleaved, decode excluded")
    emit([t], r, "regions")
    return {"tables": [t], "results": r}


if __name__ == "__main__":
    main()
