"""The re-ranker contract: a plugin in `lumen.rerankers` re-scores the first stage's top N
through Library.search and the CLI; the region store; the index-time seam.

The toy re-ranker here reverses the first stage's order. It is registered as a real entry
point (a *.dist-info folder on sys.path, what pip would write) only for these tests."""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo

from desktop.catalog.regions import RegionStore, RegionStoreError
from desktop.cli import main
from desktop.encoders import RERANKER_GROUP, Reranker, installed
from desktop.library import Library

TOY = '''
import numpy as np


class Reverse:
    """Reverses the first stage's order; records what it was asked."""

    id = "reverse:v1"
    calls = []

    def accepts(self, encoder_id):
        return encoder_id.startswith("colors:")

    def regions_key(self, encoder_id):
        return None

    def rerank(self, query, candidates):
        Reverse.calls.append((query.text, len(candidates.scores)))
        if candidates.texts:
            return np.arange(len(candidates.texts), dtype=np.float32)
        return np.arange(len(candidates.scores), dtype=np.float32)


    def explain(self, text, regions):
        """A grid whose hottest cell is the query's word count (a deterministic toy)."""
        words = text.split()
        heat = np.zeros((7, 7))
        heat.flat[len(words) % 49] = 1.0
        return [{"grid": [7, 7], "score": 0.5, "heatmap": heat.tolist(), "top_words": words[:3],
                 "words": [{"word": w, "score": 0.5, "attention": heat.tolist()} for w in words]}
                for _ in regions]


class Plugin:
    name = "reverse"
    default_model = "v1"

    def models(self):
        return []

    def create(self, model=None, weights=None, device="auto"):
        return Reverse()


plugin = Plugin()
'''


@pytest.fixture
def toy_reranker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = tmp_path / "site"
    (site / "lumen_toy_reranker-0.1.dist-info").mkdir(parents=True)
    (site / "lumen_toy_reranker.py").write_text(textwrap.dedent(TOY))
    (site / "lumen_toy_reranker-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: lumen-toy-reranker\nVersion: 0.1\n")
    (site / "lumen_toy_reranker-0.1.dist-info" / "entry_points.txt").write_text(
        "[lumen.rerankers]\nreverse = lumen_toy_reranker:plugin\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("lumen_toy_reranker", None)


@pytest.fixture
def colour_photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i, c in enumerate([(220, 30, 30), (200, 60, 40), (180, 90, 60), (150, 120, 90), (30, 60, 220), (30, 180, 40)]):
        make_photo(root / f"p{i}.jpg", c, seed=i)
    return root


def test_toy_reranker_is_found_through_the_entry_point(toy_reranker) -> None:
    names = [e.name for e in installed(RERANKER_GROUP)]
    assert "reverse" in names and "xattn" in names
    from lumen_toy_reranker import Reverse

    assert isinstance(Reverse(), Reranker)


def test_reverse_reranker_changes_library_search(toy_reranker, colour_photos: Path, home: Path) -> None:
    with Library(home, encoder="colors", rerank=False) as lib:
        lib.add_root(colour_photos)
        lib.index()
        plain = [h.path for h in lib.search("red", k=6)]
    with Library(home, rerank=True) as lib:
        reranked = lib.search("red", k=6)
    assert [h.path for h in reranked] == plain[::-1]
    assert [h.score for h in reranked] == sorted(h.score for h in reranked)  # first-stage scores kept
    with Library(home) as lib:  # the setting (on by default), then switched off and kept
        assert [h.path for h in lib.search("red", k=6)] == plain[::-1]
        lib.reranking.set_enabled(False)
    with Library(home) as lib:
        assert [h.path for h in lib.search("red", k=6)] == plain
        assert lib.reranking.depth(6, lib.encoder.id) == 6


def test_reranker_sees_the_top_n_and_k_cuts_after(toy_reranker, colour_photos: Path, home: Path) -> None:
    from lumen_toy_reranker import Reverse

    with Library(home, encoder="colors") as lib:
        lib.add_root(colour_photos)
        lib.index()
        Reverse.calls.clear()
        top2 = lib.search("red", k=2)
        full = lib.search("red", k=6)
    assert Reverse.calls == [("red", 6), ("red", 6)]  # all 6 < TOP_N candidates, whatever k
    assert [h.path for h in top2] == [h.path for h in full[:2]]


def test_no_reranker_installed_behaves_as_before(colour_photos: Path, home: Path) -> None:
    with Library(home, encoder="colors") as lib:
        lib.add_root(colour_photos)
        lib.index()
        assert lib.reranking.reranker(lib.encoder.id) is None  # xattn does not accept colors
        assert lib.reranking.depth(3, lib.encoder.id) == 3
        hits = lib.search("red", k=6)
    names = [Path(h.path).name for h in hits]
    assert names[0] == "p0.jpg" and names[-1] in ("p4.jpg", "p5.jpg")
    assert not (home / "regions.db").exists() or RegionStore(home / "regions.db").count() == 0


def test_cli_rerank_flags(toy_reranker, colour_photos: Path, home: Path, capsys) -> None:
    h = ["--home", str(home)]
    assert main(["add", str(colour_photos), *h, "--encoder", "colors"]) == 0
    assert main(["index", "--no-captions", *h]) == 0
    capsys.readouterr()

    def search(*flags: str) -> list[str]:
        assert main(["search", "red", "-k", "6", "--json", *flags, *h]) == 0
        return [x["path"] for x in json.loads(capsys.readouterr().out)]

    plain, reranked, default = search("--no-rerank"), search("--rerank"), search()
    assert reranked == plain[::-1] and default == reranked


def test_caption_ranking_is_reranked(toy_reranker, colour_photos: Path, home: Path) -> None:
    with Library(home, encoder="colors") as lib:
        lib.add_root(colour_photos)
        lib.index()
        photo = lib.search("red", k=1)[0].photo
        order = lib.reranking.captions(photo.id, photo.hash, ["a", "b", "c"], np.array([0.9, 0.5, 0.1]),
                                       lib.encoder.id)
        assert order.tolist() == [2, 1, 0]
        lib.reranking.override = False
        assert lib.reranking.captions(photo.id, photo.hash, ["a", "b", "c"], np.array([0.9, 0.5, 0.1]),
                                      lib.encoder.id).tolist() == [0, 1, 2]


def test_bank_captions_go_through_the_reranker(toy_reranker, colour_photos: Path, home: Path, tmp_path: Path) -> None:
    """The app's image -> text: caption_pending's bank candidates are re-ranked (the toy
    reverses them, so each photo gets the last of its candidates), and not without it."""
    from desktop.captions import make_captioner

    bank = tmp_path / "colours.txt"
    bank.write_text("\n".join(["red", "dark red", "orange", "brown", "blue", "green", "white", "black"]) + "\n")
    spec = f"retrieval:{bank}"
    with Library(home, encoder="colors") as lib:
        lib.add_root(colour_photos)
        lib.index()
        photo = lib.search("red", k=1)[0].photo
        lib.reranking.override = False
        lib.caption_pending(spec, tags=False)
        plain = lib.catalog.captions(photo.id)[0].text
        lib.reranking.override = True
        lib.caption_pending(spec, tags=False, redo=True)
        reranked = lib.catalog.captions(photo.id)[0].text
        cands = make_captioner(lib.store, spec).top(lib.catalog.vector_of(photo.id, lib.encoder.id)[None], 50)[0]
    assert plain == cands[0][0] and reranked == cands[-1][0] and plain != reranked


# --------------------------------------------------------------------------- region store


def test_region_store_round_trip_and_readonly(tmp_path: Path) -> None:
    store = RegionStore(tmp_path / "regions.db")
    a = np.random.default_rng(0).normal(size=(49, 128)).astype(np.float32)
    assert store.put("enc|rr", [("h1", a), ("h2", a * 2)]) == 2
    got = store.get("enc|rr", ["h1", "h2", "missing"])
    assert set(got) == {"h1", "h2"} and got["h1"].dtype == np.float16
    assert np.allclose(got["h2"], (a * 2).astype(np.float16))
    assert store.get("other", ["h1"]) == {} and store.count("enc|rr") == 2
    assert store.prune("enc|rr", {"h1"}) == 1 and store.hashes("enc|rr") == {"h1"}
    with pytest.raises(ValueError, match="2-D"):
        store.put("enc|rr", [("h3", np.zeros(3))])
    ro = RegionStore(tmp_path / "regions.db", readonly=True)
    assert set(ro.get("enc|rr", ["h1"])) == {"h1"}
    with pytest.raises(RegionStoreError, match="read-only"):
        ro.put("enc|rr", [("h4", a)])
    ro.close()
    store.close()
    assert RegionStore(tmp_path / "absent.db", readonly=True).get("x", ["h"]) == {}


def test_region_store_keeps_earlier_rows_when_a_write_fails(tmp_path: Path) -> None:
    store = RegionStore(tmp_path / "regions.db")
    a = np.ones((4, 8), np.float32)
    store.put("s", [("h1", a)])
    with pytest.raises(ValueError):  # the batch fails half way: nothing of it is written
        store.put("s", [("h2", a), ("h3", np.zeros(5))])
    conn = sqlite3.connect(tmp_path / "regions.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert store.hashes("s") == {"h1"}
    store.close()
