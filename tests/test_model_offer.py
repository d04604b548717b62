"""The default encoder is chosen by what is on this machine, and the window's "Download
CLIP…" offer fetches weights for real from a loopback HTTP server (python's http.server in a
thread) serving a tiny randomly initialised open_clip checkpoint, then switches encoders."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from desktop.downloads import DownloadCancelled, DownloadError, DownloadTarget, download
from desktop.encoders import choose_default_encoder
from desktop.jobs import Jobs
from desktop.library import Library

WAIT_MS = 30_000
CLIP_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder) of a real HTTP server on 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real open_clip checkpoint: `lumen-tiny` (configs/lumen-tiny.json), random weights."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from plugins.clip.source import register_configs

    register_configs()
    torch.manual_seed(1)
    model = open_clip.create_model("lumen-tiny")
    path = tmp_path_factory.mktemp("ckpt") / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# ---- the default encoder -------------------------------------------------------------------
def test_without_clip_weights_the_default_is_the_built_in_model(home: Path) -> None:
    choice = choose_default_encoder()
    assert choice.spec.startswith("bert_resnet:") and choice.better == "clip:ViT-B-32:laion2b_s34b_b79k"
    assert "using the built-in model" in choice.reason
    with Library(home) as lib:  # `auto`, resolved at open and remembered in the data dir
        assert lib.encoder_spec == choice.spec and lib.encoder_better == choice.better
    with Library(home) as lib:
        assert lib.encoder_spec == choice.spec and lib.encoder_reason == "this library's encoder"
    with Library(home, encoder="colors") as lib:  # an explicit choice wins, and is remembered
        assert lib.encoder_spec == "colors" and lib.encoder_reason == "chosen with --encoder"
    with Library(home) as lib:
        assert lib.encoder_spec == "colors"


def test_cached_clip_weights_make_clip_the_default(home: Path, empty_hub_cache: Path) -> None:
    snapshot = empty_hub_cache / f"models--{CLIP_REPO.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")  # availability is file-system only
    choice = choose_default_encoder()
    assert choice.spec == "clip:ViT-B-32:laion2b_s34b_b79k" and choice.better is None
    with Library(home) as lib:
        assert lib.encoder_spec == choice.spec and lib.encoder_better is None


def test_weights_downloaded_by_lumen_count_as_cached(home: Path) -> None:
    from desktop.downloads import target_for

    target = target_for("clip")
    assert target is not None and target.url.endswith(f"{CLIP_REPO}/resolve/main/open_clip_model.safetensors")
    assert target.size_mb > 100 and target.spec == "clip:ViT-B-32:laion2b_s34b_b79k"
    target.dest.parent.mkdir(parents=True)
    target.dest.write_bytes(b"x")
    assert choose_default_encoder().spec == target.spec


def test_colors_is_never_a_default() -> None:
    assert not choose_default_encoder().spec.startswith("colors")
    assert not choose_default_encoder(["colors_not_installed", "bert_resnet"]).spec.startswith("colors")


# ---- the download itself -------------------------------------------------------------------
def test_download_writes_the_file_with_progress(server: tuple[str, Path], tiny_checkpoint: Path,
                                                tmp_path: Path) -> None:
    url, root = server
    (root / "m.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    seen: list[tuple[int, int]] = []
    dest = download(f"{url}/m.safetensors", tmp_path / "out" / "m.safetensors", progress=lambda d, t: seen.append((d, t)))
    assert dest.read_bytes() == tiny_checkpoint.read_bytes()
    size = tiny_checkpoint.stat().st_size
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert not list(dest.parent.glob("*.part"))


def test_cancel_and_errors_keep_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = server
    (root / "big.bin").write_bytes(b"\0" * (5 << 20))
    cancel = threading.Event()
    dest = tmp_path / "out" / "big.bin"
    with pytest.raises(DownloadCancelled):
        download(f"{url}/big.bin", dest, progress=lambda d, t: d and cancel.set(), cancel=cancel)
    assert not dest.exists() and not list(dest.parent.glob("*"))
    with pytest.raises(DownloadError, match="404"):
        download(f"{url}/missing.bin", dest)
    with pytest.raises(DownloadError, match="cannot download"):
        download("http://127.0.0.1:9/x", dest, timeout=2)  # nothing listens on the discard port
    assert not list(dest.parent.glob("*"))


# ---- the window's offer --------------------------------------------------------------------
def test_first_window_says_offline_and_offers_clip(qtbot, home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A new user's first window (empty data dir, no CLIP weights, no hub): the status bar
    names the built-in model and why, and offers CLIP — without the window waiting on it."""
    import time

    from desktop.app import create_window

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub nobody answers for (discard port)
    started = time.monotonic()
    lib = Library(home)
    window = create_window(lib, QSettings(str(tmp_path / "lumen.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    try:
        assert time.monotonic() - started < 5  # no network wait before the window is up
        offer = window.model_offer
        using = "using the built-in model (MiniLM + MobileNetV2)"
        assert offer.label.text() in (f"CLIP ViT-B-32 is not downloaded: {using}", f"Offline: {using}")  # probe pending/done
        qtbot.waitUntil(lambda: offer.label.text().startswith("Offline: using the built-in model"), timeout=WAIT_MS)
        assert offer.button.isVisibleTo(window) and offer.button.text() == "Download CLIP…"
        assert "605 MB" in offer.button.toolTip()
    finally:
        window.close()
        lib.close()


def test_download_offer_fetches_then_switches_the_encoder(
    qtbot, lib: Library, photos: Path, server: tuple[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from desktop.ui.main_window import MainWindow

    url, root = server
    (root / "tiny.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    lib.add_root(photos)
    window = MainWindow(Jobs(lib), QSettings(str(tmp_path / "lumen.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    try:
        with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS):
            window.start()
        old_id = lib.encoder.id
        dest = tmp_path / "models" / "tiny.safetensors"
        size = tiny_checkpoint.stat().st_size
        target = DownloadTarget("CLIP lumen-tiny (test)", f"{url}/tiny.safetensors", dest, size,
                                "clip:lumen-tiny", str(dest))
        window.model_offer.set_target(target)
        assert window.model_offer.button.isVisibleTo(window)
        window.model_offer.button.click()
        dialog = window.model_offer.dialog
        assert dialog is not None and dialog.isVisible() and not dialog.isModal()
        assert f"about {target.size_mb} MB" in dialog.intro.text()
        with qtbot.waitSignal(window.jobs.indexing.encoder_switched, timeout=WAIT_MS):
            dialog.start_button.click()
        assert dest.read_bytes() == tiny_checkpoint.read_bytes()
        assert dialog.bar.value() == 1000 and not dialog.isVisible()
        assert lib.encoder_spec == "clip:lumen-tiny" and lib.weights == str(dest)
        # Until the new vectors cover the library, the old ones answer queries.
        qtbot.waitUntil(lambda: lib.query_encoder().id.startswith("clip:lumen-tiny:file-"), timeout=WAIT_MS)
        assert lib.query_encoder().id != old_id
        qtbot.waitUntil(lambda: window.model_offer.label.text().startswith("Model: CLIP lumen-tiny"),
                        timeout=WAIT_MS)
    finally:
        window.close()
