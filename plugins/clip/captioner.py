"""`CocaCaptioner`: image -> caption with an open_clip CoCa model.

Decoding is our own small beam search over `CoCa.forward` instead of `CoCa.generate`:
open_clip 3.x's `generate` needs `transformers.BeamSearchScorer`, which transformers 5
removed (and a plain `pip install lumen` has no transformers at all). The search is the
usual one: log-prob beams, EOS blocked for `min_len` tokens, finished beams frozen, best
beam by length-normalised score.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from desktop.encoders import EncoderError, LazyModel, batched

from .source import LoadedModel, ModelSource, load_open_clip

if TYPE_CHECKING:
    from PIL import Image

_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:'])")


def clean_caption(text: str) -> str:
    """Drop CLIP's special tokens and tidy spacing ("a dog on a beach ." -> "a dog on a beach.")."""
    text = text.replace("<start_of_text>", " ").split("<end_of_text>")[0]
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text).strip()


def beam_search(model: Any, images: Any, *, sot: int, eos: int, pad: int, seq_len: int,
                min_len: int, num_beams: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Token ids (without SOT/EOS) of the best caption for each image in a (B, C, H, W) batch."""
    import torch
    import torch.nn.functional as F

    dev = images.device
    n, k = images.shape[0], max(1, num_beams)
    image_latent, image_embs = model._encode_image(images)
    image_latent = image_latent.repeat_interleave(k, dim=0)
    image_embs = image_embs.repeat_interleave(k, dim=0)

    tokens = torch.full((n * k, 1), sot, dtype=torch.long, device=dev)
    scores = torch.zeros(n, k, device=dev)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    done = torch.zeros(n * k, dtype=torch.bool, device=dev)
    lengths = torch.zeros(n * k, device=dev)
    rows = torch.arange(n, device=dev)[:, None] * k

    for step in range(seq_len - 1):
        logits = model(None, tokens, image_latent=image_latent, image_embs=image_embs,
                       output_labels=False)["logits"][:, -1].float()
        logp = F.log_softmax(logits, dim=-1)
        if step < min_len:
            logp[:, eos] = float("-inf")
        # A finished beam only continues with padding, at no cost, so its score is frozen.
        logp[done] = float("-inf")
        logp[done, pad] = 0.0
        vocab = logp.shape[-1]
        top, idx = (scores.reshape(-1, 1) + logp).reshape(n, k * vocab).topk(k, dim=-1)
        src = (rows + torch.div(idx, vocab, rounding_mode="floor")).reshape(-1)
        tok = (idx % vocab).reshape(-1)
        was_done = done[src]
        tokens = torch.cat([tokens[src], tok[:, None]], dim=1)
        lengths = lengths[src] + (~was_done).float()
        done = was_done | (tok == eos)
        scores = top
        if bool(done.all()):
            break

    final = scores.reshape(-1) / lengths.clamp(min=1.0) ** length_penalty
    best = (rows[:, 0] + final.reshape(n, k).argmax(dim=-1)).tolist()
    out = []
    for r in best:
        seq = tokens[r, 1:].tolist()
        out.append(seq[: seq.index(eos)] if eos in seq else seq)
    return out


class CocaCaptioner(LazyModel):
    """Captions photos; loads lazily like the encoders."""

    def __init__(self, source: ModelSource, device: str = "auto", *, seq_len: int = 30, min_len: int = 5,
                 num_beams: int = 3, batch_size: int = 8, plugin_name: str = "coca") -> None:
        super().__init__()
        if seq_len <= min_len:
            raise EncoderError(f"seq_len ({seq_len}) must be larger than min_len ({min_len})")
        self.source = source
        self.id = f"{plugin_name}:{source.suffix}"
        self.device = device
        self.seq_len, self.min_len, self.num_beams = int(seq_len), int(min_len), int(num_beams)
        self.batch_size = max(1, int(batch_size))
        self._run_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CocaCaptioner({self.id!r}, device={self.device!r}, loaded={self.loaded})"

    def _load(self) -> LoadedModel:
        loaded = load_open_clip(self.source, self.device)
        if not hasattr(loaded.model, "text_decoder"):
            raise EncoderError(f"{self.source.what} is not a CoCa model (it has no text decoder to caption with)")
        context = getattr(loaded.model, "context_length", 76)
        if self.seq_len > context:
            raise EncoderError(f"seq_len {self.seq_len} is longer than the model's context ({context})")
        return loaded

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        if len(images) == 0:
            return []
        import torch

        m: LoadedModel = self.model
        tok = m.tokenizer
        captions: list[str] = []
        for chunk in batched(images, self.batch_size):
            x = torch.stack([m.preprocess(im) for im in chunk]).to(m.device)
            with self._run_lock, torch.inference_mode():
                ids = beam_search(
                    m.model, x, sot=tok.sot_token_id, eos=tok.eot_token_id, pad=getattr(m.model, "pad_id", 0),
                    seq_len=self.seq_len, min_len=self.min_len, num_beams=self.num_beams,
                )
            captions.extend(clean_caption(tok.decode(seq)) for seq in ids)
        return captions
