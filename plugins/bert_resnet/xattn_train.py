"""`lumen train-reranker`: train the words-to-regions attention re-ranker (xattn.py).

    lumen train-reranker --images DIR --captions FILE.tsv --split train.txt [--val dev.txt]

The same conventions as `lumen train-heads`: the frozen backbones run once (the feature
cache under <home>/cache/bert_resnet is shared with train-heads: the same trunk maps), a
seed fixes everything, progress goes to the log, the best epoch is chosen by dev recall
of the *re-ranked* first stage, and the file records its backbones and is refused by
others.

Hard negatives: every batch is built from clusters of images that the two-tower (the
shipped heads for these backbones) ranks close together on the *train* split: a seed
image plus the images its captions rank highest. InfoNCE over the batch then mostly
contrasts a caption with the photos the first stage confuses it with.

Final score: the first-stage cosine and the attention score, each standardised over the
candidate list, added with equal weights (xattn.zsum). The rule is fixed, not tuned on
dev; the dev table also shows attention alone for reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2+mobilenet_v2"
TOP_N = 50  # first-stage candidates re-ranked (the app's default, desktop/rerank.py)
# Hubness correction (CSLS, Conneau et al. 2018): the standard rule 2cos - r(query) - r(item)
# ranks like cos - r(item)/2; r over the k = 10 nearest of the other modality in the
# training split, as in the paper. Fixed, not tuned on dev.
HUB_K, HUB_BETA = 10, 0.5


@dataclass
class RerankTrainConfig:
    epochs: int = 16
    batch: int = 64  # images (one caption each) per step
    group: int = 8  # images per hard-negative cluster
    neighbours: int = 40  # two-tower top ranks a cluster is drawn from
    lr: float = 1e-3
    weight_decay: float = 0.02
    warmup_epochs: float = 1.0
    seed: int = 0
    top_n: int = TOP_N
    select_by: str = "rsum1"  # re-ranked dev R@1 T->I + I->T
    directions: str = "both"  # words -> regions and regions -> words (xattn.XAttnConfig)


@dataclass
class RerankTrainReport:
    out: str
    file_hash: str
    best_epoch: int
    dev: dict[str, dict[str, float]]  # "first" / "attention" / "reranked" -> metrics of the kept epoch
    history: list[dict[str, Any]]
    seconds: float
    feature_seconds: float
    config: dict[str, Any] = field(default_factory=dict)


def train_reranker(images_dir: str | Path, captions_tsv: str | Path, split: str | Path, val: str | Path | None,
                   out: str | Path, config: RerankTrainConfig | None = None, model: str = DEFAULT_MODEL,
                   cache: str | Path | None = None, heads: str | Path | None = None, device: str = "cpu",
                   backbones: tuple[Any, Any] | None = None,
                   xattn_config: Any | None = None, checkpoint: bool = False) -> RerankTrainReport:
    """Extract (or reuse) backbone features, train, keep the best dev epoch, write `out`.
    `heads`: the first-stage heads file (default: the one the encoder would use); with
    `backbones` (tests: tiny random towers) and no heads there is no first stage: batches
    are random and dev is scored by attention alone."""
    import numpy as np
    import torch

    from desktop.evaluation import load_captions
    from plugins.bert_resnet import CnnRef, file_sha256, find_heads, heads_hash, parse_model
    from plugins.bert_resnet import model as M
    from plugins.bert_resnet import xattn as X
    from plugins.bert_resnet.features import FeatureCache
    from plugins.bert_resnet.trainer import seed_everything

    started = time.monotonic()
    cfg = config or RerankTrainConfig()
    seed_everything(cfg.seed)
    torch.set_grad_enabled(True)
    images_dir, out = Path(images_dir), Path(out)
    if backbones is not None:
        cnn, text = backbones
        cnn_ref = CnnRef(cnn.arch, None)
        heads_path = Path(heads) if heads else None
    else:
        text_ref, cnn_ref, _ = parse_model(model)
        cnn, text = M.build_cnn(cnn_ref, device), M.TextBackbone(text_ref, device)
        heads_path = Path(heads) if heads else find_heads(text_ref, cnn_ref)
    first = M.load_heads(heads_path, cnn, text, device)[0] if heads_path else None
    cut = first.cfg.cut if first is not None else 0
    if cache is None:
        from desktop.settings import paths

        cache = paths().cache / "bert_resnet"
    fp = {"cnn": f"{cnn.arch}:{cnn.weights}:{M.fingerprint_cnn(cnn)[:8]}",
          "text": f"{text.ref.name}:{M.fingerprint_text(text)[:8]}"}
    fc = FeatureCache(Path(cache), cnn, text, fp)
    t_feat = time.monotonic()

    def load_split(split_file: str | Path, flip: bool) -> dict[str, Any]:
        data = load_captions(captions_tsv, split_file, images_dir)
        if not data.images:
            raise ValueError(f"no captioned images from {split_file} found in {images_dir}")
        paths = [images_dir / n for n in data.images]
        trunks = {v: fc.image_view(paths, v, cut, 0) for v in (("orig", "flip") if flip else ("orig",))}
        txt = fc.captions(data.captions, [text.n_layers])[text.n_layers]
        maps, vec = [], []
        with torch.inference_mode():
            for s in range(0, len(paths), 250):
                x = torch.from_numpy(np.array(trunks["orig"][s : s + 250])).float().to(device)
                if first is not None:
                    feats, fmap = first.image_features_and_map(x)
                    v = first.image_from_trunk(feats)
                    if "flip" in trunks:
                        xf = torch.from_numpy(np.array(trunks["flip"][s : s + 250])).float().to(device)
                        v = v + first.image_from_trunk(xf)
                    vec.append(torch.nn.functional.normalize(v, dim=-1).cpu().numpy())
                else:
                    fmap = cnn.run_tail(x, cut) if cut else x
                maps.append(fmap.flatten(2).transpose(1, 2).to(torch.float16).cpu().numpy())
        out_ = {"data": data, "maps": np.concatenate(maps), "text": txt, "img": None, "txt": None}
        if first is not None:
            out_["img"] = np.concatenate(vec)
            with torch.inference_mode():
                out_["txt"] = np.concatenate([
                    first.text_from_states(torch.from_numpy(np.asarray(txt.pooled[s : s + 2000])).to(device))
                    .cpu().numpy() for s in range(0, len(data.captions), 2000)])
        return out_

    flip_tta = bool(first is not None and first.cfg.flip_tta)  # the vectors as the app indexes them
    train = load_split(split, flip=flip_tta)
    dev = load_split(val, flip=flip_tta) if val else None
    bank = _hub_bank(train) if first is not None else None  # the bank ships in the file
    feature_s = time.monotonic() - t_feat
    n = len(train["data"].images)
    log.info("reranker: %d train images, %d captions (features %.0f s)", n, len(train["data"].captions), feature_s)

    # Hard-negative clusters: the images the first stage ranks highest for an image's captions.
    rng = np.random.default_rng(cfg.seed)
    owner = train["data"].caption_image
    if train["img"] is not None:
        cap_mean = np.zeros_like(train["img"])
        np.add.at(cap_mean, owner, train["txt"])
        sims = cap_mean @ train["img"].T
        np.fill_diagonal(sims, -np.inf)
        nbrs = np.argsort(-sims, axis=1)[:, : cfg.neighbours]
    else:
        nbrs = None

    xcfg = xattn_config or X.XAttnConfig(map_dim=int(train["maps"].shape[2]), positions=int(train["maps"].shape[1]),
                                         txt_dim=int(text.dim), directions=cfg.directions)
    net = X.XAttn(xcfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, n // cfg.batch)
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    caps_of = [train["data"].captions_of(i) for i in range(n)]
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any], dict[str, Any]] = (-1.0, 0, {}, {})

    def header_base() -> dict[str, Any]:
        return {
            "text_backbone": {"name": text.ref.name, "short": text.ref.short, "dim": text.dim,
                              "layers": text.n_layers, "probe": M.fingerprint_text(text)},
            "image_backbone": {"arch": cnn.arch, "dim": cnn.feat_dim, "weights": cnn.weights,
                               "weights_tag": cnn_ref.weights_tag if backbones is None else None,
                               "weights_sha256": file_sha256(Path(cnn_ref.path)) if cnn_ref.path else None,
                               "probe": M.fingerprint_cnn(cnn)},
            "first_stage": {"heads": heads_hash(heads_path) if heads_path else None, "cut": cut},
            "mixing": "zsum",
            **({"hubness": {"k": HUB_K, "beta": HUB_BETA, "heads": heads_hash(heads_path) if heads_path else None,
                            "bank": f"{Path(split).name}: every image, its first caption"}} if bank else {}),
            "training": {"captions": Path(captions_tsv).name,
                         "captions_sha256": file_sha256(Path(captions_tsv))[:16],
                         "split": Path(split).name, "train_images": n, "val": Path(val).name if val else None,
                         "epochs": cfg.epochs, "best_epoch": best[1], "seed": cfg.seed, "recipe": asdict(cfg)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    step = 0
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        t0 = time.monotonic()
        order = _cluster_order(n, nbrs, cfg.group, rng)
        losses = []
        for b in range(steps_per_epoch):
            lr_mult = min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_mult
            idx = order[b * cfg.batch : (b + 1) * cfg.batch]
            cap_idx = [int(rng.choice(caps_of[i])) for i in idx]
            states, mask = train["text"].batch(cap_idx, device)
            words = net.lift_words(states)
            wmask = X.word_mask(mask)
            regions = net.lift_regions(net.regions_from_cells(
                torch.from_numpy(np.asarray(train["maps"][idx])).float().to(device)))
            logits = net.logit_scale.clamp(max=math.log(100.0)).exp() * net.scores(words, wmask, regions)
            target = torch.arange(len(idx), device=device)
            loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                          + torch.nn.functional.cross_entropy(logits.T, target))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
            step += 1
        rec: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.monotonic() - t0}
        if dev is not None:
            metrics = evaluate(net, dev, cfg.top_n, device, bank)
            rec.update(metrics)
            score = _select(metrics, cfg.select_by)
            if score > best[0]:
                best = (score, epoch, {k: v.detach().clone() for k, v in net.state_dict().items()}, metrics)
                if checkpoint:  # a usable file even if the run is stopped before the end
                    X.save(out.with_suffix(".partial" + out.suffix), net,
                           {**header_base(), "partial": True, "metrics": {"dev": metrics}}, bank)
        log.info("epoch %d/%d  loss %.3f  %s  (%.0f s)", epoch, cfg.epochs, rec["loss"],
                 "  ".join(f"{m}: T>I {v['t2i_r1']:.1f} I>T {v['i2t_r1']:.1f}"
                           for m, v in rec.items() if isinstance(v, dict)), rec["seconds"])
        history.append(rec)
    if dev is None:
        best = (0.0, cfg.epochs, {k: v.detach().clone() for k, v in net.state_dict().items()}, {})
    net.load_state_dict(best[2])
    net = net.cpu().eval()
    header = {**header_base(), "training": {**header_base()["training"], "best_epoch": best[1],
                                            "seconds": round(time.monotonic() - started, 1)},
              "metrics": {"dev": best[3]} if dev is not None else {}}
    digest = X.save(out, net, header, bank)
    partial = out.with_suffix(".partial" + out.suffix)
    if partial.exists():
        partial.unlink()
    elapsed = time.monotonic() - started
    log.info("wrote %s (xattn-%s), best epoch %d, %.0f s total", out, digest, best[1], elapsed)
    return RerankTrainReport(str(out), digest, best[1], best[3], history, elapsed, feature_s, asdict(cfg))


def _hub_bank(split: dict[str, Any]) -> dict[str, Any]:
    """The hubness bank: the training split's first-stage vectors, every image and one
    caption each (its first: the bank needs the distribution, not all five)."""
    import numpy as np

    from plugins.bert_resnet import xattn as X

    owner = np.asarray(split["data"].caption_image)
    firsts = np.unique(owner, return_index=True)[1]
    return {X.BANK_IMAGES: split["img"], X.BANK_TEXTS: split["txt"][firsts]}


def _cluster_order(n: int, nbrs: Any, group: int, rng: Any) -> Any:
    """An epoch's image order: clusters of `group` images the first stage confuses (a
    random seed image + its highest-ranked unused neighbours), clusters shuffled."""
    import numpy as np

    if nbrs is None:
        return rng.permutation(n)
    used = np.zeros(n, bool)
    clusters = []
    for s in rng.permutation(n):
        if used[s]:
            continue
        members = [int(s)]
        used[s] = True
        for j in nbrs[s]:
            if len(members) >= group:
                break
            if not used[j]:
                members.append(int(j))
                used[j] = True
        clusters.append(members)
    rng.shuffle(clusters)
    return np.asarray([i for c in clusters for i in c])


def _select(metrics: dict[str, dict[str, float]], select_by: str) -> float:
    m = metrics.get("reranked") or metrics["attention"]
    if select_by == "rsum1":
        return m["t2i_r1"] + m["i2t_r1"]
    return float(m[select_by])


def evaluate(net: Any, dev: dict[str, Any], top_n: int, device: str = "cpu",
             bank: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Dev recall of the first stage's top `top_n` re-ranked, both directions, as in the
    app (the re-ranker does the same per query): "first", "attention" alone, "reranked"
    (the shipped rule) and, with a hubness `bank`, "first+hub" (CSLS alone). Without a
    first stage: attention alone over every image (small toy sets only)."""
    import numpy as np
    import torch

    from desktop.evaluation import rankings_from_scores, retrieval_metrics
    from plugins.bert_resnet import xattn as X

    net.eval()
    data = dev["data"]
    n_img, n_cap = len(data.images), len(data.captions)
    with torch.inference_mode():
        regions = torch.cat([net.lift_regions(net.regions_from_cells(
            torch.from_numpy(np.asarray(dev["maps"][s : s + 500])).float().to(device))) for s in range(0, n_img, 500)])
        gram = torch.einsum("nrd,nqd->nrq", regions, regions)
        if dev["img"] is not None:
            first = dev["txt"] @ dev["img"].T  # (captions, images)
            t2i_c = rankings_from_scores(first, min(top_n, n_img))
            i2t_c = rankings_from_scores(first.T, min(top_n, n_cap))
        else:
            first = np.zeros((n_cap, n_img), np.float32)
            t2i_c = np.tile(np.arange(n_img), (n_cap, 1))
            i2t_c = np.tile(np.arange(n_cap), (n_img, 1))
        # every (caption, image) pair that either direction needs, scored once
        pairs = np.unique(np.concatenate([
            np.stack([np.repeat(np.arange(n_cap), t2i_c.shape[1]), t2i_c.ravel()], 1),
            np.stack([i2t_c.ravel(), np.repeat(np.arange(n_img), i2t_c.shape[1])], 1)]), axis=0)
        # Words lifted once per caption (not once per pair), padded to the longest caption.
        lens = np.diff(dev["text"].offsets)
        words = torch.zeros((n_cap, int(lens.max()), net.cfg.dim), device=device)
        wmask = torch.zeros((n_cap, int(lens.max())), dtype=torch.long, device=device)
        by_len = np.argsort(lens, kind="stable")
        for s in range(0, n_cap, 500):
            idx = by_len[s : s + 500]
            states, mask = dev["text"].batch(idx.tolist(), device)
            t = states.shape[1]
            words[torch.from_numpy(idx).to(device), :t] = net.lift_words(states)
            wmask[torch.from_numpy(idx).to(device), :t] = X.word_mask(mask)
        att_score = np.full((n_cap, n_img), np.nan, np.float32)
        pairs = pairs[np.argsort(lens[pairs[:, 0]], kind="stable")]  # similar lengths together: less padding
        for s in range(0, len(pairs), 4000):
            p = pairs[s : s + 4000]
            t = int(lens[p[:, 0]].max())
            ci, pi = torch.from_numpy(p[:, 0]).to(device), torch.from_numpy(p[:, 1]).to(device)
            att_score[p[:, 0], p[:, 1]] = net.pair_scores(words[ci, :t], wmask[ci, :t], regions[pi],
                                                          gram[pi]).cpu().numpy()

    # CSLS inside the candidate list, as the re-ranker applies it: photos' and captions' r
    hub_img = X.hubness(dev["img"], X.unit_rows(bank[X.BANK_TEXTS]), HUB_K) if bank else np.zeros(n_img, np.float32)
    hub_cap = X.hubness(dev["txt"], X.unit_rows(bank[X.BANK_IMAGES]), HUB_K) if bank else np.zeros(n_cap, np.float32)

    def rank(cands: np.ndarray, fs: np.ndarray, at: np.ndarray, hub: np.ndarray, mix: str) -> list[list[int]]:
        out = []
        for c, f, a in zip(cands, fs, at, strict=True):
            f = f - HUB_BETA * hub[c] if mix in ("first+hub", "reranked") else f
            s = f if mix in ("first", "first+hub") else a if mix == "attention" else X.zsum(f, a)
            out.append(c[np.argsort(-s, kind="stable")].tolist())
        return out

    t2i_rel = [[int(i)] for i in data.caption_image]
    i2t_rel = [data.captions_of(i) for i in range(n_img)]
    t2i_f = np.take_along_axis(first, t2i_c, 1)
    t2i_a = np.take_along_axis(att_score, t2i_c, 1)
    i2t_f = np.take_along_axis(first.T, i2t_c, 1)
    i2t_a = np.take_along_axis(att_score.T, i2t_c, 1)
    out: dict[str, dict[str, float]] = {}
    mixes = ("first", *(("first+hub",) if bank else ()), "attention", "reranked")
    for mix in mixes if dev["img"] is not None else ("attention",):
        a = retrieval_metrics(rank(t2i_c, t2i_f, t2i_a, hub_img, mix), t2i_rel)
        b = retrieval_metrics(rank(i2t_c, i2t_f, i2t_a, hub_cap, mix), i2t_rel)
        out[mix] = {**{f"t2i_r{k}": a.recall[k] for k in (1, 5, 10)}, "t2i_mrr": a.mrr,
                    **{f"i2t_r{k}": b.recall[k] for k in (1, 5, 10)}, "i2t_mrr": b.mrr}
    return out


# --------------------------------------------------------------------------- CLI


def register_cli(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("train-reranker", help="train the bert_resnet attention re-ranker on captioned images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="folder with the images")
    p.add_argument("--captions", required=True, help="TSV: image<TAB>caption (header optional)")
    p.add_argument("--split", required=True, help="file with the training images' names, one per line")
    p.add_argument("--val", help="held-out split: picks the best epoch and is recorded in the file")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"TEXT+CNN backbones (default {DEFAULT_MODEL})")
    p.add_argument("--heads", help="first-stage heads file (default: the one the encoder uses)")
    p.add_argument("--out", help="file to write (default: <home>/rerankers/xattn-<text>-<cnn>-<time>.safetensors)")
    p.add_argument("--epochs", type=int, default=RerankTrainConfig.epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", help="feature cache folder (default: <home>/cache/bert_resnet)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    common(p)
    p.set_defaults(handler=cmd_train_reranker)


def cmd_train_reranker(args: argparse.Namespace) -> int:
    from desktop.encoders import resolve_device
    from desktop.settings import paths
    from plugins.bert_resnet import parse_model

    logging.getLogger("plugins.bert_resnet").setLevel(logging.INFO)  # progress, whatever -v says
    home = paths(args.home)
    text, cnn, _ = parse_model(args.model)
    out = Path(args.out) if args.out else (
        home.home / "rerankers" / f"xattn-{text.short}-{cnn.arch}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors")
    cache = Path(args.cache) if args.cache else home.cache / "bert_resnet"
    cfg = RerankTrainConfig(epochs=args.epochs, seed=args.seed)
    report = train_reranker(args.images, args.captions, args.split, args.val, out, cfg, args.model, cache,
                            args.heads, resolve_device(args.device), checkpoint=True)
    if args.json:
        print(json.dumps(asdict(report), indent=1))
    else:
        lines = [f"wrote {report.out} (xattn-{report.file_hash}), best epoch {report.best_epoch}"]
        for mix, m in report.dev.items():
            lines.append(f"  dev {mix:9s} T->I R@1/5/10 {m['t2i_r1']:.1f}/{m['t2i_r5']:.1f}/{m['t2i_r10']:.1f}"
                         f"  I->T {m['i2t_r1']:.1f}/{m['i2t_r5']:.1f}/{m['i2t_r10']:.1f}")
        lines.append(f"  {report.seconds:.0f} s ({report.feature_seconds:.0f} s features)")
        print("\n".join(lines))
    return 0
