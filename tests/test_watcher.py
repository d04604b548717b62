"""A real watchdog observer on a real folder, driving the real library."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import make_photo

from desktop.library import Library
from desktop.scanner import Change, coalesce


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not reached within {timeout:.0f}s")


@pytest.fixture
def watching(lib: Library, photos: Path):
    lib.add_root(photos)
    lib.index()
    stop = threading.Event()
    batches: list[int] = []
    thread = threading.Thread(
        target=lib.watch,
        args=(stop,),
        kwargs={"on_batch": lambda ch, rep: batches.append(len(ch)), "quiet_s": 0.2},
    )
    thread.start()
    time.sleep(0.5)  # let the observer attach its inotify watches
    yield lib, photos, batches
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def path_known(lib: Library, path: Path) -> bool:
    return lib.catalog.photo_by_path(str(path)) is not None


def test_new_modified_moved_renamed_and_deleted_files(watching) -> None:
    lib, photos, _ = watching
    new = make_photo(photos / "new-purple.jpg", (130, 40, 170), seed=9)
    wait_for(
        lambda: (
            path_known(lib, new)
            and lib.catalog.vector_of(lib.catalog.photo_by_path(str(new)).id, lib.encoder.id) is not None
        )
    )
    assert [Path(h.path).name for h in lib.search("purple", k=1)] == ["new-purple.jpg"]

    before = lib.catalog.photo_by_path(str(new)).id
    make_photo(new, "green", seed=10)  # modified in place: new content
    wait_for(
        lambda: (
            (p := lib.catalog.photo_by_path(str(new))) is not None
            and p.id != before
            and lib.catalog.vector_of(p.id, lib.encoder.id) is not None
        )
    )
    assert "new-purple.jpg" in [Path(h.path).name for h in lib.search("green", k=3)]

    blue = lib.catalog.photo_by_path(str(photos / "blue-1.jpg")).id
    renamed = photos / "azure.jpg"
    os.rename(photos / "blue-1.jpg", renamed)
    wait_for(lambda: path_known(lib, renamed) and not path_known(lib, photos / "blue-1.jpg"))
    assert lib.catalog.photo_by_path(str(renamed)).id == blue

    (photos / "deeper").mkdir()
    moved = photos / "deeper" / "azure.jpg"
    shutil.move(renamed, moved)
    wait_for(lambda: path_known(lib, moved))
    assert lib.catalog.photo_by_path(str(moved)).id == blue

    moved.unlink()
    wait_for(lambda: not path_known(lib, moved))
    assert blue not in [h.photo_id for h in lib.search("blue", k=12)]


def test_moved_folder_keeps_ids_without_reencoding(watching, tmp_path: Path) -> None:
    lib, photos, _ = watching
    ids = {p: lib.catalog.photo_by_path(str(photos / "sub" / p)).id for p in os.listdir(photos / "sub")}
    encoded = lib.catalog.encoders_with_vectors()[lib.encoder.id]
    os.rename(photos / "sub", photos / "renamed-sub")
    wait_for(lambda: all(path_known(lib, photos / "renamed-sub" / p) for p in ids))
    assert {p: lib.catalog.photo_by_path(str(photos / "renamed-sub" / p)).id for p in ids} == ids
    assert lib.catalog.encoders_with_vectors()[lib.encoder.id] == encoded


def test_a_burst_is_coalesced_into_few_batches(watching) -> None:
    lib, photos, batches = watching
    burst = photos / "burst"
    burst.mkdir()
    for i in range(300):
        make_photo(burst / f"b{i:03d}.png", (i % 256, 100, 50), size=(16, 16), seed=i)
    wait_for(lambda: lib.catalog.counts()["files"] == 312, timeout=60)
    assert len(batches) < 30, batches  # 300 files (~900 events) -> a handful of batches


def test_coalesce_keeps_the_last_word_per_path() -> None:
    changes = [
        Change("created", "/a.jpg"),
        Change("modified", "/a.jpg"),
        Change("modified", "/a.jpg"),
        Change("created", "/b.jpg"),
        Change("deleted", "/b.jpg"),
    ]
    assert coalesce(changes) == [Change("modified", "/a.jpg"), Change("deleted", "/b.jpg")]
