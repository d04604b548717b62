"""Backbone features for training heads, extracted once and cached on disk.

Why cache: the frozen parts of both towers are >90 % of the compute. Running them once
(per image view, per caption) turns each training epoch into a pass over small arrays.

Cached per dataset + backbone (+ cut point):
- images: the CNN trunk's feature map before the fine-tuned tail, float16 (n, c, h, w),
  one array per *view* (orig, flip, crops): augmentation paid for once.
- captions: BERT hidden states before the fine-tuned layers, packed float16 (tokens, h)
  with offsets, and the model's own pooled sentence embedding (n, dim).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from plugins.bert_resnet import model as M

log = logging.getLogger(__name__)

IMG_BATCH = 64
TXT_BATCH = 256


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)  # a killed run never leaves a half-written cache behind


class _Rate:
    """Progress lines on the log: done/total, items/s, ETA, at most every few seconds."""

    def __init__(self, what: str, total: int, every_s: float = 10.0) -> None:
        self.what, self.total, self.every = what, total, every_s
        self.t0 = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        log.info("%s: %d/%d (%.0f/s, %.0f s left)", self.what, done, self.total, rate, eta)


def view_images(paths: Sequence[Path], view: str, seed: int, start: int = 0) -> list:
    """Load images as one *view*: orig, flip, or cropN (a seeded random resized crop,
    mirrored half the time: the augmentation whose features we cache). `start` is the
    index of paths[0] in the whole list: crops depend on (seed, view, image index)."""
    from PIL import Image

    out = []
    for i, p in enumerate(paths, start):
        with Image.open(p) as im:
            im = im.convert("RGB")
        if view == "flip":
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif view.startswith("crop"):
            rng = np.random.default_rng([seed, int(view[4:]), i])
            w, h = im.size
            area = rng.uniform(0.45, 1.0) * w * h
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = min(w, int(round((area * ratio) ** 0.5))), min(h, int(round((area / ratio) ** 0.5)))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            im = im.crop((x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif view != "orig":
            raise ValueError(f"unknown view {view!r}")
        out.append(im)
    return out


@dataclass
class TextCache:
    states: np.ndarray  # (tokens, h) float16, packed
    offsets: np.ndarray  # (n + 1,) int64
    pooled: np.ndarray  # (n, dim) float32, the backbone's own sentence embedding

    def batch(self, idx: Sequence[int], device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (b, t, h) float32 states + mask for captions `idx`."""
        lens = self.offsets[np.asarray(idx) + 1] - self.offsets[np.asarray(idx)]
        t = int(lens.max())
        h = self.states.shape[1]
        out = np.zeros((len(idx), t, h), np.float32)
        mask = np.zeros((len(idx), t), np.int64)
        for r, (i, n) in enumerate(zip(idx, lens, strict=True)):
            out[r, :n] = self.states[self.offsets[i] : self.offsets[i] + n]
            mask[r, :n] = 1
        return torch.from_numpy(out).to(device), torch.from_numpy(mask).to(device)


class FeatureCache:
    """Feature arrays for one (backbones, dataset) pair under `root`."""

    def __init__(self, root: Path, cnn: M.CnnBackbone, text: M.TextBackbone | None,
                 fingerprint: dict[str, object]) -> None:
        self.root = root
        self.cnn, self.text = cnn, text
        self.fp = fingerprint  # names what the features depend on (not the tails/heads)

    def image_view(self, paths: Sequence[Path], view: str, tail: int, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        key = _key(self.fp["cnn"], tail, view, seed if view.startswith("crop") else 0, [p.name for p in paths])
        file = self.root / f"img-{self.cnn.arch}-t{tail}-{view}-{key}.npy"
        if file.exists():
            return np.load(file, mmap_mode="r")
        rate = _Rate(f"CNN features ({view})", len(paths))
        chunks = []
        done = 0
        device = next(self.cnn.parameters()).device

        def load(start: int) -> torch.Tensor:  # PIL decodes and resizes without the GIL
            return M.preprocess(view_images(paths[start : start + IMG_BATCH], view, seed, start))

        starts = list(range(0, len(paths), IMG_BATCH))
        workers = max(1, min(8, (os.cpu_count() or 2) - 1))
        with torch.inference_mode(), ThreadPoolExecutor(workers) as pool:
            ahead: deque = deque(pool.submit(load, s) for s in starts[: 2 * workers])  # bounded look-ahead
            for k in range(len(starts)):
                x = ahead.popleft().result()
                if k + len(ahead) + 1 < len(starts):
                    ahead.append(pool.submit(load, starts[k + len(ahead) + 1]))
                fmap = self.cnn.trunk(x.to(device), tail)
                chunks.append(fmap.to(torch.float16).cpu().numpy())
                done += len(x)
                rate(done)
                if progress:
                    progress(done, len(paths))
        arr = np.concatenate(chunks)
        self.root.mkdir(parents=True, exist_ok=True)
        _save(file, arr)
        return arr

    def captions(self, captions: Sequence[str], layers: Sequence[int],
                 progress: Callable[[int, int], None] | None = None) -> dict[int, TextCache]:
        """Hidden states after each of `layers` (one backbone pass fills them all)."""
        assert self.text is not None
        text_key = hashlib.sha256("\n".join(captions).encode()).hexdigest()

        def files(layer: int) -> tuple[Path, Path, Path]:
            stem = f"txt-L{layer}-{_key(self.fp['text'], layer, text_key)}"
            return tuple(self.root / f"{stem}-{s}.npy" for s in ("states", "offsets", "pooled"))  # type: ignore[return-value]

        if all(f.exists() for layer in layers for f in files(layer)):
            return {layer: TextCache(np.load(files(layer)[0], mmap_mode="r"), np.load(files(layer)[1]),
                                     np.load(files(layer)[2])) for layer in layers}
        rate = _Rate(f"text features (layers {list(layers)})", len(captions))
        # Length-sorted batches: padding is most of the cost of short captions.
        order = np.argsort([len(c) for c in captions], kind="stable")
        per: dict[int, list] = {layer: [None] * len(captions) for layer in layers}
        pooled = np.zeros((len(captions), self.text.dim), np.float32)
        for start in range(0, len(order), TXT_BATCH):
            idx = order[start : start + TXT_BATCH]
            hidden, mask, final = self.text.hidden([captions[i] for i in idx], layers)
            lens = mask.sum(1).tolist()
            for layer, states in zip(layers, hidden, strict=True):
                st = states.to(torch.float16).cpu().numpy()
                for r, i in enumerate(idx):
                    per[layer][i] = st[r, : lens[r]]
            pooled[idx] = final.cpu().numpy()
            rate(start + len(idx))
            if progress:
                progress(start + len(idx), len(captions))
        self.root.mkdir(parents=True, exist_ok=True)
        out = {}
        for layer in layers:
            lengths = np.array([len(p) for p in per[layer]], np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            states_all = np.concatenate(per[layer])
            for f, a in zip(files(layer), (states_all, offsets, pooled), strict=True):
                _save(f, a)
            out[layer] = TextCache(states_all, offsets, pooled)
        return out
