"""`lumen train-heads`: train the projection heads that join the text and image towers.

    lumen train-heads --images DIR --captions FILE.tsv --split train.txt [--val dev.txt]
    lumen train-heads --distill TEACHER.safetensors --student TEXT --captions FILE.tsv --split train.txt

The second form trains heads for another text tower (e.g. the multilingual
paraphrase-multilingual-MiniLM-L12-v2) that reuse the teacher heads' image side: the
student's text vectors are fitted to the teacher's on the captions (distill.py).

Backbone features are extracted once and cached (under the Lumen home's cache, or
--cache); training then runs on the cached arrays, keeps the best epoch by dev recall and
writes a heads file (default: <Lumen home>/heads/, where the plugin finds it). The same
seed gives the same heads. This module stays cheap to import (the CLI parser imports it);
the torch side is trainer.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins.bert_resnet.config import TrainConfig

if TYPE_CHECKING:
    from plugins.bert_resnet.model import CnnBackbone, TextBackbone

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2+mobilenet_v2"


@dataclass
class TrainReport:
    out: str
    heads_hash: str
    best_epoch: int
    dev: dict[str, float]  # dev metrics of the kept epoch (empty without --val)
    history: list[dict[str, float]]
    seconds: float
    feature_seconds: float
    config: dict[str, Any]


def train_heads(images_dir: str | Path, captions_tsv: str | Path, split: str | Path, val: str | Path | None,
                out: str | Path, epochs: int | None = None, seed: int = 0, model: str = DEFAULT_MODEL,
                cache: str | Path | None = None, config: TrainConfig | None = None, device: str = "cpu",
                backbones: tuple[CnnBackbone, TextBackbone] | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> TrainReport:
    """Extract (or reuse) backbone features, train heads, keep the best dev epoch, write
    the heads file to `out`. `model` is TEXT+CNN as in the encoder spec; `backbones`
    replaces both towers (tests use tiny random ones)."""
    from plugins.bert_resnet import trainer

    cfg = config or TrainConfig()
    return trainer.run(images_dir, captions_tsv, split, val, out, epochs if epochs is not None else cfg.epochs,
                       seed, model, cache, cfg, device, backbones, progress)


# --------------------------------------------------------------------------- CLI


def register_cli(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("train-heads", help="train bert_resnet projection heads on captioned images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", help="folder with the images (not needed with --distill)")
    p.add_argument("--captions", required=True, help="TSV: image<TAB>caption (header optional)")
    p.add_argument("--split", required=True, help="file with the training images' names, one per line")
    p.add_argument("--val", help="held-out split: picks the best epoch and is recorded in the heads file")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"TEXT+CNN backbones (default {DEFAULT_MODEL})")
    p.add_argument("--out", help="heads file to write (default: <home>/heads/<text>-<cnn>-<time>.safetensors)")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", help="feature cache folder (default: <home>/cache/bert_resnet)")
    p.add_argument("--distill", metavar="TEACHER", help="a heads file to distil into heads for --student "
                   "(same image vectors; the student's text vectors are fitted to the teacher's)")
    p.add_argument("--student", default="paraphrase-multilingual-MiniLM-L12-v2",
                   help="with --distill: the student text tower (default: paraphrase-multilingual-MiniLM-L12-v2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    common(p)
    p.set_defaults(handler=cmd_train_heads)


def cmd_train_heads(args: argparse.Namespace) -> int:
    from desktop.encoders import resolve_device
    from desktop.settings import paths
    from plugins.bert_resnet import parse_model

    logging.getLogger("plugins.bert_resnet").setLevel(logging.INFO)  # progress, whatever -v says
    home = paths(args.home)
    if args.distill:
        return _cmd_distill(args, home)
    if not args.images:
        print("lumen train-heads: --images is required (unless --distill)", file=sys.stderr)
        return 2
    text, cnn, _ = parse_model(args.model)
    out = Path(args.out) if args.out else (
        home.home / "heads" / f"{text.short}-{cnn.arch}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors")
    cache = Path(args.cache) if args.cache else home.cache / "bert_resnet"
    cfg = TrainConfig()
    report = train_heads(args.images, args.captions, args.split, args.val, out, args.epochs, args.seed,
                         args.model, cache, cfg, resolve_device(args.device), progress=_ProgressLine())
    if args.json:
        print(json.dumps(asdict(report), indent=1))
    else:
        dev = "  ".join(f"{k} {v:.1f}" for k, v in report.dev.items())
        print(f"wrote {report.out}\n  encoder: bert_resnet:{text.short}+{cnn.arch}:heads-{report.heads_hash}"
              f"\n  best epoch {report.best_epoch}: {dev or '(no --val)'}\n  {report.seconds:.0f} s "
              f"({report.feature_seconds:.0f} s features)\n  use it: lumen index --encoder bert_resnet:"
              f"{text.short}+{cnn.arch} --weights {report.out}")
    return 0


def _cmd_distill(args: argparse.Namespace, home: Any) -> int:
    from desktop.evaluation import load_captions
    from plugins.bert_resnet import TextRef, read_heads_header
    from plugins.bert_resnet.distill import distill

    teacher = Path(args.distill)
    header = read_heads_header(teacher)
    student = TextRef.parse(args.student)
    out = Path(args.out) if args.out else (
        home.home / "heads" / f"{student.short}-{header['image_backbone']['arch']}-distilled-"
        f"{time.strftime('%Y%m%d-%H%M%S')}.safetensors")
    captions = load_captions(args.captions, args.split).captions
    # --val is not trained on: its captions stay unseen for `lumen eval` of the result (the
    # held-out cosine is measured on 10 % of the training captions).
    report = distill(teacher, captions, out, args.student, epochs=args.epochs, seed=args.seed,
                     progress=_ProgressLine())
    if args.json:
        print(json.dumps(asdict(report), indent=1))
    else:
        arch = header["image_backbone"]["arch"]
        print(f"wrote {report.out}\n  encoder: bert_resnet:{student.short}+{arch}:heads-{report.heads_hash}\n"
              f"  held-out captions: cosine to the teacher {report.val_cosine:.3f} (untrained "
              f"{report.val_cosine_before:.3f}), R@1 {report.val_r1:.1f} %\n  {report.seconds:.0f} s\n"
              f"  use it: lumen index --encoder bert_resnet:{student.short}+{arch} --weights {report.out}")
    return 0


class _ProgressLine:
    """A self-rewriting stderr line for the training steps (feature extraction logs)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.t0 = time.monotonic()
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.t0 = stage, now
        if not self.tty or (now - self.last < 0.5 and done < total):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (total - done) / rate if rate else 0
        sys.stderr.write(f"\r\033[K{stage} {done}/{total} steps, ~{eta:.0f} s left" + ("\n" if done >= total else ""))
        sys.stderr.flush()
