"""Benchmark 4: ANN quality and speed — Annoy as Lumen ships it, against exact search.

    python -m bench.ann                      # 10 000, 100 000 and 1 000 000 vectors
    python -m bench.ann --sizes 1000000 --sweep   # + recall/time for other search_k values
    python -m bench.ann --quick              # 2 000 vectors

The index is the one `synthetic_library(n)` built with desktop.index and the shipped
parameters (N_TREES, search_k_for, the exact re-rank); queries are 200 held-out vectors
from the same distribution. For each size:

- **Lumen ANN**: `AnnoyBackend.search(q, 10)`, one query at a time — Annoy candidates
  re-ranked exactly with the memory-mapped vectors (below EXACT_MAX_ITEMS it searches
  exactly by design, and the table says so).
- **exact (Lumen)**: `AnnoyBackend.search(q, 10, exact=True)`: chunked BLAS over the mmap.
- **exact (numpy)**: `vectors @ q` + argpartition with the vectors in RAM: the best
  case for brute force.
- recall@10 = |ANN top 10 ∩ exact top 10| / 10, averaged over the queries.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

from bench.common import (
    SYNTH_DIM,
    Table,
    add_common_args,
    emit,
    machine_line,
    median,
    queries,
    synthetic_library,
    verdict,
)

log = logging.getLogger("bench.ann")

K = 10
RECALL_TARGET = 0.99
SPEED_TARGET = 0.25  # ANN time / exact time at 1M


def open_index(n: int) -> tuple[Any, np.ndarray]:
    from desktop.index import AnnoyBackend
    from desktop.settings import encoder_slug, paths

    syn = synthetic_library(n)
    idx = AnnoyBackend(paths(syn.home).index_dir / encoder_slug(syn.encoder_id), SYNTH_DIM)
    if not idx.load():
        raise RuntimeError(f"no index in {syn.home}")
    return idx, idx._gen.vectors


def timed(fn: Any, qs: np.ndarray) -> tuple[list[list[int]], list[float]]:
    ids, ms = [], []
    for q in qs:
        t = time.perf_counter()
        hits = fn(q)
        ms.append((time.perf_counter() - t) * 1e3)
        ids.append(hits)
    return ids, ms


def recall(got: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(g[:K]) & set(t[:K])) / K for g, t in zip(got, truth, strict=True)]))


def bench_size(n: int, n_queries: int, sweep: bool) -> dict[str, Any]:
    from desktop import index as index_mod

    idx, mm = open_index(n)
    gen = idx._gen
    qs = queries(n_queries)
    idx.search(qs[:1], K)  # open the mmap
    # ground truth (ids), in batch: fast, and not timed
    truth = [[i for i, _ in row] for row in index_mod.exact_search(mm, gen.ids, qs, K)]
    ann_ids, ann_ms = timed(lambda q: [i for i, _ in idx.search(q[None], K)[0]], qs)
    ex_ids, ex_ms = timed(lambda q: [i for i, _ in idx.search(q[None], K, exact=True)[0]], qs[: max(5, n_queries // 4)])
    ram = np.array(mm)  # brute force's best case: vectors in RAM, one matvec per query

    def numpy_exact(q: np.ndarray) -> list[int]:
        s = ram @ q  # noqa: F821 - defined just above; ruff misreads the del below
        top = np.argpartition(-s, K)[:K]
        return gen.ids[top[np.argsort(-s[top])]].tolist()

    np_ids, np_ms = timed(numpy_exact, qs[: max(5, n_queries // 4)])
    del ram  # noqa: F821
    exact_path = n <= index_mod.EXACT_MAX_ITEMS
    out = {
        "n": n, "trees": gen.n_trees, "search_k": index_mod.search_k_for(K, n), "exact_by_design": exact_path,
        "recall": recall(ann_ids, truth), "ann_ms": ann_ms, "exact_ms": ex_ms, "numpy_ms": np_ms,
        "exact_recall_check": recall(ex_ids, truth[: len(ex_ids)]), "numpy_recall_check": recall(np_ids, truth[: len(np_ids)]),
    }
    if sweep and gen.ann is not None:
        rows = []
        for sk in (1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000):
            got, ms = timed(lambda q, sk=sk: [gen.ids[i] for i in gen.ann.get_nns_by_vector(q.tolist(), K, search_k=sk)], qs)
            rows.append({"search_k": sk, "recall": recall(got, truth), "ms": median(ms)})
        out["sweep"] = rows
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from desktop import index as index_mod

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--sizes", type=int, nargs="*")
    ap.add_argument("--queries", type=int, help="held-out queries (default 200; --quick 20)")
    ap.add_argument("--sweep", action="store_true", help="also raw Annoy recall/time vs search_k")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sizes = args.sizes or ([2_000] if args.quick else [10_000, 100_000, 1_000_000])
    nq = args.queries or (20 if args.quick else 200)

    t = Table(f"ANN quality and speed: Annoy ({index_mod.N_TREES} trees, search_k_for) + exact re-rank, "
              f"{SYNTH_DIM}-d, k={K}",
              ["vectors", "recall@10", "Lumen search ms p50", "exact (Lumen, mmap) ms p50", "exact (numpy, RAM) ms p50",
               "Lumen / exact (numpy)", "search_k", "target (1M: ≥0.99, ≤0.25×)"])
    sweeps = Table("Raw Annoy recall@10 and time per query vs search_k (no re-rank)",
                   ["vectors", "search_k", "recall@10", "ms p50"])
    rows = []
    for n in sizes:
        log.warning("ann bench: %d vectors ...", n)
        r = bench_size(n, nq, args.sweep)
        rows.append(r)
        a, e, npx = median(r["ann_ms"]), median(r["exact_ms"]), median(r["numpy_ms"])
        ratio = a / npx
        target = verdict(r["recall"] >= RECALL_TARGET and ratio <= SPEED_TARGET) if n >= 1_000_000 else "–"
        t.add(n, f"{r['recall']:.4f}" + (" (exact by design)" if r["exact_by_design"] else ""), a, e, npx,
              f"{ratio:.2f}×", r["search_k"] if not r["exact_by_design"] else "–", target)
        for s in r.get("sweep", []):
            sweeps.add(n, s["search_k"], f"{s['recall']:.4f}", s["ms"])
    t.notes.append(f"{machine_line()}; {nq} held-out queries, one at a time; clustered synthetic vectors "
                   "(1 000 centres, cos to the nearest neighbour ~0.5)")
    emit([t] + ([sweeps] if sweeps.rows else []), {"sizes": rows}, "ann")
    return {"tables": [t] + ([sweeps] if sweeps.rows else []), "results": rows}


if __name__ == "__main__":
    main()
