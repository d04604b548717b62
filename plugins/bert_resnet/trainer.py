"""The training loop behind `lumen train-heads` (torch; imported only when training).

Recipe (each part measured on Flickr8k dev; the log is in heads/TRAINING.md):
- the frozen parts of both towers run once per image view / caption (features.py);
  with a frozen CNN the heads' input vectors are then computed once, and an epoch is a
  few seconds of small matrix products;
- image features: pooled outputs of the CNN's last stages + its class probabilities;
- augmentation = cached image views (mirror, optionally seeded random crops) + all the
  captions of each image in every batch (multi-positive InfoNCE, learned temperature);
- an ensemble of members, each with its own initialisation and data order;
- optional: fine-tuned last CNN stages / BERT layers on the cached states (measured:
  no gain worth their cost on Flickr8k), a VSE++ hardest-negative hinge;
- AdamW with warm-up + cosine decay, a smaller learning rate on pretrained tails;
- the best epoch by dev recall is kept; the heads file records backbones, data, metrics.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from desktop.evaluation import CaptionSet, load_captions, quick_recall
from plugins.bert_resnet import CnnRef, file_sha256, parse_model
from plugins.bert_resnet import model as M
from plugins.bert_resnet.config import TrainConfig
from plugins.bert_resnet.features import FeatureCache, TextCache
from plugins.bert_resnet.train import TrainReport

log = logging.getLogger(__name__)

MAX_CAPTIONS = 5  # per image and batch with all_captions (Flickr8k and COCO have 5)


@dataclass
class Split:
    data: CaptionSet
    views: dict[str, np.ndarray]  # view -> trunk features (n_images, ...)
    text: TextCache


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _score(metrics: dict[str, float], select_by: str) -> float:
    if select_by == "rsum1":
        return metrics["t2i_r1"] + metrics["i2t_r1"]
    if select_by == "rsum":
        return sum(metrics[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10))
    return metrics[select_by]


def _image_input(arr: np.ndarray, idx: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.from_numpy(np.asarray(arr[idx])).to(device, non_blocking=True).float()


def _text_input(text: TextCache, idx: Sequence[int], tuned: bool, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    if tuned:
        return text.batch(idx, device)
    return torch.from_numpy(np.asarray(text.pooled[np.asarray(idx)], dtype=np.float32)).to(device), None


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def embed_split(heads: M.JointHeads, split: Split, views: Sequence[str] = ("orig",),
                batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors for every image (mean over `views`) and caption of a split."""
    heads.eval()
    dev = _device_of(heads)
    n = len(split.data.images)
    img = np.zeros((n, heads.cfg.out_dim), np.float32)
    for view in views:
        arr = split.views[view]
        for s in range(0, n, batch):
            x = _image_input(arr, np.arange(s, min(n, s + batch)), dev)
            img[s : s + batch] += heads.image_from_trunk(x).cpu().numpy()
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    caps = len(split.data.captions)
    txt = np.zeros((caps, heads.cfg.out_dim), np.float32)
    tuned = bool(heads.cfg.txt_tail)
    order = np.argsort(np.diff(split.text.offsets))  # similar lengths together: less padding
    for s in range(0, caps, batch):
        idx = order[s : s + batch]
        states, mask = _text_input(split.text, idx, tuned, dev)
        txt[idx] = heads.text_from_states(states, mask).cpu().numpy()
    return img, txt


def evaluate(heads: M.JointHeads, split: Split, views: Sequence[str] = ("orig",)) -> dict[str, float]:
    img, txt = embed_split(heads, split, views)
    return quick_recall(img, txt, split.data.caption_image)


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor,
                     cfg: TrainConfig, owner: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) over a batch of unit vectors, with a learned temperature.

    Without `owner`, row i of `txt` pairs with row i of `img` (+ optionally VSE++'s hinge on
    the hardest negative of each row/column). With `owner` (the image row of each caption),
    several captions share an image: text->image is plain cross-entropy, image->text counts
    every caption of the image as a positive (multi-positive InfoNCE)."""
    sims = img @ txt.T
    scale = logit_scale.clamp(max=math.log(100.0)).exp()
    if owner is not None:
        logits = scale * sims  # (images, captions)
        t2i = F.cross_entropy(logits.T, owner, label_smoothing=cfg.label_smoothing)
        pos = owner[None, :] == torch.arange(len(img), device=img.device)[:, None]
        i2t = (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~pos, -torch.inf), 1)).mean()
        return 0.5 * (t2i + i2t)
    target = torch.arange(len(img), device=img.device)
    loss = 0.5 * (F.cross_entropy(scale * sims, target, label_smoothing=cfg.label_smoothing)
                  + F.cross_entropy(scale * sims.T, target, label_smoothing=cfg.label_smoothing))
    if cfg.hard_negative_weight > 0:
        pos = sims.diag()
        masked = sims - 10.0 * torch.eye(len(img), device=img.device)
        hinge_i2t = (cfg.hard_negative_margin + masked.max(1).values - pos).clamp_min(0)
        hinge_t2i = (cfg.hard_negative_margin + masked.max(0).values - pos).clamp_min(0)
        loss = loss + cfg.hard_negative_weight * (hinge_i2t.mean() + hinge_t2i.mean())
    return loss


def image_feature_views(heads: M.JointHeads, views: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Frozen CNN stages: the heads' input vectors, computed once from the cached trunk maps."""
    out = {}
    dev = _device_of(heads)
    with torch.inference_mode():
        heads.eval()
        for name, arr in views.items():
            chunks = [heads.image_features(_image_input(arr, np.arange(s, min(len(arr), s + 256)), dev))
                      for s in range(0, len(arr), 256)]
            out[name] = torch.cat(chunks).cpu().numpy()
    return out


def fit(cfg: TrainConfig, heads: M.JointHeads, train: Split, dev: Split | None,
        progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, torch.Tensor], list[dict], int]:
    """Train; returns (best state, per-epoch history, best epoch)."""
    seed_everything(cfg.seed)
    device = _device_of(heads)
    img_tail_params = [p for p in heads.img_tail.parameters() if p.requires_grad]
    txt_tail_params = list(heads.txt_tail.parameters())
    tail_ids = {id(p) for p in img_tail_params + txt_tail_params}
    rest = [p for p in heads.parameters() if id(p) not in tail_ids and p.requires_grad]
    no_decay = {id(heads.logit_scale)} | {id(p) for p in rest if p.dim() < 2}
    groups = [
        {"params": [p for p in rest if id(p) not in no_decay], "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": [p for p in rest if id(p) in no_decay], "lr": cfg.lr, "weight_decay": 0.0},
    ]
    if img_tail_params:
        groups.append({"params": img_tail_params, "lr": cfg.tail_lr, "weight_decay": cfg.weight_decay})
    if txt_tail_params:
        groups.append({"params": txt_tail_params, "lr": cfg.txt_tail_lr or cfg.tail_lr,
                       "weight_decay": cfg.weight_decay})
    opt = torch.optim.AdamW(groups)
    base_lrs = [g["lr"] for g in opt.param_groups]
    n = len(train.data.images)
    steps_per_epoch = n // cfg.batch
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    caps_of = [train.data.captions_of(i) for i in range(n)]
    views = [v for v in cfg.views if v in train.views]
    tuned_text = bool(cfg.heads.txt_tail)
    # Each member sees its own order of images, views and captions: the ensemble's
    # members differ by more than their initialisation.
    gens = [np.random.default_rng([cfg.seed, k]) for k in range(cfg.heads.members)]
    history: list[dict] = []
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        heads.train()
        t0 = time.monotonic()
        perms = [g.permutation(n) for g in gens]
        losses = []
        for b in range(steps_per_epoch):
            lr_mult = min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
            for g, base in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = base * lr_mult
            loss = torch.zeros((), device=device)
            for k, gen in enumerate(gens):
                idx = perms[k][b * cfg.batch : (b + 1) * cfg.batch]
                # One random view per image: unique images per batch, so the only positives
                # among the captions are the image's own.
                view_of = gen.integers(0, len(views), len(idx))
                img_in = torch.empty((len(idx), *train.views[views[0]].shape[1:]), dtype=torch.float32,
                                     device=device)
                for v in range(len(views)):
                    rows = np.flatnonzero(view_of == v)
                    if len(rows):
                        img_in[torch.from_numpy(rows).to(device)] = _image_input(train.views[views[v]], idx[rows],
                                                                                 device)
                if cfg.all_captions:  # up to MAX_CAPTIONS of each image, all positives
                    caps = [gen.permutation(caps_of[i])[:MAX_CAPTIONS] for i in idx]
                    cap_idx = np.concatenate(caps)
                    owner = torch.from_numpy(np.repeat(np.arange(len(idx)), [len(c) for c in caps])).to(device)
                else:  # one random caption per image
                    cap_idx, owner = np.array([caps_of[i][gen.integers(len(caps_of[i]))] for i in idx]), None
                states, mask = _text_input(train.text, cap_idx, tuned_text, device)
                img = heads.image_part(heads.image_input(img_in), k)
                txt = heads.text_part(heads.text_pooled(states, mask), k)
                loss = loss + contrastive_loss(img, txt, heads.logit_scale[k], cfg, owner)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item() / len(gens))
            step += 1
            if progress:
                progress(step, total)
        rec: dict[str, float] = {"epoch": epoch, "loss": float(np.mean(losses)),
                                 "temp": float((1 / heads.logit_scale.detach().exp()).mean()), "seconds": time.monotonic() - t0}
        if dev is not None:
            rec.update(evaluate(heads, dev, ("orig", "flip") if cfg.heads.flip_tta and "flip" in dev.views
                                else ("orig",)))
            score = _score(rec, cfg.select_by)
            if score > best[0]:
                best = (score, epoch, {k: v.detach().clone() for k, v in heads.state_dict().items()})
        log.info("epoch %d/%d  loss %.3f  temp %.4f  %s  (%.0f s)", epoch, cfg.epochs, rec["loss"], rec["temp"],
                 "  ".join(f"{k} {v:.1f}" for k, v in rec.items() if k.startswith(("t2i", "i2t"))),
                 rec["seconds"])
        history.append(rec)
    if dev is None:  # nothing to select by: the last epoch
        best = (0.0, cfg.epochs, {k: v.detach().clone() for k, v in heads.state_dict().items()})
    return best[2], history, best[1]


def load_split(fc: FeatureCache, images_dir: Path, data: CaptionSet, views: Sequence[str], cut: int,
               txt_layer: int, seed: int) -> Split:
    paths = [images_dir / n for n in data.images]
    arrs = {v: fc.image_view(paths, v, cut, seed) for v in views}
    text = fc.captions(data.captions, [txt_layer])[txt_layer]
    return Split(data, arrs, text)


def run(images_dir: str | Path, captions_tsv: str | Path, split: str | Path, val: str | Path | None,
                out: str | Path, epochs: int = 20, seed: int = 0, model: str = "all-MiniLM-L6-v2+mobilenet_v2",
                cache: str | Path | None = None, config: TrainConfig | None = None, device: str = "cpu",
                backbones: tuple[M.CnnBackbone, M.TextBackbone] | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> TrainReport:
    """See train.train_heads."""
    started = time.monotonic()
    cfg = config or TrainConfig()
    cfg.epochs, cfg.seed = epochs, seed
    seed_everything(seed)
    torch.set_grad_enabled(True)
    images_dir, out = Path(images_dir), Path(out)
    if backbones is not None:  # tests: tiny towers whose weights come from nowhere
        cnn, text = backbones
        cnn_ref = CnnRef(cnn.arch, None)
    else:
        text_ref, cnn_ref, _ = parse_model(model)
        cnn, text = M.build_cnn(cnn_ref, device), M.TextBackbone(text_ref, device)
    if cache is None:
        from desktop.settings import paths

        cache = paths().cache / "bert_resnet"
    fp = {"cnn": f"{cnn.arch}:{cnn.weights}:{M.fingerprint_cnn(cnn)[:8]}",
          "text": f"{text.ref.name}:{M.fingerprint_text(text)[:8]}"}
    fc = FeatureCache(Path(cache), cnn, text, fp)
    txt_layer = text.n_layers - cfg.heads.txt_tail
    train_data = load_captions(captions_tsv, split, images_dir)
    if not train_data.images:
        raise ValueError(f"no captioned images from {split} found in {images_dir}")
    log.info("train: %d images, %d captions", len(train_data.images), len(train_data.captions))
    t_feat = time.monotonic()
    train = load_split(fc, images_dir, train_data, cfg.views, cfg.heads.cut, txt_layer, seed)
    dev = None
    if val:
        dev_data = load_captions(captions_tsv, val, images_dir)
        dev_views = ("orig", "flip") if cfg.heads.flip_tta else ("orig",)
        dev = load_split(fc, images_dir, dev_data, dev_views, cfg.heads.cut, txt_layer, seed)
        log.info("dev: %d images, %d captions", len(dev_data.images), len(dev_data.captions))
    feature_s = time.monotonic() - t_feat
    heads = M.build_heads(cfg.heads, cnn, text).to(device)
    if not cfg.heads.img_tail:  # frozen CNN: its features once, then train on vectors
        train.views = image_feature_views(heads, train.views)
        if dev is not None:
            dev.views = image_feature_views(heads, dev.views)
    state, history, best_epoch = fit(cfg, heads, train, dev,
                                     (lambda d, t: progress("train", d, t)) if progress else None)
    heads.load_state_dict(state)
    heads = heads.cpu()
    best = history[best_epoch - 1]
    dev_metrics = {k: v for k, v in best.items() if k.startswith(("t2i", "i2t"))}
    header = {
        "text_backbone": {"name": text.ref.name, "short": text.ref.short, "dim": text.dim,
                          "layers": text.n_layers, "probe": M.fingerprint_text(text)},
        "image_backbone": {"arch": cnn.arch, "dim": cnn.feat_dim, "weights": cnn.weights,
                           "weights_tag": cnn_ref.weights_tag if backbones is None else None,
                           "weights_sha256": file_sha256(Path(cnn_ref.path)) if cnn_ref.path else None,
                           "probe": M.fingerprint_cnn(cnn)},
        "training": {"images_dir": str(images_dir), "captions": Path(captions_tsv).name,
                     "captions_sha256": file_sha256(Path(captions_tsv))[:16],
                     "split": Path(split).name, "train_images": len(train_data.images),
                     "train_captions": len(train_data.captions), "val": Path(val).name if val else None,
                     "epochs": cfg.epochs, "best_epoch": best_epoch, "seed": seed,
                     "seconds": round(time.monotonic() - started, 1),
                     "recipe": {k: v for k, v in asdict(cfg).items() if k != "heads"}},
        "metrics": {"dev": dev_metrics} if dev is not None else {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    digest = M.save_heads(out, heads, header)
    elapsed = time.monotonic() - started
    log.info("wrote %s (heads-%s), best epoch %d, %.0f s total", out, digest, best_epoch, elapsed)
    return TrainReport(str(out), digest, best_epoch, dev_metrics, history, elapsed, feature_s, asdict(cfg))
