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
    included) and `images` (paths of query photos); image -> text: `photo` (the query
    photo's region features, from the region store) and `photo_id`."""

    text: str | None = None
    images: tuple[str, ...] = ()
    photo_id: int | None = None
    regions: np.ndarray | None = None


@dataclass(frozen=True)
class RerankCandidates:
    """The first stage's best candidates, best first. Photos (text -> image) carry their
    stored region features (None where a photo has none yet); captions (image -> text)
    carry their text."""

    scores: np.ndarray  # (n,) first-stage scores
    photo_ids: tuple[int, ...] = ()
    regions: tuple[np.ndarray | None, ...] = ()
    texts: tuple[str, ...] = ()


@runtime_checkable
class Reranker(Protocol):
    """Second stage: new scores for the first stage's top candidates (`lumen.rerankers`).

    `rerank` returns (n,) scores, higher is better, or None for a query it does not
    handle (the first-stage order is kept). A re-ranker that needs per-photo features
    names them with `regions_key(encoder_id)` (the region store's key, which must change
    whenever the features would) and computes them at index time with
    `regions_from_maps(maps) -> (n, rows, cols)`, from the maps an encoder's
    `encode_images_with_maps` returns in its own CNN pass; one that needs none returns
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
    """Make an encoder from a spec; the model itself loads lazily on first use."""
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


ProgressFn = Callable[[int, int], None]
