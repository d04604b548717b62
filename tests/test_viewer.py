"""The full-screen viewer, the timeline and the keyboard shortcuts, through the real window
(pytest-qt, offscreen) over a real catalog with the `colors` encoder."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from conftest import make_photo
from PIL import Image
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication

from desktop.jobs import Jobs
from desktop.library import Library
from desktop.ui import shortcuts, system
from desktop.ui.grid import HEADER_H, HitRole
from desktop.ui.main_window import MainWindow
from desktop.ui.viewer import load_full_image

WAIT_MS = 15_000


def dated_photo(path: Path, color: str, taken: str | None, mtime: str | None = None, seed: int = 0,
                size: tuple[int, int] = (96, 64), orientation: int | None = None) -> Path:
    """A JPEG with EXIF DateTimeOriginal (`taken`, "YYYY:MM:DD HH:MM:SS") or only a file time."""
    make_photo(path, color, size=size, seed=seed)
    if taken or orientation:
        im = Image.open(path)
        exif = Image.Exif()
        if taken:
            exif.get_ifd(0x8769)[0x9003] = taken
        if orientation:
            exif[0x0112] = orientation
        im.save(path, exif=exif, quality=92)
    if mtime:
        t = datetime.fromisoformat(mtime).timestamp()
        os.utime(path, (t, t))
    return path


@pytest.fixture
def dated(tmp_path: Path) -> Path:
    root = tmp_path / "dated"
    dated_photo(root / "may-a.jpg", "red", "2023:05:14 10:00:00", seed=1)
    dated_photo(root / "may-b.jpg", "green", "2023:05:20 18:30:00", seed=2)
    dated_photo(root / "june.jpg", "blue", "2023:06:02 09:00:00", seed=3)
    dated_photo(root / "march-2021.jpg", "yellow", "2021:03:01 12:00:00", seed=4)
    dated_photo(root / "no-exif.jpg", "white", None, mtime="2022-12-24T20:00:00", seed=5)
    return root


def make_window(qtbot, lib: Library, tmp_path: Path, unit: str) -> MainWindow:
    settings = QSettings(str(tmp_path / "lumen.ini"), QSettings.Format.IniFormat)
    settings.setValue("timeline/unit", unit)
    window = MainWindow(Jobs(lib), settings)
    window.viewer_full_screen = False  # offscreen either way; keeps the test's window sizes
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window_month(qtbot, lib: Library, tmp_path: Path):
    win = make_window(qtbot, lib, tmp_path, "month")
    yield win
    win.close()


def start(qtbot, window: MainWindow, root: Path, photos: int) -> None:
    window.jobs.library.add_root(root)
    with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS):
        window.start()
    qtbot.waitUntil(lambda: len(window.model.hits()) == photos, timeout=WAIT_MS)


def test_timeline_headers_for_known_dates(qtbot, window_month: MainWindow, dated: Path) -> None:
    window = window_month
    start(qtbot, window, dated, 5)
    model = window.model
    assert model.grouped
    secs = [(s.label, s.count) for s, _ in model.sections()]
    # Newest first; the photo without EXIF goes by its file time (Christmas 2022).
    assert secs == [("June 2023", 1), ("May 2023", 2), ("December 2022", 1), ("March 2021", 1)]
    cols = window.grid.columns
    assert cols >= 2
    for sec, row in model.sections():  # each section starts a grid line, with its header there
        assert row % cols == 0
        assert model.header_of(row) == (f"{sec.label} · {sec.count}", 0)
        assert Path(model.hit(row).photo.path).name in {"june.jpg", "may-a.jpg", "may-b.jpg", "no-exif.jpg",
                                                        "march-2021.jpg"}
    may_row = model.sections()[1][1]
    assert {Path(model.hit(may_row + i).photo.path).name for i in range(2)} == {"may-a.jpg", "may-b.jpg"}
    assert model.hit(may_row + 2) is None and not model.flags(model.index(may_row + 2, 0))  # a filler
    assert window.grid.gridSize().height() > HEADER_H * 2
    # The grid's own arrow keys step over the fillers to the next section's photo.
    window.grid.setCurrentIndex(model.index(may_row + 1, 0))
    window.grid.setFocus()
    qtbot.keyClick(window.grid, Qt.Key.Key_Right)
    assert window.grid.currentIndex().row() == model.sections()[2][1]
    # The scrubber lists the months and jumps the grid.
    assert window.scrubber.isVisible()
    assert window.scrubber.keys() == ["2023-06", "2023-05", "2022-12", "2021-03"]
    window.scrubber.set_unit("day")
    qtbot.waitUntil(lambda: model.group_by == "day", timeout=WAIT_MS)
    assert [s.key for s, _ in model.sections()] == ["2023-06-02", "2023-05-20", "2023-05-14", "2022-12-24",
                                                   "2021-03-01"]
    assert window.settings.value("timeline/unit") == "day"
    window.scrubber.jump("2021-03-01")
    # A query shows plain ranked results: no headers.
    qtbot.keyClicks(window.search_bar.edit, "red")
    qtbot.waitUntil(lambda: not model.browsing and len(model.hits()) > 0, timeout=WAIT_MS)
    assert not model.grouped and model.sections() == [] and model.rowCount() == len(model.hits())
    assert not window.scrubber.isVisible()


def test_viewer_walks_the_results_and_esc_returns_to_the_same_place(qtbot, window_month: MainWindow,
                                                                    dated: Path) -> None:
    window = window_month
    start(qtbot, window, dated, 5)
    grid, model = window.grid, window.model
    first_row = model.sections()[1][1]  # May's first photo
    grid.setCurrentIndex(model.index(first_row, 0))
    grid.setFocus()
    scroll = grid.verticalScrollBar().value()
    hits = model.hits()
    start_at = model.hit_index(first_row)

    qtbot.keyClick(grid, Qt.Key.Key_Space)  # Space opens the current photo
    viewer = window.viewer
    assert viewer is not None and viewer.isVisible() and viewer.index == start_at
    qtbot.waitUntil(lambda: viewer.canvas.pixmap is not None, timeout=WAIT_MS)
    qtbot.keyClick(viewer, Qt.Key.Key_Escape)  # straight back: same selection, same scroll
    qtbot.waitUntil(lambda: not viewer.isVisible(), timeout=WAIT_MS)
    assert grid.currentIndex().row() == first_row and grid.verticalScrollBar().value() == scroll
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window and grid.hasFocus(), timeout=WAIT_MS)

    qtbot.keyClick(grid, Qt.Key.Key_Return)
    assert viewer.isVisible() and viewer.index == start_at
    qtbot.waitUntil(lambda: QApplication.activeWindow() is viewer, timeout=WAIT_MS)  # keys go to it
    qtbot.keyClick(viewer, Qt.Key.Key_Right)
    assert viewer.index == start_at + 1 and viewer.current() == hits[start_at + 1]
    qtbot.keyClick(viewer, Qt.Key.Key_Right)  # across the section boundary: fillers are not photos
    assert viewer.current() == hits[start_at + 2]
    qtbot.keyClick(viewer, Qt.Key.Key_Left)
    assert viewer.current() == hits[start_at + 1]
    qtbot.keyClick(viewer, Qt.Key.Key_End)
    assert viewer.index == len(hits) - 1
    qtbot.keyClick(viewer, Qt.Key.Key_Right)  # stops at the last one
    assert viewer.index == len(hits) - 1
    qtbot.keyClick(viewer, Qt.Key.Key_Home)
    qtbot.keyClick(viewer, Qt.Key.Key_Right)
    qtbot.keyClick(viewer, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not viewer.isVisible(), timeout=WAIT_MS)
    # The grid follows the viewer: the photo last seen is the current one.
    assert grid.currentIndex().data(HitRole) == hits[1]
    assert grid.selectionModel().selectedIndexes() == [grid.currentIndex()]


def test_viewer_zoom_and_exif_orientation(qtbot, window_month: MainWindow, tmp_path: Path) -> None:
    root = tmp_path / "turned"
    # Stored 300x100 landscape, EXIF orientation 6 (rotate 90° clockwise): shown 100x300 portrait.
    dated_photo(root / "turned.jpg", "red", "2024:01:02 03:04:05", size=(300, 100), orientation=6)
    image = load_full_image(str(root / "turned.jpg"))
    assert (image.width(), image.height()) == (100, 300)
    window = window_month
    start(qtbot, window, root, 1)
    window.grid.setCurrentIndex(window.model.index(0, 0))
    window.grid.setFocus()
    viewer = window.open_viewer()
    viewer.resize(400, 200)
    qtbot.waitUntil(lambda: viewer.canvas.pixmap is not None, timeout=WAIT_MS)
    canvas = viewer.canvas
    assert canvas.pixmap.height() == 300 and canvas.fit and canvas.zoom_percent() < 100  # fitted to 200 high
    qtbot.keyClick(viewer, Qt.Key.Key_1)
    assert not canvas.fit and canvas.zoom_percent() == pytest.approx(100)
    rect = canvas.image_rect()
    assert rect.height() * canvas.devicePixelRatioF() == pytest.approx(300)
    assert viewer.zoom_label.text() == "100 %"
    qtbot.keyClick(viewer, Qt.Key.Key_Plus)
    assert canvas.zoom_percent() == pytest.approx(125)
    qtbot.keyClick(viewer, Qt.Key.Key_0)
    assert canvas.fit
    viewer.close()


def test_shortcuts_table_is_what_the_window_and_help_use(qtbot, window_month: MainWindow) -> None:
    window = window_month
    ids = {(s.id, s.where) for s in shortcuts.SHORTCUTS}
    assert len(ids) == len(shortcuts.SHORTCUTS)  # one row per action and place
    for s in shortcuts.SHORTCUTS:
        if s.where == "Window":
            assert [k.toString() for k in window.actions_[s.id].shortcuts()] == list(s.keys)
    assert window.grid_actions["open_viewer"].shortcutContext() == Qt.ShortcutContext.WidgetShortcut
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus == ["&File", "&Photo", "&View", "&Help"]
    dialog = window.show_shortcuts()
    try:
        table = dialog.table
        assert table.rowCount() == len(shortcuts.SHORTCUTS)
        rows = {(table.item(r, 0).text(), table.item(r, 1).text()) for r in range(table.rowCount())}
        assert ("Viewer", "Zoom to 100 % (again: fit)") in rows and ("Window", "Review duplicates…") in rows
    finally:
        dialog.close()
    # Space typed in the search bar is a space, not "open the viewer".
    window.search_bar.edit.setFocus()
    qtbot.keyClicks(window.search_bar.edit, "a b")
    assert window.search_bar.edit.text() == "a b" and window.viewer is None


def test_reveal_and_open_commands_per_platform(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "dir" / "p.jpg", "red")
    assert system.reveal_command(str(photo), "linux") == ["xdg-open", str(photo.parent)]
    assert system.reveal_command(str(photo), "darwin") == ["open", "-R", str(photo)]
    assert system.reveal_command(str(photo), "win32") == ["explorer", f"/select,{os.path.normpath(photo)}"]
    url = system.file_url(str(photo))
    assert url.isLocalFile() and url.toLocalFile() == str(photo)
    missing = str(tmp_path / "gone.jpg")
    assert "not there" in system.reveal(missing) and "not there" in system.open_default(missing)


def test_double_click_opens_the_viewer(qtbot, window_month: MainWindow, dated: Path) -> None:
    window = window_month
    start(qtbot, window, dated, 5)
    rect = window.grid.visualRect(window.model.index(0, 0))
    # A real double click is press, release, double-click: the view needs the press first.
    qtbot.mouseClick(window.grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(window.grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: window.viewer is not None and window.viewer.isVisible(), timeout=WAIT_MS)
    assert window.viewer.index == 0
    window.viewer.close()


def test_date_terms_parse() -> None:
    from desktop.timeline import date_terms

    assert date_terms("red car from:2023-05 to:2023-06-30") == ("red car", "2023-05", "2023-06-30")
    assert date_terms("in:2024 beach") == ("beach", "2024", "2024")
    assert date_terms("dog") == ("dog", None, None)
    assert date_terms("url:from:x") == ("url:from:x", None, None)  # only whole words


def test_date_filters_keep_working_with_a_query(qtbot, window_month: MainWindow, dated: Path) -> None:
    window = window_month
    start(qtbot, window, dated, 5)
    model = window.model

    def names() -> list[str]:
        return [Path(h.photo.path).name for h in model.hits()]

    qtbot.keyClicks(window.search_bar.edit, "red in:2023-05")
    qtbot.waitUntil(lambda: not model.browsing and set(names()) == {"may-a.jpg", "may-b.jpg"}, timeout=WAIT_MS)
    assert names()[0] == "may-a.jpg"  # the red one ranks first; June and 2021 are filtered out
    window.search_bar.edit.clear()
    qtbot.keyClicks(window.search_bar.edit, "from:2023-01-01")  # only dates: the timeline, filtered
    qtbot.waitUntil(lambda: sorted(names()) == ["june.jpg", "may-a.jpg", "may-b.jpg"], timeout=WAIT_MS)
    assert model.grouped and [s.key for s, _ in model.sections()] == ["2023-06", "2023-05"]
