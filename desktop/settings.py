"""Where Lumen keeps its data, and the few settings that live outside the catalog.

The data dir holds the catalog (`catalog.db`), the ANN indexes (`index/`), the thumbnail
cache (`thumbs/`) and the writer lock. It is the platform's user data dir unless
`LUMEN_HOME` or `--home` says otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

# "auto": resolved when a library is first opened (desktop.encoders.choose_default_encoder):
# the first of PREFERRED_ENCODERS whose default model is usable offline on this machine (CLIP
# when its weights are cached, else the embedded two-tower that ships with Lumen). `colors`
# is never a user's default: it is for tests.
DEFAULT_ENCODER = "auto"
PREFERRED_ENCODERS = ("clip", "bert_resnet")
# A model process unused this long ends and returns its memory (the window and `lumen serve`).
MODEL_IDLE_S = 600.0  # ten minutes without a search or a photo to analyse


def default_home() -> Path:
    env = os.environ.get("LUMEN_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("Lumen", appauthor=False))


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def catalog(self) -> Path:
        return self.home / "catalog.db"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def thumbs(self) -> Path:
        return self.home / "thumbs"

    @property
    def lock(self) -> Path:
        return self.home / "writer.lock"

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    def ensure(self) -> Paths:
        for p in (self.home, self.index_dir, self.thumbs, self.cache):
            p.mkdir(parents=True, exist_ok=True)
        return self


def paths(home: str | os.PathLike | None = None) -> Paths:
    return Paths(Path(home).expanduser() if home else default_home())


def encoder_slug(encoder_id: str) -> str:
    """A file-system-safe folder name for an encoder id (ids contain ':' and '/')."""
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in encoder_id)
    return safe[:120]
