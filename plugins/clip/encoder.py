"""`ClipEncoder`: any open_clip model as a Lumen `Encoder` (torch is imported on load only)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from desktop.encoders import EncoderError, LazyModel, batched, l2_normalize

from .source import LoadedModel, ModelSource, load_open_clip

if TYPE_CHECKING:
    from PIL import Image


class ClipEncoder(LazyModel):
    """Joint image/text encoder. `id` and `dim` are known before the model loads."""

    joint = True

    def __init__(self, source: ModelSource, device: str = "auto", batch_size: int = 32,
                 plugin_name: str = "clip") -> None:
        super().__init__()
        self.source = source
        self.id = f"{plugin_name}:{source.suffix}"
        self.dim = source.embed_dim
        self.device = device
        self.batch_size = max(1, int(batch_size))
        # One forward pass at a time: an interactive query waits at most one indexing
        # batch, and two threads never fight over torch's intra-op thread pool.
        self._run_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClipEncoder({self.id!r}, device={self.device!r}, loaded={self.loaded})"

    @property
    def decode_size(self) -> int | None:
        """The short side this model's preprocessing resizes photos to (loads the model), or
        None when it does not resize that way. The indexer decodes straight to it, so the
        preprocessing's own bicubic resize finds nothing to do: a second resize of a 256-px
        decode cost ~25 ms of main-thread CPU per photo, ~15% of a ViT-B-32 forward pass."""
        from torchvision.transforms import Resize

        for t in getattr(self.model.preprocess, "transforms", ()):
            if isinstance(t, Resize):
                size = [t.size] if isinstance(t.size, int) else list(t.size)
                return int(size[0]) if len(size) == 1 and t.max_size is None else None
        return None

    def _load(self) -> LoadedModel:
        return load_open_clip(self.source, self.device)

    def _finish(self, chunks: list[np.ndarray]) -> np.ndarray:
        out = np.concatenate(chunks, axis=0)
        if out.shape[1] != self.dim:
            raise EncoderError(f"{self.id} produced {out.shape[1]}-d vectors, its config says {self.dim}")
        return l2_normalize(out)

    def _forward(self, fn: Any, x: Any) -> np.ndarray:
        import torch

        with self._run_lock, torch.inference_mode():
            feats = fn(x)
        return feats.float().cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        import torch

        m: LoadedModel = self.model
        chunks = []
        for chunk in batched(images, self.batch_size):
            # Preprocessing (PIL resize, to tensor) stays outside the run lock.
            x = torch.stack([m.preprocess(im) for im in chunk]).to(m.device)
            chunks.append(self._forward(m.model.encode_image, x))
        return self._finish(chunks)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        m: LoadedModel = self.model
        chunks = []
        for chunk in batched(list(texts), self.batch_size):
            tokens = m.tokenizer(list(chunk)).to(m.device)
            chunks.append(self._forward(m.model.encode_text, tokens))
        return self._finish(chunks)
