"""Duplicates review: exact copies and near-duplicates from a real catalog, the keep
suggestion, and trash + restore through a temporary freedesktop trash (XDG_DATA_HOME points
at the test's folder, so the user's real trash is never touched). The window's dialog is
tested with pytest-qt: check, confirm, trash, undo."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo
from PIL import Image
from PySide6.QtCore import Qt

from desktop import duplicates, trash
from desktop.jobs import Jobs
from desktop.library import Library
from desktop.ui import duplicates as dup_ui

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="freedesktop trash layout")
WAIT_MS = 15_000


@pytest.fixture
def trash_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private trash: send2trash's freedesktop code reads XDG_DATA_HOME when imported."""
    data = tmp_path / "xdg-data"
    data.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    import send2trash.plat_other

    importlib.reload(send2trash.plat_other)
    assert send2trash.plat_other.HOMETRASH == str(data / "Trash")
    yield data / "Trash"
    monkeypatch.undo()
    importlib.reload(send2trash.plat_other)


def _library_with_dups(root: Path) -> None:
    """big.jpg + a byte copy in two folders; small.jpg (same picture, smaller); blue."""
    make_photo(root / "a" / "big.jpg", "red", size=(200, 150), seed=1)
    (root / "b").mkdir(parents=True)
    shutil.copy(root / "a" / "big.jpg", root / "b" / "big copy.jpg")
    Image.open(root / "a" / "big.jpg").resize((100, 75)).save(root / "a" / "small.jpg", quality=90)
    make_photo(root / "a" / "blue.jpg", "blue", size=(120, 90), seed=2)


def test_keep_order_prefers_resolution_then_age_then_edits() -> None:
    from desktop.catalog import Photo

    def item(w: int, taken: str | None, edited: bool, path: str) -> duplicates.Item:
        return duplicates.Item(Photo(1, "h", path, 1, 1, w, w, "JPEG", taken, None, "ok", None, True, 0.0),
                               path, 0.0, edited)

    items = [item(10, "2020-01-01", True, "/x/small-edited.jpg"), item(20, "2021-01-01", False, "/x/big-new.jpg"),
             item(20, "2019-01-01", False, "/x/big-old.jpg"), item(20, "2019-01-01", True, "/x/big-old-edited.jpg")]
    assert [i.path for i in duplicates.keep_order(items)] == [
        "/x/big-old-edited.jpg", "/x/big-old.jpg", "/x/big-new.jpg", "/x/small-edited.jpg"]


def test_pair_maths_on_known_vectors() -> None:
    ids = np.array([10, 11, 12])
    vecs = np.array([[1, 0], [0.96, 0.28], [0, 1]], np.float32)
    pairs = duplicates.vector_pairs(ids, vecs, floor=0.5)
    assert [(a, b) for a, b, _ in pairs] == [(10, 11)] and pairs[0][2] == pytest.approx(0.96)
    table = duplicates.pair_precision_recall([0, 0, 1], [(0, 1, 0.96), (1, 2, 0.7)], [0.6, 0.9])
    assert table[0][1:3] == (0.5, 1.0) and table[1][1:3] == (1.0, 1.0)


def test_groups_trash_and_restore_through_the_catalog(tmp_path: Path, lib: Library, trash_home: Path) -> None:
    root = tmp_path / "photos"
    _library_with_dups(root)
    lib.add_root(root)
    lib.index()
    exact = lib.exact_duplicates()
    assert len(exact) == 1 and exact[0].kind == "exact"
    assert sorted(Path(i.path).name for i in exact[0].items) == ["big copy.jpg", "big.jpg"]
    lib.set_caption(exact[0].keep.photo.id, "mine")  # edits do not change which path is kept
    near = lib.near_duplicates(threshold=0.9)
    assert len(near) == 1
    assert [Path(i.path).name for i in near[0].items][0] in ("big.jpg", "big copy.jpg")  # largest first
    assert Path(near[0].others[0].path).name == "small.jpg" and near[0].others[0].similarity > 0.9
    assert all("blue.jpg" not in i.path for g in lib.near_duplicates(threshold=0.5) for i in g.items)

    copy = str(root / "b" / "big copy.jpg")
    done, failed = lib.trash_files([copy])
    assert failed == [] and len(done) == 1 and done[0].restorable
    assert not os.path.exists(copy)
    trashed = Path(done[0].trashed)
    assert trashed.parent == trash_home / "files" and trashed.read_bytes() == (root / "a" / "big.jpg").read_bytes()
    assert f"Path={copy.replace(' ', '%20')}" in Path(done[0].info).read_text()
    assert lib.exact_duplicates() == []  # the catalog saw the removal
    photo_id = exact[0].keep.photo.id
    assert lib.paths_of(photo_id) == [str(root / "a" / "big.jpg")]

    back, failed = lib.restore_files(done)
    assert failed == [] and back == [copy] and os.path.exists(copy)
    assert not trashed.exists() and not Path(done[0].info).exists()
    assert sorted(lib.paths_of(photo_id)) == sorted([str(root / "a" / "big.jpg"), copy])
    assert lib.photo_text(photo_id).caption == "mine"  # same hash: the photo kept its words


def test_restore_refuses_to_overwrite_and_missing_files_are_reported(tmp_path: Path, trash_home: Path) -> None:
    f = make_photo(tmp_path / "x.jpg", "green")
    item = trash.move_to_trash(str(f))
    make_photo(f, "red")  # a new file took the name meanwhile
    with pytest.raises(trash.TrashError, match="exists again"):
        trash.restore(item)
    with pytest.raises(trash.TrashError, match="no such file"):
        trash.move_to_trash(str(tmp_path / "absent.jpg"))


def test_dialog_keep_trash_undo(qtbot, tmp_path: Path, lib: Library, trash_home: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "photos"
    _library_with_dups(root)
    lib.add_root(root)
    lib.index()
    asked: list[int] = []
    answer = {"yes": False}
    monkeypatch.setattr(dup_ui, "confirm_trash", lambda _p, n, _s: asked.append(n) or answer["yes"])
    jobs = Jobs(lib)
    dialog = dup_ui.DuplicatesDialog(jobs)
    qtbot.addWidget(dialog)
    try:
        qtbot.waitUntil(lambda: not dialog.busy and dialog.tree.topLevelItemCount() == 1, timeout=WAIT_MS)
        group = dialog.tree.topLevelItem(0)
        assert group.childCount() == 2
        keep, other = group.child(0), group.child(1)
        assert keep.text(5).startswith("Keep") and other.text(5) == "Move to trash"
        keep_path, other_path = (c.data(0, dup_ui.ItemRole).path for c in (keep, other))
        assert [c for _, c, _ in dialog.checked()] == [other_path]

        dialog.trash_button.click()  # the user says Cancel: nothing moves
        assert asked == [1] and all(os.path.exists(p) for p in (keep_path, other_path))
        answer["yes"] = True
        gone = other_path
        with qtbot.waitSignal(dialog.trashed, timeout=WAIT_MS):
            dialog.trash_button.click()
        assert not os.path.exists(gone) and any((trash_home / "files").iterdir())
        qtbot.waitUntil(lambda: not dialog.busy, timeout=WAIT_MS)
        assert dialog.tree.topLevelItemCount() == 0 and dialog.undo_button.isEnabled()

        with qtbot.waitSignal(dialog.restored, timeout=WAIT_MS):
            dialog.undo_button.click()
        assert os.path.exists(gone) and not any((trash_home / "files").iterdir())
        qtbot.waitUntil(lambda: not dialog.busy and dialog.tree.topLevelItemCount() == 1, timeout=WAIT_MS)

        dialog.set_mode("near")  # the similar-photos view, with its slider
        qtbot.waitUntil(lambda: not dialog.busy and dialog.tree.topLevelItemCount() == 1, timeout=WAIT_MS)
        assert dialog.slider.isVisibleTo(dialog)
        near = dialog.tree.topLevelItem(0)
        assert near.childCount() == 2  # big.jpg and its byte copy are one photo
        assert near.child(1).text(0) == "small.jpg"  # the smaller one is offered for the trash
        assert near.child(1).checkState(0) == Qt.CheckState.Checked
        dialog.slider.setValue(dialog.slider.minimum())  # regroups at the new threshold
        qtbot.waitUntil(lambda: dialog.threshold_label.text() == f"{dialog.slider.minimum() / 100:.2f}"
                        and not dialog._regroup.isActive() and not dialog.busy, timeout=WAIT_MS)
        assert dialog.tree.topLevelItemCount() == 1
    finally:
        dialog.close()
        jobs.shutdown()
