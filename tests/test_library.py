"""The core through its facade: real SQLite, real files, the deterministic colors encoder."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo

from desktop.catalog import Catalog
from desktop.library import Filters, Library, LibraryError, ReadOnlyError, Term, parse_query


def names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


def test_index_then_text_search_finds_the_colour(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    report = lib.index()
    assert report.new_photos == 12 and report.encoded == 12 and report.skipped == 0
    hits = lib.search("red", k=2)
    assert sorted(names(hits)) == ["red-1.jpg", "red-2.png"]
    assert hits[0].score > 0.5
    assert set(names(lib.search("dark blue", k=2))) == {"blue-1.jpg", "blue-2.png"}


def test_unchanged_rescan_hashes_and_encodes_nothing(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    lib.index()
    again = lib.index()
    assert (again.seen, again.hashed, again.encoded, again.new_photos) == (12, 0, 0, 0)


def test_move_and_rename_keep_the_photo_without_reencoding(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    lib.index()
    before = lib.catalog.photo_by_path(str(photos / "red-1.jpg"))
    (photos / "moved").mkdir()
    os.rename(photos / "red-1.jpg", photos / "moved" / "crimson.jpg")
    report = lib.index()
    assert report.encoded == 0 and report.new_photos == 0
    after = lib.catalog.photo_by_path(str(photos / "moved" / "crimson.jpg"))
    assert after is not None and after.id == before.id
    assert lib.catalog.photo_by_path(str(photos / "red-1.jpg")) is None
    assert "crimson.jpg" in names(lib.search("red", k=2))


def test_deleted_file_never_comes_back(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    lib.index()
    (photos / "red-1.jpg").unlink()
    report = lib.index()
    assert report.removed == 1
    assert names(lib.search("red", k=12)).count("red-1.jpg") == 0
    assert names(lib.search("red", k=12, exact=True)).count("red-1.jpg") == 0


def test_replaced_content_is_reencoded(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    lib.index()
    old = lib.catalog.photo_by_path(str(photos / "white-1.jpg"))
    time.sleep(0.01)
    make_photo(photos / "white-1.jpg", "red", seed=77)
    report = lib.index()
    assert report.encoded == 1
    new = lib.catalog.photo_by_path(str(photos / "white-1.jpg"))
    assert new.id != old.id and new.hash != old.hash
    assert "white-1.jpg" in names(lib.search("red", k=3))


def test_a_copy_is_one_photo_with_two_paths(lib: Library, photos: Path) -> None:
    shutil.copy(photos / "green-1.jpg", photos / "green-copy.jpg")
    lib.add_root(photos)
    report = lib.index()
    assert report.new_photos == 12 and report.encoded == 12
    photo = lib.catalog.photo_by_path(str(photos / "green-copy.jpg"))
    assert sorted(Path(p).name for p in lib.catalog.paths_of(photo.id)) == ["green-1.jpg", "green-copy.jpg"]


def test_live_photos_lists_the_newest_live_photos_in_id_order(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    lib.index()
    cat = lib.catalog
    every = cat.live_photos()
    ids = [p.id for p in every]
    assert ids == sorted(ids) and len(ids) == cat.counts()["photos"]
    assert [p.id for p in cat.live_photos(3)] == ids[-3:]
    assert every[0] == cat.photos([ids[0]])[ids[0]]  # the same rows as photos(ids)
    for path in cat.paths_of(ids[-1]):
        os.unlink(path)
    lib.index()
    assert [p.id for p in cat.live_photos()] == ids[:-1]  # gone photos are not listed


def test_unmounted_root_keeps_its_photos_and_comes_back(lib: Library, photos: Path, tmp_path: Path) -> None:
    lib.add_root(photos)
    lib.index()
    ids = {h.photo_id for h in lib.search("red", k=12)}
    away = tmp_path / "unplugged"
    os.rename(photos, away)  # what an unmount looks like from here
    report = lib.index()
    assert report.offline == [str(photos)] and report.removed == 0
    root = lib.roots()[0]
    assert not root.online
    assert lib.catalog.counts(root.id)["photos"] == 12
    assert {h.photo_id for h in lib.search("red", k=12)} == ids  # still findable, marked offline
    os.rename(away, photos)
    report = lib.index()
    assert report.encoded == 0 and report.removed == 0 and lib.roots()[0].online
    assert {h.photo_id for h in lib.search("red", k=12)} == ids


def test_corrupt_and_empty_files_are_skipped_with_a_reason(lib: Library, photos: Path) -> None:
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.png").write_text("this is not a picture")
    data = (photos / "red-1.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(data[: len(data) // 3])
    lib.add_root(photos)
    report = lib.index()
    assert report.encoded + report.skipped == 15
    skipped = {Path(s.path).name: s.reason for s in lib.status().skipped}
    assert {"empty.jpg", "notes.png"} <= set(skipped)
    assert all(reason for reason in skipped.values())


def test_new_photo_is_findable_before_the_index_is_rebuilt(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    lib.index()
    built = lib.store.index(lib.encoder.id, lib.encoder.dim).built_version
    make_photo(photos / "purple.jpg", (130, 40, 170))
    lib.scan()
    lib.encode_pending()  # no build_index: the new vector lives only in the catalog
    assert lib.store.index(lib.encoder.id, lib.encoder.dim).built_version == built
    assert names(lib.search("purple", k=1)) == ["purple.jpg"]


def test_filters_by_folder_type_and_library(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    lib.index()
    sub = names(lib.search("red", k=12, filters=Filters(folder=str(photos / "sub"))))
    assert sub and all(n.endswith("-2.png") for n in sub)
    jpgs = names(lib.search("red", k=12, filters=Filters(exts=("jpg",))))
    assert jpgs and all(n.endswith(".jpg") for n in jpgs)
    with pytest.raises(LibraryError):
        lib.search("red", filters=Filters(root="/nowhere"))


def test_similar_finds_the_same_colour_and_excludes_itself(
    lib: Library, photos: Path, tmp_path: Path
) -> None:
    lib.add_root(photos)
    lib.index()
    assert names(lib.similar(str(photos / "yellow-1.jpg"), k=1)) == ["yellow-2.png"]
    outside = make_photo(tmp_path / "outside" / "query.jpg", "blue", seed=5)
    assert set(names(lib.search(images_=[str(outside)], k=2))) == {"blue-1.jpg", "blue-2.png"}


def test_parse_query_weights_and_negatives() -> None:
    assert parse_query("2:dog + beach - people") == [
        Term(2.0, "dog"),
        Term(1.0, "beach"),
        Term(-1.0, "people"),
    ]
    assert parse_query("a dog on the beach -people") == [
        Term(1.0, "a dog on the beach"),
        Term(-1.0, "people"),
    ]
    assert parse_query("x-ray photo") == [Term(1.0, "x-ray photo")]


def test_negative_term_pushes_results_away(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    lib.index()
    assert "red" not in "".join(names(lib.search("red + yellow - red", k=2)))


def test_second_instance_is_read_only(lib: Library, photos: Path, home: Path) -> None:
    lib.add_root(photos)
    lib.index()
    with Library(home, encoder="colors") as second:
        assert second.readonly
        assert len(second.search("red", k=2)) == 2
        with pytest.raises(ReadOnlyError, match="read-only"):
            second.add_root(photos)
    with pytest.raises(LibraryError, match="another Lumen"):
        Library(home, readonly=False)


def test_encoder_is_remembered(lib: Library, photos: Path, home: Path) -> None:
    lib.add_root(photos)
    lib.close()
    with Library(home) as again:
        assert again.encoder_spec == "colors"


def test_catalog_is_consistent_after_indexing(lib: Library, photos: Path, home: Path) -> None:
    lib.add_root(photos)
    lib.index()
    cat = Catalog(home / "catalog.db")
    assert cat.integrity_ok()
    per_photo = cat.conn.execute(
        "SELECT photo_id, COUNT(*) FROM vectors GROUP BY photo_id, encoder HAVING COUNT(*) > 1"
    ).fetchall()
    assert per_photo == []
    cat.close()


def test_cancel_between_batches_then_resume(lib: Library, tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(80):
        make_photo(root / f"p{i:03d}.png", (i * 3 % 256, 90, 200), size=(32, 32), seed=i)
    lib.add_root(root)
    lib.scan()
    cancel = threading.Event()

    def stop_after_first(p) -> None:
        if p.stage == "encode" and p.done >= 32:
            cancel.set()

    first = lib.encode_pending(progress=stop_after_first, cancel=cancel)
    assert 0 < first.encoded < 80
    second = lib.encode_pending()
    assert first.encoded + second.encoded == 80
    ids, matrix, _ = lib.catalog.vectors(lib.encoder.id)
    assert len(ids) == len(set(ids.tolist())) == 80
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)


class ListBackend:
    """A second IndexBackend, exact over a list in memory: the search code works with any
    backend through the interface alone (as a vector server's module would)."""

    def __init__(self, directory: Path, dim: int) -> None:
        self.dim, self.built_version, self.built_at = dim, None, None
        self.rows: dict[int, np.ndarray] = {}
        self._version = 0
        self.builds = 0

    @property
    def version(self) -> int:
        return max(self.built_version or 0, self._version)

    @property
    def size(self) -> int:
        return len(self.rows)

    def load(self) -> bool:
        return self.built_version is not None

    def build(self, ids, vectors, version, *, on_progress=None, cancel=None) -> bool:  # noqa: ANN001
        self.rows = {int(i): v for i, v in zip(ids, vectors, strict=True)}
        self.built_version, self.built_at, self.builds = int(version), time.time(), self.builds + 1
        return True

    def add(self, ids, vectors, version) -> None:  # noqa: ANN001
        self.rows.update({int(i): v for i, v in zip(ids, vectors, strict=True)})
        self._version = max(self._version, int(version))

    def remove(self, ids) -> None:  # noqa: ANN001
        for i in ids:
            self.rows.pop(int(i), None)

    def search(self, queries, k, *, allowed=None, exact=False, effort=None):  # noqa: ANN001, ANN201
        keep = [i for i in self.rows if allowed is None or i in set(allowed.tolist())]
        out = []
        for q in np.atleast_2d(queries):
            scored = sorted(((float(self.rows[i] @ q), i) for i in keep), reverse=True)[:k]
            out.append([(i, s) for s, i in scored])
        return out

    def sweep(self) -> None:
        pass


def test_search_runs_through_any_index_backend(photos: Path, tmp_path: Path) -> None:
    from desktop.index import IndexBackend

    made: list[ListBackend] = []

    def backend(directory: Path, dim: int) -> ListBackend:
        made.append(ListBackend(directory, dim))
        return made[-1]

    with Library(tmp_path / "annoy", encoder="colors") as annoy, \
            Library(tmp_path / "list", encoder="colors", index_backend=backend) as listed:
        for lib in (annoy, listed):
            lib.add_root(photos)
            lib.index()
        assert made and isinstance(made[0], IndexBackend) and made[0].builds == 1
        for query in ("red", "blue", "green"):
            assert names(listed.search(query, k=4)) == names(annoy.search(query, k=4))
        assert names(listed.search("red", k=3, filters=Filters(exts=(".png",)))) == \
            names(annoy.search("red", k=3, filters=Filters(exts=(".png",))))
        make_photo(photos / "red-new.jpg", "red", seed=99)
        listed.scan()
        listed.encode_pending()  # stored, not yet built into the index: search add()s it
        assert made[0].builds == 1 and "red-new.jpg" in names(listed.search("red", k=4))
