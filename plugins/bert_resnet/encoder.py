"""The bert_resnet Encoder (+ Tagger). Cheap to construct; the towers load on first use."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from desktop.encoders import EncoderError, LazyModel, batched, l2_normalize, resolve_device
from plugins.bert_resnet import CnnRef, TextRef, heads_hash, read_heads_header
from plugins.bert_resnet.config import HeadsConfig

log = logging.getLogger(__name__)

BATCH = 32


@dataclass
class _Loaded:
    cnn: Any  # model.CnnBackbone
    text: Any | None  # model.TextBackbone (only with heads)
    heads: Any | None  # model.JointHeads
    device: str


class BertResnetEncoder(LazyModel):
    """Image vectors: the joint-space projection when heads are loaded, else the CNN's
    pooled features. Text vectors need heads. `tags()` are the CNN's ImageNet classes."""

    def __init__(self, text: TextRef, cnn: CnnRef, heads_path: Path | None, device: str = "auto",
                 backbones: tuple[Any, Any] | None = None) -> None:
        super().__init__()
        self.text_ref, self.cnn_ref, self.heads_path = text, cnn, heads_path
        self._device = device
        self._backbones = backbones  # tests inject tiny (cnn, text) towers here
        self._run_lock = threading.Lock()
        base = f"bert_resnet:{text.short}+{cnn.arch}"
        if heads_path is not None:
            self.header: dict[str, Any] | None = read_heads_header(heads_path)
            img, txt = self.header["image_backbone"], self.header["text_backbone"]
            if img["arch"] != cnn.arch or txt["name"] != text.name:
                raise EncoderError(
                    f"heads file {heads_path} was trained for {txt['name']} + {img['arch']}, "
                    f"not {text.name} + {cnn.arch}; train heads for these with `lumen train-heads`")
            self.id = f"{base}:heads-{heads_hash(heads_path)}"
            self.dim = HeadsConfig.from_dict(self.header["config"]).out_dim
            self.joint = True
        else:
            self.header = None
            self.id = f"{base}:noheads-{cnn.weights_tag}"
            self.dim = cnn.dim
            self.joint = False

    def __repr__(self) -> str:
        return f"BertResnetEncoder({self.id})"

    def _load(self) -> _Loaded:

        from plugins.bert_resnet import model as M

        device = resolve_device(self._device)
        if self._backbones is not None:
            cnn, text = self._backbones
        else:
            cnn = M.build_cnn(self.cnn_ref, device)
            text = M.shared_text_backbone(self.text_ref, device) if self.heads_path is not None else None
        heads = None
        if self.heads_path is not None:
            heads, _ = M.load_heads(self.heads_path, cnn, text, device)
        log.info("loaded %s on %s (CNN weights: %s)", self.id, device, cnn.weights)
        return _Loaded(cnn, text, heads, device)

    # -- Encoder --------------------------------------------------------------

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([self._images(b)[0] for b in batched(images, BATCH)])

    def encode_images_with_maps(self, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and the CNN's last spatial map (n, c, h, w) float16 from the same pass:
        what the attention re-ranker's region features are made of."""
        if not len(images):
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 0, 0, 0), np.float16)
        parts = [self._images(b, want_map=True) for b in batched(images, BATCH)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[2] for p in parts])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not self.joint:
            raise EncoderError(
                f"{self.id} has no projection heads, so it cannot search by text (image search and tags "
                "work). Train heads with `lumen train-heads ...` and pass them with --weights, or use the "
                "default bert_resnet model, which ships heads.")
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        import torch

        m = self.model
        out = []
        with self._run_lock, torch.inference_mode():
            for batch in batched(list(texts), 256):
                if m.heads.cfg.txt_tail:
                    (states,), mask, _ = m.text.hidden(batch, [m.text.n_layers - m.heads.cfg.txt_tail])
                    out.append(m.heads.text_from_states(states, mask).cpu().numpy())
                elif len(batch) == 1:  # a query: its states are kept for the re-ranker (hidden_one)
                    out.append(m.heads.text_from_states(m.text.hidden_one(batch[0])[2]).cpu().numpy())
                else:
                    pooled = torch.from_numpy(m.text.encode(batch)).to(m.device)
                    out.append(m.heads.text_from_states(pooled).cpu().numpy())
        return l2_normalize(np.concatenate(out))

    # -- Tagger ---------------------------------------------------------------

    def tags(self, images: Sequence[Any], top_k: int = 5) -> list[list[tuple[str, float]]]:
        out: list[list[tuple[str, float]]] = []
        for batch in batched(images, BATCH):
            out.extend(self._images(batch, want_tags=top_k)[1])
        return out

    # -- shared image path: one trunk pass feeds both the embedding and the tags ---------

    def _images(self, images: Sequence[Any], want_tags: int = 0, want_map: bool = False
                ) -> tuple[np.ndarray, list, np.ndarray | None]:
        import torch

        from plugins.bert_resnet import model as M

        m = self.model
        heads = m.heads
        tail = heads.cfg.cut if heads is not None else 0
        views = [False, True] if heads is not None and heads.cfg.flip_tta else [False]
        vecs = []
        fmap = None
        tags: list[list[tuple[str, float]]] = []
        with self._run_lock, torch.inference_mode():
            for flip in views:
                x = M.preprocess(images, flip=flip).to(m.device)
                trunk = m.cnn.trunk(x, tail)
                if not flip and (want_tags or heads is None):
                    pooled = m.cnn.pool(m.cnn.run_tail(trunk, tail))
                    if want_tags:
                        probs = m.cnn.logits(pooled).softmax(-1)
                        p, idx = probs.topk(min(want_tags, probs.shape[-1]), dim=-1)
                        tags = [[(m.cnn.categories[j], float(v)) for v, j in zip(pr, ix, strict=True)]
                                for pr, ix in zip(p.tolist(), idx.tolist(), strict=True)]
                    if heads is None:
                        vecs.append(pooled.cpu().numpy())
                if heads is not None:
                    feats, last = heads.image_features_and_map(trunk)
                    vecs.append(heads.image_from_trunk(feats).cpu().numpy())
                    if want_map and not flip:
                        fmap = last.to(torch.float16).cpu().numpy()
                elif want_map and not flip:
                    fmap = m.cnn.run_tail(trunk, tail).to(torch.float16).cpu().numpy()
        return l2_normalize(np.mean(vecs, axis=0)), tags, fmap
