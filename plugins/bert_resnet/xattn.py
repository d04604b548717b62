"""Torch side of the words-to-regions re-ranker (SCAN-style cross-attention, Lee et al. 2018).

Shapes of things:
- regions: the CNN's last spatial map (MobileNetV2: 1280 x 7 x 7, the map the two-tower's
  heads pool), each of the 49 cells projected by one linear layer to `region_dim` (128)
  and lifted to `dim` (256) as below; all of that runs at index time and the fp16 unit
  vectors (`stored_regions`, 49 x 256, + one row of per-photo numbers: 25.6 KB a photo)
  are what the region store keeps, so
  a query never decodes an image, runs the CNN or lifts a region;
- words: MiniLM's last-layer token states (384-d) without [CLS]/[SEP];
- both lifted to `dim` (256) by a LayerNorm + linear + residual MLP, regions get a
  learned position embedding;
- score (SCAN's t2i "LSE-free" average): every word attends over the 49 regions with
  softmax(lambda * cosine); its relevance is the cosine between the word and what it
  attended to; the pair's score is the mean relevance over the words. With
  `directions="both"` (the shipped file) SCAN's i2t too (regions attend over the words,
  mean over regions), the two averaged.
  For many captions at once (training) the attended vector's norm comes from the
  regions' 49 x 49 Gram matrix, without materialising attended vectors; for a query's
  few words, from the attended vectors themselves (5x fewer operations there).

The file (safetensors, fp16, JSON header in its metadata like the heads files) records
both backbones with their fingerprints and is refused for any other backbone.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from desktop.encoders import EncoderError
from plugins.bert_resnet.reranker import XATTN_FORMAT, XATTN_VERSION  # noqa: E402, F401


@dataclass(frozen=True)
class XAttnConfig:
    map_dim: int = 1280  # CNN channels of the last map
    positions: int = 49  # 7 x 7
    txt_dim: int = 384
    region_dim: int = 128  # what the region store keeps per cell (fp16)
    dim: int = 256
    hidden: int = 512
    dropout: float = 0.1
    smooth: float = 9.0  # SCAN's lambda_1: attention sharpness over cosines
    # "t2i": words attend to regions; "both": + regions attend to words (SCAN's i2t),
    # the two scores averaged. Files without the field are t2i.
    directions: str = "t2i"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> XAttnConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class _Lift(nn.Module):
    """LayerNorm -> linear + residual MLP (the heads' Projection shape, kept local)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.linear = nn.Linear(dim_in, dim_out, bias=False)
        self.mlp = nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.linear(x) + self.mlp(x)


class XAttn(nn.Module):
    def __init__(self, cfg: XAttnConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.region_in = nn.Linear(cfg.map_dim, cfg.region_dim)  # index time
        self.region_lift = _Lift(cfg.region_dim, cfg.hidden, cfg.dim, cfg.dropout)
        self.pos = nn.Parameter(torch.zeros(cfg.positions, cfg.dim))
        self.word_lift = _Lift(cfg.txt_dim, cfg.hidden, cfg.dim, cfg.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.05)))

    # -- index time -------------------------------------------------------------------
    def regions(self, fmap: torch.Tensor) -> torch.Tensor:
        """CNN map (n, c, h, w) -> stored region features (n, h*w, region_dim)."""
        return self.regions_from_cells(fmap.flatten(2).transpose(1, 2))

    def regions_from_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """(n, h*w, c) map cells -> (n, h*w, region_dim)."""
        return self.region_in(cells)

    # -- query time -------------------------------------------------------------------
    def lift_regions(self, stored: torch.Tensor) -> torch.Tensor:
        """(n, R, region_dim) -> unit (n, R, dim)."""
        x = self.region_lift(stored)
        if x.shape[1] == self.pos.shape[0]:
            x = x + self.pos
        return F.normalize(x, dim=-1)

    def stored_regions(self, fmap: torch.Tensor) -> torch.Tensor:
        """What the region store keeps: a map's cells projected *and* lifted (unit, dim-d),
        so a query only compares words with them (the lift is most of a re-rank's cost)."""
        return self.lift_regions(self.regions(fmap))

    def lift_words(self, states: torch.Tensor) -> torch.Tensor:
        """(b, T, txt_dim) token states -> unit (b, T, dim)."""
        return F.normalize(self.word_lift(states), dim=-1)

    def attention(self, words: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All pairs: words (b, T, d), regions (n, R, d) -> (attention (b, n, T, R),
        per-word relevance (b, n, T))."""
        sims = torch.einsum("btd,nrd->bntr", words, regions)
        att = torch.softmax(self.cfg.smooth * sims, dim=-1)
        num = (att * sims).sum(-1)  # word . attended
        (b, t, d), r = words.shape, regions.shape[1]
        if b * t * d < r * d + b * t * r:  # a query's few words: the attended vectors are cheaper
            sq = torch.einsum("bntr,nrd->bntd", att, regions).square().sum(-1).clamp_min(1e-8)
        else:  # many captions (training, dev): the regions' Gram matrix is
            gram = torch.einsum("nrd,nqd->nrq", regions, regions)
            sq = torch.einsum("bntr,nrq,bntq->bnt", att, gram, att).clamp_min(1e-8)
        return att, num / sq.sqrt()

    def pair_attention(self, words: torch.Tensor, regions: torch.Tensor, gram: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Paired rows: words (b, T, d) with regions (b, R, d) -> ((b, T, R), (b, T))."""
        sims = torch.einsum("btd,brd->btr", words, regions)
        att = torch.softmax(self.cfg.smooth * sims, dim=-1)
        num = (att * sims).sum(-1)
        if gram is None:
            gram = torch.einsum("brd,bqd->brq", regions, regions)
        sq = torch.einsum("btr,brq,btq->bt", att, gram, att).clamp_min(1e-8)
        return att, num / sq.sqrt()

    @staticmethod
    def pool(relevance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean relevance over the real words. relevance (..., T), mask (b, T) broadcast
        over the middle dims."""
        m = mask.to(relevance.dtype)
        while m.dim() < relevance.dim():
            m = m.unsqueeze(1)
        return (relevance * m).sum(-1) / m.sum(-1).clamp_min(1.0)

    def region_scores(self, words: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """SCAN's image-to-text direction for every pair: (b, n)."""
        return self._regions_to_words(torch.einsum("btd,nrd->bnrt", words, regions), words, mask)

    def _regions_to_words(self, sims: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """sims (b, ..., R, T) -> (b, ...): each region attends over the real words; its
        relevance is the cosine with what it attended to; the mean over regions."""
        lead = (1,) * (sims.dim() - 3)
        m = mask.bool().view(mask.shape[0], *lead, 1, mask.shape[1])
        att = torch.softmax((self.cfg.smooth * sims).masked_fill(~m, -1e4), dim=-1)
        wgram = torch.einsum("btd,bsd->bts", words, words)
        sq = ((att @ wgram.view(wgram.shape[0], *lead, *wgram.shape[1:])) * att).sum(-1).clamp_min(1e-8)
        return ((att * sims).sum(-1) / sq.sqrt()).mean(-1)

    def scores(self, words: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """Every caption against every image: (b, n)."""
        t2i = self.pool(self.attention(words, regions)[1], mask)
        if self.cfg.directions == "both":
            return 0.5 * (t2i + self.region_scores(words, mask, regions))
        return t2i

    def pair_scores(self, words: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor,
                    gram: torch.Tensor | None = None) -> torch.Tensor:
        """Paired rows (caption i with image i): (b,)."""
        t2i = self.pool(self.pair_attention(words, regions, gram)[1], mask)
        if self.cfg.directions != "both":
            return t2i
        return 0.5 * (t2i + self._regions_to_words(torch.einsum("btd,brd->brt", words, regions), words, mask))


def word_mask(mask: torch.Tensor) -> torch.Tensor:
    """Attention mask (b, T) -> the same without [CLS] (first) and [SEP] (last real)."""
    out = mask.clone()
    out[:, 0] = 0
    last = mask.sum(1).long() - 1
    out[torch.arange(len(mask)), last.clamp_min(0)] = 0
    return out


# --------------------------------------------------------------------------- file


BANK_TEXTS, BANK_IMAGES = "bank.texts", "bank.images"


def save(path: Path, model: XAttn, header: dict[str, Any], bank: dict[str, np.ndarray] | None = None) -> str:
    """`bank`: the training split's first-stage vectors (BANK_TEXTS, BANK_IMAGES) for the
    hubness correction, stored fp16 next to the weights."""
    from safetensors.torch import save_file

    from plugins.bert_resnet.model import _file_sha256

    header = {**header, "format": XATTN_FORMAT, "version": XATTN_VERSION, "config": model.cfg.to_dict()}
    state = {k: (v.detach().to(torch.float16) if v.dtype == torch.float32 and k != "logit_scale" else v.detach())
             .contiguous().cpu() for k, v in model.state_dict().items()}
    for k, v in (bank or {}).items():
        state[k] = torch.from_numpy(np.ascontiguousarray(v, np.float16))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={"lumen": json.dumps(header, sort_keys=True)})
    os.replace(tmp, path)
    return _file_sha256(path)[:12]


def read_header(path: Path) -> dict[str, Any]:
    from plugins.bert_resnet.reranker import read_header as read  # torch-free, for the plugin

    return read(path)


def load(path: Path, cnn: Any | None = None, text: Any | None = None) -> tuple[XAttn, dict[str, Any]]:
    """Load a re-ranker file; with backbones given, refuse a file trained on others."""
    from safetensors.torch import load_file

    from plugins.bert_resnet.model import check_backbones

    header = read_header(path)
    if cnn is not None and text is not None:
        try:
            check_backbones(header, cnn, text)
        except EncoderError as e:
            raise EncoderError(str(e).replace("heads file", f"re-ranker file {path}")
                               .replace("`lumen train-heads`", "`lumen train-reranker`")) from None
    model = XAttn(XAttnConfig.from_dict(header["config"]))
    state = {k: v.float() for k, v in load_file(str(path)).items() if not k.startswith("bank.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EncoderError(f"re-ranker file {path} does not fit its config: missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}")
    return model.eval().requires_grad_(False), header


def load_bank(path: Path) -> dict[str, np.ndarray]:
    """The file's hubness bank (float32, unit rows), empty for a file without one."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return {k: unit_rows(f.get_tensor(k).astype(np.float32)) for k in f.keys() if k.startswith("bank.")}


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def hubness(vectors: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """CSLS's r (Conneau et al. 2018): each vector's mean cosine to its k nearest rows of
    the other modality's bank. A photo (or caption) close to many queries of a training
    split is a hub that the pooled cosine ranks too high for everything."""
    sims = unit_rows(np.asarray(vectors, np.float32)) @ bank.T
    k = min(k, sims.shape[1])
    return np.partition(sims, -k, axis=1)[:, -k:].mean(1).astype(np.float32)


def zsum(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The fixed mixing rule (not tuned on dev): each score standardised over the candidate
    list, then added with equal weights."""
    def z(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        sd = x.std()
        return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)

    return (z(first) + z(second)).astype(np.float32)
