"""The plugin contract: encoders (image/text -> vectors), captioners (image -> text),
re-rankers (a second look at the encoder's best candidates).

Plugins are found through entry points (`lumen.encoders`, `lumen.captioners`,
`lumen.rerankers`); our own
plugins are registered the same way in pyproject.toml. Listing plugins never imports
torch: a plugin module is cheap to import and loads its model on first use.

An encoder *spec* is what a user types: ``clip`` (the plugin's default model),
``clip:ViT-B-32:laion2b_s34b_b79k`` (plugin + model), optionally with a weights path.
An encoder *id* is what a loaded encoder reports and what every stored vector carries;
it names the model and the weights exactly, so vectors from different weights never mix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

ENCODER_GROUP = "lumen.encoders"
AUTO = "auto"  # the encoder spec that means "the best one this machine has" (choose_default_encoder)
DECODE_SIZE = 256  # encoders look at ~224 px; JPEGs are draft-decoded to about this
CAPTIONER_GROUP = "lumen.captioners"
RERANKER_GROUP = "lumen.rerankers"


class EncoderError(RuntimeError):
    """An encoder or captioner could not be created or used."""


class WeightsUnavailableError(EncoderError):
    """Weights are neither on disk nor downloadable (offline, wrong path, wrong file)."""


class UnknownPluginError(EncoderError):
    """No installed plugin has that name."""


@runtime_checkable
class Encoder(Protocol):
    id: str  # stable, names model + weights, e.g. "clip:MobileCLIP-S2:datacompdr"
    dim: int
    joint: bool  # text and image vectors share one space

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) float32, L2-normalised. Images are RGB, already oriented."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised. Raises EncoderError when not `joint`."""
        ...


@dataclass(frozen=True)
class RerankQuery:
    """What a re-ranker sees of a query. Text -> image: `text` (the raw query, operators
    included) and `images` (paths of query photos); image -> text: `regions` (the query
    photo's features, from the region store) and `photo_id`. `encoder_id`: the first
    stage's encoder (whose vectors the scores and `RerankCandidates.vectors` come from)."""

    text: str | None = None
    images: tuple[str, ...] = ()
    photo_id: int | None = None
    regions: np.ndarray | None = None
    encoder_id: str | None = None


@dataclass(frozen=True)
class RerankCandidates:
    """The first stage's best candidates, best first. Photos (text -> image) carry their
    stored region features (None where a photo has none yet); captions (image -> text)
    carry their text, and their first-stage vectors where the caller has them (a caption
    bank does)."""

    scores: np.ndarray  # (n,) first-stage scores
    photo_ids: tuple[int, ...] = ()
    regions: tuple[np.ndarray | None, ...] = ()
    texts: tuple[str, ...] = ()
    vectors: np.ndarray | None = None  # (n, dim) first-stage vectors of the candidates


@runtime_checkable
class Reranker(Protocol):
    """Second stage: new scores for the first stage's top candidates (`lumen.rerankers`).

    `rerank` returns (n,) scores, higher is better, or None for a query it does not
    handle (the first-stage order is kept). A re-ranker that needs per-photo features
    names them with `regions_key(encoder_id)` (the region store's key, which must change
    whenever the features would) and computes them at index time with
    `regions_from_maps(maps, vectors, encoder_id) -> (n, rows, cols)`, from the maps (and
    the first-stage vectors) an encoder's `encode_images_with_maps` returns in its own CNN
    pass; one that needs none returns
    None there. Optional: `explain(text, regions) -> list[dict | None]` (why a photo matched)."""

    id: str

    def accepts(self, encoder_id: str) -> bool:
        """Whether its scores mean anything for this first-stage encoder."""
        ...

    def regions_key(self, encoder_id: str) -> str | None: ...

    def rerank(self, query: RerankQuery, candidates: RerankCandidates) -> np.ndarray | None: ...


@runtime_checkable
class Captioner(Protocol):
    id: str

    def caption(self, images: Sequence[Image.Image]) -> list[str]: ...


@runtime_checkable
class Tagger(Protocol):
    """Optional extra an encoder may offer: labels with scores per image."""

    def tags(self, images: Sequence[Image.Image], top_k: int = 5) -> list[list[tuple[str, float]]]: ...


@dataclass(frozen=True)
class ModelInfo:
    """One model a plugin knows; `available` is checked without loading anything heavy."""

    spec: str  # what to pass as --encoder, e.g. "clip:ViT-B-32:laion2b_s34b_b79k"
    description: str
    available: bool  # weights usable offline right now
    where: str  # a path, "cache", "download on first use", or why not


class EncoderPlugin(Protocol):
    """What an entry point in `lumen.encoders` / `lumen.captioners` resolves to."""

    name: str  # the entry point name, the prefix of every spec and id it makes
    default_model: str

    def models(self) -> list[ModelInfo]: ...

    def create(self, model: str | None = None, weights: str | None = None, device: str = "auto") -> Any: ...


@dataclass(frozen=True)
class PluginEntry:
    name: str
    group: str
    value: str  # "module:attr", shown without importing
    distribution: str

    def load(self) -> EncoderPlugin:
        for ep in entry_points(group=self.group):
            if ep.name == self.name:
                return ep.load()
        raise UnknownPluginError(f"plugin {self.name!r} is no longer installed in group {self.group}")


def installed(group: str = ENCODER_GROUP) -> list[PluginEntry]:
    """Installed plugins of a group, from package metadata only (imports nothing)."""
    found = {}
    for ep in entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "?"
        found.setdefault(ep.name, PluginEntry(ep.name, group, ep.value, dist))
    return sorted(found.values(), key=lambda e: e.name)


def split_spec(spec: str) -> tuple[str, str | None]:
    """ "clip:ViT-B-32:openai" -> ("clip", "ViT-B-32:openai"); "clip" -> ("clip", None)."""
    name, _, model = spec.partition(":")
    return name, (model or None)


def get_plugin(name: str, group: str = ENCODER_GROUP) -> EncoderPlugin:
    for entry in installed(group):
        if entry.name == name:
            return entry.load()
    names = ", ".join(e.name for e in installed(group)) or "none"
    raise UnknownPluginError(f"no plugin named {name!r} in {group} (installed: {names})")


def create_encoder(spec: str, weights: str | None = None, device: str = "auto") -> Encoder:
    """Make an encoder from a spec (``auto``: see choose_default_encoder); the model itself
    loads lazily on first use."""
    if spec == AUTO:
        spec = choose_default_encoder().spec
    name, model = split_spec(spec)
    return get_plugin(name, ENCODER_GROUP).create(model=model, weights=weights, device=device)


def create_captioner(spec: str, weights: str | None = None, device: str = "auto", **kwargs: Any) -> Captioner:
    name, model = split_spec(spec)
    return get_plugin(name, CAPTIONER_GROUP).create(model=model, weights=weights, device=device, **kwargs)


def create_reranker(spec: str, weights: str | None = None, device: str = "auto") -> Reranker:
    name, model = split_spec(spec)
    return get_plugin(name, RERANKER_GROUP).create(model=model, weights=weights, device=device)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows to unit length, as float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'. Imports torch: call at load time."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class LazyModel:
    """Loads a model once, on first use, under a lock (two threads never load it twice).

    Subclasses implement `_load()` and call `self.model` wherever they need it.
    `unload()` drops it so an idle app gives the memory back.
    """

    def __init__(self) -> None:
        self._model: Any = None
        self._load_lock = threading.Lock()

    def _load(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def load(self) -> None:
        """Load now (e.g. in a background job) instead of on first use."""
        _ = self.model

    def unload(self) -> None:
        with self._load_lock:
            self._model = None


def batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def offline_hint(what: str, option: str = "--weights PATH") -> str:
    """The part of an offline error that says what to do."""
    return (
        f"{what} could not be downloaded (no network, or the model hub is unreachable). "
        f"Download the weights on a machine with internet and point Lumen at the file with "
        f"`{option}` (or in Settings -> Encoder -> Weights)."
    )


@dataclass(frozen=True)
class EncoderChoice:
    """What `--encoder auto` became on this machine, and why (the window shows `reason`)."""

    spec: str
    reason: str
    better: str | None = None  # a preferred plugin's spec whose weights are missing (offer a download)


def choose_default_encoder(preferred: Sequence[str] | None = None) -> EncoderChoice:
    """The first preferred plugin whose default model is usable offline right now.

    Looks only at the file system (`models()`; no network, no torch), so opening a library
    never waits on a probe. Unavailable ones before the pick become `better`: the window
    offers to download them."""
    from desktop.settings import PREFERRED_ENCODERS

    names = list(preferred or PREFERRED_ENCODERS)
    missing: list[str] = []
    for name in names:
        try:
            plugin = get_plugin(name)
            spec = f"{name}:{plugin.default_model}"
            usable = any(m.available for m in plugin.models() if m.spec == spec)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the app opening
            log.warning("encoder plugin %s unusable: %s", name, exc)
            continue
        if usable:
            better = missing[0] if missing else None
            if better is None:
                reason = f"{spec}: its weights are on this machine"
            else:
                reason = f"{better.partition(':')[0].upper()} is not downloaded: using the built-in model"
            return EncoderChoice(spec, reason, better)
        missing.append(spec)
    # Nothing usable offline: the first preferred one (it downloads, or says clearly why not).
    spec = missing[0] if missing else names[0]
    return EncoderChoice(spec, f"no model is on this machine yet: {spec} downloads on first use")


def better_encoder(spec: str, preferred: Sequence[str] | None = None) -> str | None:
    """A preferred encoder ranked above `spec`'s plugin whose weights are not on this machine
    (what the window offers to download); None when the user already has something as good,
    or when one ranked higher is here and they chose `spec` anyway. File system only."""
    from desktop.settings import PREFERRED_ENCODERS

    names = list(preferred or PREFERRED_ENCODERS)
    current = split_spec(spec)[0]
    ahead = names[: names.index(current)] if current in names else names
    for name in ahead:
        try:
            plugin = get_plugin(name)
            want = f"{name}:{plugin.default_model}"
            if any(m.available for m in plugin.models() if m.spec == want):
                return None
        except Exception:  # noqa: BLE001 - an uninstalled or broken plugin is offered by no one
            continue
        return want
    return None


def understands_meaning(encoder: Any) -> bool:
    """Whether an encoder's vectors carry general meaning. One that only matches what it was
    built for (`colors`: colour words) says so with `meaningful = False`; zero-shot tags over the
    general vocabulary and captions from the default bank would then be noise shown as fact
    ("brown bear" on a brown wall), so Lumen makes none. Encoders without the attribute: True."""
    return bool(getattr(encoder, "meaningful", True))


ProgressFn = Callable[[int, int], None]


def decode_size(encoder: Any) -> int:
    """The short side photos are decoded to for `encoder`: its own input resize when it says
    (then its preprocessing skips a second resize), else DECODE_SIZE."""
    try:
        size = getattr(encoder, "decode_size", None)
    except Exception:  # a plugin's property must not stop indexing; the default is always fine
        log.debug("decode_size of %r failed", encoder, exc_info=True)
        size = None
    return size if isinstance(size, int) and size > 0 else DECODE_SIZE
