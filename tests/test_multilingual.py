"""Queries in any language: the encoder specs for multilingual models, and heads for a
multilingual text tower distilled from the English heads (plugins/bert_resnet/distill.py).

Real multilingual weights do not reach this machine, so the plumbing runs on tiny random
towers: a teacher BERT and a student BERT of another size (both sentence-transformers
folders made here), a tiny CNN, and teacher heads. Distillation must lower the loss and
put the student's text vectors next to the teacher's; the heads file it writes must load
in the real encoder and give the teacher's image vectors unchanged."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from conftest import make_photo  # noqa: E402
from PIL import Image  # noqa: E402

from plugins.bert_resnet import CnnRef, TextRef  # noqa: E402
from plugins.bert_resnet import model as M  # noqa: E402
from plugins.bert_resnet.distill import distill, teacher_vectors  # noqa: E402
from plugins.bert_resnet.encoder import BertResnetEncoder  # noqa: E402

WORDS = ("a the dog cat man woman child red blue green ball grass water runs sits beach "
         "le la chien chat rouge bleu plage eau").split()
COLOURS = ["red", "blue", "green"]


def wordpiece_tokenizer(vocab: Path):  # noqa: ANN201 - a BertTokenizerFast
    """A WordPiece tokenizer over `vocab` (transformers 5 takes `vocab=`; 4 took `vocab_file=`
    and 5 silently ignores that name, leaving only the special tokens: every word [UNK])."""
    import inspect

    from transformers import BertTokenizerFast

    key = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    tok = BertTokenizerFast(**{key: str(vocab)})
    assert len(tok) > 5, "the tokenizer did not read its vocabulary"
    return tok


def st_folder(folder: Path, hidden: int, layers: int, seed: int) -> Path:
    """A random BERT saved as a sentence-transformers model folder (tokenizer made here)."""
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models  # type: ignore[no-redef]
    from transformers import BertConfig, BertModel

    raw = folder / "raw"
    raw.mkdir(parents=True)
    (raw / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]) + "\n")
    wordpiece_tokenizer(raw / "vocab.txt").save_pretrained(raw)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(WORDS) + 6, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=32)
    model = SentenceTransformer(modules=[word, models.Pooling(hidden, "mean"), models.Normalize()], device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one torch thread is faster than several fighting over shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    import torchvision

    root = tmp_path_factory.mktemp("multilingual")
    teacher_text = M.TextBackbone(TextRef(str(st_folder(root / "teacher", 32, 2, seed=0))))
    student_text = M.TextBackbone(TextRef(str(st_folder(root / "student", 48, 2, seed=7))))
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None, width_mult=0.25, num_classes=10)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.1, 0.1)
    cnn = M.wrap_cnn("mobilenet_v2", net, [f"thing{i}" for i in range(10)], "random-0")
    cfg = M.HeadsConfig(embed_dim=16, hidden=64, img_tail=1, img_layers=2, img_probs=True, txt_tail=1, members=2)
    torch.manual_seed(1)
    heads = M.build_heads(cfg, cnn, teacher_text)
    header = {"text_backbone": {"name": teacher_text.ref.name, "short": teacher_text.ref.short,
                                "dim": teacher_text.dim, "layers": 2, "probe": M.fingerprint_text(teacher_text)},
              "image_backbone": {"arch": cnn.arch, "dim": cnn.feat_dim, "weights": cnn.weights,
                                 "probe": M.fingerprint_cnn(cnn)},
              "training": {"split": "toy"}, "metrics": {}}
    teacher_file = root / "teacher.safetensors"
    M.save_heads(teacher_file, heads, header)
    # Toy "captions": every 3-5 word sentence the vocabulary makes in a few patterns.
    nouns, verbs, places = ["dog", "cat", "man", "woman", "child", "ball"], ["runs", "sits"], ["grass", "water", "beach"]
    captions = [f"a {c} {n} {v} the {p}" for c, n, v, p in itertools.product(COLOURS, nouns, verbs, places)]
    captions += [f"the {n} {p}" for n, p in itertools.product(nouns, places)]
    return root, cnn, teacher_text, student_text, teacher_file, captions


@pytest.mark.slow
def test_distillation_lowers_the_loss_and_lands_near_the_teacher(setup, tmp_path: Path) -> None:
    root, cnn, teacher_text, student_text, teacher_file, captions = setup
    out = tmp_path / "student.safetensors"
    rep = distill(teacher_file, captions, out, student_text, cnn=cnn, teacher_text=teacher_text,
                  epochs=120, lr=5e-3, batch=32, seed=0)
    losses = [h["loss"] for h in rep.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert rep.val_cosine > 0.8 and rep.val_cosine > rep.val_cosine_before + 0.3, rep

    # The written heads load in the real encoder (backbone fingerprints checked)...
    teacher = BertResnetEncoder(teacher_text.ref, CnnRef("mobilenet_v2", None), teacher_file,
                                backbones=(cnn, teacher_text))
    student = BertResnetEncoder(student_text.ref, CnnRef("mobilenet_v2", None), out, backbones=(cnn, student_text))
    assert student.id.startswith(f"bert_resnet:{student_text.ref.short}+mobilenet_v2:heads-")
    assert student.dim == teacher.dim
    # ...the image side is the teacher's, so image vectors are unchanged...
    make_photo(tmp_path / "p.jpg", "red", size=(64, 48))
    imgs = [Image.open(tmp_path / "p.jpg").convert("RGB"), Image.new("RGB", (40, 60), (10, 200, 30))]
    np.testing.assert_allclose(student.encode_images(imgs), teacher.encode_images(imgs), atol=2e-3)
    # ...and a query's text vector is the teacher's, near enough to rank the same photo first.
    queries = captions[::7]
    t, s = teacher.encode_texts(queries), student.encode_texts(queries)
    assert float(np.mean(np.sum(t * s, axis=1))) > 0.8
    # Random towers map every caption to nearly one direction, so a high cosine alone proves
    # little: the student must also follow how the teacher's vectors vary between captions.
    explained = 1 - np.sum((s - t) ** 2) / np.sum((t - t.mean(0)) ** 2)
    assert explained > 0.5, (explained, rep)
    ref = teacher_vectors(M.load_heads(teacher_file, cnn, teacher_text)[0], teacher_text, queries)
    np.testing.assert_allclose(t, ref, atol=1e-5)  # the targets are what the teacher's encoder returns


def test_distilled_heads_refuse_the_wrong_text_tower(setup, tmp_path: Path) -> None:
    root, cnn, teacher_text, student_text, teacher_file, captions = setup
    out = tmp_path / "student.safetensors"
    distill(teacher_file, captions, out, student_text, cnn=cnn, teacher_text=teacher_text, epochs=1, batch=64)
    from desktop.encoders import EncoderError

    with pytest.raises(EncoderError, match="trained for"):
        BertResnetEncoder(teacher_text.ref, CnnRef("mobilenet_v2", None), out, backbones=(cnn, teacher_text))


def test_too_few_captions_is_a_clear_error(setup, tmp_path: Path) -> None:
    root, cnn, teacher_text, student_text, teacher_file, _ = setup
    with pytest.raises(ValueError, match="needs captions"):
        distill(teacher_file, ["a dog"], tmp_path / "x.safetensors", student_text, cnn=cnn,
                teacher_text=teacher_text)


def test_multilingual_specs_are_listed_and_fail_fast_offline() -> None:
    from plugins.clip import encoder_plugin
    from plugins.clip.source import KNOWN_MODELS

    names = [m.spec for m in encoder_plugin.models()]
    assert any("xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k" in str(n) for n in names), names
    k = next(k for k in KNOWN_MODELS if k.arch == "xlm-roberta-base-ViT-B-32")
    assert k.tag == "laion5b_s13b_b90k" and "languages" in k.description


@pytest.mark.slow
@pytest.mark.weights
def test_cli_distils_the_shipped_heads(setup, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`lumen train-heads --distill` on the real teacher: the shipped MiniLM + MobileNetV2
    heads (real MiniLM from its package, real CNN weights from ../shared), into a tiny
    student (the real multilingual MiniLM does not reach this machine)."""
    import json

    from desktop.cli import main
    from plugins.bert_resnet import BUNDLED_HEADS_DIR, find_cnn_weights

    if find_cnn_weights("mobilenet_v2") is None:
        pytest.skip("no local MobileNetV2 weights (../shared/models)")
    student_dir = setup[0] / "student" / "st"
    captions = setup[5]
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("image\tcaption\n" + "\n".join(f"img{i // 3}.jpg\t{c}" for i, c in enumerate(captions)) + "\n")
    (tmp_path / "train.txt").write_text("\n".join(f"img{i}.jpg" for i in range(len(captions) // 3)))
    out = tmp_path / "student.safetensors"
    rc = main(["train-heads", "--home", str(tmp_path / "home"), "--distill",
               str(BUNDLED_HEADS_DIR / "minilm-mobilenetv2-flickr8k.safetensors"), "--student", str(student_dir),
               "--captions", str(tsv), "--split", str(tmp_path / "train.txt"), "--epochs", "20",
               "--out", str(out), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(out) and out.exists()
    assert report["history"][-1]["loss"] < report["history"][0]["loss"]
    assert report["val_cosine"] > report["val_cosine_before"]


def test_clip_with_a_hugging_face_text_tower_takes_queries_in_other_scripts(tmp_path: Path) -> None:
    """The xlm-roberta CLIP's path through the clip plugin (open_clip's HF text tower and
    HF tokenizer), on a tiny random XLM-RoBERTa saved here as a local weights folder."""
    import json

    import open_clip
    from safetensors.torch import save_file
    from transformers import BertConfig, XLMRobertaConfig, XLMRobertaModel

    from desktop.library import Library
    from plugins.clip import encoder_plugin

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "on", "the", "beach", "un", "chien", "sur",
             "la", "plage", "犬", "海"]
    tok_dir, hf_dir, clip_dir = tmp_path / "tok", tmp_path / "hf", tmp_path / "clip"
    for d in (tok_dir, hf_dir, clip_dir):
        d.mkdir()
    (tok_dir / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tok = wordpiece_tokenizer(tok_dir / "vocab.txt")
    for d in (tok_dir, clip_dir):  # a local-dir model carries its tokenizer (open_clip loads it there)
        tok.save_pretrained(d)
        BertConfig(vocab_size=len(words)).save_pretrained(d)  # AutoTokenizer reads the type here
    assert 1 not in tok("un chien 犬")["input_ids"]  # no [UNK]: the words are in the vocabulary
    torch.manual_seed(0)
    XLMRobertaModel(XLMRobertaConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=40,
                                     pad_token_id=0, type_vocab_size=1)).save_pretrained(hf_dir)
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                           "head_width": 16},
           "text_cfg": {"hf_model_name": str(hf_dir), "hf_tokenizer_name": str(tok_dir),
                        "hf_pooler_type": "mean_pooler", "context_length": 16}}
    model = open_clip.CustomTextCLIP(**cfg)
    (clip_dir / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(clip_dir / "open_clip_model.safetensors"))

    enc = encoder_plugin.create("tiny-xlmr", weights=str(clip_dir))
    assert ":dir-" in enc.id
    v = enc.encode_texts(["un chien sur la plage", "犬 海", "a dog on the beach"])
    assert v.shape == (3, 16) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert not np.allclose(v[0], v[1], atol=1e-3)  # other words, other vectors
    make_photo(tmp_path / "photos" / "p1.jpg", "red")
    make_photo(tmp_path / "photos" / "p2.jpg", "blue")
    with Library(tmp_path / "home", encoder="clip:tiny-xlmr", weights=str(clip_dir)) as lib:
        lib.add_root(tmp_path / "photos")
        lib.index()
        hits = lib.search("un chien sur la plage", k=5)
        assert len(hits) == 2 and all(-1 <= h.score <= 1 for h in hits)
