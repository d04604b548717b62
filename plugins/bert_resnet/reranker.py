"""`xattn`: the built-in re-ranker for the bert_resnet two-tower (entry point `lumen.rerankers`).

Words of a text query attend to the 7 x 7 regions of each of the first stage's top
photos, and the regions to the words (plugins/bert_resnet/xattn.py); the final score adds
the first-stage cosine, corrected for hubs (CSLS, with the training split's vectors that
the file carries; only for the heads they came from), and the attention score, each
standardised over the candidate list. Region features come
from the two-tower's own CNN pass at index time (the encoder's `encode_images_with_maps`)
and live in the region store; a query runs MiniLM once more for its token states and
a few small matrix products, never the CNN.

Files: ``--weights FILE``, else the newest matching file in ``<Lumen home>/rerankers/``,
else the one shipped in ``plugins/bert_resnet/rerankers/``. A file is used only for the
backbones it records (names, dims, weights): other backbones are refused. This module is
cheap to import; torch loads with the model.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from desktop.encoders import EncoderError, LazyModel, ModelInfo, RerankCandidates, RerankQuery, resolve_device
from plugins.bert_resnet import (
    DEFAULT_TEXT,
    TextRef,
    file_sha256,
    find_cnn_weights,
    parse_model,
    read_lumen_header,
)

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "rerankers"
SUFFIX = ".safetensors"
_PUNCT = re.compile(r"^[^\w]+$")
CAPTION_CACHE = 8000  # captions whose lifted words are kept (~15 KB each)


XATTN_FORMAT = "lumen.bert_resnet.xattn"
XATTN_VERSION = 1


def read_header(path: Path) -> dict[str, Any]:
    """A re-ranker file's JSON header, read without torch (the safetensors layout)."""
    return read_lumen_header(path, "re-ranker", XATTN_FORMAT, XATTN_VERSION)


_header = read_header


def user_dir() -> Path:
    from desktop.settings import default_home

    return default_home() / "rerankers"


def find_file() -> Path | None:
    """The newest re-ranker file in the user's folder, else the shipped one."""
    for folder in (user_dir(), BUNDLED_DIR):
        try:
            if folder.is_dir():
                files = sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
                if files:
                    return files[0]
        except OSError as exc:  # an unreadable data dir: the shipped file still works
            log.warning("cannot look for re-rankers in %s: %s", folder, exc)
    return None


@dataclass
class _Loaded:
    net: Any
    text: Any
    device: str
    bank: dict[str, np.ndarray]  # the hubness bank (xattn.BANK_*), empty if the file has none


class XAttnReranker(LazyModel):
    def __init__(self, path: Path, device: str = "auto", backbones: tuple[Any, Any] | None = None) -> None:
        super().__init__()
        self.path = path
        self.header = _header(path)
        self._device = device
        self._backbones = backbones  # tests: tiny (cnn, text) towers
        self._run_lock = threading.Lock()
        self.hub = self.header.get("hubness")  # {"k", "beta", "heads"} or None
        self.positions = int(self.header["config"]["positions"])
        txt, img = self.header["text_backbone"], self.header["image_backbone"]
        self.text_ref = TextRef(txt["name"])
        self.arch = img["arch"]
        self.id = f"xattn:{self.text_ref.short}+{self.arch}:{file_sha256(path)[:12]}"

    def __repr__(self) -> str:
        return f"XAttnReranker({self.id})"

    # -- contract -------------------------------------------------------------------------
    def accepts(self, encoder_id: str) -> bool:
        return encoder_id.startswith(f"bert_resnet:{self.text_ref.short}+{self.arch}:heads-")

    def regions_key(self, encoder_id: str) -> str | None:
        return f"{encoder_id}|{self.id}|lifted+stats"  # the stored form: see regions_from_maps

    @property
    def stored_shape(self) -> tuple[int, int]:
        """(rows, cols) of what the region store keeps per photo."""
        return self.positions + 1, int(self.header["config"]["dim"])

    def hub_applies(self, encoder_id: str | None) -> bool:
        """The hubness bank holds one first stage's vectors: only that encoder's count."""
        return bool(self.hub and encoder_id and encoder_id.endswith(f":heads-{self.hub['heads']}"))

    def _load(self) -> _Loaded:
        from plugins.bert_resnet import model as M
        from plugins.bert_resnet import xattn as X

        device = resolve_device(self._device)
        if self._backbones is not None:
            cnn, text = self._backbones
            net, _ = X.load(self.path, cnn, text)
        else:
            self._check_cnn_weights()
            text = M.shared_text_backbone(self.text_ref, device)
            net, _ = X.load(self.path)
            probe = self.header["text_backbone"]["probe"]
            if M._cosine(probe, M.fingerprint_text(text)) < 0.999:
                raise EncoderError(f"re-ranker file {self.path}: text backbone {text.ref.name} has other weights "
                                   "than it was trained on; train one with `lumen train-reranker`")
        log.info("loaded re-ranker %s on %s", self.id, device)
        return _Loaded(net.to(device), text, device, X.load_bank(self.path))

    def _check_cnn_weights(self) -> None:
        """The regions come from the encoder's CNN: refuse a file trained on other weights
        (checked from the weights file's hash, without loading the CNN)."""
        img = self.header["image_backbone"]
        _, cnn_ref, _ = parse_model(f"{self.text_ref.name}+{self.arch}")
        want_sha, want_tag = img.get("weights_sha256"), img.get("weights_tag")
        if cnn_ref.path and want_sha and not cnn_ref.is_or_derives_from(want_sha):
            raise EncoderError(f"re-ranker file {self.path} was trained on other {self.arch} weights than "
                               f"{cnn_ref.path}; train one with `lumen train-reranker`")
        if want_tag and want_tag not in (cnn_ref.weights_tag, cnn_ref.derived_tag):
            raise EncoderError(f"re-ranker file {self.path} was trained on {self.arch} weights {want_tag}, "
                               f"not {cnn_ref.weights_tag}")

    # -- index time ------------------------------------------------------------------------
    def regions_from_maps(self, maps: np.ndarray, vectors: np.ndarray | None = None,
                          encoder_id: str | None = None) -> np.ndarray:
        """(n, c, h, w) CNN maps -> (n, h*w + 1, dim) float16, what the store keeps: the
        h*w regions projected and lifted at index time (unit vectors, so a query only does
        the attention), then one row of per-photo numbers: [hubness, 1] when the photo's
        first-stage `vectors` are from the encoder the file's bank is for, else zeros."""
        import torch

        from plugins.bert_resnet import xattn as X

        m = self.model
        with self._run_lock, torch.inference_mode():
            x = torch.from_numpy(np.asarray(maps, np.float32)).to(m.device)
            regions = m.net.stored_regions(x).cpu().numpy()
        stats = np.zeros((len(regions), 1, regions.shape[2]), np.float32)
        if vectors is not None and self.hub_applies(encoder_id) and X.BANK_TEXTS in m.bank:
            stats[:, 0, 0] = X.hubness(vectors, m.bank[X.BANK_TEXTS], int(self.hub["k"]))
            stats[:, 0, 1] = 1.0
        return np.concatenate([regions, stats], 1).astype(np.float16)

    def _hub_of_photos(self, stored: Sequence[np.ndarray]) -> np.ndarray:
        """Each photo's stored hubness; a photo stored without one gets the others' mean
        (neither favoured nor penalised); zeros when none has one."""
        st = np.stack([np.asarray(r[self.positions], np.float32) for r in stored]) if stored else np.zeros((0, 2))
        has = st[:, 1] > 0.5
        if not has.any():
            return np.zeros(len(st), np.float32)
        hub = st[:, 0].copy()
        hub[~has] = hub[has].mean()
        return hub

    def _hub_of_captions(self, texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """Captions' hubness against the bank's photos, remembered per caption (a caption
        bank is ranked for every photo)."""
        from plugins.bert_resnet import xattn as X

        cache = self.__dict__.setdefault("_caption_hub", {})
        todo = [i for i, t in enumerate(texts) if t not in cache]
        if todo:
            got = X.hubness(np.asarray(vectors)[todo], self.model.bank[X.BANK_IMAGES], int(self.hub["k"]))
            for i, h in zip(todo, got, strict=True):
                cache[texts[i]] = float(h)
            while len(cache) > 4 * CAPTION_CACHE:
                cache.pop(next(iter(cache)))
        return np.array([cache[t] for t in texts], np.float32)

    # -- query time ------------------------------------------------------------------------
    def _words(self, texts: Sequence[str]) -> tuple[Any, Any, Any]:
        from plugins.bert_resnet import xattn as X

        m = self.model
        if len(texts) == 1 and hasattr(m.text, "hidden_one"):  # the query's states from its encoder pass
            states, mask, _ = m.text.hidden_one(texts[0])
        else:
            (states,), mask, _ = m.text.hidden(list(texts), [m.text.n_layers])
        return m.net.lift_words(states.float()), X.word_mask(mask), mask

    def _regions(self, regions: Sequence[np.ndarray]) -> Any:
        """Stored (lifted, fp16) regions -> unit float32 tensors (re-normalised after fp16)."""
        import torch

        m = self.model
        x = torch.from_numpy(np.stack(regions))[:, : self.positions].to(m.device).float()  # torch's fp16 cast: 4x numpy's
        return torch.nn.functional.normalize(x, dim=-1)

    @staticmethod
    def _plain(text: str | None) -> bool:
        """One positive text term without weights or exclusions ("2:a + b - c" is not)."""
        from desktop.library import parse_query

        if not text or not text.strip():
            return False
        terms = parse_query(text)
        return len(terms) == 1 and terms[0].weight == 1.0 and terms[0].text is not None

    def attention_scores(self, text: str, regions: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        with self._run_lock, torch.inference_mode():
            words, wmask, _ = self._words([text])
            return self.model.net.scores(words, wmask, self._regions(regions))[0].cpu().numpy()

    def caption_scores(self, regions: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """One photo against candidate captions. Captions' lifted words are remembered
        (a bounded cache): image -> text ranks the same caption bank for every photo."""
        import torch

        with self._run_lock, torch.inference_mode():
            cache = self.__dict__.setdefault("_caption_words", {})
            todo = [t for t in dict.fromkeys(texts) if t not in cache]
            for s in range(0, len(todo), 256):
                batch = todo[s : s + 256]
                words, wmask, _ = self._words(batch) if len(batch) > 1 else self._words([batch[0], batch[0]])
                lens = wmask.shape[1]
                for i, t in enumerate(batch):
                    cache[t] = (words[i], wmask[i], lens)
            while len(cache) > CAPTION_CACHE:
                cache.pop(next(iter(cache)))
            t_max = max(int(cache[t][1].shape[0]) for t in texts)
            words = torch.zeros((len(texts), t_max, self.model.net.cfg.dim))
            wmask = torch.zeros((len(texts), t_max), dtype=torch.long)
            for i, t in enumerate(texts):
                w, m, _ = cache[t]
                words[i, : w.shape[0]], wmask[i, : m.shape[0]] = w, m
            dev = self.model.device
            return self.model.net.scores(words.to(dev), wmask.to(dev), self._regions([regions]))[:, 0].cpu().numpy()

    def rerank(self, query: RerankQuery, candidates: RerankCandidates) -> np.ndarray | None:
        from plugins.bert_resnet import xattn as X

        zsum = X.zsum
        first = np.asarray(candidates.scores, np.float32)
        beta = float(self.hub["beta"]) if self.hub else 0.0
        if candidates.texts and query.regions is not None:  # image -> text
            if (candidates.vectors is not None and self.hub_applies(query.encoder_id)
                    and X.BANK_IMAGES in self.model.bank):  # CSLS: 2cos - r(photo) - r(caption)
                first = first - beta * self._hub_of_captions(candidates.texts, candidates.vectors)
            return zsum(first, self.caption_scores(query.regions, candidates.texts))
        if query.images or not self._plain(query.text) or not candidates.regions:
            return None
        have = [i for i, r in enumerate(candidates.regions) if r is not None]
        if len(have) < 2:
            return None
        stored = [candidates.regions[i] for i in have]
        att = self.attention_scores(query.text or "", stored)
        if beta:  # CSLS; the query's own r is the same for every candidate
            hub = self._hub_of_photos(stored)
            full = np.full(len(first), hub.mean(), np.float32)  # no regions yet: neutral
            full[have] = hub
            first = first - beta * full
        z_att = np.zeros(len(first), np.float32)  # photos without regions: attention says "average"
        z_att[have] = zsum(np.zeros(len(have)), att)
        return zsum(first, np.zeros(len(first))) + z_att

    # -- explain ---------------------------------------------------------------------------
    def explain(self, text: str, regions: Sequence[np.ndarray | None]) -> list[dict[str, Any] | None]:
        """Per photo: the query's words' attention over its grid and how well each matched."""
        import torch

        have = [i for i, r in enumerate(regions) if r is not None]
        out: list[dict[str, Any] | None] = [None] * len(regions)
        if not have or not text.strip():
            return out
        m = self.model
        with self._run_lock, torch.inference_mode():
            words, wmask, mask = self._words([text])
            att, rel = m.net.attention(words, self._regions([regions[i] for i in have]))
            score = m.net.pool(rel, wmask)[0].cpu().numpy()
            att, rel = att[0].cpu().numpy(), rel[0].cpu().numpy()  # (m, T, R), (m, T)
        ids, _ = m.text.tokenize([text])
        tokens = m.text.tokenizer.convert_ids_to_tokens(ids[0].tolist())
        groups = _word_groups(tokens, wmask[0].cpu().numpy())
        side = int(round(math.sqrt(att.shape[-1])))
        for j, i in enumerate(have):
            words_out = []
            for word, pos in groups:
                a = att[j, pos].mean(0)
                words_out.append({"word": word, "score": round(float(rel[j, pos].mean()), 4),
                                  "attention": np.round(a.reshape(side, side), 4).tolist()})
            weights = np.array([max(w["score"], 0.0) for w in words_out]) if words_out else np.zeros(0)
            if weights.sum() <= 0:
                weights = np.ones(len(words_out))
            heat = (sum(wt * np.asarray(w["attention"]) for wt, w in zip(weights, words_out, strict=True))
                    / max(weights.sum(), 1e-9)) if words_out else np.zeros((side, side))
            top = sorted(words_out, key=lambda w: -w["score"])[:3]
            out[i] = {"grid": [side, side], "score": round(float(score[j]), 4),
                      "heatmap": np.round(heat, 4).tolist(), "words": words_out,
                      "top_words": [w["word"] for w in top]}
        return out


def _word_groups(tokens: Sequence[str], wmask: np.ndarray) -> list[tuple[str, list[int]]]:
    """WordPiece tokens -> (word, token positions), without special tokens, punctuation
    and a few function words (their attention says nothing about the photo)."""
    stop = {"a", "an", "the", "of", "in", "on", "at", "is", "are", "and", "with", "to", "its", "his", "her"}
    groups: list[tuple[str, list[int]]] = []
    for pos, tok in enumerate(tokens):
        if pos >= len(wmask) or not wmask[pos]:
            continue
        if tok.startswith("##") and groups:
            word, ps = groups[-1]
            groups[-1] = (word + tok[2:], [*ps, pos])
        else:
            groups.append((tok, [pos]))
    return [(w, p) for w, p in groups if not _PUNCT.match(w) and w.lower() not in stop]


class XAttnPlugin:
    name = "xattn"
    default_model = "all-MiniLM-L6-v2+mobilenet_v2"

    def models(self) -> list[ModelInfo]:
        path = find_file()
        if path is None:
            return [ModelInfo(self.name, "attention re-ranker for bert_resnet (train with `lumen train-reranker`)",
                              False, "no file")]
        h = _header(path)
        ok = find_cnn_weights(h["image_backbone"]["arch"]) is not None and TextRef(DEFAULT_TEXT).local_path()
        return [ModelInfo(self.name, f"words-to-regions attention re-ranker for bert_resnet:"
                          f"{TextRef(h['text_backbone']['name']).short}+{h['image_backbone']['arch']}",
                          bool(ok), str(path))]

    def create(self, model: str | None = None, weights: str | None = None, device: str = "auto") -> XAttnReranker:
        path = Path(weights).expanduser() if weights else find_file()
        if path is None:
            raise EncoderError("no attention re-ranker file: train one with `lumen train-reranker`")
        return XAttnReranker(path, device)


reranker_plugin = XAttnPlugin()
