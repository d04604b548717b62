"""Caption quality of the `retrieval` captioner on Flickr8k dev.

    python -m bench.caption_quality [--encoder bert_resnet] [--weights HEADS] [--consensus 0 1]

The caption bank is built from the TRAIN captions only (train.txt), the DEV images are
captioned with the same RetrievalCaptioner the app uses, and the captions are scored
against each image's 5 reference captions with pycocoevalcap's Bleu and Cider (the
COCO caption evaluation code; tokenized with its Stanford PTBTokenizer when Java is
there, else with an equivalent Python tokenizer, as the table says). Also printed:
image->text R@1/5/10 over the 5000 dev captions (the standard retrieval measure), and
a random train caption per image as the floor.

Anchors (published, Flickr8k *test* split, their own BLEU scripts; we use *dev*):
Show, Attend and Tell (Xu et al. 2015), hard attention: BLEU-1/2/3/4 67.0/45.7/31.4/21.3.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np

from desktop import images
from desktop.encoders import create_encoder

log = logging.getLogger("bench.caption_quality")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "flickr8k"
OUT = REPO / "bench" / "out"
PUNCTUATIONS = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
ANCHORS = [("Show, Attend and Tell, hard attention (test split)", [67.0, 45.7, 31.4, 21.3], None)]


def read_captions(tsv: Path) -> dict[str, list[str]]:
    by_image: dict[str, list[str]] = {}
    with open(tsv, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if len(row) >= 2 and not (i == 0 and row[0].strip().lower() == "image"):
                by_image.setdefault(row[0].strip(), []).append(row[1].strip())
    return by_image


def read_split(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def tokenize(refs: dict[str, list[str]], how: str) -> tuple[dict[str, list[str]], str]:
    """COCO-eval tokenization: PTB tokens, lower case, punctuation tokens removed."""
    if how in ("auto", "ptb") and shutil.which("java"):
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        data = {k: [{"caption": c} for c in v] for k, v in refs.items()}
        return PTBTokenizer().tokenize(data), "PTBTokenizer (Java)"
    if how == "ptb":
        raise SystemExit("--tokenizer ptb needs Java on PATH")
    word = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|'[a-z]+|[^\sa-z0-9]")

    def tok(s: str) -> str:
        return " ".join(t for t in word.findall(s.lower()) if t not in PUNCTUATIONS)

    return {k: [tok(c) for c in v] for k, v in refs.items()}, "Python (PTB-like)"


def score(refs: dict[str, list[str]], hyps: dict[str, str], how: str) -> tuple[list[float], float, str]:
    """BLEU-1..4 and CIDEr (x100) with pycocoevalcap's own scorers."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    keys = sorted(hyps)
    both = {**{f"r{k}": refs[k] for k in keys}, **{f"h{k}": [hyps[k]] for k in keys}}
    tok, used = tokenize(both, how)
    gts = {k: tok[f"r{k}"] for k in keys}
    res = {k: tok[f"h{k}"] for k in keys}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return [100 * b for b in bleu], 100 * float(cider), used


def recall_i2t(img: np.ndarray, txt: np.ndarray, owner: np.ndarray, ks=(1, 5, 10)) -> dict[int, float]:
    sims = img @ txt.T
    top = np.argsort(-sims, axis=1)[:, : max(ks)]
    hit = owner[top] == np.arange(len(img))[:, None]
    return {k: 100.0 * float(hit[:, :k].any(axis=1).mean()) for k in ks}


def encode_images(encoder, paths: list[Path], batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(paths), batch):
        out.append(encoder.encode_images([images.load_for_encoding(p, 256) for p in paths[i : i + batch]]))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, default=DATA, help="folder with images/, captions.tsv, train.txt, dev.txt"
    )
    ap.add_argument("--encoder", default="bert_resnet", help="a joint encoder spec (default: bert_resnet)")
    ap.add_argument(
        "--weights", help="encoder weights (bert_resnet: a heads file; default: the plugin's own)"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--consensus",
        type=float,
        nargs="+",
        default=[0.0, 1.0],
        help="consensus weights to compare (0: plain best match; 1: the app's default for big banks)",
    )
    ap.add_argument("--no-dedup", action="store_true", help="keep near-identical bank captions")
    ap.add_argument("--limit", type=int, help="only the first N dev images (quick runs)")
    ap.add_argument("--tokenizer", choices=("auto", "ptb", "python"), default="auto")
    ap.add_argument("--work", type=Path, default=OUT, help="bank file and vector cache (default: bench/out)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from plugins.retrieval import RetrievalCaptioner, read_bank

    if not (args.data / "captions.tsv").exists():
        raise SystemExit(f"{args.data}: no Flickr8k here (captions.tsv, train.txt, dev.txt, images/)")
    caps = read_captions(args.data / "captions.tsv")
    train, dev = read_split(args.data / "train.txt"), read_split(args.data / "dev.txt")
    assert not set(train) & set(dev), "train and dev overlap"
    dev = [d for d in dev if d in caps and (args.data / "images" / d).is_file()][: args.limit]
    args.work.mkdir(parents=True, exist_ok=True)
    bank_file = args.work / "flickr8k-train-bank.txt"
    bank_file.write_text("\n".join(c for t in train for c in caps.get(t, [])) + "\n", encoding="utf-8")
    bank = read_bank(bank_file)

    encoder = create_encoder(args.encoder, weights=args.weights, device=args.device)
    if not encoder.joint:
        raise SystemExit(
            f"{encoder.id} is not joint (no text tower); bert_resnet needs heads: --weights FILE"
        )
    started = time.monotonic()
    img = encode_images(encoder, [args.data / "images" / d for d in dev])
    log.info("encoded %d dev images in %.1fs", len(dev), time.monotonic() - started)
    refs = {d: caps[d] for d in dev}
    dev_caps = [c for d in dev for c in caps[d]]
    owner = np.array([i for i, d in enumerate(dev) for _ in caps[d]])
    recall = recall_i2t(img, np.asarray(encoder.encode_texts(dev_caps)), owner)

    rows = []
    rng = random.Random(0)
    floor = {d: rng.choice(bank.texts) for d in dev}
    bleu, cider, used = score(refs, floor, args.tokenizer)
    rows.append(("random train caption", bleu, cider))
    for consensus in args.consensus:
        captioner = RetrievalCaptioner(encoder, bank, not args.no_dedup, consensus, args.work / "cache")
        started = time.monotonic()
        out = captioner.caption_vectors(img)
        seconds = time.monotonic() - started
        hyps = {d: text for d, (text, _) in zip(dev, out, strict=True)}
        bleu, cider, used = score(refs, hyps, args.tokenizer)
        rows.append((f"retrieval, consensus {consensus:g}", bleu, cider))
        log.info(
            "consensus %g: %d captions in %.2fs; e.g. %s -> %r",
            consensus,
            len(out),
            seconds,
            dev[0],
            out[0][0],
        )

    bank_size = len(captioner.model.texts)
    print(f"\nFlickr8k dev, {len(dev)} images x 5 references; encoder {encoder.id}")
    print(
        f"bank: {len(bank.texts)} distinct train captions, {bank_size} after de-duplication; tokenizer: {used}\n"
    )
    print(f"| {'captioner':52s} | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | CIDEr |")
    print(f"|{'-' * 54}|-------:|-------:|-------:|-------:|------:|")
    for name, b, c in rows + ANCHORS:
        cells = " | ".join(f"{x:6.1f}" for x in b)
        print(f"| {name:52s} | {cells} | {'—' if c is None else f'{c:5.1f}':>5s} |")
    print(
        f"\nimage->text retrieval, {len(dev)} images x {len(dev_caps)} dev captions: "
        + ", ".join(f"R@{k} {v:.1f}" for k, v in recall.items())
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "encoder": encoder.id,
                    "images": len(dev),
                    "bank": len(bank.texts),
                    "bank_dedup": bank_size,
                    "tokenizer": used,
                    "i2t_recall": recall,
                    "rows": [{"name": n, "bleu": b, "cider": c} for n, b, c in rows],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
