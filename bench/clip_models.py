"""CPU speed of candidate CLIP models, next to their published retrieval quality.

    python -m bench.clip_models                    # the default candidate list
    python -m bench.clip_models --threads 4 --models ViT-B-32 MobileCLIP-S2

Speed does not depend on the weights, so every model is built with seeded random weights
(``MODEL:random``) through the real `clip` plugin code path: open_clip preprocessing of PIL
images (~256 px, as the library hands them over), batched `encode_images`, and a single
query through `encode_texts`. Quality numbers are the published zero-shot ones (see
PUBLISHED below for sources); they are not measured here (no weights on this machine).
Prints a Markdown table; plugins/clip/MODELS.md holds a copy with the reasoning.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

log = logging.getLogger("bench.clip_models")


@dataclass(frozen=True)
class Published:
    tag: str
    flickr_t2i: float  # Flickr30k 1K test, text->image R@1 (%)
    flickr_i2t: float  # image->text R@1
    coco_t2i: float  # MSCOCO 5K test, text->image R@1
    coco_i2t: float  # image->text R@1
    flickr_t2i_r10: float  # text->image R@10: closer to what a results grid shows
    coco_t2i_r10: float
    source: str
    licence: str


_OC = "open_clip docs/openclip_retrieval_results.csv"
_MC = "apple/ml-mobileclip results/{}.jsonl"

# Zero-shot retrieval R@1 as published (CLIP_benchmark protocol in both sources).
PUBLISHED: dict[str, Published] = {
    "MobileCLIP-S1": Published("datacompdr", 71.0, 89.2, 44.0, 62.2, 95.3, 77.7, _MC.format("mobileclip_s1"), "Apple sample-code licence (use + redistribute)"),
    "MobileCLIP-S2": Published("datacompdr", 73.4, 90.3, 45.4, 63.4, 95.6, 79.0, _MC.format("mobileclip_s2"), "Apple sample-code licence (use + redistribute)"),
    "MobileCLIP2-S0": Published("dfndr2b", 69.2, 86.6, 43.7, 62.7, 94.0, 79.4, _MC.format("mobileclip2_s0"), "Apple ML Research licence: non-commercial research only"),
    "MobileCLIP2-S2": Published("dfndr2b", 74.8, 90.4, 48.8, 66.7, 95.9, 82.4, _MC.format("mobileclip2_s2"), "Apple ML Research licence: non-commercial research only"),
    "ViT-B-32": Published("laion2b_s34b_b79k", 66.8, 84.1, 39.3, 56.3, 93.1, 75.6, _OC, "MIT"),
    "ViT-B-32-256": Published("datacomp_s34b_b86k", 64.9, 84.8, 39.9, 57.9, 92.2, 75.2, _OC, "MIT"),
    "ViT-B-16": Published("laion2b_s34b_b88k", 69.8, 86.3, 42.3, 59.4, 94.6, 77.1, _OC, "MIT"),
    "RN50": Published("openai", 57.4, 80.0, 28.5, 48.8, 90.0, 64.6, _OC, "MIT"),
    "convnext_base": Published("laion400m_s13b_b51k", 65.0, 83.8, 37.6, 54.7, 93.0, 73.4, _OC, "MIT"),
}

DEFAULT_CANDIDATES = ["ViT-B-32", "ViT-B-32-256", "MobileCLIP-S1", "MobileCLIP-S2", "MobileCLIP2-S0",
                      "ViT-B-16", "RN50", "convnext_base"]


@dataclass
class Row:
    arch: str
    params_m: float
    image_size: int
    img_per_core_s: float  # images per CPU-second, 1 thread: robust when the machine is busy
    img_per_s_wall: float  # images per wall-second with --threads threads: true only on an idle machine
    text_ms: float  # CPU ms per single query, 1 thread
    load_s: float


def _images(n: int, size: int = 256) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((size, size * 4 // 3, 3)) * 255).astype(np.uint8)) for _ in range(n)]


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall s, process CPU s) of `repeats` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def measure(arch: str, batch: int, batches: int, queries: int, threads: int) -> Row:
    import torch

    from plugins.clip import encoder_plugin

    enc = encoder_plugin.create(f"{arch}:random", device="cpu", batch_size=batch)
    t0 = time.perf_counter()
    enc.load()
    load_s = time.perf_counter() - t0
    model = enc.model.model
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    size = model.visual.preprocess_cfg["size"]
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    images = _images(batch)
    query = ["a dog running on the beach at sunset"]

    # 1 thread, CPU time: the work an image costs, unaffected by other processes' load.
    torch.set_num_threads(1)
    enc.encode_images(images[:2])  # warm-up (allocator, oneDNN kernels)
    _, cpu = _timed(lambda: enc.encode_images(images), batches)
    enc.encode_texts(query)
    _, text_cpu = _timed(lambda: enc.encode_texts(query), queries)
    # `threads` threads, wall clock: what a user with that many idle cores sees.
    torch.set_num_threads(threads)
    enc.encode_images(images[:2])
    wall, _ = _timed(lambda: enc.encode_images(images), batches)
    return Row(arch, params_m, size, batch / cpu, batch / wall, 1000 * text_cpu, load_s)


def table(rows: list[Row], threads: int) -> str:
    head = (f"| model | pretrained tag | params (M) | input px | img/s per core | img/s wall, {threads} threads | "
            "text ms/query | Flickr T→I / I→T R@1 | COCO T→I / I→T R@1 | T→I R@10 Flickr / COCO | "
            "fp32 weights (MB) | weights licence |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        p = PUBLISHED.get(r.arch)
        tag = p.tag if p else "?"
        flickr = f"{p.flickr_t2i:.1f} / {p.flickr_i2t:.1f}" if p else "–"
        coco = f"{p.coco_t2i:.1f} / {p.coco_i2t:.1f}" if p else "–"
        r10 = f"{p.flickr_t2i_r10:.1f} / {p.coco_t2i_r10:.1f}" if p else "–"
        lines.append(
            f"| {r.arch} | {tag} | {r.params_m:.0f} | {r.image_size} | {r.img_per_core_s:.1f} | "
            f"{r.img_per_s_wall:.1f} | {r.text_ms:.0f} | {flickr} | {coco} | {r10} | {r.params_m * 4:.0f} | "
            f"{p.licence if p else '?'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=DEFAULT_CANDIDATES)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the wall-clock column (default 2)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=1, help="timed batches per model and phase (median)")
    ap.add_argument("--queries", type=int, default=10, help="timed single-text queries (median)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    os.environ["LUMEN_TORCH_THREADS"] = str(args.threads)  # keep the plugin from changing threads itself
    import torch

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for arch in args.models:
        log.warning("measuring %s ...", arch)
        try:
            rows.append(measure(arch, args.batch, args.batches, args.queries, args.threads))
        except Exception as e:  # one broken candidate should not hide the others
            log.warning("  %s failed: %s: %s", arch, type(e).__name__, e)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nCPU: {platform.processor() or platform.machine()} x{os.cpu_count()}, torch {torch.__version__}, "
          f"batch {args.batch} of ~256 px PIL images incl. preprocessing, random weights (speed only); "
          f"load average {load_before:.1f} -> {load_after:.1f}\n")
    print(table(rows, args.threads))
    print("\nimg/s per core and text ms: 1 torch thread, process CPU time (robust on a busy machine); "
          f"wall column: {args.threads} threads, only meaningful when the load average is below the core count.")
    print("R@1 in %, zero-shot. Sources: " + "; ".join(sorted({p.source for p in PUBLISHED.values()})))


if __name__ == "__main__":
    main()
