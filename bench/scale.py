"""Benchmark: how Lumen's catalog and Annoy index scale, measured where it fits, projected to 10 M.

    python -m bench.scale                               # 512-d at 25k/50k/100k, 64-d at 100k/400k/1M
    python -m bench.scale --series 512:100000,1000000   # measure 1 M real-size vectors (~5 GB RSS, long)
    python -m bench.scale --quick                       # 512-d at 12k/20k, 64-d at 30k

Each point runs in a fresh child process (so its peak RSS is its own) and does what a real
library does, with the shipped parameters (desktop/index.py: N_TREES, search_k_for, exact
re-rank):

1. catalog: Lumen's real schema (desktop.catalog.Catalog), n photos + files + vectors rows
   bulk-inserted (bench.common._bulk_insert, clustered synthetic unit vectors);
2. build: `Catalog.vectors()` then `AnnoyBackend.build()`, as `Library.build_index` runs it —
   wall time and the child's peak RSS;
3. query: a second fresh child opens the index (`AnnoyBackend.load`, memory-mapped) and answers
   held-out queries one at a time: p50/p95 latency, recall@10 against exact search, RSS.

Projections (see `project`): sizes and memory on a line through the measured 512-d points;
times by a power law n^b whose b comes from the series that reaches furthest in n (the 64-d
one: same code and parameters, 8x less memory per vector); query latency in proportion to the
shipped search_k_for. Rows marked "proj." are projected; every other cell is measured.
A point whose estimated peak RSS exceeds --max-rss-gb is refused, not attempted.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import OUT, Table, add_common_args, clustered, emit, machine_line, percentile

log = logging.getLogger("bench.scale")
K = 10
ENCODER_ID = "scale:synthetic"
# Peak build RSS per byte of vectors, measured at 25k-100k x 512-d (~6.8 KB per 2 KB vector: the
# catalog read, the float32 matrix, Annoy's own copy and its trees); the guard below uses it.
BYTES_PER_VECTOR_RSS = 3.4


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _build_child(home: str, n: int, dim: int, out: Any) -> None:
    from bench.common import _bulk_insert
    from desktop.catalog import Catalog
    from desktop.index import AnnoyBackend
    from desktop.settings import paths

    p = paths(home).ensure()
    t = time.perf_counter()
    cat = Catalog(p.catalog)
    _bulk_insert(cat.conn, n, ENCODER_ID, dim, "/photos/synthetic")
    catalog_s = time.perf_counter() - t
    catalog_bytes = _dir_bytes(Path(home))
    t = time.perf_counter()
    ids, matrix, top = cat.vectors(ENCODER_ID)  # what Library.build_index reads
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    AnnoyBackend(p.index_dir / "scale", dim).build(ids, matrix, version=top)
    build_s = time.perf_counter() - t
    cat.close()
    out.put({"catalog_s": catalog_s, "catalog_bytes": catalog_bytes, "read_s": read_s, "build_s": build_s,
             "build_rss_mb": _peak_rss_mb(), "index_bytes": _dir_bytes(p.index_dir / "scale")})


def _query_child(home: str, n: int, dim: int, n_queries: int, out: Any) -> None:
    from desktop import index as index_mod
    from desktop.index import AnnoyBackend
    from desktop.settings import paths

    idx = AnnoyBackend(paths(home).index_dir / "scale", dim)
    t = time.perf_counter()
    assert idx.load(), "no index"
    load_s = time.perf_counter() - t
    qs = clustered(n_queries, dim, seed=987_654)  # held out: never in the index
    gen = idx._gen
    truth = [[i for i, _ in row] for row in index_mod.exact_search(gen.vectors, gen.ids, qs, K)]
    idx.search(qs[:1], K)
    ms, got = [], []
    for q in qs:
        t = time.perf_counter()
        hits = idx.search(q[None], K)[0]
        ms.append((time.perf_counter() - t) * 1e3)
        got.append([i for i, _ in hits])
    rec = float(np.mean([len(set(g) & set(tr)) / K for g, tr in zip(got, truth, strict=True)]))
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    out.put({"load_s": load_s, "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "recall": rec,
             "query_rss_mb": rss, "search_k": index_mod.search_k_for(K, n)})


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, q))
    proc.start()
    try:
        result = q.get()
    finally:
        proc.join()
    return result


def measure(n: int, dim: int, n_queries: int) -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix=f"scale-{n}-{dim}-", dir=OUT)
    try:
        log.warning("scale: %d x %d-d: catalog + build ...", n, dim)
        r = {"n": n, "dim": dim, **_in_child(_build_child, home, n, dim)}
        log.warning("scale: %d x %d-d: queries ...", n, dim)
        r.update(_in_child(_query_child, home, n, dim, n_queries))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    log.warning("  %s", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
    return r


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(a, b) of y = a·n^b, least squares in log-log; one point gives b = 1."""
    if len(points) < 2:
        n, y = points[0]
        return y / n, 1.0
    x = np.log([p[0] for p in points])
    y = np.log([max(p[1], 1e-9) for p in points])
    b, loga = np.polyfit(x, y, 1)
    return float(math.exp(loga)), float(b)


METRICS = [  # key, column, unit scale, how it is projected
    ("catalog_bytes", "catalog GB", 1e-9, "linear"),
    ("catalog_s", "catalog insert s", 1.0, "power"),
    ("build_s", "index build s", 1.0, "power"),
    ("build_rss_mb", "build peak RSS GB", 1e-3, "linear"),
    ("index_bytes", "index on disk GB", 1e-9, "linear"),
    ("query_rss_mb", "query RSS GB (mapped pages incl.)", 1e-3, "linear"),
    ("p50_ms", "query p50 ms", 1.0, "search_k"),
    ("p95_ms", "query p95 ms", 1.0, "search_k"),
]


def project(measured: list[dict[str, Any]], dim: int, targets: list[int]) -> tuple[list[dict[str, Any]], list[str]]:
    """Projected rows at `targets` for `dim`, and how each column was projected:
    sizes and memory: a line c + m·n through the measured `dim` points (they are linear in n
    plus the interpreter's constant); times: y = a·n^b with b from the series that reaches
    furthest in n, anchored at the largest measured `dim` point; query latency: in proportion
    to the shipped search_k_for(10, n) (candidates inspected and re-ranked per query)."""
    from desktop.index import search_k_for

    same = sorted((r for r in measured if r["dim"] == dim), key=lambda r: r["n"])
    if not same:
        return [], []
    longest = max({r["dim"] for r in measured}, key=lambda d: max(r["n"] for r in measured if r["dim"] == d))
    reach = sorted((r for r in measured if r["dim"] == longest), key=lambda r: r["n"])
    anchor = same[-1]
    laws: list[str] = []
    rows = []
    for n in targets:
        if any(r["n"] == n for r in same):
            continue
        row: dict[str, Any] = {"n": n, "dim": dim, "projected": True}
        for key, col, _, how in METRICS:
            if how == "linear" and len(same) >= 2:
                m, c = np.polyfit([r["n"] for r in same], [r[key] for r in same], 1)
                row[key] = float(c + m * n)
                law = f"{col}: line through the {dim}-d points"
            elif how == "search_k":
                row[key] = anchor[key] * search_k_for(K, n) / search_k_for(K, anchor["n"])
                law = f"{col} ∝ search_k_for(10, n)"
            else:
                _, b = fit([(r["n"], r[key]) for r in (reach if len(reach) >= 2 else same)])
                # Never below linear: both are n·log n at heart; a smaller measured exponent
                # is fixed costs and load noise at the small sizes, and would flatter 10 M.
                used = max(b, 1.0)
                row[key] = anchor[key] * (n / anchor["n"]) ** used
                law = f"{col} ∝ n^{used:.2f} (fitted {b:.2f} on the {longest}-d series, floor 1)"
            if law not in laws:
                laws.append(law)
        rows.append(row)
    return rows, laws


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--series", action="append", metavar="DIM:N,N,...",
                    help="sizes to measure at a width (repeatable); default 512:25000,50000,100000,1000000 "
                         "(1M is refused above --max-rss-gb) and 64:100000,400000,1000000")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--max-rss-gb", type=float, default=6.0, help="refuse points estimated above this")
    ap.add_argument("--reuse", action="store_true", help="re-project from the last run's scale.json, measure nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from desktop import index as index_mod

    series = args.series or (["512:12000,20000", "64:30000"] if args.quick
                             else ["512:25000,50000,100000,1000000", "64:100000,400000,1000000"])
    OUT.mkdir(parents=True, exist_ok=True)
    measured: list[dict[str, Any]] = []
    refused: list[str] = []
    if args.reuse:
        last = json.loads((OUT / "scale.json").read_text())["results"]
        measured, refused, series = last["measured"], last["refused"], []
    for spec in series:
        dim_s, _, sizes = spec.partition(":")
        dim = int(dim_s)
        for n in (int(s) for s in sizes.split(",")):
            est_gb = n * dim * 4 * BYTES_PER_VECTOR_RSS / 1e9
            if est_gb > args.max_rss_gb:
                refused.append(f"{n:,} x {dim}-d (estimated {est_gb:.1f} GB peak RSS > {args.max_rss_gb} GB)")
                continue
            measured.append(measure(n, dim, args.queries))
    projected, laws = project(measured, 512, [1_000_000, 10_000_000])
    t = Table(f"Scale: Lumen catalog + Annoy ({index_mod.N_TREES} trees, search_k_for, exact re-rank), k={K}",
              ["photos", "dim", "kind"] + [c for _, c, _, _ in METRICS] + ["recall@10", "search_k"])
    for r in sorted(measured, key=lambda r: (-r["dim"], r["n"])) + projected:
        proj = r.get("projected", False)
        cells = [r[key] * scale for key, _, scale, _ in METRICS]
        t.add(r["n"], r["dim"], "proj." if proj else "measured", *cells,
              "–" if proj else f"{r['recall']:.3f}", index_mod.search_k_for(K, r["n"]))
    if projected:
        t.notes.append("projected rows (anchored at the largest measured 512-d point): " + "; ".join(laws))
    for why in refused:
        t.notes.append(f"not measured: {why}")
    t.notes.append(f"{machine_line()}; {args.queries} held-out queries one at a time; clustered synthetic unit "
                   "vectors (1 000 centres); a 'build' reads the vectors from the catalog as Library.build_index does")
    emit([t], {"measured": measured, "projected": projected, "refused": refused}, "scale")
    return {"tables": [t], "measured": measured, "projected": projected}


if __name__ == "__main__":
    main()
