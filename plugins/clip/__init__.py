"""`clip`: open_clip image/text encoders, and `coca`: open_clip CoCa captions.

Specs: ``clip`` (the default model), ``clip:MODEL:PRETRAINED`` (any open_clip model and
hub tag, e.g. ``clip:ViT-B-32:laion2b_s34b_b79k``), ``clip:MODEL:random`` (seeded random
init: tests, speed measurements), or ``clip:MODEL`` with ``--weights PATH`` (a local
checkpoint file, or a folder with ``open_clip_config.json`` + weights).

Ids name the weights exactly: ``clip:MODEL:TAG`` for hub weights,
``clip:MODEL:file-<blake2b[:12]>`` for a local file, ``clip:NAME:dir-<hash>`` for a folder.
With a local file, also giving the tag (``clip:ViT-B-32:openai --weights F``) makes the
model use that tag's preprocessing and activation (OpenAI weights need QuickGELU);
without one, whatever all of the architecture's known tags agree on is used.

Offline: hub weights come from the Hugging Face cache when present; otherwise a ~2 s
reachability probe runs before any download, so no network means a WeightsUnavailableError
(naming the model, the file to fetch and `--weights PATH`) within seconds, at load time.
Threads: torch is capped at the CPUs this process may use unless OMP_NUM_THREADS /
MKL_NUM_THREADS are set; LUMEN_TORCH_THREADS sets the count explicitly.

Importing this package is cheap (no torch, no open_clip): creating an encoder reads JSON
configs only; torch and the weights load on first use. Why the default model is
ViT-B-32 (laion2b) is in MODELS.md next to this file (`python -m bench.clip_models`
re-measures the speeds).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from desktop.encoders import ModelInfo

from .source import (
    HF_SAFE_WEIGHTS_NAME,
    KNOWN_CAPTIONERS,
    KNOWN_MODELS,
    KnownModel,
    cached_known,
    hub_endpoint,
    known_model,
    lumen_models_dir,
    resolve,
)

if TYPE_CHECKING:
    from desktop.downloads import DownloadTarget

    from .captioner import CocaCaptioner
    from .encoder import ClipEncoder

__all__ = ["ClipPlugin", "CocaPlugin", "encoder_plugin", "captioner_plugin", "DEFAULT_MODEL", "DEFAULT_CAPTIONER"]

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
DEFAULT_CAPTIONER = "coca_ViT-B-32:mscoco_finetuned_laion2b_s13b_b90k"


def _infos(plugin: str, known: tuple[KnownModel, ...], default: str) -> list[ModelInfo]:
    infos = []
    for k in known:
        path = cached_known(k)
        spec = f"{k.arch}:{k.tag}"
        desc = k.description + ("" if spec != default or "default" in k.description else " (default)")
        where = str(path) if path else f"download on first use (~{k.size_mb} MB from huggingface.co/{k.repo})"
        infos.append(ModelInfo(f"{plugin}:{spec}", desc, path is not None, where))
    return infos


class ClipPlugin:
    """Entry point `lumen.encoders: clip`."""

    name = "clip"
    default_model = DEFAULT_MODEL

    def models(self) -> list[ModelInfo]:
        """Well-known models and whether their weights are in the local cache (file system only)."""
        return _infos(self.name, KNOWN_MODELS, self.default_model)

    def create(self, model: str | None = None, weights: str | os.PathLike[str] | None = None,
               device: str = "auto", batch_size: int = 32) -> ClipEncoder:
        from .encoder import ClipEncoder

        source = resolve(model, weights, self.default_model, KNOWN_MODELS)
        return ClipEncoder(source, device=device, batch_size=batch_size, plugin_name=self.name)

    def download_target(self, model: str | None = None) -> DownloadTarget | None:
        """The hub file for a known model, to fetch into Lumen's models folder (where
        `create()` then finds it, offline). None for models we know no single file of."""
        from desktop.downloads import DownloadTarget

        arch, _, tag = (model or self.default_model).partition(":")
        known = known_model(arch, tag or None)
        if known is None:
            return None
        return DownloadTarget(
            title=f"CLIP {known.arch} ({known.tag})",
            url=f"{hub_endpoint()}/{known.repo}/resolve/main/{HF_SAFE_WEIGHTS_NAME}",
            dest=lumen_models_dir() / known.repo.replace("/", "--") / HF_SAFE_WEIGHTS_NAME,
            size_bytes=known.size_mb * 1_000_000,
            spec=f"{self.name}:{known.arch}:{known.tag}",
        )


class CocaPlugin:
    """Entry point `lumen.captioners: coca`."""

    name = "coca"
    default_model = DEFAULT_CAPTIONER

    def models(self) -> list[ModelInfo]:
        return _infos(self.name, KNOWN_CAPTIONERS, self.default_model)

    def create(self, model: str | None = None, weights: str | os.PathLike[str] | None = None,
               device: str = "auto", **kwargs: Any) -> CocaCaptioner:
        """kwargs: seq_len (30), min_len (5), num_beams (3), batch_size (8)."""
        from .captioner import CocaCaptioner

        source = resolve(model, weights, self.default_model, KNOWN_CAPTIONERS)
        return CocaCaptioner(source, device=device, plugin_name=self.name, **kwargs)


encoder_plugin = ClipPlugin()
captioner_plugin = CocaPlugin()
