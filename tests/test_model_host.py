"""Models in a child process (desktop/model_host.py): same vectors, a parent that never
imports torch, errors that keep their type, and a process that ends on unload and comes
back after a crash. Real child processes with the tiny random open_clip model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo
from PIL import Image

from desktop.encoders import EncoderError, WeightsUnavailableError, create_encoder
from desktop.model_host import RemoteEncoder

pytest.importorskip("open_clip")

ROOT = Path(__file__).resolve().parents[1]
TINY = "clip:lumen-tiny:random"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            return "\nState:\tZ" not in f.read()
    except OSError:
        return True


@pytest.fixture(scope="module")
def remote():
    enc = RemoteEncoder(create_encoder(TINY, device="cpu"), TINY, None, "cpu")
    yield enc
    enc.unload()


def test_same_vectors_as_in_process(remote: RemoteEncoder) -> None:
    assert remote.pid is None and remote.id == TINY and remote.dim == 64 and remote.joint  # no process yet
    local = create_encoder(TINY, device="cpu")
    pics = [Image.new("RGB", (90 + 30 * i, 60 + 20 * i), c) for i, c in enumerate(("red", "green", "blue"))]
    np.testing.assert_array_equal(remote.encode_images(pics), local.encode_images(pics))
    np.testing.assert_array_equal(remote.encode_texts(["a dog", "the sea"]), local.encode_texts(["a dog", "the sea"]))
    assert remote.decode_size == local.decode_size
    assert remote.loaded and remote.pid is not None and remote.pid != os.getpid()


def test_unload_ends_the_process_and_a_killed_one_comes_back(remote: RemoteEncoder) -> None:
    remote.load()
    pid = remote.pid
    assert pid is not None and _alive(pid)
    remote.unload()
    assert not remote.loaded and remote.pid is None and not _alive(pid)
    first = remote.encode_texts(["again"])  # starts a new process
    killed = remote.pid
    assert killed is not None and killed != pid
    os.kill(killed, signal.SIGKILL)
    again = remote.encode_texts(["again"])  # the crash is noticed, a new process answers
    assert remote.pid not in (None, killed)
    np.testing.assert_array_equal(first, again)


def test_errors_keep_their_type(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the child inherits it: no hub, an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = "clip:ViT-B-32:laion2b_s34b_b79k"
    enc = RemoteEncoder(create_encoder(spec, device="cpu"), spec, None, "cpu")
    try:
        with pytest.raises(WeightsUnavailableError, match="ViT-B-32"):
            enc.load()
        assert not enc.loaded
    finally:
        enc.unload()
    broken = RemoteEncoder(create_encoder(TINY, device="cpu"), "clip:no-such-model", None, "cpu")
    try:
        with pytest.raises(EncoderError):
            broken.encode_texts(["x"])
    finally:
        broken.unload()


def test_library_in_model_process_mode_never_imports_torch(tmp_path: Path) -> None:
    """What the window runs: index and search with the model in a child process; the
    parent interpreter has not imported torch at the end, and close() ends the child."""
    photos = tmp_path / "photos"
    for i, colour in enumerate(("red", "green", "blue", "yellow")):
        make_photo(photos / f"{colour}.jpg", colour, seed=i)
    script = textwrap.dedent(f"""
        import json, os, sys
        from desktop.library import Library
        lib = Library({str(tmp_path / "home")!r}, encoder={TINY!r}, device="cpu", model_process=True)
        lib.add_root({str(photos)!r})
        report = lib.index()
        hits = lib.search("a photo", k=4)
        pid = lib.encoder.pid
        lib.close()
        gone = not os.path.exists(f"/proc/{{pid}}") or "State:\\tZ" in open(f"/proc/{{pid}}/status").read()
        print(json.dumps({{"encoded": report.encoded, "hits": len(hits), "child": pid != os.getpid(),
                           "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules,
                           "child_gone": gone}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"encoded": 4, "hits": 4, "child": True, "torch": False, "open_clip": False,
                      "child_gone": True}


def test_a_captioner_runs_in_the_model_process_too() -> None:
    from desktop.encoders import create_captioner

    options = {"seq_len": 8, "min_len": 2, "num_beams": 2, "batch_size": 2}
    spec = "coca:lumen-tiny-coca:random"
    local = create_captioner(spec, device="cpu", **options)
    remote = RemoteEncoder(create_captioner(spec, device="cpu", **options), spec, None, "cpu",
                           kind="captioner", options=options)
    try:
        pics = [Image.new("RGB", (80, 60), c) for c in ("red", "navy")]
        assert remote.id == local.id and remote.pid is None  # the id needs no model
        # (The tiny CoCa's random weights come from torch's global RNG, so they differ from
        # this process's copy: compare the process with itself, not with `local`.)
        out = remote.caption(pics)
        assert len(out) == 2 and all(isinstance(c, str) for c in out)
        assert remote.pid not in (None, os.getpid()) and remote.loaded
        assert remote.caption(pics) == out
        assert remote.caption([]) == []
    finally:
        remote.unload()


def test_an_idle_model_process_ends_and_the_next_request_restarts_it() -> None:
    enc = RemoteEncoder(create_encoder(TINY, device="cpu"), TINY, None, "cpu", idle_unload_s=0.5)
    try:
        first = enc.encode_texts(["a dog"])
        pid = enc.pid
        assert pid is not None
        deadline = time.monotonic() + 30
        while (enc.pid is not None or _alive(pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert enc.pid is None and not enc.loaded and not _alive(pid)  # ended on its own
        np.testing.assert_array_equal(enc.encode_texts(["a dog"]), first)  # and back on demand
        assert enc.pid not in (None, pid)
    finally:
        enc.unload()
