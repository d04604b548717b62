"""Benchmark 2: re-scanning an unchanged library.

    python -m bench.rescan            # 100 000 small photo files, already indexed
    python -m bench.rescan --quick    # 500

The files are real (tiny, distinct JPEGs in 100 folders) and were indexed once by Lumen
itself (`Library.index()` with the `colors` encoder, cached under bench/out/). The timed
run is the whole `Library.index()` a user triggers on start-up or with "re-index":
walk + stat every file, compare with the catalog, hash nothing, encode nothing, keep the
index. It is repeated; the table gives the median and a breakdown of where time goes.
The page cache is warm (the files were just written or scanned): a cold disk adds the
time of reading every directory once, which no code change here can remove.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

from bench.common import OUT, Table, add_common_args, emit, machine_line, median, verdict

log = logging.getLogger("bench.rescan")

TARGET_S = 5.0
PER_FOLDER = 1000


def _template() -> bytes:
    """A tiny real JPEG (16x12) to copy with a unique tail: distinct hashes, valid pixels."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def small_files(n: int) -> Path:
    """n small JPEG files in folders of 1 000 (cached)."""
    folder = OUT / f"rescan-{n}" / "photos"
    marker = OUT / f"rescan-{n}" / "files.complete"
    if marker.exists():
        return folder
    print(f"writing {n:,} small photo files ...", flush=True)
    tpl = _template()
    for i in range(n):
        sub = folder / f"{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            sub.mkdir(parents=True, exist_ok=True)
        with open(sub / f"IMG_{i:07d}.jpg", "wb") as f:
            f.write(tpl + i.to_bytes(8, "big"))
    marker.write_text(str(n))
    return folder


def indexed_home(n: int) -> tuple[Path, Path, dict[str, Any]]:
    """A Lumen data dir that has indexed the n files once (cached); returns the first
    run's timings too (a bonus figure: first index of n tiny files)."""
    from desktop.library import Library

    folder = small_files(n)
    home = OUT / f"rescan-{n}" / "home"
    marker = OUT / f"rescan-{n}" / "home.json"
    if marker.exists():
        return folder, home, json.loads(marker.read_text())
    print(f"indexing {n:,} files once with the colors encoder (first index; cached) ...", flush=True)
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    with Library(home, encoder="colors") as lib:
        lib.add_root(folder)
        t = time.perf_counter()
        report = lib.index()
        first = time.perf_counter() - t
    info = {"first_index_s": first, "seen": report.seen, "hashed": report.hashed, "encoded": report.encoded}
    if report.encoded != n:
        raise RuntimeError(f"first index encoded {report.encoded} of {n}: {report}")
    marker.write_text(json.dumps(info))
    return folder, home, info


def breakdown(lib: Any) -> dict[str, tuple[float, float]]:
    """Where an unchanged re-scan spends its time, piece by piece (same calls as scan):
    (wall s, CPU s of this process) each. The machine may be shared: CPU time is the
    steadier figure of the two."""
    from desktop.scanner import plan, walk

    cat = lib.catalog
    root = cat.roots()[0]
    out: dict[str, tuple[float, float]] = {}

    def timed(key: str, fn: Any) -> Any:
        t, c = time.perf_counter(), time.process_time()
        value = fn()
        out[key] = (time.perf_counter() - t, time.process_time() - c)
        return value

    known = timed("catalog file_states", lambda: cat.file_states(root.id))
    timed("walk + stat", lambda: sum(1 for _ in walk(root.path)))
    result = timed("plan (walk + compare)", lambda: plan(root.path, known))
    assert not result.to_hash and not result.deleted, "the library changed under the benchmark"
    timed("count_to_encode", lambda: cat.count_to_encode(lib.encoder.id))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from desktop.library import Library

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--n", type=int, help="files (default 100 000; --quick 500)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    n = args.n or (500 if args.quick else 100_000)
    reps = 2 if args.quick else args.reps

    folder, home, first = indexed_home(n)
    times, cpus, parts = [], [], []
    with Library(home, encoder="colors") as lib:
        lib.build_index()  # a no-op when fresh; never part of the timing
        for _ in range(reps):
            t, c = time.perf_counter(), time.process_time()
            report = lib.index()
            times.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            if report.hashed or report.encoded or report.removed:
                raise RuntimeError(f"an unchanged re-scan did work: {report}")
            parts.append(breakdown(lib))
    med = median(times)
    t = Table(f"Re-scan of an unchanged library ({n:,} files in {n // PER_FOLDER} folders, already indexed)",
              ["files", "re-scan (Library.index) s, median", "min – max s", "CPU s, median", "files/s",
               "target < 5 s"])
    t.add(n, med, f"{min(times):.2f} – {max(times):.2f}", median(cpus), n / med,
          verdict(med < TARGET_S) if n >= 100_000 else "– (at 100 000 only)")
    keys = list(parts[0])
    t.notes.append("breakdown (median s, wall / CPU): " + ", ".join(
        f"{k} {median([p[k][0] for p in parts]):.2f} / {median([p[k][1] for p in parts]):.2f}" for k in keys))
    t.notes.append(f"first index of the same files (scan, hash, decode, colors encoder, write, Annoy): "
                   f"{first['first_index_s']:.0f} s, cached")
    t.notes.append(f"{machine_line()}; {reps} runs, page cache warm; nothing hashed, nothing encoded")
    results = {"n": n, "times_s": times, "cpu_s": cpus, "median_s": med, "breakdown": parts, "first_index": first}
    emit([t], results, "rescan")
    return {"tables": [t], "results": results}


if __name__ == "__main__":
    main()
