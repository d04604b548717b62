"""Where a CLIP/CoCa model's architecture and weights come from (no torch at import).

A *source* is the resolved form of what the user typed: ``MODEL:TAG`` (open_clip hub
weights), ``MODEL:random`` (seeded random init, for tests and speed measurements), or
``MODEL`` plus a local ``weights`` file / folder. Everything here that runs at
``create()`` time only touches the file system, so creating an encoder is instant and
never needs torch; `load_open_clip` (imports torch + open_clip) runs when the model loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from desktop.encoders import EncoderError, WeightsUnavailableError, offline_hint

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
RANDOM_TAG = "random"
PROBE_TIMEOUT_S = 2.5
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"  # open_clip's default file in a hub repo
HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"  # preferred by open_clip when present
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
_TRUE = {"1", "on", "yes", "true"}

Kind = Literal["hub", "random", "file", "dir"]


@dataclass(frozen=True)
class KnownModel:
    """A hub model we describe in `models()`; the repo is hard-coded so listing needs no torch."""

    arch: str
    tag: str
    repo: str  # Hugging Face repo open_clip downloads from (open_clip.pretrained: `hf_hub`)
    description: str
    size_mb: int  # fp32 checkpoint, approximate


# Verified against open_clip 3.3 `get_pretrained_cfg(arch, tag)["hf_hub"]`; a test keeps this
# list honest, because `open_clip.pretrained` cannot be imported without importing torch.
KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
               "LAION ViT-B/32: fastest good CLIP on a CPU (default)", 605),
    KnownModel("MobileCLIP-S2", "datacompdr", "apple/MobileCLIP-S2-OpenCLIP",
               "Apple MobileCLIP-S2: better retrieval, ~5x slower to index on a CPU; pick it with a GPU", 400),
    KnownModel("MobileCLIP-S1", "datacompdr", "apple/MobileCLIP-S1-OpenCLIP",
               "Apple MobileCLIP-S1: between ViT-B/32 and MobileCLIP-S2", 340),
    KnownModel("ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
               "LAION ViT-B/16: better than B/32, ~4x slower to index", 600),
    KnownModel("ViT-B-32", "openai", "timm/vit_base_patch32_clip_224.openai",
               "OpenAI's original ViT-B/32", 605),
    KnownModel("MobileCLIP2-S0", "dfndr2b", "timm/MobileCLIP2-S0-OpenCLIP",
               "Apple MobileCLIP2-S0: fast and strong, but a non-commercial research-only licence", 300),
    KnownModel("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k",
               "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
               "LAION ViT-B/32 with an XLM-RoBERTa text tower: queries in ~100 languages "
               "(also needs the xlm-roberta-base tokenizer/config from the hub cache)", 1470),
    KnownModel("ViT-L-14", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
               "DataComp ViT-L/14: high quality, for a GPU", 1710),
)

KNOWN_CAPTIONERS: tuple[KnownModel, ...] = (
    KnownModel("coca_ViT-B-32", "mscoco_finetuned_laion2b_s13b_b90k",
               "laion/mscoco_finetuned_CoCa-ViT-B-32-laion2B-s13B-b90k",
               "CoCa ViT-B/32 fine-tuned on COCO captions (default)", 1010),
    KnownModel("coca_ViT-B-32", "laion2b_s13b_b90k", "laion/CoCa-ViT-B-32-laion2B-s13B-b90k",
               "CoCa ViT-B/32, web alt-text style captions", 1010),
)


def clean_tag(tag: str) -> str:
    """open_clip's own tag normalisation, so `LAION2B-s34b` and `laion2b_s34b` are one id."""
    return tag.lower().replace("-", "_")


# --------------------------------------------------------------------------- configs

def _open_clip_config_dir() -> Path | None:
    # find_spec on a top-level package locates it without executing it (no torch import).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model_configs"


def read_model_config(arch: str) -> dict[str, Any] | None:
    """An open_clip architecture config (ours first, then open_clip's), read as JSON."""
    candidates = [CONFIG_DIR / f"{arch}.json"]
    oc_dir = _open_clip_config_dir()
    if oc_dir is not None:
        candidates.append(oc_dir / f"{arch.replace('/', '-')}.json")
    for path in candidates:
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    return None


def known_architectures() -> list[str]:
    names = {p.stem for p in CONFIG_DIR.glob("*.json")}
    oc_dir = _open_clip_config_dir()
    if oc_dir is not None:
        names |= {p.stem for p in oc_dir.glob("*.json")}
    return sorted(names)


# --------------------------------------------------------------------------- caches

def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder, resolved from the same variables it reads."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """open_clip's `hf_hub` value ('org/repo/' or 'org/repo/file') -> repo id + files to try, best first."""
    repo, _, filename = hf_hub.rpartition("/")  # "org/repo/" -> ("org/repo", "")
    filename = filename or HF_WEIGHTS_NAME
    files = []
    # Same preference as open_clip.download_pretrained_from_hf: safetensors first.
    if filename == HF_WEIGHTS_NAME:
        files.append(HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        files.append(filename[:-4] + ".safetensors")
    files.append(filename)
    return repo, files


def find_in_hf_cache(repo: str, filenames: list[str]) -> Path | None:
    """A cached file of a hub repo, looked up in huggingface_hub's cache layout."""
    root = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return None
    revisions: list[Path] = []
    ref = root / "refs" / "main"
    if ref.is_file():
        revisions.append(snapshots / ref.read_text().strip())
    revisions += sorted(p for p in snapshots.iterdir() if p.is_dir())
    for name in filenames:
        for rev in revisions:
            path = rev / name
            if path.is_file():  # follows the blob symlink; a dangling one is not "cached"
                return path
    return None


def lumen_models_dir() -> Path:
    """Where the window's "Download CLIP…" puts hub weights: ``<Lumen home>/models/clip/``,
    one folder per hub repo (``org--name``), the file under its hub name."""
    from desktop.settings import default_home

    return default_home() / "models" / "clip"


def find_in_lumen_models(repo: str, filenames: list[str]) -> Path | None:
    folder = lumen_models_dir() / repo.replace("/", "--")
    for name in filenames:
        if (folder / name).is_file():
            return folder / name
    return None


def cached_known(model: KnownModel) -> Path | None:
    files = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    return find_in_hf_cache(model.repo, files) or find_in_lumen_models(model.repo, files)


def known_model(arch: str, tag: str | None, known: tuple[KnownModel, ...] = KNOWN_MODELS) -> KnownModel | None:
    for k in known:
        if k.arch == arch and (tag is None or clean_tag(k.tag) == clean_tag(tag)):
            return k
    return None


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def env_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _probe_target(url: str) -> tuple[str, int]:
    scheme = urlsplit(url).scheme or "https"
    for var in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        proxy = os.environ.get(var)
        if proxy:
            parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            return parts.hostname or "", parts.port or 8080
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if scheme == "https" else 80)


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Can we open a TCP connection to the host of `url` (or the proxy) within `timeout`?

    DNS resolution is not bounded by a socket timeout, so the probe runs in a daemon
    thread and we stop waiting after `timeout` whatever it is doing.
    """
    host, port = _probe_target(url)
    result: dict[str, str] = {}

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = ""
        except OSError as e:
            result["error"] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=probe, name="lumen-clip-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if "ok" in result:
        return True, f"{host}:{port}"
    return False, f"{host}:{port} ({result.get('error', f'no answer in {timeout:.1f} s')})"


# --------------------------------------------------------------------------- hashing

_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def file_digest(path: Path) -> str:
    """First 12 hex digits of the blake2b of a file; cached per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()[:12]
    with _HASH_LOCK:
        _HASHES[key] = digest
    return digest


_CHECKPOINT_PREFERENCE = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)


def checkpoint_in_dir(folder: Path) -> Path | None:
    """The weights file in a folder, with open_clip's preference order."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".pth", ".pt")]
    if not files:
        return None
    by_name = {p.name: p for p in files}
    for name in _CHECKPOINT_PREFERENCE:
        if name in by_name:
            return by_name[name]
    return sorted(files, key=lambda p: (p.suffix != ".safetensors", p.name))[0]


# --------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec. `suffix` is the id after the plugin name."""

    kind: Kind
    arch: str  # open_clip architecture name (for "dir": the folder's name, informative only)
    tag: str | None  # hub tag (kind "hub"), or a tag whose preprocessing a local file reuses
    path: Path | None  # local weights file or folder
    suffix: str
    embed_dim: int

    @property
    def what(self) -> str:
        """How error messages name this model."""
        if self.kind == "hub":
            return f"{self.arch}:{self.tag}"
        if self.path is not None:
            return f"{self.arch} weights {self.path}"
        return f"{self.arch} (random init)"


def _weights_error(path: Path, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(f"weights {path}: {reason}")


def resolve(model: str | None, weights: str | os.PathLike[str] | None, default: str,
            known: tuple[KnownModel, ...] = KNOWN_MODELS) -> ModelSource:
    """Turn `create(model=..., weights=...)` into a source, touching only the file system."""
    arch, _, tag = (model or default).partition(":")
    # "ViT-B/32" and "ViT-B-32" are one model to open_clip, so they must be one id too.
    arch, tag = arch.strip().replace("/", "-"), (tag.strip() or None)
    if not arch:
        raise EncoderError(f"empty model name in {model!r}; expected MODEL:PRETRAINED")

    if weights:
        path = Path(weights).expanduser()
        if not path.exists():
            raise _weights_error(path, "no such file or folder")
        if path.is_dir() and (path / "open_clip_config.json").is_file():
            cfg_path = path / "open_clip_config.json"
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
                dim = int(cfg.get("model_cfg", cfg)["embed_dim"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise _weights_error(cfg_path, f"unreadable open_clip config ({e})") from e
            ckpt = checkpoint_in_dir(path)
            if ckpt is None:
                raise _weights_error(path, "folder has open_clip_config.json but no .safetensors/.bin/.pth weights")
            # The folder's config defines the architecture; hash config + weights together.
            digest = hashlib.blake2b(cfg_path.read_bytes() + file_digest(ckpt).encode()).hexdigest()[:12]
            return ModelSource("dir", path.resolve().name, None, path.resolve(), f"{path.resolve().name}:dir-{digest}", dim)
        if path.is_dir():
            ckpt = checkpoint_in_dir(path)
            if ckpt is None:
                raise _weights_error(path, "folder holds no .safetensors/.bin/.pth weights file")
            path = ckpt
        cfg = read_model_config(arch)
        if cfg is None:
            raise _unknown_arch(arch)
        try:
            digest = file_digest(path)
        except OSError as e:
            raise _weights_error(path, f"cannot read ({e.strerror or e})") from e
        tag = None if tag in (None, RANDOM_TAG) else clean_tag(tag)
        return ModelSource("file", arch, tag, path.resolve(), f"{arch}:file-{digest}", int(cfg["embed_dim"]))

    cfg = read_model_config(arch)
    if cfg is None:
        raise _unknown_arch(arch)
    dim = int(cfg["embed_dim"])
    if tag is None:
        tags = [k.tag for k in known if k.arch == arch]
        if not tags:
            raise EncoderError(
                f"say which weights to use for {arch}: `{arch}:PRETRAINED` (see `open_clip.list_pretrained()`), "
                f"`{arch}:{RANDOM_TAG}`, or a local file with --weights PATH")
        tag = tags[0]
    if tag.lower() == RANDOM_TAG:
        return ModelSource("random", arch, None, None, f"{arch}:{RANDOM_TAG}", dim)
    tag = clean_tag(tag)
    return ModelSource("hub", arch, tag, None, f"{arch}:{tag}", dim)


def _unknown_arch(arch: str) -> EncoderError:
    import difflib

    close = difflib.get_close_matches(arch, known_architectures(), n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return EncoderError(f"unknown open_clip model {arch!r}.{hint}")


# --------------------------------------------------------------------------- loading (torch)

@dataclass
class LoadedModel:
    model: Any  # open_clip CLIP / CustomTextCLIP / CoCa, eval mode
    preprocess: Callable[[Any], Any]  # PIL image -> CHW float tensor
    tokenizer: Any  # texts -> token ids
    device: str


_REGISTER_LOCK = threading.Lock()
_registered = False
_threads_configured = False


def register_configs() -> None:
    """Make our tiny test architectures (configs/*.json) known to open_clip, once."""
    global _registered
    with _REGISTER_LOCK:
        if not _registered:
            import open_clip

            open_clip.add_model_config(CONFIG_DIR)
            _registered = True


def configure_threads() -> None:
    """Don't oversubscribe: cap torch's threads at the CPUs this process may use.

    Left alone when the user chose (OMP_NUM_THREADS / MKL_NUM_THREADS); LUMEN_TORCH_THREADS
    sets it explicitly. torch's default counts the host's cores, which in a container or
    under `taskset` can be far more than we are allowed to run on.
    """
    global _threads_configured
    if _threads_configured:
        return
    _threads_configured = True
    import torch

    explicit = os.environ.get("LUMEN_TORCH_THREADS")
    if explicit:
        torch.set_num_threads(max(1, int(explicit)))
        return
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        allowed = os.cpu_count() or 1
    if torch.get_num_threads() > allowed:
        torch.set_num_threads(allowed)


def _tag_preprocess(open_clip: Any, arch: str, tag: str | None) -> dict[str, Any]:
    """Preprocessing (+ quick_gelu) that goes with a tag; for no tag, the one all known tags of
    the architecture agree on (MobileCLIP wants mean 0 / std 1 even with a local file)."""
    if tag:
        cfgs = [open_clip.get_pretrained_cfg(arch, tag)]
    else:
        cfgs = [open_clip.get_pretrained_cfg(arch, t) for t in open_clip.list_pretrained_tags_by_model(arch)]
    picked = [{k: c[k] for k in (*_PREPROCESS_KEYS, "quick_gelu") if k in c} for c in cfgs if c]
    if picked and all(p == picked[0] for p in picked):
        return picked[0]
    return {}


def _hub_checkpoint(open_clip: Any, source: ModelSource, tag_cfg: dict[str, Any]) -> str:
    """Local path of a hub checkpoint: from the cache, or downloaded after a quick probe."""
    what = f"{source.arch}:{source.tag}"
    hf_hub, url = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")
    if hf_hub:
        repo, files = hub_candidates(hf_hub)
        cached = find_in_hf_cache(repo, files) or find_in_lumen_models(repo, files)
        where = f"the Hugging Face cache ({hf_cache_dir()}, repo {repo}) or {lumen_models_dir()}"
        endpoint = hub_endpoint()
        manual = f"{endpoint.rstrip('/')}/{repo}/resolve/main/{files[0]}"
    elif url:
        cache = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        cached = cache if cache.is_file() else None
        where, endpoint, manual = f"{cache}", url, url
    else:
        raise EncoderError(f"open_clip has no download location for {what}")
    if cached is not None:
        log.info("CLIP weights for %s from cache: %s", what, cached)
        return str(cached)

    hint = offline_hint(what) + f" The file is {manual}; pass it with `--weights FILE` and the same model name ({what})."
    if env_offline():
        raise WeightsUnavailableError(f"{what} is not in {where} and HF_HUB_OFFLINE is set. {hint}")
    ok, probed = reachable(endpoint)
    if not ok:
        raise WeightsUnavailableError(f"{what} is not in {where} and the hub is unreachable: {probed}. {hint}")
    log.info("downloading CLIP weights %s (first use; a few hundred MB) ...", what)
    started = time.monotonic()
    try:
        path = open_clip.download_pretrained(tag_cfg)
    except Exception as e:  # huggingface_hub / urllib raise many types; all mean "not available"
        raise WeightsUnavailableError(f"downloading {what} failed: {type(e).__name__}: {e}. {hint}") from e
    if not path:
        raise WeightsUnavailableError(f"downloading {what} gave no file. {hint}")
    log.info("downloaded %s in %.0f s: %s", what, time.monotonic() - started, path)
    return str(path)


def check_checkpoint(path: Path) -> None:
    """Fail early, and say why, when a weights file is not a loadable state dict.

    Opens lazily (safetensors header / torch zip via mmap), so it costs little even for a
    large file, and keeps "corrupt file" apart from "file does not fit the architecture".
    Loading is always torch.load(weights_only=True): a weights file never runs code.
    """
    import pickle
    import zipfile

    import torch

    if path.suffix in (".npz", ".npy"):  # big_vision (SigLIP) weights: open_clip's own loader
        return
    try:
        if path.stat().st_size == 0:
            raise _weights_error(path, "the file is empty")
    except OSError as e:
        raise _weights_error(path, f"cannot read ({e.strerror or e})") from e
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                if not list(f.keys()):
                    raise _weights_error(path, "the safetensors file holds no tensors")
        except WeightsUnavailableError:
            raise
        except Exception as e:
            raise _weights_error(path, f"not a valid safetensors file, corrupt or truncated ({_short(e)})") from e
        return
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch.save's format; a truncated one fails is_zipfile
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        if is_zip or "Unsupported global" in str(e):
            raise _weights_error(
                path, "it holds pickled Python objects, not just tensors; Lumen loads weights with "
                "weights_only=True so a file never runs code. Save `model.state_dict()` instead") from e
        raise _weights_error(path, "not a PyTorch checkpoint or safetensors file (or it is corrupt)") from e
    except Exception as e:
        kind = "a corrupt or truncated PyTorch checkpoint" if is_zip else "not a PyTorch checkpoint or safetensors file"
        raise _weights_error(path, f"{kind} ({type(e).__name__}: {_short(e, 160)})") from e
    if isinstance(obj, torch.jit.ScriptModule):
        return  # OpenAI's original TorchScript .pt files; open_clip converts them
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise _weights_error(path, f"it holds a {type(obj).__name__}, not a model state_dict")


def resolve_device_checked(device: str) -> str:
    import torch

    from desktop.encoders import resolve_device

    resolved = resolve_device(device)
    if resolved.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} asked for, but torch sees no CUDA GPU (use 'cpu' or 'auto')")
    return resolved


def load_open_clip(source: ModelSource, device: str = "auto") -> LoadedModel:
    """Build the model for a source (imports torch + open_clip). Raises WeightsUnavailableError
    for anything that is wrong with the weights, EncoderError for a wrong spec."""
    import open_clip
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    register_configs()
    configure_threads()
    dev = resolve_device_checked(device)

    name, checkpoint, extra = source.arch, None, {}
    if source.kind == "dir":
        assert source.path is not None
        name = f"local-dir:{source.path}"
        ckpt = checkpoint_in_dir(source.path)
        if ckpt is not None:
            check_checkpoint(ckpt)
    else:
        if source.kind == "hub":
            assert source.tag is not None
            tag_cfg = open_clip.get_pretrained_cfg(source.arch, source.tag)
            if not tag_cfg:
                tags = open_clip.list_pretrained_tags_by_model(source.arch)
                raise EncoderError(
                    f"open_clip knows no pretrained tag {source.tag!r} for {source.arch}; "
                    f"known tags: {', '.join(tags) or 'none'} (or use {source.arch}:{RANDOM_TAG}, or --weights PATH)")
            checkpoint = _hub_checkpoint(open_clip, source, tag_cfg)
            try:
                check_checkpoint(Path(checkpoint))
            except WeightsUnavailableError as e:
                raise WeightsUnavailableError(f"{e} (a damaged download: delete it and retry)") from e
        elif source.kind == "file":
            assert source.path is not None
            check_checkpoint(source.path)
            checkpoint = str(source.path)
        pre = _tag_preprocess(open_clip, source.arch, source.tag)
        extra = {
            # The tag's activation wins (OpenAI weights need QuickGELU even under the plain name).
            "force_quick_gelu": bool(pre.pop("quick_gelu", False)),
            "force_preprocess_cfg": pre,
        }

    try:
        with torch.random.fork_rng(devices=[]):
            # Seeded init: "MODEL:random" is the same model in every process, so one id
            # really names one set of weights (and tests are reproducible).
            torch.manual_seed(0)
            model = open_clip.create_model(name, pretrained=checkpoint, device=dev, weights_only=True, **extra)
    except WeightsUnavailableError:
        raise
    except Exception as e:
        if source.kind == "dir":
            raise WeightsUnavailableError(
                f"weights folder {source.path}: cannot build a model from its open_clip_config.json and "
                f"weights ({type(e).__name__}: {_short(e)})") from e
        if source.kind == "file" or checkpoint:
            where = source.path or checkpoint
            raise WeightsUnavailableError(
                f"weights {where}: they do not fit the {source.arch} architecture ({type(e).__name__}: "
                f"{_short(e)}). Name the checkpoint's own architecture: --encoder clip:MODEL --weights PATH") from e
        raise EncoderError(f"cannot build open_clip model {source.what}: {type(e).__name__}: {_short(e)}") from e

    model.eval()
    try:
        # MobileCLIP's MobileOne/FastViT blocks fold their training-time branches for inference.
        from timm.utils import reparameterize_model

        model = reparameterize_model(model, inplace=True)
    except ImportError:  # timm is optional for non-timm architectures
        pass
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # HF tokenizers (SigLIP, xlm-roberta) download on first use
        raise WeightsUnavailableError(
            f"the text tokenizer of {source.what} is unavailable ({type(e).__name__}: {_short(e)}). "
            + offline_hint(f"the tokenizer of {source.what}")) from e
    log.info("loaded CLIP model %s on %s", source.what, dev)
    return LoadedModel(model, preprocess, tokenizer, dev)


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + " ..."
