"""The `clip` encoder plugin and the `coca` captioner plugin.

Hermetic: tiny randomly initialised open_clip models (plugins/clip/configs/*.json), local
checkpoint files written to tmp, and a hub that is made unreachable on purpose, so
nothing here needs network or real weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.encoders import (
    CAPTIONER_GROUP,
    ENCODER_GROUP,
    Captioner,
    Encoder,
    EncoderError,
    WeightsUnavailableError,
    installed,
)
from plugins.clip import DEFAULT_MODEL, captioner_plugin, encoder_plugin
from plugins.clip.captioner import beam_search, clean_caption
from plugins.clip.source import KNOWN_CAPTIONERS, KNOWN_MODELS, KnownModel, cached_known

ROOT = Path(__file__).resolve().parents[1]
TINY = "lumen-tiny:random"
TINY_DIM = 64

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    """Small RGB photos of varied sizes and aspect ratios (the library hands over ~256 px)."""
    rng = np.random.default_rng(seed)
    sizes = [(256, 192), (192, 256), (300, 300), (90, 60), (256, 171)]
    return [Image.fromarray((rng.random((sizes[i % 5][1], sizes[i % 5][0], 3)) * 255).astype(np.uint8))
            for i in range(n)]


def _blake12(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes()).hexdigest()[:12]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy CI box thread sync dominates."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    enc = encoder_plugin.create(TINY, device="cpu")
    enc.load()
    return enc


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty HF cache and a hub endpoint that refuses connections at once."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nobody listens
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "http_proxy", "HTTP_PROXY", "https_proxy",
                "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "hf-cache"


# --------------------------------------------------------------------------- cheap import


def test_import_and_create_do_not_import_torch():
    code = textwrap.dedent("""
        import sys
        import plugins.clip as pc
        assert "torch" not in sys.modules and "open_clip" not in sys.modules, "import pulled in torch"
        enc = pc.encoder_plugin.create("lumen-tiny:random")
        hub = pc.encoder_plugin.create("ViT-B-32:laion2b_s34b_b79k")
        cap = pc.captioner_plugin.create()
        infos = pc.encoder_plugin.models() + pc.captioner_plugin.models()
        assert (enc.dim, hub.dim) == (64, 512), (enc.dim, hub.dim)
        assert not enc.loaded and not hub.loaded and not cap.loaded
        assert "torch" not in sys.modules and "open_clip" not in sys.modules, "create() pulled in torch"
        print(enc.id, hub.id, cap.id, len(infos))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == [
        "clip:lumen-tiny:random",
        "clip:ViT-B-32:laion2b_s34b_b79k",
        "coca:coca_ViT-B-32:mscoco_finetuned_laion2b_s13b_b90k",
    ]


# --------------------------------------------------------------------------- ids and dims


def test_ids_and_dims_without_loading():
    default = encoder_plugin.create()
    assert default.id == f"clip:{DEFAULT_MODEL}"
    assert default.dim == 512 and default.joint and not default.loaded
    # Tags are normalised the way open_clip does it, so one set of weights has one id.
    assert encoder_plugin.create("ViT-B-32:LAION2B-s34B-b79K").id == "clip:ViT-B-32:laion2b_s34b_b79k"
    assert encoder_plugin.create("ViT-B/32:laion2b_s34b_b79k").id == "clip:ViT-B-32:laion2b_s34b_b79k"
    # No tag: the model's well-known tag.
    assert encoder_plugin.create("ViT-B-16").id == "clip:ViT-B-16:laion2b_s34b_b88k"
    assert encoder_plugin.create("ViT-L-14:datacomp_xl_s13b_b90k").dim == 768
    assert isinstance(default, Encoder)


def test_bad_specs_fail_at_create():
    with pytest.raises(EncoderError, match="ViT-B-32"):  # suggests close names
        encoder_plugin.create("ViT-B-33:openai")
    with pytest.raises(EncoderError, match="RN101:PRETRAINED"):  # no well-known tag: say how to name one
        encoder_plugin.create("RN101")
    with pytest.raises(WeightsUnavailableError, match="no-such.bin"):
        encoder_plugin.create("lumen-tiny", weights="/nonexistent/no-such.bin")


def test_unknown_tag_fails_at_load_listing_tags():
    enc = encoder_plugin.create("lumen-tiny:laion2b_s34b_b79k", device="cpu")
    with pytest.raises(EncoderError, match="no pretrained tag"):
        enc.load()
    enc = encoder_plugin.create("ViT-B-32:no_such_tag", device="cpu")
    with pytest.raises(EncoderError, match="laion2b_s34b_b79k"):
        enc.load()


# --------------------------------------------------------------------------- encoding


def test_encode_shapes_dtype_norm(tiny):
    assert isinstance(tiny, Encoder)
    v = tiny.encode_images(_images(5))
    t = tiny.encode_texts(["a dog running on the beach", "a red car", ""])
    for x, n in ((v, 5), (t, 3)):
        assert x.shape == (n, TINY_DIM) and x.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(v[0], v[1])  # different photos, different vectors


def test_deterministic_and_empty(tiny):
    ims = _images(3)
    np.testing.assert_array_equal(tiny.encode_images(ims), tiny.encode_images(ims))
    np.testing.assert_array_equal(tiny.encode_texts(["a cat"]), tiny.encode_texts(["a cat"]))
    for empty in (tiny.encode_images([]), tiny.encode_texts([])):
        assert empty.shape == (0, TINY_DIM) and empty.dtype == np.float32


def test_batching_does_not_change_vectors(tiny):
    small = encoder_plugin.create(TINY, device="cpu", batch_size=2)
    ims = _images(5, seed=3)
    # Seeded random init: the same spec is the same model in every instance (and process).
    np.testing.assert_allclose(small.encode_images(ims), tiny.encode_images(ims), atol=1e-5)
    np.testing.assert_allclose(small.encode_texts(["x", "y", "z"]), tiny.encode_texts(["x", "y", "z"]), atol=1e-5)


def test_indexer_decodes_straight_to_the_models_input_size(tiny, tmp_path):
    """The indexer decodes to the model's own Resize size, so its preprocessing finds the
    size already right; the vector matches encoding the full-size photo (cosine)."""
    from torchvision.transforms import Resize

    from desktop import images
    from desktop.encoders import DECODE_SIZE, decode_size

    size = decode_size(tiny)
    resize = next(t for t in tiny.model.preprocess.transforms if isinstance(t, Resize))
    assert size == resize.size if isinstance(resize.size, int) else size == resize.size[0]
    assert size != DECODE_SIZE
    big = _images(5, seed=3)[4].resize((1333, 1000))
    big.save(tmp_path / "big.png")
    small = images.load_for_encoding(tmp_path / "big.png", size)
    assert small.size == resize(big).size  # exactly what Resize would compute: no second resize
    a, b = tiny.encode_images([small])[0], tiny.encode_images([big])[0]
    assert float(a @ b) > 0.99


def test_cuda_request_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(EncoderError, match="CUDA"):
        encoder_plugin.create(TINY, device="cuda").load()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(tiny):
    gpu = encoder_plugin.create(TINY, device="cuda")
    ims = _images(4)
    np.testing.assert_allclose(gpu.encode_images(ims), tiny.encode_images(ims), atol=1e-3)


# --------------------------------------------------------------------------- local weights


def _perturbed_state(tiny) -> dict:
    state = {k: v.clone() for k, v in tiny.model.model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    state["visual.proj"] = torch.randn(state["visual.proj"].shape, generator=gen)
    return state


def test_local_file_id_names_the_file_and_reproduces_vectors(tiny, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.model.state_dict(), path)
    enc = encoder_plugin.create("lumen-tiny", weights=str(path), device="cpu")
    assert enc.id == f"clip:lumen-tiny:file-{_blake12(path)}"
    assert enc.dim == TINY_DIM and not enc.loaded
    ims = _images(3)
    np.testing.assert_allclose(enc.encode_images(ims), tiny.encode_images(ims), atol=1e-6)
    np.testing.assert_allclose(enc.encode_texts(["a boat"]), tiny.encode_texts(["a boat"]), atol=1e-6)

    other = tmp_path / "other.pt"
    torch.save(_perturbed_state(tiny), other)
    enc2 = encoder_plugin.create("lumen-tiny", weights=str(other), device="cpu")
    assert enc2.id != enc.id  # different weights never share an id
    assert not np.allclose(enc2.encode_images(ims), enc.encode_images(ims), atol=1e-3)


def test_local_safetensors_and_folder(tiny, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny.model.model.state_dict().items()}
    st = tmp_path / "tiny.safetensors"
    save_file(state, st)
    ims = _images(2)
    enc = encoder_plugin.create("lumen-tiny", weights=st, device="cpu")
    assert enc.id == f"clip:lumen-tiny:file-{_blake12(st)}"
    np.testing.assert_allclose(enc.encode_images(ims), tiny.encode_images(ims), atol=1e-6)

    # A Hugging Face style folder: open_clip_config.json + weights; its config defines the model.
    folder = tmp_path / "my-clip"
    folder.mkdir()
    cfg = json.loads((ROOT / "plugins/clip/configs/lumen-tiny.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    save_file(state, folder / "open_clip_model.safetensors")
    enc_dir = encoder_plugin.create(None, weights=folder, device="cpu")
    assert enc_dir.id.startswith("clip:my-clip:dir-") and enc_dir.dim == TINY_DIM
    np.testing.assert_allclose(enc_dir.encode_images(ims), tiny.encode_images(ims), atol=1e-6)


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 100, b"PK\x03\x04truncated zip" * 10])
def test_corrupt_local_file(tmp_path, content):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(content)
    enc = encoder_plugin.create("lumen-tiny", weights=str(bad), device="cpu")
    with pytest.raises(WeightsUnavailableError, match="broken.pt") as err:
        enc.load()
    assert any(w in str(err.value) for w in ("empty", "corrupt", "not a PyTorch"))


def test_truncated_checkpoint_and_pickled_module(tiny, tmp_path):
    good = tmp_path / "good.pt"
    torch.save(tiny.model.model.state_dict(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsUnavailableError, match="cut.pt.*corrupt or truncated"):
        encoder_plugin.create("lumen-tiny", weights=cut, device="cpu").load()
    # A pickled module would run code on load; weights_only=True refuses it, with a reason.
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(WeightsUnavailableError, match="state_dict"):
        encoder_plugin.create("lumen-tiny", weights=pickled, device="cpu").load()


def test_weights_of_another_architecture(tiny, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.model.state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="do not fit the lumen-tiny-coca"):
        encoder_plugin.create("lumen-tiny-coca", weights=path, device="cpu").load()


# --------------------------------------------------------------------------- hub, offline


def test_offline_hub_model_fails_fast_with_hint(no_hub):
    enc = encoder_plugin.create("ViT-B-32:laion2b_s34b_b79k", device="cpu")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        enc.load()
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"offline failure took {elapsed:.1f} s"
    msg = str(err.value)
    assert "ViT-B-32:laion2b_s34b_b79k" in msg and "--weights" in msg and "unreachable" in msg
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg  # says which file to fetch
    assert not enc.loaded


def test_hf_hub_offline_env_fails_at_once(no_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        encoder_plugin.create("MobileCLIP-S2:datacompdr", device="cpu").load()
    assert time.monotonic() - started < 5


def _fake_cache(cache: Path, repo: str, name: str, content: bytes) -> Path:
    snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("abc123")
    (snap / name).write_bytes(content)
    return snap / name


def test_models_lists_cache_state_and_cached_file_is_used(no_hub):
    infos = {i.spec: i for i in encoder_plugin.models()}
    assert f"clip:{DEFAULT_MODEL}" in infos and "clip:ViT-B-32:laion2b_s34b_b79k" in infos
    assert not any(i.available for i in infos.values())  # empty cache

    repo = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    cached = _fake_cache(no_hub, repo, "open_clip_model.safetensors", b"not really safetensors")
    info = {i.spec: i for i in encoder_plugin.models()}["clip:ViT-B-32:laion2b_s34b_b79k"]
    assert info.available and info.where == str(cached)
    # The cached file is used without touching the network; a damaged one says so.
    with pytest.raises(WeightsUnavailableError, match="damaged download"):
        encoder_plugin.create("ViT-B-32:laion2b_s34b_b79k", device="cpu").load()


def test_known_models_match_open_clip_registry():
    # KNOWN_* hard-code the hub repos so `models()` needs no torch; keep them honest.
    from open_clip.pretrained import get_pretrained_cfg

    for k in (*KNOWN_MODELS, *KNOWN_CAPTIONERS):
        cfg = get_pretrained_cfg(k.arch, k.tag)
        assert cfg, f"open_clip has no {k.arch}:{k.tag}"
        assert cfg["hf_hub"].rstrip("/").split("/")[:2] == k.repo.split("/"), (k, cfg["hf_hub"])
    assert cached_known(KnownModel("x", "y", "nobody/nothing", "", 0)) is None


# --------------------------------------------------------------------------- CoCa


def test_coca_tiny_captions(tmp_path):
    cap = captioner_plugin.create("lumen-tiny-coca:random", device="cpu", seq_len=8, min_len=2, num_beams=2,
                                  batch_size=2)
    assert isinstance(cap, Captioner) and cap.id == "coca:lumen-tiny-coca:random"
    out = cap.caption(_images(3))
    assert isinstance(out, list) and len(out) == 3 and all(isinstance(c, str) for c in out)
    assert all("<start_of_text>" not in c and "<end_of_text>" not in c for c in out)
    assert cap.caption([]) == []


def test_captioner_rejects_a_non_coca_model():
    cap = captioner_plugin.create("lumen-tiny:random", device="cpu")
    with pytest.raises(EncoderError, match="not a CoCa model"):
        cap.caption(_images(1))


class _ScriptedDecoder:
    """Stands in for CoCa: the next-token logits follow a script, so the search is checkable."""

    vocab, sot, eos, pad = 20, 18, 19, 0

    def __init__(self, scripts: list[list[dict[int, float]]]) -> None:
        self.scripts = scripts  # per image, per step: {token: logit}

    def _encode_image(self, images):
        n = images.shape[0]
        return torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n, 1, 1)

    def __call__(self, image, text, image_latent, image_embs, output_labels):
        rows, length = text.shape
        logits = torch.full((rows, length, self.vocab), -20.0)
        for r in range(rows):
            script = self.scripts[int(image_latent[r, 0])]
            step = min(length - 1, len(script) - 1)
            for tok, value in script[step].items():
                logits[r, -1, tok] = value
        return {"logits": logits}


def test_beam_search_follows_scores_blocks_early_eos_and_cuts_at_eos():
    d = _ScriptedDecoder([
        [{5: 5.0}, {6: 5.0}, {7: 5.0}, {19: 5.0}],  # image 0: "5 6 7" then EOS
        [{19: 9.0, 3: 4.0}] * 4,  # image 1: wants EOS at once; min_len forces two tokens first
    ])
    for beams in (1, 3):
        out = beam_search(d, torch.zeros(2, 3, 4, 4), sot=d.sot, eos=d.eos, pad=d.pad, seq_len=10, min_len=2,
                          num_beams=beams)
        assert out == [[5, 6, 7], [3, 3]], (beams, out)


def test_clean_caption():
    assert clean_caption("<start_of_text>a dog on a beach . <end_of_text>!!!!") == "a dog on a beach."
    assert clean_caption("<start_of_text>  two  cats , sleeping ") == "two cats, sleeping"


# --------------------------------------------------------------------------- entry points


def test_discoverable_through_entry_points():
    if "clip" not in {e.name for e in installed(ENCODER_GROUP)}:
        pytest.skip("lumen is not installed (pip install -e .): entry points are not registered")
    from desktop.encoders import create_captioner, create_encoder, get_plugin

    assert get_plugin("clip") is encoder_plugin
    assert get_plugin("coca", CAPTIONER_GROUP) is captioner_plugin
    assert create_encoder("clip:lumen-tiny:random").id == "clip:lumen-tiny:random"
    assert create_captioner("coca:lumen-tiny-coca:random", seq_len=8).id == "coca:lumen-tiny-coca:random"
