"""Shared pieces of the benchmarks: timers, tables, machine facts, and cached test data.

Everything a benchmark builds (photo sets, synthetic catalogs, Annoy indexes) is cached
under ``bench/out/`` (git-ignored), keyed by what it depends on, so a second run measures
instead of building. Delete a folder there to force a rebuild.

- `photo_set(n)`: ``n`` real camera photos (1-22 MP JPEG + HEIC from ../shared/data/photos),
  each source file repeated with a few unique trailing bytes so every copy is a distinct
  photo to Lumen (content hash) while decoding to exactly the same pixels.
- `synthetic_library(n)`: a Lumen data dir whose REAL catalog (created and migrated by
  desktop.catalog) holds ``n`` photos, files and unit vectors inserted with bulk SQL, plus
  the real Annoy index built by desktop.index with the shipped parameters.
- `clustered(n, dim)`: the synthetic embedding distribution (unit vectors around 1 000
  random centres, the same model tests/test_index.py and the index tuning use).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import sqlite3
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PHOTOS = SHARED / "data" / "photos"
OUT = Path(os.environ.get("LUMEN_BENCH_OUT", REPO / "bench" / "out"))



def _default_clip() -> str:
    """The default CLIP model's architecture with random weights (speed does not depend on
    the weights). Importing the plugin is cheap: no torch."""
    try:
        from plugins.clip import DEFAULT_MODEL
    except ImportError:
        return "clip:ViT-B-32:random"
    return f"clip:{DEFAULT_MODEL.split(':')[0]}:random"


DEFAULT_CLIP = _default_clip()
# The cached 512-d synthetic catalogs were first built under this id; a request for another
# encoder of the same width relabels them in place (an UPDATE, not a rebuild).
SYNTH_BUILD_ID = "clip:MobileCLIP-S2:random"
SYNTH_DIM = 512
SYNTH_CLUSTERS = 1000

log = logging.getLogger("bench")


# --------------------------------------------------------------------------- timing


class Timer:
    """`with Timer() as t: ...; t.s` — wall seconds (perf_counter) and process CPU seconds."""

    def __enter__(self) -> Timer:
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._c0


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def repeat_ms(fn: Any, n: int, warmup: int = 1) -> list[float]:
    """Call fn() n times (after warm-up calls); milliseconds per call."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


# --------------------------------------------------------------------------- machine


def load_avg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def rss_mb() -> float:
    """Resident set size of this process now (Linux /proc; else ru_maxrss as a bound)."""
    return _proc_status("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far."""
    return _proc_status("VmHWM")


def _proc_status(key: str) -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": cpus(),
        "load_avg": [round(x, 2) for x in load_avg()],
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    m = machine()
    la = "/".join(f"{x:.1f}" for x in m["load_avg"])
    return f"{m['cpu']}, {m['cores']} cores, load avg {la} (1/5/15 min), Python {m['python']}" + (
        f", torch {m['torch']} ({m['torch_threads']} threads)" if "torch" in m else ""
    )


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A titled Markdown table; `rows` hold already formatted cells."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([fmt(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "headers": self.headers, "rows": self.rows, "notes": self.notes}


def fmt(x: object) -> str:
    if isinstance(x, float):
        if x != x:
            return "–"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.2f}"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return str(x)


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("✅ met" if ok else "❌ not met")


def emit(tables: Sequence[Table], results: dict[str, Any], name: str) -> None:
    """Print the tables and save the raw results as bench/out/<name>.json."""
    for t in tables:
        print()
        print(t.markdown())
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {"bench": name, "machine": machine(), "results": results, "tables": [t.to_dict() for t in tables]}
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=1, default=_json_default))


def _json_default(o: object) -> object:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


# --------------------------------------------------------------------------- real photos


def source_photos(min_mp: float = 1.0, max_mp: float = 22.0) -> list[tuple[Path, float, str]]:
    """(path, megapixels, format) of the real camera photos in ../shared that Lumen can
    decode, between min_mp and max_mp. Empty when ../shared is absent."""
    from desktop import images

    if not PHOTOS.is_dir():
        return []
    cache = OUT / "sources.json"
    try:
        found = json.loads(cache.read_text())
    except (OSError, ValueError):
        found = []
        for p in sorted(PHOTOS.rglob("*")):
            if not (p.is_file() and images.is_image_path(p)):
                continue
            try:
                meta = images.read_meta(p)
                images.load_for_encoding(p, 64)  # must decode, not just parse
            except images.ImageError:
                continue
            found.append([str(p), meta.width * meta.height / 1e6, meta.format])
        OUT.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(found))
    return [(Path(p), mp, f) for p, mp, f in found if min_mp <= mp <= max_mp and Path(p).is_file()]


def photo_set(n: int, min_mp: float = 1.0, max_mp: float = 22.0, formats: tuple[str, ...] = ()) -> Path:
    """A folder of n distinct photo files made from the real camera photos (cached).

    Copy i of a source gets 16 unique bytes appended: JPEG decoders stop at the
    end-of-image marker and HEIF readers at the last box, so the pixels are the same,
    but the content hash differs, as it would for n different photos."""
    folder = OUT / (f"photos-{n}-{min_mp:g}-{max_mp:g}mp" + ("-" + "-".join(formats).lower() if formats else ""))
    marker = OUT / f"{folder.name}.complete"
    if marker.exists():
        return folder
    sources = [s for s in source_photos(min_mp, max_mp) if not formats or s[2] in formats]
    if not sources:
        raise SystemExit(f"no photos in {PHOTOS} (../shared is only beside the developers' checkout)")
    shutil.rmtree(folder, ignore_errors=True)
    for i in range(n):
        src, _, _ = sources[i % len(sources)]
        sub = folder / f"{i // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        dest = sub / f"{i:05d}-{src.name}"
        data = src.read_bytes() + b"\0LUMENBENCH" + i.to_bytes(5, "big")
        dest.write_bytes(data)
    from desktop import images

    for p in folder.rglob("*"):  # prove the suffix is harmless before anything is measured
        if p.is_file():
            images.load_for_encoding(p, 64)
    marker.write_text(json.dumps({"n": n, "sources": len(sources)}))
    return folder


def photo_set_summary(folder: Path) -> str:
    from desktop import images

    files = [p for p in folder.rglob("*") if p.is_file() and images.is_image_path(p)]
    mps, fmts, size = [], {}, 0
    for p in files:
        m = images.read_meta(p)
        mps.append(m.width * m.height / 1e6)
        fmts[m.format] = fmts.get(m.format, 0) + 1
        size += p.stat().st_size
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(fmts.items()))
    return (f"{len(files)} files ({kinds}), {min(mps):.1f}-{max(mps):.1f} MP, median {median(mps):.1f} MP, "
            f"{size / 1e6:.0f} MB")


# --------------------------------------------------------------------------- synthetic vectors


def iter_clustered(n: int, dim: int = SYNTH_DIM, seed: int = 0, clusters: int = SYNTH_CLUSTERS,
                   spread: float = 1.0, block: int = 100_000) -> Iterator[np.ndarray]:
    """n unit vectors around `clusters` random centres (noise of norm ~`spread`), float32,
    in blocks of `block` rows: the same stream whatever consumes it."""
    centres = np.random.default_rng(12345).standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    for start in range(0, n, block):
        m = min(n, start + block) - start
        out = centres[rng.integers(0, clusters, m)]
        out += rng.standard_normal((m, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        yield out


def clustered(n: int, dim: int = SYNTH_DIM, seed: int = 0, clusters: int = SYNTH_CLUSTERS,
              spread: float = 1.0) -> np.ndarray:
    """All of `iter_clustered` in one (n, dim) array."""
    out = np.empty((n, dim), np.float32)
    start = 0
    for block in iter_clustered(n, dim, seed, clusters, spread):
        out[start : start + len(block)] = block
        start += len(block)
    return out


def queries(n: int, dim: int = SYNTH_DIM) -> np.ndarray:
    """Held-out query vectors from the same distribution as the data (never in the index)."""
    return clustered(n, dim, seed=987_654)


@dataclass(frozen=True)
class SyntheticLibrary:
    home: Path
    n: int
    encoder_id: str
    dim: int
    root: str


def _index_params() -> dict[str, Any]:
    from desktop import index

    return {"trees": index.N_TREES, "format": index.FORMAT, "metric": index.METRIC}


def synthetic_library(n: int, encoder_id: str | None = None, dim: int = SYNTH_DIM,
                      build_index: bool = True, quiet: bool = False) -> SyntheticLibrary:
    """A Lumen data dir with n photos and their vectors in a real catalog (cached).

    Rows go in with bulk SQL on the connection of a real `Catalog` (schema and
    migrations are Lumen's own); the Annoy index is built by `AnnoyBackend.build`, the
    code `Library.build_index` runs, with the shipped parameters (a change to them
    rebuilds the cache). Files do not exist on disk: this is for search and start-up,
    which never touch the photos."""
    from desktop.catalog import Catalog
    from desktop.index import AnnoyBackend
    from desktop.settings import encoder_slug, paths

    encoder_id = encoder_id or DEFAULT_CLIP
    base = SYNTH_BUILD_ID if dim == SYNTH_DIM else encoder_id
    key = hashlib.blake2b(json.dumps([n, base, dim, SYNTH_CLUSTERS, 2], sort_keys=True).encode(),
                          digest_size=4).hexdigest()
    home = OUT / f"synth-{n}-{key}"
    root = "/photos/synthetic"
    lib = SyntheticLibrary(home, n, encoder_id, dim, root)
    done = home / "bench-catalog.json"
    if not done.exists():
        shutil.rmtree(home, ignore_errors=True)
        p = paths(home).ensure()
        t0 = time.perf_counter()
        _say(quiet, f"building a synthetic catalog of {n:,} photos in {home} ...")
        cat = Catalog(p.catalog)  # creates + migrates: the real schema
        _bulk_insert(cat.conn, n, encoder_id, dim, root)
        cat.set_meta("encoder.spec", encoder_id)
        cat.close()
        done.write_text(json.dumps({"n": n, "encoder": encoder_id, "dim": dim,
                                    "seconds": round(time.perf_counter() - t0, 1)}))
        _say(quiet, f"  catalog: {time.perf_counter() - t0:.0f} s")
    label = json.loads(done.read_text())["encoder"]
    if label != encoder_id:
        _relabel(home, label, encoder_id, quiet)
    params = _index_params()
    idx_done = home / "bench-index.json"
    if build_index and (not idx_done.exists() or json.loads(idx_done.read_text()) != params):
        t0 = time.perf_counter()
        _say(quiet, f"building the Annoy index of {n:,} vectors ({params['trees']} trees) ...")
        ids = np.arange(1, n + 1, dtype=np.int64)
        vectors = clustered(n, dim)
        idx = AnnoyBackend(paths(home).index_dir / encoder_slug(encoder_id), dim)
        idx.build(ids, vectors, version=n)  # vectors.rowid == photo id == 1..n
        del vectors
        idx_done.write_text(json.dumps(params))
        _say(quiet, f"  index: {time.perf_counter() - t0:.0f} s")
    return lib


def _relabel(home: Path, old: str, new: str, quiet: bool) -> None:
    """Store the synthetic vectors under another encoder id (same width): catalog rows,
    the index folder, and the cache's own record."""
    from desktop.settings import encoder_slug, paths

    t0 = time.perf_counter()
    _say(quiet, f"relabelling {home.name}: {old} -> {new} ...")
    conn = sqlite3.connect(paths(home).catalog)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        conn.execute("UPDATE vectors SET encoder=? WHERE encoder=?", (new, old))
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('encoder.spec', ?)", (new,))
        conn.execute("DELETE FROM meta WHERE key='encoder.complete'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    src, dst = paths(home).index_dir / encoder_slug(old), paths(home).index_dir / encoder_slug(new)
    if src.exists():
        shutil.rmtree(dst, ignore_errors=True)
        src.rename(dst)
    done = home / "bench-catalog.json"
    info = json.loads(done.read_text())
    info["encoder"] = new
    done.write_text(json.dumps(info))
    _say(quiet, f"  relabelled in {time.perf_counter() - t0:.0f} s")


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _bulk_insert(conn: sqlite3.Connection, n: int, encoder_id: str, dim: int, root: str) -> None:
    """photos / files / vectors rows for ids 1..n, 100 000 per transaction."""
    conn.execute("PRAGMA synchronous=OFF")
    now = time.time()
    with conn:
        conn.execute("INSERT INTO libraries(id, root, online, watch, added_at, scanned_at) VALUES (1, ?, 1, 1, ?, ?)",
                     (root, now, now))
    cameras = ["Apple iPhone 13 Pro", "Canon EOS 5D Mark IV", "NIKON D750", "FUJIFILM X-T3", None]
    chunk = 100_000
    for start, block in zip(range(0, n, chunk), iter_clustered(n, dim, block=chunk), strict=True):
        ids = range(start + 1, start + len(block) + 1)
        with conn:
            conn.executemany(
                "INSERT INTO photos(id, hash, size, width, height, format, taken_at, camera, status, added_at) "
                "VALUES (?, ?, ?, 4032, 3024, 'JPEG', ?, ?, 'ok', ?)",
                ((i, f"{i:032x}", 2_000_000 + i % 1_000_000,
                  f"20{10 + i % 14:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}T12:{i % 60:02d}:00",
                  cameras[i % len(cameras)], now) for i in ids))
            conn.executemany(
                "INSERT INTO files(id, path, library_id, photo_id, size, mtime, folder, ext) "
                "VALUES (?, ?, 1, ?, ?, ?, ?, '.jpg')",
                ((i, f"{root}/{i // 1000:04d}/IMG_{i:07d}.jpg", i, 2_000_000 + i % 1_000_000, now,
                  f"{root}/{i // 1000:04d}") for i in ids))
            # rowid == photo id: the index build's "version" and the catalog agree.
            conn.executemany(
                "INSERT INTO vectors(rowid, photo_id, encoder, vector) VALUES (?, ?, ?, ?)",
                ((i, i, encoder_id, row.tobytes()) for i, row in zip(ids, block, strict=True)))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA optimize")


# --------------------------------------------------------------------------- misc


@contextlib.contextmanager
def quiet_logs(level: int = logging.WARNING) -> Iterator[None]:
    root = logging.getLogger()
    old = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(old)


def add_common_args(ap: Any) -> None:
    ap.add_argument("--quick", action="store_true", help="small sizes: proves it works, in seconds")
