"""`colors`: a tiny deterministic encoder with no weights.

Image vector = a soft colour histogram (4x4x4 RGB bins) plus a 2x2 layout of mean colours;
text vector = the same histogram for the colour words in the text ("red", "dark blue").
It is not semantic, but it is joint, instant and exactly reproducible, which makes it the
encoder of Lumen's tests and a way to try the app on a machine with no model at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from desktop.encoders import EncoderError, ModelInfo, l2_normalize

BINS = 4
HIST_DIM = BINS**3
LAYOUT_DIM = 2 * 2 * 3
DIM = HIST_DIM + LAYOUT_DIM

COLOR_WORDS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
    "pink": (245, 150, 190),
    "brown": (120, 75, 35),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "cyan": (30, 210, 220),
    "magenta": (220, 40, 200),
}
MODIFIERS = {"dark": 0.5, "light": 1.4, "bright": 1.2, "pale": 1.5}


def _soft_hist(pixels: np.ndarray) -> np.ndarray:
    """pixels (n, 3) uint8 -> (HIST_DIM,) with each pixel spread over neighbouring bins."""
    pos = pixels.astype(np.float32) / 256.0 * BINS - 0.5
    lo = np.clip(np.floor(pos), 0, BINS - 1).astype(np.int64)
    hi = np.clip(lo + 1, 0, BINS - 1)
    w_hi = np.clip(pos - lo, 0, 1)
    hist = np.zeros(HIST_DIM, np.float64)
    for cr in (0, 1):
        r = hi[:, 0] if cr else lo[:, 0]
        wr = w_hi[:, 0] if cr else 1 - w_hi[:, 0]
        for cg in (0, 1):
            g = hi[:, 1] if cg else lo[:, 1]
            wg = w_hi[:, 1] if cg else 1 - w_hi[:, 1]
            for cb in (0, 1):
                b = hi[:, 2] if cb else lo[:, 2]
                wb = w_hi[:, 2] if cb else 1 - w_hi[:, 2]
                # bincount instead of np.add.at: same sums, several times faster
                hist += np.bincount((r * BINS + g) * BINS + b, weights=wr * wg * wb, minlength=HIST_DIM)
    return np.sqrt(hist.astype(np.float32) / max(len(pixels), 1))


class ColorsEncoder:
    joint = True
    dim = DIM
    meaningful = False  # matches colour words only: no general tags or captions from it

    def __init__(self, variant: str = "hist-v1") -> None:
        if variant != "hist-v1":
            raise EncoderError(f"colors encoder has one model, 'hist-v1' (asked for {variant!r})")
        self.id = f"colors:{variant}"

    def encode_images(self, images: Sequence) -> np.ndarray:
        out = np.zeros((len(images), DIM), np.float32)
        for i, image in enumerate(images):
            small = np.asarray(image.convert("RGB").resize((32, 32)))
            out[i, :HIST_DIM] = _soft_hist(small.reshape(-1, 3))
            quads = small.reshape(2, 16, 2, 16, 3).mean(axis=(1, 3)) / 255.0
            out[i, HIST_DIM:] = 0.35 * quads.ravel()
        return l2_normalize(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), np.float32)
        for i, text in enumerate(texts):
            words = text.lower().replace(",", " ").split()
            scale = 1.0
            found = False
            for word in words:
                if word in MODIFIERS:
                    scale = MODIFIERS[word]
                elif word in COLOR_WORDS:
                    rgb = np.clip(np.array(COLOR_WORDS[word], np.float32) * scale, 0, 255).astype(np.uint8)
                    out[i, :HIST_DIM] += _soft_hist(rgb[None, :])
                    out[i, HIST_DIM:] += 0.35 * np.tile(rgb / 255.0, 4)
                    scale, found = 1.0, True
            if not found:
                # No colour word: a fixed pseudo-random direction, so any text still gets a
                # deterministic vector (and two different texts rarely match each other).
                seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
                out[i] = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return l2_normalize(out)


class ColorsPlugin:
    name = "colors"
    default_model = "hist-v1"

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                "colors:hist-v1",
                "colour histogram; no weights, not semantic (tests, demos)",
                True,
                "built in",
            )
        ]

    def create(
        self, model: str | None = None, weights: str | None = None, device: str = "auto"
    ) -> ColorsEncoder:
        if weights:
            raise EncoderError("the colors encoder takes no weights file")
        return ColorsEncoder(model or self.default_model)


encoder_plugin = ColorsPlugin()
