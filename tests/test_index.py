"""desktop.index: ANN answers match exact search, filters hold, builds swap atomically."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from desktop import index
from desktop.index import AnnoyBackend, exact_search


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 1.0) -> np.ndarray:
    """Unit vectors around `clusters` random centres; `spread` is the noise norm."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)]
    x += rng.standard_normal((n, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def split(x: np.ndarray, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    return x[n_queries:], x[:n_queries]  # queries come from the same clusters, not the data


def ids_of(rows: list[list[tuple[int, float]]]) -> list[list[int]]:
    return [[i for i, _ in row] for row in rows]


def files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


@pytest.fixture
def ann_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the Annoy path on small indexes (the shipped settings search those exactly)."""
    monkeypatch.setattr(index, "EXACT_MAX_ITEMS", 0)
    monkeypatch.setattr(index, "ANN_CANDIDATE_COST", 0.0)
    monkeypatch.setattr(index, "SEARCH_K_MIN", 400)
    monkeypatch.setattr(index, "SEARCH_K_PER_RESULT", 20)


@pytest.fixture(scope="module")
def built_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    x = clustered(3020, 32, 40, seed=1)
    data, queries = split(x, 20)
    ids = np.arange(len(data), dtype=np.int64) * 7 + 3  # not positions: catches mix-ups
    directory = tmp_path_factory.mktemp("built") / "enc"
    assert AnnoyBackend(directory, 32).build(ids, data, version=11, n_trees=20)
    return directory, ids, data, queries


@pytest.fixture
def built(built_once, tmp_path: Path) -> tuple[AnnoyBackend, np.ndarray, np.ndarray, np.ndarray]:
    """A private copy of a built index (tests may rebuild or break it)."""
    directory, ids, data, queries = built_once
    idx = AnnoyBackend(shutil.copytree(directory, tmp_path / "enc"), 32)
    assert idx.load()
    return idx, ids, data, queries


def assert_sorted(rows: list[list[tuple[int, float]]]) -> None:
    for row in rows:
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        assert len({i for i, _ in row}) == len(row)


# ---- exactness ---------------------------------------------------------------------------
def test_exact_search_chunked_matches_full_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered(5003, 16, 30, seed=2)
    data, queries = split(x, 7)
    ids = np.arange(len(data)) + 100
    monkeypatch.setattr(index, "_CHUNK_ELEMENTS", 7 * 1000)  # many chunks
    got = exact_search(data, ids, queries, 10)
    full = queries @ data.T
    for row, scores in zip(got, full, strict=True):
        want = np.argsort(-scores)[:10]
        assert [i for i, _ in row] == list(ids[want])
        np.testing.assert_allclose([s for _, s in row], scores[want], rtol=1e-5)
    assert exact_search(data[:3], ids[:3], queries, 10)[0].__len__() == 3
    assert exact_search(data, ids, queries, 0) == [[] for _ in queries]


@pytest.mark.usefixtures("ann_path")
def test_small_index_ann_equals_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered(530, 64, 20, seed=3)
    data, queries = split(x, 30)
    ids = np.arange(len(data), dtype=np.int64)
    idx = AnnoyBackend(tmp_path, 64)
    idx.build(ids, data, version=1)
    calls = []
    real_topk = index._topk
    monkeypatch.setattr(index, "_topk", lambda *a, **kw: calls.append(1) or real_topk(*a, **kw))
    ann = idx.search(queries, 10)
    assert not calls, "the Annoy path was not taken"
    ref = exact_search(data, ids, queries, 10)
    assert ids_of(ann) == ids_of(ref)
    for a, r in zip(ann, ref, strict=True):  # re-ranked: true cosines, not annoy distances
        np.testing.assert_allclose([s for _, s in a], [s for _, s in r], rtol=1e-5)
    assert ids_of(idx.search(queries, 10, exact=True)) == ids_of(ref)


def test_shipped_defaults_search_small_index_exactly(built) -> None:
    idx, ids, data, queries = built
    assert idx.size == len(ids) and idx.built_version == 11 and idx.built_at is not None
    assert ids_of(idx.search(queries, 10)) == ids_of(exact_search(data, ids, queries, 10))
    assert len(idx.search(queries[0], 5)) == 1  # a single 1-d query is fine


@pytest.mark.slow
def test_recall_at_10_on_100k_clustered_vectors(tmp_path: Path) -> None:
    x = clustered(100_200, 512, 1000, seed=4)
    data, queries = split(x, 200)
    ids = np.arange(len(data), dtype=np.int64)
    idx = AnnoyBackend(tmp_path, 512)
    t0 = time.perf_counter()
    idx.build(ids, data, version=1)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ann = idx.search(queries, 10)
    ann_ms = (time.perf_counter() - t0) / len(queries) * 1e3
    t0 = time.perf_counter()
    for q in queries[:20]:
        idx.search(q, 10, exact=True)
    exact_ms = (time.perf_counter() - t0) / 20 * 1e3
    ref = exact_search(data, ids, queries, 10)
    recall = np.mean([len(set(a) & set(r)) / 10 for a, r in zip(ids_of(ann), ids_of(ref), strict=True)])
    print(f"recall@10={recall:.4f} build={build_s:.1f}s ann={ann_ms:.2f}ms/q exact={exact_ms:.2f}ms/q")
    assert recall >= 0.99


# ---- extras, removed, allowed ------------------------------------------------------------
@pytest.mark.parametrize("force_ann", [False, True])
def test_extras_are_searched_exactly_and_override(built, request, force_ann: bool) -> None:
    if force_ann:
        request.getfixturevalue("ann_path")
    idx, ids, data, queries = built
    q = queries[:3]
    new_ids = np.array([10**12, 10**12 + 1, 10**12 + 2])
    top = [row[0][0] for row in idx.search(q, 10)]
    # the current top hit of query 1 changes: its vector is now far from every query
    moved = np.array([top[1]])
    far = -q[1:2]
    extra_ids = np.concatenate([new_ids, moved])
    extra_vectors = np.concatenate([q, far])  # each new photo IS its query
    got = idx.search(q, 10, extra_ids=extra_ids, extra_vectors=extra_vectors)
    assert_sorted(got)
    for row, new in zip(got, new_ids, strict=True):
        assert row[0][0] == new and row[0][1] == pytest.approx(1.0, abs=1e-5)
        assert len(row) == 10
    assert top[1] not in ids_of(got)[1]  # the built copy no longer answers for it
    merged_ids = np.concatenate([ids[ids != top[1]], extra_ids])
    merged = np.concatenate([data[ids != top[1]], extra_vectors])
    assert ids_of(got) == ids_of(exact_search(merged, merged_ids, q, 10))


@pytest.mark.parametrize("force_ann", [False, True])
def test_removed_never_returned(built, request, force_ann: bool) -> None:
    if force_ann:
        request.getfixturevalue("ann_path")
    idx, ids, data, queries = built
    before = idx.search(queries, 10)
    removed = np.array(sorted({i for row in ids_of(before) for i in row[:6]}) + [10**15])
    got = idx.search(queries, 10, removed=removed, extra_ids=removed[:1], extra_vectors=queries[:1])
    assert all(len(row) == 10 for row in got)
    assert not set(removed) & {i for row in ids_of(got) for i in row}
    keep = ~np.isin(ids, removed)
    assert ids_of(got) == ids_of(exact_search(data[keep], ids[keep], queries, 10))


@pytest.mark.parametrize("share", [0.003, 0.04, 0.6])
@pytest.mark.parametrize("force_ann", [False, True])
def test_allowed_filter(built, request, share: float, force_ann: bool) -> None:
    if force_ann:
        request.getfixturevalue("ann_path")
    idx, ids, data, queries = built
    rng = np.random.default_rng(5)
    allowed = rng.choice(ids, int(share * len(ids)), replace=False)
    extra_ids = np.array([5, 10**9])  # 5 is not a built id; only 10**9 is allowed
    allowed = np.concatenate([allowed, [10**9, 10**13]])
    got = idx.search(queries, 10, allowed=allowed, extra_ids=extra_ids, extra_vectors=queries[:2])
    assert_sorted(got)
    assert {i for row in ids_of(got) for i in row} <= set(allowed.tolist())
    keep = np.isin(ids, allowed)
    ref = exact_search(np.concatenate([data[keep], queries[1:2]]),
                       np.concatenate([ids[keep], [10**9]]), queries, 10)
    if force_ann and share > index.EXACT_ALLOWED_SHARE:  # ANN + post-filter: near-exact
        overlap = np.mean([len(set(a) & set(r)) / len(r) for a, r in zip(ids_of(got), ids_of(ref), strict=True)])
        assert overlap >= 0.95 and all(len(row) == 10 for row in got)
    else:
        assert ids_of(got) == ids_of(ref)
    assert idx.search(queries, 10, allowed=np.array([], np.int64)) == [[] for _ in queries]


# ---- builds, swaps, crashes --------------------------------------------------------------
def test_never_built_and_empty_index_return_extras_only(tmp_path: Path) -> None:
    idx = AnnoyBackend(tmp_path / "new", 8)
    assert not idx.load() and idx.size == 0 and idx.built_version is None and idx.built_at is None
    x = clustered(50, 8, 3, seed=6)
    extra_ids = np.arange(45) + 10**9
    assert idx.search(x[:5], 3) == [[] for _ in range(5)]
    want = exact_search(x[5:], extra_ids, x[:5], 3)
    assert idx.search(x[:5], 3, extra_ids=extra_ids, extra_vectors=x[5:]) == want
    assert idx.build(np.empty(0, np.int64), np.empty((0, 8), np.float32), version=0)
    assert idx.size == 0 and idx.built_version == 0
    assert idx.search(x[:5], 3, extra_ids=extra_ids, extra_vectors=x[5:]) == want
    assert AnnoyBackend(tmp_path / "new", 8).load()


def test_reopen_returns_same_results(built, tmp_path: Path) -> None:
    idx, ids, data, queries = built
    again = AnnoyBackend(idx.directory, 32)
    assert again.load()
    assert (again.size, again.built_version, again.built_at) == (idx.size, idx.built_version, idx.built_at)
    assert again.search(queries, 10) == idx.search(queries, 10)
    assert not AnnoyBackend(idx.directory, 64).load()  # another encoder's dim: not ours


def test_large_sparse_ids(tmp_path: Path) -> None:
    x = clustered(2010, 32, 10, seed=7)
    data, queries = split(x, 10)
    ids = 10**9 + np.random.default_rng(8).permutation(np.arange(len(data)) * 1000)
    idx = AnnoyBackend(tmp_path, 32)
    idx.build(ids, data, version=1, n_trees=10)
    ann_file = next(tmp_path.glob("*.ann"))
    assert ann_file.stat().st_size < 20 * len(data) * 32 * 4  # sized by count, not by max id
    assert ids_of(idx.search(queries, 5)) == ids_of(exact_search(data, ids, queries, 5))
    allowed = ids[::3]
    assert ids_of(idx.search(queries, 5, allowed=allowed)) == ids_of(exact_search(data[::3], allowed, queries, 5))


def test_reader_never_sees_a_half_built_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index, "EXACT_MAX_ITEMS", 0)  # readers go through annoy's mmap too
    monkeypatch.setattr(index, "ANN_CANDIDATE_COST", 0.0)
    monkeypatch.setattr(index, "SEARCH_K_MIN", 200)
    monkeypatch.setattr(index, "SEARCH_K_PER_RESULT", 10)
    dim, n, rounds = 32, 1500, 6
    idx = AnnoyBackend(tmp_path, dim)
    queries = clustered(8, dim, 5, seed=9)

    def generation(g: int) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(n, dtype=np.int64) + g * 10**6, clustered(n, dim, 5, seed=100 + g)

    idx.build(*generation(0), version=0, n_trees=10)
    errors: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                for row in idx.search(queries, 10):
                    assert len(row) == 10
                    gens = {i // 10**6 for i, _ in row}
                    assert len(gens) == 1, f"mixed generations {gens}"
                    seen.update(gens)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for g in range(1, rounds):
            assert idx.build(*generation(g), version=g, n_trees=10)
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len(seen) > 1 and idx.built_version == rounds - 1
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".ann"]) == 1  # old generations swept


def test_cancel_keeps_the_old_generation(built) -> None:
    idx, ids, data, queries = built
    before, before_files = idx.search(queries, 10), files(idx.directory)
    cancel = threading.Event()
    cancel.set()
    assert not idx.build(ids[:100], data[:100], version=99, cancel=cancel)

    def cancel_midway(done: int, total: int) -> None:
        if done > 0:
            cancel.set()

    cancel.clear()
    big = np.concatenate([data] * 4)
    assert not idx.build(np.arange(len(big)), big, version=99, on_progress=cancel_midway, cancel=cancel)
    assert idx.built_version == 11 and idx.search(queries, 10) == before
    assert files(idx.directory) == before_files
    again = AnnoyBackend(idx.directory, 32)
    assert again.load() and again.built_version == 11


@pytest.mark.parametrize("when", ["adding", "before-switch"])
def test_crash_mid_build_leaves_old_generation(built, when: str) -> None:
    idx, ids, data, queries = built
    before, before_files = idx.search(queries, 10), files(idx.directory)
    big = np.concatenate([data] * 4)
    reports: list[tuple[int, int]] = []

    def crash(done: int, total: int) -> None:
        reports.append((done, total))
        if (when == "adding" and done > 0) or (when == "before-switch" and done == total):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        idx.build(np.arange(len(big)), big, version=99, n_trees=5, on_progress=crash)
    assert reports[0] == (0, len(big))
    assert idx.built_version == 11 and idx.search(queries, 10) == before
    assert files(idx.directory) == before_files  # no partial generation, no temp files
    again = AnnoyBackend(idx.directory, 32)
    assert again.load() and again.built_version == 11 and again.search(queries, 10) == before


def test_leftovers_of_a_killed_build_are_swept(built) -> None:
    idx, ids, data, queries = built
    for name in ("gen-dead.ann", "gen-dead.vectors.npy", "current.json.1234.tmp"):
        (idx.directory / name).write_bytes(b"partial")
    (idx.directory / "notes.txt").write_text("not ours")
    idx.build(ids, data, version=12, n_trees=5)
    left = files(idx.directory)
    assert "notes.txt" in left and not {"gen-dead.ann", "gen-dead.vectors.npy", "current.json.1234.tmp"} & left
    assert len(left) == 5  # manifest + 3 files of the current generation + notes.txt


def test_build_rejects_bad_input(tmp_path: Path) -> None:
    idx = AnnoyBackend(tmp_path, 4)
    with pytest.raises(ValueError):
        idx.build(np.arange(3), np.zeros((3, 5), np.float32), version=1)
    with pytest.raises(ValueError):
        idx.build(np.array([1, 1, 2]), np.eye(3, 4, dtype=np.float32), version=1)
    with pytest.raises(ValueError):
        idx.search(np.zeros((1, 5), np.float32), 3)
    assert files(tmp_path) == set()


def test_add_and_remove_are_searched_until_the_next_build(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(size=(40, 16)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    idx = AnnoyBackend(tmp_path, 16)
    assert isinstance(idx, index.IndexBackend)
    assert idx.build(np.arange(30), data[:30], version=30, n_trees=5)
    idx.add(np.arange(30, 40), data[30:], version=40)  # stored since the build
    assert idx.version == 40 and idx.built_version == 30
    assert ids_of(idx.search(data[35], 1)) == [[35]]
    moved = data[0] * -1.0  # a photo re-encoded: its newer vector replaces the built one
    idx.add(np.array([0]), moved[None, :], version=41)
    assert ids_of(idx.search(moved, 1)) == [[0]]
    idx.remove(np.array([35]))
    assert 35 not in ids_of(idx.search(data[35], 5))[0]
    idx.add(np.arange(30, 40), data[30:], version=40)  # an older add is ignored
    assert 35 not in ids_of(idx.search(data[35], 5))[0]
    assert idx.build(np.arange(40), data, version=41, n_trees=5)  # the build covers them
    assert idx.version == 41 and ids_of(idx.search(data[35], 1)) == [[35]]


def test_effort_fetches_a_deeper_list_at_the_cost_of_a_shorter_one(built, ann_path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-ranker's top 50 for a k=20 query: Annoy inspects the candidates it would for
    20, so the first 20 are exactly the k=20 answer, and the list is 50 long."""
    idx, _, _, queries = built
    seen: list[int] = []
    real = index.search_k_for
    monkeypatch.setattr(index, "search_k_for", lambda n, items: seen.append(real(n, items)) or seen[-1])
    short = idx.search(queries, 20)
    deep = idx.search(queries, 50, effort=20)
    assert len(seen) == 2 and seen[0] == seen[1]  # one search_k per call: the same tree walk
    assert [row[:20] for row in ids_of(deep)] == ids_of(short)
    assert all(len(row) == 50 for row in deep)
    idx.search(queries, 50)  # without effort, a deeper list costs a deeper search
    assert seen[2] > seen[0]
