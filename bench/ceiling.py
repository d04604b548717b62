"""What moves the encoder's own speed (the indexing ceiling) on a CPU, and what it costs.

    python -m bench.ceiling                          # default CLIP arch + ViT-B-32 + MobileNetV2
    python -m bench.ceiling --models ViT-B-32 --variants fp32 channels_last int8
    python -m bench.ceiling --quick

For each image tower and each variant: images/s and CPU ms per image on batches of 32
real photos (Flickr8k dev from ../shared, else the benchmark-1 photos), and how far its
vectors move from the fp32 ones: mean cosine to the fp32 vector, and recall@10 of
image→image search with the variant's vectors against the fp32 ranking (1.0 = same
neighbours). Variants:

- fp32: what Lumen runs (torch eager, NCHW).
- channels_last: weights and input in NHWC (oneDNN's native layout for convolutions).
- bf16: torch.autocast(bfloat16). Fast only on CPUs with AVX512-BF16/AMX.
- int8: torch dynamic quantisation of every nn.Linear (weights int8, activations per batch).
- onnxruntime: the same graph exported to ONNX and run by ONNX Runtime (optional
  dependency: `pip install onnxruntime onnx`; skipped when missing).

CLIP towers have seeded random weights (speed does not depend on the values; the agreement
columns then measure numerical error only). MobileNetV2 has its real ImageNet weights.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import SHARED, Table, add_common_args, emit, machine_line, median, photo_set

log = logging.getLogger("bench.ceiling")
VARIANTS = ["fp32", "channels_last", "bf16", "int8", "onnxruntime"]


def real_images(n: int) -> list[Any]:
    from desktop import images

    dev = SHARED / "data" / "flickr8k" / "images"
    names = (SHARED / "data" / "flickr8k" / "dev.txt")
    if dev.is_dir() and names.is_file():
        paths = [dev / line.strip() for line in names.read_text().splitlines() if line.strip()][:n]
    else:
        folder = photo_set(max(n, 8))
        paths = sorted(p for p in folder.rglob("*") if images.is_image_path(p))[:n]
    return [images.load_for_encoding(p, 256) for p in paths]


def tower(model: str) -> tuple[Any, Any, Any]:
    """(image module: tensor -> features, preprocess: list of PIL -> tensor, label)."""
    import torch

    if model == "mobilenet_v2":
        from desktop.encoders import create_encoder
        from plugins.bert_resnet import model as M

        enc = create_encoder("bert_resnet:all-MiniLM-L6-v2+mobilenet_v2:noheads", device="cpu")
        cnn = enc.model.cnn

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.cnn = cnn

            def forward(self, x: Any) -> Any:
                return self.cnn(x)

        return Pooled().eval(), lambda ims: M.preprocess(ims), "MobileNetV2 (real ImageNet weights)"
    from plugins.clip import encoder_plugin

    enc = encoder_plugin.create(f"{model}:random", device="cpu")
    m = enc.model

    class Image(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = m.model

        def forward(self, x: Any) -> Any:
            return self.m.encode_image(x)

    return Image().eval(), lambda ims: torch.stack([m.preprocess(i) for i in ims]), f"{model} (random weights)"


def variant(name: str, module: Any, sample: Any) -> Any:
    """A callable tensor -> np.ndarray for this variant, or raises to skip it."""
    import torch

    if name == "fp32":
        def run(x: Any) -> np.ndarray:
            with torch.inference_mode():
                return module(x).float().numpy()
        return run
    if name == "channels_last":
        cl = copy.deepcopy(module).to(memory_format=torch.channels_last)

        def run(x: Any) -> np.ndarray:
            with torch.inference_mode():
                return cl(x.contiguous(memory_format=torch.channels_last)).float().numpy()
        return run
    if name == "bf16":
        def run(x: Any) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return module(x).float().numpy()
        return run
    if name == "int8":
        from torch.ao.quantization import quantize_dynamic

        q = quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear}, dtype=torch.qint8)

        def run(x: Any) -> np.ndarray:
            with torch.inference_mode():
                return q(x).float().numpy()
        return run
    if name == "onnxruntime":
        import onnxruntime as ort  # optional

        path = Path(tempfile.mkdtemp()) / "tower.onnx"
        # Grad mode on: under inference mode torch picks fused attention kernels ONNX lacks.
        with torch.enable_grad():
            torch.onnx.export(module, (sample,), str(path), input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        def run(x: Any) -> np.ndarray:
            return sess.run(None, {"x": x.numpy()})[0]
        return run
    raise ValueError(name)


def agreement(ref: np.ndarray, got: np.ndarray, k: int = 10) -> tuple[float, float]:
    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    r, g = unit(ref), unit(got)
    cos = float(np.mean(np.sum(r * g, axis=1)))
    sr, sg = r @ r.T, g @ g.T
    np.fill_diagonal(sr, -np.inf)
    np.fill_diagonal(sg, -np.inf)
    tr, tg = np.argsort(-sr, axis=1)[:, :k], np.argsort(-sg, axis=1)[:, :k]
    rec = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(tr, tg, strict=True)]))
    return cos, rec


def bench_model(model: str, variants: list[str], imgs: list[Any], reps: int) -> list[dict[str, Any]]:
    module, prep, label = tower(model)
    batches = [prep(imgs[i : i + 32]) for i in range(0, len(imgs), 32)]
    runners: dict[str, Any] = {}
    rows = []
    for v in variants:
        try:
            runners[v] = variant(v, module, batches[0][:2])
            runners[v](batches[0][:4])  # warm-up (kernels, ORT session)
        except Exception as e:  # noqa: BLE001 - a variant this machine cannot run: say so
            rows.append({"model": label, "variant": v, "error": f"{type(e).__name__}: {str(e)[:120]}"})
            log.warning("  %s %s skipped: %s", model, v, e)
    outs: dict[str, list[np.ndarray]] = {v: [] for v in runners}
    wall: dict[str, list[float]] = {v: [] for v in runners}
    cpu: dict[str, list[float]] = {v: [] for v in runners}
    n = sum(len(b) for b in batches)
    for rep in range(reps):  # interleaved: every variant sees the same machine noise
        for v, run in runners.items():
            t, c = time.perf_counter(), time.process_time()
            res = [run(b) for b in batches]
            wall[v].append(n / (time.perf_counter() - t))
            cpu[v].append((time.process_time() - c) * 1e3 / n)
            if rep == 0:
                outs[v] = res
    ref = np.concatenate(outs["fp32"]) if "fp32" in outs else None
    for v in runners:
        got = np.concatenate(outs[v])
        cos, rec = agreement(ref, got) if ref is not None else (float("nan"), float("nan"))
        rows.append({"model": label, "variant": v, "img_s": median(wall[v]), "cpu_ms": median(cpu[v]),
                     "cos": cos, "recall10": rec, "raw_img_s": wall[v]})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--variants", nargs="*", default=VARIANTS)
    ap.add_argument("--images", type=int, help="real photos (default 128; --quick 32)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ort-path", help="extra sys.path entry where onnxruntime is installed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.ort_path:
        sys.path.append(args.ort_path)
    import torch

    from plugins.clip import DEFAULT_MODEL
    from plugins.clip.source import configure_threads

    configure_threads()
    models = args.models or (["lumen-tiny"] if args.quick else
                             [DEFAULT_MODEL.split(":")[0], "ViT-B-32", "mobilenet_v2"])
    imgs = real_images(args.images or (32 if args.quick else 128))
    t = Table(f"Encoder ceiling on this CPU: image towers, batch 32, {len(imgs)} real photos, "
              f"{torch.get_num_threads()} threads",
              ["image tower", "variant", "img/s", "CPU ms / img", "speed-up vs fp32", "cos to fp32",
               "recall@10 vs fp32"])
    rows = []
    for model in models:
        log.warning("ceiling: %s ...", model)
        res = bench_model(model, args.variants, imgs, 1 if args.quick else args.reps)
        base = next((r["img_s"] for r in res if r["variant"] == "fp32" and "img_s" in r), float("nan"))
        for r in res:
            if "error" in r:
                t.add(r["model"], r["variant"], "–", "–", "–", "–", f"skipped: {r['error']}")
            else:
                t.add(r["model"], r["variant"], r["img_s"], r["cpu_ms"], f"{r['img_s'] / base:.2f}×",
                      f"{r['cos']:.5f}", f"{r['recall10']:.3f}")
        rows += res
    t.notes.append(f"{machine_line()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
                   f"median of {args.reps} interleaved passes")
    emit([t], {"rows": rows}, "ceiling")
    return {"tables": [t], "results": rows}


if __name__ == "__main__":
    main()
