"""Benchmark 1: indexing throughput on real camera photos.

    python -m bench.indexing                 # 200 photos, the default CLIP architecture + bert_resnet
    python -m bench.indexing --clip ViT-B-32 --n 300 --reps 2
    python -m bench.indexing --quick         # 16 small photos, the tiny test model

For each encoder, in one process and interleaved (ceiling, pipeline, naive, per repetition):

- **ceiling**: the encoder alone on pre-decoded, pre-processed tensors (batches of 32):
  no file I/O, no decode, no preprocessing — the fastest Lumen could ever index.
- **Lumen**: the full pipeline of `Library.index()` on a fresh data dir: scan, hash,
  catalog writes, decode (draft + look-ahead), preprocessing, encode, vectors written,
  Annoy build. The model is loaded beforehand (its load time is reported on its own).
- **naive**: the seed literature's loop: full-size decode + EXIF transpose, preprocess
  and encode one image at a time, no catalog.
- **decode only**: `media.iter_decoded` over the same files (what the encoder is fed),
  to show when a pipeline is decode-bound rather than encode-bound.

CLIP runs with seeded random weights (``clip:ARCH:random``): speed does not depend on the
weight values. The two-tower encoder is `bert_resnet` (MiniLM + MobileNetV2 with the real
ImageNet weights from ../shared; its image side is what indexing runs).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    OUT,
    Table,
    add_common_args,
    emit,
    machine_line,
    median,
    peak_rss_mb,
    photo_set,
    photo_set_summary,
    verdict,
)

log = logging.getLogger("bench.indexing")

BATCH = 32
CEILING_TARGET = 0.85
NAIVE_TARGET = 2.0


@dataclass
class EncoderRun:
    spec: str
    encoder_id: str = ""
    load_s: float = 0.0
    ceiling: list[float] = field(default_factory=list)  # images/s per repetition
    ceiling_cpu: list[float] = field(default_factory=list)  # process CPU ms per image
    pipeline_cpu: list[float] = field(default_factory=list)
    pipeline: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        c, p, n, d = (median(x) for x in (self.ceiling, self.pipeline, self.naive, self.decode))
        return {"spec": self.spec, "id": self.encoder_id, "load_s": self.load_s, "ceiling": c, "pipeline": p,
                "naive": n, "decode": d, "pipeline_over_ceiling": p / c if c else float("nan"),
                "pipeline_over_naive": p / n if n else float("nan"), "stages": self.stages,
                "ceiling_cpu_ms": median(self.ceiling_cpu), "pipeline_cpu_ms": median(self.pipeline_cpu),
                "raw": {"ceiling": self.ceiling, "pipeline": self.pipeline, "naive": self.naive,
                        "decode": self.decode}, "notes": self.notes}


# --------------------------------------------------------------------------- encoder adapters


class TensorPath:
    """The encoder with its preprocessing taken out: `prep` turns PIL images into the
    tensors the encoder's own preprocessing makes, and `forward` runs the encoder's own
    `encode_images` on those tensors with preprocessing swapped for the identity while it
    runs, so the ceiling times exactly the model code indexing runs, minus decode and
    preprocessing (robust to how a plugin structures its forward pass)."""

    def __init__(self, enc: Any) -> None:
        import torch

        from plugins.clip.encoder import ClipEncoder

        self.enc = enc
        if isinstance(enc, ClipEncoder):
            real = enc.model.preprocess
            self.prep: Callable[[Sequence[Any]], list[Any]] = lambda ims: [real(i) for i in ims]

            @contextlib.contextmanager
            def identity() -> Any:
                enc.model.preprocess = lambda t: t
                try:
                    yield
                finally:
                    enc.model.preprocess = real

            self._identity = identity
            return
        from plugins.bert_resnet import model as M
        from plugins.bert_resnet.encoder import BertResnetEncoder

        if not isinstance(enc, BertResnetEncoder):
            raise TypeError(f"no tensor path for {type(enc).__name__}")
        real_pre = M.preprocess
        self.prep = lambda ims: list(real_pre(ims))

        @contextlib.contextmanager
        def identity_bert() -> Any:
            def pre(tensors: Sequence[Any], size: int = 0, flip: bool = False) -> Any:
                x = torch.stack(list(tensors))
                return x.flip(-1) if flip else x

            M.preprocess = pre
            try:
                yield
            finally:
                M.preprocess = real_pre

        self._identity = identity_bert

    def forward(self, tensors: Sequence[Any]) -> np.ndarray:
        with self._identity():
            return self.enc.encode_images(tensors)


def make_encoder(spec: str) -> tuple[Any, float]:
    from desktop.encoders import create_encoder

    enc = create_encoder(spec, device="cpu")
    t = time.perf_counter()
    enc.load()
    return enc, time.perf_counter() - t


# --------------------------------------------------------------------------- the three ways


def run_ceiling(tp: TensorPath, batches: list[Any], n: int) -> tuple[float, float]:
    """(images/s, process CPU ms per image)."""
    t, c = time.perf_counter(), time.process_time()
    for x in batches:
        tp.forward(x)
    return n / (time.perf_counter() - t), (time.process_time() - c) * 1e3 / n


def run_pipeline(enc: Any, spec: str, folder: Path, n: int) -> tuple[float, float, dict[str, float]]:
    """Lumen's whole `index()` on a fresh data dir, model already loaded."""
    from desktop.library import Library

    home = Path(tempfile.mkdtemp(prefix="lumen-bench-", dir=OUT))
    stages: dict[str, float] = {}
    try:
        lib = Library(home, encoder=spec, device="cpu")
        lib.store._encoder = enc  # the loaded model: its load time is not indexing throughput
        lib.add_root(folder)
        # Exactly what lib.index() runs, stage by stage so the table can say where time goes.
        t0, c0 = time.perf_counter(), time.process_time()
        report = lib.scan()
        stages["scan+hash"] = time.perf_counter() - t0
        t = time.perf_counter()
        lib.indexer.encode_pending(report=report)
        stages["decode+encode+write"] = time.perf_counter() - t
        t = time.perf_counter()
        lib.build_index()
        stages["index"] = time.perf_counter() - t
        total = time.perf_counter() - t0
        cpu_ms = (time.process_time() - c0) * 1e3 / n
        lib.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if report.encoded != n:
        raise RuntimeError(f"pipeline encoded {report.encoded} of {n} photos ({report})")
    stages["total"] = total
    return n / total, cpu_ms, stages


def run_naive(enc: Any, paths: list[Path]) -> float:
    """Full-size decode, one image at a time (what a first script does)."""
    from PIL import Image, ImageOps

    from desktop import images  # noqa: F401 - registers the HEIF opener, as any script would

    t = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            rgb = ImageOps.exif_transpose(im.convert("RGB"))
        enc.encode_images([rgb])
    return len(paths) / (time.perf_counter() - t)


def run_decode(paths: list[Path], size: int) -> float:
    from desktop import media

    t = time.perf_counter()
    for _ in media.iter_decoded([str(p) for p in paths], size=size):
        pass
    return len(paths) / (time.perf_counter() - t)


def bench_encoder(spec: str, folder: Path, reps: int, naive_n: int) -> EncoderRun:
    from desktop import images, media
    from desktop.encoders import decode_size

    run = EncoderRun(spec)
    enc, run.load_s = make_encoder(spec)
    run.encoder_id = enc.id
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and images.is_image_path(p))
    n = len(paths)
    tp = TensorPath(enc)
    size = decode_size(enc)  # what the pipeline decodes to for this encoder
    decoded = [d.image for _, d in media.iter_decoded([str(p) for p in paths], size=size)]
    batches = [tp.prep(decoded[i : i + BATCH]) for i in range(0, n, BATCH)]
    decoded_head = decoded[:2]
    del decoded
    tp.forward(batches[0][: min(4, len(batches[0]))])  # warm-up: oneDNN kernels, allocator
    check = tp.forward(batches[0][:2])
    want = enc.encode_images(decoded_head)
    if not np.allclose(check, want, atol=1e-4):  # the ceiling must time the same computation
        raise RuntimeError(f"{spec}: the tensor path disagrees with encode_images")
    naive_paths = paths[:naive_n]
    for rep in range(reps):
        log.warning("  %s rep %d/%d: ceiling ...", spec, rep + 1, reps)
        rate, cpu = run_ceiling(tp, batches, n)
        run.ceiling.append(rate)
        run.ceiling_cpu.append(cpu)
        log.warning("  %s rep %d/%d: Lumen pipeline ...", spec, rep + 1, reps)
        rate, cpu, stages = run_pipeline(enc, spec, folder, n)
        run.pipeline.append(rate)
        run.pipeline_cpu.append(cpu)
        run.stages.append(stages)
        log.warning("  %s rep %d/%d: naive ...", spec, rep + 1, reps)
        run.naive.append(run_naive(enc, naive_paths))
        run.decode.append(run_decode(paths, size))
    rate, cpu = run_ceiling(tp, batches, n)  # bracket the pipeline runs: drift shows
    run.ceiling.append(rate)
    run.ceiling_cpu.append(cpu)
    if naive_n < n:
        run.notes.append(f"naive timed on the first {naive_n} of the {n} photos (same mix)")
    return run


# --------------------------------------------------------------------------- main


def default_specs(quick: bool, clip_arch: str | None) -> list[str]:
    if quick:
        return ["clip:lumen-tiny:random", "bert_resnet"]
    from plugins.clip import DEFAULT_MODEL

    arch = clip_arch or DEFAULT_MODEL.split(":")[0]
    return [f"clip:{arch}:random", "bert_resnet"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--n", type=int, help="photos (default 200; --quick 8)")
    ap.add_argument("--reps", type=int, help="repetitions (default 1 + a second ceiling; --quick 1)")
    ap.add_argument("--naive-n", type=int, help="photos for the naive loop (default: all)")
    ap.add_argument("--clip", help="open_clip architecture (default: the clip plugin's default model)")
    ap.add_argument("--encoders", nargs="*", help="encoder specs (overrides --clip)")
    ap.add_argument("--formats", nargs="*", default=[], help="only these source formats, e.g. JPEG")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    n = args.n or (8 if args.quick else 200)
    reps = args.reps or 1
    formats = tuple(f.upper() for f in args.formats)
    folder = photo_set(n, max_mp=4.0, formats=formats) if args.quick else photo_set(n, formats=formats)
    specs = args.encoders or default_specs(args.quick, args.clip)
    t = Table(
        f"Indexing throughput, {photo_set_summary(folder)}",
        ["encoder", "ceiling img/s (encoder alone)", "Lumen img/s (full pipeline)", "naive img/s",
         "decode-only img/s", "Lumen / ceiling", "Lumen / naive", "targets (≥0.85, ≥2×)"],
    )
    runs = []
    for spec in specs:
        log.warning("indexing bench: %s on %d photos ...", spec, n)
        try:
            run = bench_encoder(spec, folder, reps, args.naive_n or n)
        except Exception as e:  # e.g. no MobileNetV2 weights without ../shared: say so, go on
            log.warning("  %s skipped: %s: %s", spec, type(e).__name__, e)
            t.notes.append(f"{spec}: skipped ({type(e).__name__}: {e})")
            continue
        s = run.summary()
        runs.append(s)
        ok = s["pipeline_over_ceiling"] >= CEILING_TARGET and s["pipeline_over_naive"] >= NAIVE_TARGET
        t.add(s["id"], s["ceiling"], s["pipeline"], s["naive"], s["decode"],
              f"{s['pipeline_over_ceiling']:.2f}", f"{s['pipeline_over_naive']:.1f}×", verdict(ok))
        st = median_stages(run.stages)
        t.notes.append(
            f"{s['id']}: model load {run.load_s:.1f} s (not counted); CPU ms per image: ceiling "
            f"{s['ceiling_cpu_ms']:.0f}, Lumen {s['pipeline_cpu_ms']:.0f} (ratio "
            f"{s['ceiling_cpu_ms'] / s['pipeline_cpu_ms']:.2f}, less sensitive to other load than wall clock); "
            "pipeline stages (s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in st.items())
            + ("; " + "; ".join(run.notes) if run.notes else "")
        )
    t.notes.append(f"{machine_line()}; medians of {reps} repetition(s), ceiling measured before and after; "
                   f"peak RSS of this process {peak_rss_mb():.0f} MB")
    results = {"n": n, "photos": str(folder), "runs": runs}
    emit([t], results, "indexing")
    return {"tables": [t], "results": results}


def median_stages(stages: list[dict[str, float]]) -> dict[str, float]:
    keys = dict.fromkeys(k for s in stages for k in s)
    return {k: median([s[k] for s in stages if k in s]) for k in keys}


if __name__ == "__main__":
    main()
