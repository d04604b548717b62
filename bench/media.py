"""Benchmark: videos and camera RAW files.

    python -m bench.media             # the real videos in ../shared, 6 MP DNGs, 160 000 frames searched
    python -m bench.media --quick     # fewer repetitions, smaller DNGs and frame matrix

- **videos**: every real camera/phone video in ../shared/data/videos through the video
  decoder alone (open, decode at reduced size, sample by scene change, metadata), then
  the whole `Library.index()` on a fresh data dir (scan, hash, decode, encode every frame,
  write frames and vectors, Annoy build) with the chosen encoder: videos/min and frames/s.
- **RAW**: DNG files written here (tests/dng_writer.py: a real Bayer mosaic, 12-bit), with a camera-size
  embedded JPEG preview and without one: seconds per file for the preview path and the
  half-size demosaic, as the indexer decodes them (short side 224).
- **frame search**: the exact per-frame match every text query runs (search.FrameMatrix)
  at library sizes: 32 frames per video, 512-d.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import OUT, REPO, SHARED, Table, add_common_args, emit, machine_line, median

log = logging.getLogger("bench.media")


def _videos(src: Path, encoder: str, reps: int) -> tuple[Table, dict[str, Any]]:
    from desktop import media
    from desktop.library import Library

    files = sorted(p for p in src.iterdir() if media.registry.for_path(p).name == "video")
    t = Table(f"Videos: {len(files)} real camera/phone clips from ../shared/data/videos",
              ["video", "container/codec", "size", "duration s", "frames sampled", "decode s (median)"])
    per: list[dict[str, Any]] = []
    for f in files:
        times, out = [], None
        for _ in range(reps):
            t0 = time.perf_counter()
            out = media.decode(f, 224)
            times.append(time.perf_counter() - t0)
        assert out is not None
        per.append({"file": f.name, "s": median(times), "frames": len(out.frames), "duration_s": out.meta.duration_s})
        t.add(f.name, out.meta.format, f"{out.meta.width}×{out.meta.height}", out.meta.duration_s or float("nan"),
              len(out.frames), median(times))
    dec_s = sum(p["s"] for p in per)
    frames = sum(p["frames"] for p in per)
    seconds = sum(p["duration_s"] or 0 for p in per)
    index_runs = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "videos"
            root.mkdir()
            for f in files:
                shutil.copy(f, root / f.name)
            with Library(Path(tmp) / "home", encoder=encoder) as lib:
                from PIL import Image

                # the model's load and first batch are not indexing throughput
                lib.store.encode_images([Image.new("RGB", (224, 224))] * 8)
                lib.add_root(str(root))
                t0 = time.perf_counter()
                report = lib.index()
                index_runs.append((time.perf_counter() - t0, report.frames, report.encoded))
    idx_s = median([r[0] for r in index_runs])
    t.notes.append(f"decoder alone: {len(files)} videos ({seconds:.0f} s of video) in {dec_s:.2f} s = "
                   f"{60 * len(files) / dec_s:.0f} videos/min, {frames / dec_s:.0f} frames/s sampled")
    t.notes.append(f"Library.index() with `{encoder}` (model loaded beforehand): {index_runs[0][2]} videos, "
                   f"{index_runs[0][1]} frames in {idx_s:.2f} s (median of {reps}; scan, hash, decode, encode, "
                   f"write, Annoy build) = {60 * len(files) / idx_s:.0f} videos/min, "
                   f"{index_runs[0][1] / idx_s:.1f} frames/s encoded and stored")
    t.notes.append(machine_line())
    return t, {"videos": per, "decode_s": dec_s, "frames": frames, "index_s": idx_s, "index_runs": index_runs,
               "encoder": encoder}


def _raws(size: tuple[int, int], n: int, reps: int) -> tuple[Table, dict[str, Any]]:
    from PIL import Image

    sys.path.insert(0, str(REPO / "tests"))
    from dng_writer import write_dng  # the tests' DNG writer (a Bayer mosaic + a preview IFD)

    from plugins.raw import RawDecoder

    w, h = size
    preview_size = (min(w, 1620), round(min(w, 1620) * h / w))  # a typical camera's embedded preview
    rng = np.random.default_rng(0)
    results: dict[str, list[float]] = {"preview": [], "demosaic": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict[str, list[str]] = {"preview": [], "demosaic": []}
        for i in range(n):
            top, bottom = (tuple(int(v) for v in rng.integers(200, 4000, 3)) for _ in range(2))
            prev = Image.fromarray(rng.integers(0, 255, (preview_size[1] // 8, preview_size[0] // 8, 3),
                                                dtype=np.uint8)).resize(preview_size)
            paths["preview"].append(write_dng(f"{tmp}/p{i}.dng", top, bottom, size, preview=prev))
            paths["demosaic"].append(write_dng(f"{tmp}/d{i}.dng", top, bottom, size))
        decoder = RawDecoder()
        for _ in range(reps):
            for kind, files in paths.items():
                for p in files:
                    t0 = time.perf_counter()
                    decoder.decode(p, 224)
                    results[kind].append(time.perf_counter() - t0)
        assert decoder.stats == {"preview": n * reps, "demosaic": n * reps}, decoder.stats
        mb = Path(paths["demosaic"][0]).stat().st_size / 1e6
    t = Table(f"RAW files: {n} DNGs of {w}×{h} ({w * h / 1e6:.0f} MP, {mb:.0f} MB, 16-bit Bayer)",
              ["path", "s per file (median)", "files/s", "speed-up"])
    pm, dm = median(results["preview"]), median(results["demosaic"])
    t.add(f"embedded JPEG preview {preview_size[0]}×{preview_size[1]}", pm, 1 / pm, f"{dm / pm:.0f}×")
    t.add("half-size demosaic (LibRaw, camera WB)", dm, 1 / dm, "1×")
    t.notes.append("decoded as the indexer does (short side 224); EXIF read with exifread from the RAW")
    return t, {"size": size, "preview_s": results["preview"], "demosaic_s": results["demosaic"]}


def _frame_search(sizes: list[int], reps: int) -> tuple[Table, dict[str, Any]]:
    from desktop.search import FrameMatrix

    t = Table("Exact frame search per text query (32 frames per video, 512-d)",
              ["videos", "frames", "matrix MB", "ms per query (median)"])
    out = []
    rng = np.random.default_rng(0)
    for videos in sizes:
        n = videos * 32
        m = rng.standard_normal((n, 512)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        fm = FrameMatrix()
        fm.set(np.repeat(np.arange(videos, dtype=np.int64), 32), np.tile(np.arange(32, dtype=np.float32), videos), m)
        q = m[:1] + 0.1
        q /= np.linalg.norm(q)
        fm.best(q, None)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fm.best(q, None)
            times.append((time.perf_counter() - t0) * 1000)
        t.add(videos, n, m.nbytes / 1e6, median(times))
        out.append({"videos": videos, "frames": n, "ms": median(times)})
    t.notes.append("numpy matmul + per-video max/argmax; the catalog's frames are loaded once and "
                   "reloaded only when they change")
    return t, {"runs": out}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--encoder", default="colors", help="encoder for the Library.index() run (default colors)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    reps = 1 if args.quick else args.reps
    tables, results = [], {}
    src = SHARED / "data" / "videos"
    if src.is_dir():
        t, r = _videos(src, args.encoder, reps)
        tables.append(t)
        results["videos"] = r
    else:
        log.warning("%s is absent: no video table", src)
    t, r = _raws((768, 512) if args.quick else (3008, 2000), 2 if args.quick else 4, reps)
    tables.append(t)
    results["raw"] = r
    t, r = _frame_search([100, 1000] if args.quick else [1000, 5000, 20000], 3 if args.quick else 10)
    tables.append(t)
    results["frame_search"] = r
    emit(tables, results, "media")
    return {"tables": tables, "results": results, "out": str(OUT)}


if __name__ == "__main__":
    main()
