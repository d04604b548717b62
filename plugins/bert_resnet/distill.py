"""Heads for another text tower by distillation: queries in any language on the same
image vectors.

    lumen train-heads --distill TEACHER.safetensors --student paraphrase-multilingual-MiniLM-L12-v2 \\
        --captions captions.tsv --split train.txt [--val dev.txt]

The teacher is a trained heads file (e.g. the shipped all-MiniLM-L6-v2 + MobileNetV2
heads). The student heads keep the teacher's image side unchanged and learn a new text
projection so that ``student(caption) ≈ teacher(caption)`` in the joint space (cosine loss
on the teacher's own text vectors). Why English captions are enough: the multilingual
sentence-transformers models (paraphrase-multilingual-*) were themselves distilled so
that a sentence and its translations land together in their space; a projection learned
on English captions carries the other languages along (Reimers & Gurevych 2020).

Torch is imported here; the CLI imports this module only when --distill is given.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from plugins.bert_resnet import CnnRef, TextRef, find_cnn_weights, heads_hash, read_heads_header
from plugins.bert_resnet import model as M
from plugins.bert_resnet.config import HeadsConfig

log = logging.getLogger(__name__)


@dataclass
class DistillReport:
    out: str
    heads_hash: str
    teacher: str  # the teacher heads file's hash
    student: str  # the student text tower
    captions: int
    history: list[dict[str, float]]  # per epoch: train loss, val cosine to the teacher
    val_cosine_before: float  # the fresh projection's mean cosine to the teacher on held-out captions
    val_cosine: float  # after training
    val_r1: float  # held-out caption -> its own teacher vector, top-1 among all held-out (%)
    seconds: float


@torch.inference_mode()
def teacher_vectors(heads: M.JointHeads, text: M.TextBackbone, captions: Sequence[str],
                    batch: int = 256) -> np.ndarray:
    """The teacher's joint text vectors (what its encoder's encode_texts returns)."""
    out = []
    for s in range(0, len(captions), batch):
        chunk = list(captions[s : s + batch])
        if heads.cfg.txt_tail:
            (states,), mask, _ = text.hidden(chunk, [text.n_layers - heads.cfg.txt_tail])
            out.append(heads.text_from_states(states, mask).cpu().numpy())
        else:
            out.append(heads.text_from_states(torch.from_numpy(text.encode(chunk))).cpu().numpy())
    v = np.concatenate(out).astype(np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _student_heads(teacher: M.JointHeads, cnn: M.CnnBackbone, student: M.TextBackbone) -> M.JointHeads:
    """The teacher's heads with a fresh text projection for the student's pooled embedding
    (no tuned text layers: the student's own layers stay as they are)."""
    cfg = dataclasses.replace(teacher.cfg, txt_tail=0)
    heads = M.build_heads(cfg, cnn, student)
    keep = {k: v for k, v in teacher.state_dict().items() if not k.startswith(("txt_proj.", "txt_tail."))}
    missing, unexpected = heads.load_state_dict(keep, strict=False)
    assert not unexpected and all(k.startswith("txt_proj.") for k in missing), (missing, unexpected)
    heads.requires_grad_(False)
    heads.txt_proj.requires_grad_(True)
    return heads


def _val_stats(heads: M.JointHeads, feats: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    with torch.inference_mode():
        heads.eval()
        pred = heads.text_from_states(feats)
        heads.train()
    cos = float((pred * target).sum(1).mean())
    r1 = float((pred @ target.T).argmax(1).eq(torch.arange(len(pred))).float().mean()) * 100
    return cos, r1


def distill(teacher_path: Path, captions: Sequence[str], out: Path, student: str | M.TextBackbone,
            cnn: M.CnnBackbone | None = None, teacher_text: M.TextBackbone | None = None,
            epochs: int = 40, lr: float = 2e-3, batch: int = 256, val_fraction: float = 0.1, seed: int = 0,
            progress: Callable[[str, int, int], None] | None = None) -> DistillReport:
    """Train student heads from a teacher heads file on `captions`; write them to `out`.
    `cnn`, `teacher_text` and a TextBackbone `student` replace the real towers (tests)."""
    started = time.monotonic()
    header = read_heads_header(teacher_path)
    if cnn is None:
        arch = header["image_backbone"]["arch"]
        weights = find_cnn_weights(arch)
        cnn = M.build_cnn(CnnRef(arch, str(weights) if weights else None))
    if teacher_text is None:
        teacher_text = M.TextBackbone(TextRef(header["text_backbone"]["name"]))
    student_text = student if isinstance(student, M.TextBackbone) else M.TextBackbone(TextRef.parse(student))
    teacher, _ = M.load_heads(teacher_path, cnn, teacher_text)
    captions = list(dict.fromkeys(c.strip() for c in captions if c.strip()))
    if len(captions) < 10:
        raise ValueError(f"distillation needs captions: got {len(captions)}")
    log.info("distilling %s -> %s on %d captions", teacher_text.ref.name, student_text.ref.name, len(captions))
    target = torch.from_numpy(teacher_vectors(teacher, teacher_text, captions))
    feats = torch.from_numpy(student_text.encode(captions))

    torch.manual_seed(seed)
    order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(len(captions) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    heads = _student_heads(teacher, cnn, student_text).train()
    before, _ = _val_stats(heads, feats[val], target[val])
    opt = torch.optim.AdamW([p for p in heads.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    history: list[dict[str, float]] = []
    best_state, best_cos, step = None, -2.0, 0
    for epoch in range(1, epochs + 1):
        perm = train[torch.randperm(len(train))]
        total = 0.0
        for s in range(0, len(perm), batch):
            idx = perm[s : s + batch]
            pred = heads.text_from_states(feats[idx])
            loss = (1 - F.cosine_similarity(pred, target[idx], dim=1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            step += 1
            if progress:
                progress("distill", step, steps)
        cos, r1 = _val_stats(heads, feats[val], target[val])
        history.append({"epoch": epoch, "loss": total / len(train), "val_cosine": cos, "val_r1": r1})
        if cos > best_cos:
            best_cos = cos
            best_state = {k: v.clone() for k, v in heads.state_dict().items()}
    assert best_state is not None
    heads.load_state_dict(best_state)
    heads.eval()
    cos, r1 = _val_stats(heads, feats[val], target[val])
    new_header: dict[str, Any] = {
        "text_backbone": {"name": student_text.ref.name, "short": student_text.ref.short, "dim": student_text.dim,
                          "layers": student_text.n_layers, "probe": M.fingerprint_text(student_text)},
        "image_backbone": header["image_backbone"],  # unchanged: the image side is the teacher's
        "training": {"distilled_from": {"heads": heads_hash(teacher_path), "text": teacher_text.ref.name},
                     "captions": len(captions), "val_captions": n_val, "epochs": epochs, "seed": seed,
                     "seconds": round(time.monotonic() - started, 1)},
        "metrics": {"distill": {"val_cosine": round(cos, 4), "val_r1": round(r1, 2),
                                "val_cosine_before": round(before, 4)}},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    digest = M.save_heads(Path(out), heads, new_header)
    log.info("wrote %s (heads-%s): held-out cosine to the teacher %.3f (was %.3f)", out, digest, cos, before)
    return DistillReport(str(out), digest, heads_hash(teacher_path), student_text.ref.name, len(captions),
                         history, before, cos, r1, time.monotonic() - started)


__all__ = ["DistillReport", "HeadsConfig", "distill", "teacher_vectors"]
