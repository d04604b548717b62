"""Shared fixtures. Qt runs offscreen; every test gets its own Lumen data dir."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (10, 10, 10),
}


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when the checkout has none."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only beside the developers' checkout)")
    return path


def make_photo(
    path: Path, color: tuple[int, int, int] | str, size: tuple[int, int] = (96, 64), seed: int = 0
) -> Path:
    """A real image file: a solid colour with a little noise (so files differ by seed)."""
    rgb = COLORS[color] if isinstance(color, str) else color
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb, np.int16) + rng.integers(-12, 13, (size[1], size[0], 3)), 0, 255).astype(
        np.uint8
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=92) if path.suffix.lower() in (
        ".jpg",
        ".jpeg",
    ) else Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's real data dir."""
    home = tmp_path_factory.mktemp("lumen-home")
    monkeypatch.setenv("LUMEN_HOME", str(home))
    return home


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of 12 photos: two of each colour, one in a subfolder."""
    root = tmp_path / "photos"
    for i, name in enumerate(COLORS):
        make_photo(root / f"{name}-1.jpg", name, seed=i)
        make_photo(root / "sub" / f"{name}-2.png", name, seed=100 + i)
    return root


@pytest.fixture
def lib(home: Path):
    from desktop.library import Library

    library = Library(home, encoder="colors")
    yield library
    library.close()
