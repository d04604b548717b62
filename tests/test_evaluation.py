"""Retrieval metrics against hand-computed rankings, and the eval runners end to end
(real files, a real throwaway library, the `colors` encoder: fast and deterministic)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo

from desktop.evaluation import (
    average_precision,
    first_relevant_ranks,
    load_captions,
    mean_average_precision,
    quick_recall,
    rankings_from_scores,
    retrieval_metrics,
    run_duplicates_eval,
    run_eval,
)

# ---------------------------------------------------------------------------- metrics


def test_first_relevant_ranks_and_recall() -> None:
    rankings = [[3, 1, 2], [0, 2, 1], [2, 0, 1], [1, 2, 0]]
    relevant = [{1}, {0}, {1}, {3}]  # ranks: 2, 1, 3, not found
    ranks = first_relevant_ranks(rankings, relevant)
    assert ranks.tolist()[:3] == [2, 1, 3] and math.isinf(ranks[3])
    m = retrieval_metrics(rankings, relevant, ks=(1, 2, 3))
    assert m.recall == {1: 25.0, 2: 50.0, 3: 75.0}
    assert m.median_rank == 2.5  # median of 1, 2, 3, inf
    assert m.mrr == pytest.approx((1 / 2 + 1 + 1 / 3 + 0) / 4)
    assert m.queries == 4


def test_average_precision_with_several_relevant_items() -> None:
    # relevant {a, b, c} at ranks 1, 3, 6: AP = (1/1 + 2/3 + 3/6) / 3
    ranking = [10, 11, 12, 13, 14, 15, 16]
    assert average_precision(ranking, {10, 12, 15}) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    # one relevant item never returned counts as missed: (1/2 + 0) / 2
    assert average_precision([5, 6, 7], {6, 99}) == pytest.approx(0.25)
    assert average_precision([1, 2], set()) == 0.0
    # image->text style: 5 relevant captions per image
    rankings = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [9, 5, 8, 6, 7, 0, 1, 2, 3, 4]]
    relevant = [{0, 1, 2, 3, 4}, {5, 6, 7, 8, 9}]
    assert mean_average_precision(rankings, relevant) == pytest.approx(1.0)
    ap_mixed = average_precision([5, 0, 6, 1, 7, 2, 8, 3, 9, 4], {0, 1, 2, 3, 4})
    assert ap_mixed == pytest.approx((1 / 2 + 2 / 4 + 3 / 6 + 4 / 8 + 5 / 10) / 5)
    m = retrieval_metrics([[5, 0, 6, 1, 7, 2, 8, 3, 9, 4]], [{0, 1, 2, 3, 4}])
    assert m.map == pytest.approx(0.5) and m.mrr == pytest.approx(0.5) and m.recall[1] == 0.0
    assert m.recall[5] == 100.0 and m.median_rank == 2


def test_rankings_from_scores_truncated_matches_full() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((7, 50)).astype(np.float32)
    full = rankings_from_scores(scores)
    top = rankings_from_scores(scores, 5)
    assert top.shape == (7, 5) and (full[:, :5] == top).all()
    assert (np.diff(np.take_along_axis(scores, full, 1), axis=1) <= 0).all()


def test_quick_recall_perfect_and_reversed() -> None:
    img = np.eye(4, dtype=np.float32)
    owner = np.repeat(np.arange(4), 2)
    txt = img[owner]
    r = quick_recall(img, txt, owner)
    assert r["t2i_r1"] == 100.0 and r["i2t_r1"] == 100.0
    r = quick_recall(img, -txt, owner)
    assert r["t2i_r1"] == 0.0


def test_load_captions_split_order_and_missing(tmp_path: Path) -> None:
    tsv = tmp_path / "c.tsv"
    tsv.write_text("image\tcaption\na.jpg\tone\nb.jpg\ttwo\na.jpg\tthree\nc.jpg\tfour\n")
    split = tmp_path / "s.txt"
    split.write_text("b.jpg\na.jpg\nmissing.jpg\n")
    data = load_captions(tsv, split)
    assert data.images == ["b.jpg", "a.jpg"]
    assert data.captions == ["two", "one", "three"]
    assert data.caption_image.tolist() == [0, 1, 1]
    assert data.captions_of(1) == [1, 2]


# ---------------------------------------------------------------------------- runners

CAPTION_COLORS = ["red", "green", "blue", "yellow", "white", "black"]


@pytest.fixture
def caption_set(tmp_path: Path) -> tuple[Path, Path, Path]:
    images = tmp_path / "imgs"
    rows = ["image\tcaption"]
    for i, color in enumerate(CAPTION_COLORS):
        make_photo(images / f"{color}.jpg", color, size=(64, 48), seed=i)
        rows += [f"{color}.jpg\ta {color} picture", f"{color}.jpg\tsomething {color} - plain"]
    make_photo(images / "extra.jpg", "red", seed=99)  # in the folder, not in the split
    (tmp_path / "captions.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "split.txt").write_text("\n".join(f"{c}.jpg" for c in CAPTION_COLORS) + "\n")
    return images, tmp_path / "captions.tsv", tmp_path / "split.txt"


def test_run_eval_end_to_end(caption_set: tuple[Path, Path, Path], tmp_path: Path) -> None:
    images, tsv, split = caption_set
    res = run_eval(images, tsv, split, encoder="colors", device="cpu", workdir=tmp_path)
    assert res.images == 6 and res.captions == 12
    assert res.encoder == "colors:hist-v1"
    for d in (res.t2i, res.i2t):
        assert set(d) == {"exact", "ann"}
        assert d["exact"].recall[1] == 100.0 and d["exact"].mrr == 1.0
        assert d["ann"].recall == d["exact"].recall
    assert res.i2t["exact"].map == pytest.approx(1.0)  # both captions of each image ranked first
    assert res.images_per_s > 0
    out = json.loads(json.dumps(res.to_json()))
    assert out["text_to_image"]["exact"]["r@1"] == 100.0
    assert "R@1" in res.table()
    # forcing Annoy through the same code path: a tiny collection is still found
    forced = run_eval(images, tsv, split, encoder="colors", device="cpu", ann_search_k=50, workdir=tmp_path)
    assert forced.t2i["ann"].recall[10] == 100.0


def test_run_duplicates_eval(tmp_path: Path) -> None:
    folder = tmp_path / "ukb"
    for g, color in enumerate(["red", "green", "blue"]):
        for v in range(2):
            make_photo(folder / f"obj{g:02d}{v}.jpg", color, seed=10 * g + v)
    res = run_duplicates_eval(folder, group_size=2, encoder="colors", device="cpu", workdir=tmp_path)
    assert res.images == 6 and res.ns_score["exact"] == pytest.approx(2.0)
    assert res.ns_score["ann"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="groups of 4"):
        run_duplicates_eval(folder, group_size=4, encoder="colors", device="cpu", workdir=tmp_path)


def test_ann_budget_really_walks_annoy(tmp_path: Path) -> None:
    """--ann-search-k must force the Annoy path even for a small collection: with a starved
    budget recall drops below exact search; outside the budget, search is exact again."""
    from desktop.evaluation import _AnnBudget
    from desktop.index import AnnoyBackend

    rng = np.random.default_rng(0)
    data = rng.normal(size=(2000, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    ids = np.arange(1, 2001)
    idx = AnnoyBackend(tmp_path, 32)
    assert idx.build(ids, data, version=1, n_trees=10)
    queries = data[:50] + 0.3 * rng.normal(size=(50, 32)).astype(np.float32)

    def recall(hits: list) -> float:
        truth = np.argsort(-(queries @ data.T), axis=1)[:, :10] + 1
        return float(np.mean([len({i for i, _ in row} & set(t)) / 10 for row, t in zip(hits, truth, strict=True)]))

    assert recall(idx.search(queries, 10)) == 1.0  # 2 000 items: exact by design
    from desktop import index

    with _AnnBudget(40):
        starved = recall(idx.search(queries, 10))
        assert index.ANN_CANDIDATE_COST == 0  # else a budget near the collection's size searches exactly
    assert starved < 0.9
    assert recall(idx.search(queries, 10)) == 1.0  # the budget is undone on exit
