"""The window through its widgets (pytest-qt, offscreen), over a real catalog in a temp dir
and the deterministic `colors` encoder: text "red" finds the red photos."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, make_photo
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from desktop.catalog import Catalog
from desktop.jobs import Jobs, Query
from desktop.library import Library
from desktop.ui import detail as detail_module
from desktop.ui import sidebar as sidebar_module
from desktop.ui.grid import HitRole
from desktop.ui.main_window import MainWindow

WAIT_MS = 15_000


def names(window: MainWindow) -> list[str]:
    return [Path(h.photo.path).name for h in window.model.hits()]


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    s = QSettings(str(tmp_path / "lumen.ini"), QSettings.Format.IniFormat)
    s.setValue("timeline/unit", "none")  # these tests count rows: the timeline (test_viewer.py) pads them
    return s


def make_window(qtbot, lib: Library, settings: QSettings) -> MainWindow:
    window = MainWindow(Jobs(lib), settings)
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot, lib: Library, settings: QSettings):
    win = make_window(qtbot, lib, settings)
    yield win
    win.close()  # stops the indexer and workers before the `lib` fixture closes the library


def start_and_wait(qtbot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS):
        window.start()


def drop_on(widget, paths: list[Path]) -> QDropEvent:
    """A real drag-enter + drop with file URLs, as a file manager sends them."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(widget.rect().center())
    enter = QDragEnterEvent(widget.rect().center(), Qt.DropAction.CopyAction | Qt.DropAction.MoveAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    drop = QDropEvent(pos, Qt.DropAction.CopyAction | Qt.DropAction.MoveAction, mime,
                      Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop


def test_typing_a_query_fills_the_grid(qtbot, window: MainWindow, lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    start_and_wait(qtbot, window)
    qtbot.waitUntil(lambda: window.model.rowCount() == 12, timeout=WAIT_MS)  # no query: every photo
    queries: list[Query] = []
    window.search_bar.query_changed.connect(queries.append)
    qtbot.keyClicks(window.search_bar.edit, "red")
    qtbot.waitUntil(lambda: not window.model.browsing and window.model.rowCount() > 0, timeout=WAIT_MS)
    assert sorted(names(window)[:2]) == ["red-1.jpg", "red-2.png"]
    assert "match" in window.count_label.text()
    assert queries == [Query("red")]  # debounced: one query for the word, not one per key
    # "-word" excludes, and the text combines with the rest of the query.
    window.search_bar.set_text("red yellow -yellow")
    qtbot.waitUntil(lambda: window.results is not None and window.results.query.text == "red yellow -yellow",
                    timeout=WAIT_MS)
    assert not any(n.startswith("yellow") for n in names(window)[:4])
    # Thumbnails are made off the GUI thread, cached on disk, and replace the placeholder.
    qtbot.waitUntil(lambda: window.model.has_thumbnail(0), timeout=WAIT_MS)
    assert list((lib.paths.thumbs).rglob("*.jpg"))


def test_dropping_an_image_on_the_search_bar_runs_an_image_query(
    qtbot, window: MainWindow, lib: Library, photos: Path, tmp_path: Path
) -> None:
    lib.add_root(photos)
    start_and_wait(qtbot, window)
    query_image = make_photo(tmp_path / "elsewhere" / "query.jpg", "blue", seed=7)  # not in the library
    drop = drop_on(window.search_bar, [query_image])
    assert drop.isAccepted() and drop.dropAction() == Qt.DropAction.CopyAction  # never Move: keep the original
    assert [c.key for c in window.search_bar.chips()] == [str(query_image)]
    qtbot.waitUntil(lambda: window.results is not None and window.results.query.images == (str(query_image),),
                    timeout=WAIT_MS)
    assert sorted(names(window)[:2]) == ["blue-1.jpg", "blue-2.png"]
    # Words and images combine; removing the chip leaves the words.
    qtbot.keyClicks(window.search_bar.edit, "yellow")
    qtbot.waitUntil(lambda: window.results.query.text == "yellow", timeout=WAIT_MS)
    assert window.results.query.images == (str(query_image),)
    window.search_bar.chips()[0].close_button.click()
    qtbot.waitUntil(lambda: window.results.query == Query("yellow"), timeout=WAIT_MS)
    assert sorted(names(window)[:2]) == ["yellow-1.jpg", "yellow-2.png"]
    # A result dropped on the grid (dragged inside Lumen) is an image query too.
    drop_on(window.grid.viewport(), [photos / "green-1.jpg"])
    qtbot.waitUntil(lambda: window.results.query.images == (str(photos / "green-1.jpg"),), timeout=WAIT_MS)


def test_adding_a_folder_indexes_it_while_the_progress_bar_advances(
    qtbot, window: MainWindow, lib: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "many"
    for i in range(150):
        make_photo(folder / f"p{i:03d}.jpg", ["red", "green", "blue"][i % 3], seed=i)
    start_and_wait(qtbot, window)  # empty library
    seen: list[tuple[str, int, int]] = []
    window.jobs.indexing.progressed.connect(
        lambda p: seen.append((p.stage, window.progress.value(), window.progress.maximum())))
    monkeypatch.setattr(sidebar_module, "choose_folder", lambda parent: str(folder))
    with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS) as blocker:
        window.sidebar.add_button.click()
    assert blocker.args[0].encoded == 150
    encode = [(v, m) for stage, v, m in seen if stage == "encode"]
    assert len(encode) >= 2 and encode[-1] == (150, 150)
    assert [v for v, _ in encode] == sorted(v for v, _ in encode) and encode[0][0] < 150
    qtbot.waitUntil(lambda: str(folder) in window.sidebar.rows
                    and window.sidebar.rows[str(folder)].counts.text().startswith("150 photos"), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.model.rowCount() == 150, timeout=WAIT_MS)


def test_find_similar_from_the_detail_panel(qtbot, window: MainWindow, lib: Library, photos: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lib.add_root(photos)
    start_and_wait(qtbot, window)
    qtbot.waitUntil(lambda: window.model.rowCount() == 12, timeout=WAIT_MS)
    row = names(window).index("red-1.jpg")
    window.grid.setCurrentIndex(window.model.index(row, 0))
    assert window.detail.title.text() == "red-1.jpg"
    qtbot.waitUntil(lambda: window.detail.preview.pixmap() is not None, timeout=WAIT_MS)
    assert window.detail.fields["Dimensions"].text().startswith("96 × 64")
    opened: list[str] = []
    monkeypatch.setattr(detail_module, "open_folder", lambda path: opened.append(path) or True)
    window.detail.folder_button.click()
    assert opened == [str(photos / "red-1.jpg")]
    window.detail.similar_button.click()
    qtbot.waitUntil(lambda: window.results is not None and window.results.query.similar_to is not None,
                    timeout=WAIT_MS)
    assert names(window)[0] == "red-2.png" and "red-1.jpg" not in names(window)
    assert window.search_bar.chips()[0].key == "similar"


def test_dragging_a_result_out_carries_its_file_url(qtbot, window: MainWindow, lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    start_and_wait(qtbot, window)
    window.search_bar.set_text("green")
    qtbot.waitUntil(lambda: not window.model.browsing and window.model.rowCount() > 0, timeout=WAIT_MS)
    window.grid.selectAll()
    indexes = window.grid.selectedIndexes()[:2]
    assert window.model.flags(indexes[0]) & Qt.ItemFlag.ItemIsDragEnabled
    assert window.grid.dragEnabled() and window.model.supportedDragActions() == Qt.DropAction.CopyAction
    mime = window.model.mimeData(indexes)
    paths = [u.toLocalFile() for u in mime.urls()]
    assert paths == [indexes[0].data(HitRole).photo.path, indexes[1].data(HitRole).photo.path]
    assert all(u.isLocalFile() and os.path.exists(u.toLocalFile()) for u in mime.urls())


def test_closing_during_indexing_keeps_a_consistent_catalog_that_the_next_start_resumes(
    qtbot, home: Path, tmp_path: Path, settings: QSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "big"
    for i in range(200):
        make_photo(folder / f"p{i:03d}.jpg", ["red", "green", "blue", "yellow"][i % 4], seed=i)
    full_speed = slow_encoder(monkeypatch)
    lib = Library(home, encoder="colors")
    lib.add_root(folder)
    window = make_window(qtbot, lib, settings)
    reports = []
    window.jobs.indexing.indexed.connect(reports.append)
    with qtbot.waitSignal(window.jobs.indexing.progressed, timeout=WAIT_MS,
                          check_params_cb=lambda p: p.stage == "encode" and p.done >= 32):
        window.start()
    window.close()  # during encoding: cancels between batches and waits
    assert not window.jobs.indexing.is_running()
    qtbot.waitUntil(lambda: bool(reports), timeout=WAIT_MS)
    assert reports[-1].cancelled
    lib.close()

    cat = Catalog(home / "catalog.db", readonly=True)
    assert cat.integrity_ok()
    vectors = cat.encoders_with_vectors().get("colors:hist-v1", 0)
    assert 32 <= vectors < 200
    assert cat.count_to_encode("colors:hist-v1") == 200 - vectors
    cat.close()

    full_speed()
    lib2 = Library(home)  # the encoder comes from the catalog
    window2 = make_window(qtbot, lib2, settings)
    try:
        with qtbot.waitSignal(window2.jobs.indexing.indexed, timeout=WAIT_MS) as blocker:
            window2.start()
        report = blocker.args[0]
        assert not report.cancelled and report.encoded == 200 - vectors and report.new_photos == 0
        assert lib2.catalog.count_to_encode("colors:hist-v1") == 0
    finally:
        window2.close()
        lib2.close()


def test_unavailable_encoder_still_opens_the_window_with_an_actionable_message(
    qtbot, home: Path, photos: Path, settings: QSettings
) -> None:
    lib = Library(home, encoder="no-such-encoder")
    lib.add_root(photos)
    window = make_window(qtbot, lib, settings)
    try:
        with qtbot.waitSignal(window.jobs.indexing.model_failed, timeout=WAIT_MS):
            window.start()
        assert window.message_bar.isVisible()
        text = window.message_bar.text.text()
        assert "choose an encoder in Settings" in text and "no-such-encoder" in text
        assert window.message_bar.action.text() == "Open Settings"
        # The photos are still found and shown; only encoding waits for a model.
        qtbot.waitUntil(lambda: window.model.rowCount() == 12, timeout=WAIT_MS)
    finally:
        window.close()
        lib.close()


def test_unreadable_folder_and_skipped_files_are_shown_with_their_reason(
    qtbot, window: MainWindow, lib: Library, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    lib.add_root(photos)
    start_and_wait(qtbot, window)
    qtbot.waitUntil(lambda: window.message_bar.isVisible(), timeout=WAIT_MS)
    assert "1 file could not be used" in window.message_bar.text.text()
    qtbot.waitUntil(lambda: window.sidebar.problems_button.isVisible(), timeout=WAIT_MS)
    skipped = window.sidebar.status.skipped
    assert [Path(s.path).name for s in skipped] == ["broken.jpg"] and skipped[0].reason
    dialog = sidebar_module.ProblemsDialog(skipped, window)
    assert dialog.table.item(0, 1).text() == skipped[0].reason
    with qtbot.waitSignal(window.jobs.failed, timeout=WAIT_MS) as blocker:
        window.add_folder(str(tmp_path / "does-not-exist"))
    assert "not a folder" in blocker.args[0]
    assert "not a folder" in window.message_bar.text.text()


def test_stale_search_results_are_dropped(qtbot, window: MainWindow, lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    start_and_wait(qtbot, window)
    got = []
    window.jobs.searched.connect(got.append)
    window.jobs.search(Query("red"))
    newest = window.jobs.search(Query("blue"))
    qtbot.waitUntil(lambda: bool(got), timeout=WAIT_MS)
    qtbot.wait(200)  # let the older query finish too
    assert [r.seq for r in got] == [newest] and got[0].query.text == "blue"


def test_only_visible_thumbnails_are_requested(qtbot, window: MainWindow, lib: Library, photos: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from desktop.library import Hit

    lib.add_root(photos)
    start_and_wait(qtbot, window)
    qtbot.waitUntil(lambda: window.model.rowCount() == 12 and window.jobs.thumbnails.pending() == 0,
                    timeout=WAIT_MS)
    window.jobs.searched.disconnect()  # nothing may replace the synthetic results below
    one = lib.catalog.photo_by_path(str(photos / "red-1.jpg"))
    fake = [Hit(dataclasses.replace(one, id=i, hash=f"{i:032x}"), 0.0) for i in range(20_000)]
    asked: list[str] = []
    loader = window.jobs.thumbnails
    real_request = loader.request
    monkeypatch.setattr(loader, "request", lambda photo: (asked.append(photo.hash), real_request(photo)))
    window.model.set_hits(fake, browsing=True)
    qtbot.waitUntil(lambda: len(asked) > 0, timeout=WAIT_MS)
    qtbot.wait(100)
    first, last = window.grid.visible_rows()
    on_screen = {h.photo.hash for h in fake[first : last + 1]}
    assert set(asked) <= on_screen and len(on_screen) < 100  # a screenful, not 20 000
    asked.clear()
    window.grid.scrollToBottom()
    qtbot.waitUntil(lambda: len(asked) > 0, timeout=WAIT_MS)
    qtbot.wait(100)
    first, last = window.grid.visible_rows()
    assert last == len(fake) - 1
    assert set(asked) <= {h.photo.hash for h in fake[first:]}  # the end only: nothing in between


def test_settings_dialog_lists_installed_encoders(qtbot, window: MainWindow) -> None:
    dialog = window.open_settings()
    qtbot.waitUntil(lambda: dialog.plugins != [], timeout=WAIT_MS)
    specs = [dialog.encoder.itemData(i) for i in range(dialog.encoder.count())]
    assert "colors:hist-v1" in specs
    assert dialog.choice().encoder == "colors"
    assert not dialog.apply()  # nothing changed: no re-index
    dialog.reject()


def test_the_window_opens_without_importing_torch(tmp_path: Path) -> None:
    code = (
        "import sys, os\n"
        "from desktop.app import create_window, make_app\n"
        "from desktop.library import Library\n"
        "app = make_app()\n"
        f"lib = Library({str(tmp_path / 'home')!r})\n"  # the default encoder: clip
        "w = create_window(lib); w.show(); app.processEvents()\n"
        "print('torch' in sys.modules)\n"
        "w.close(); lib.close()\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("encoder", ["colors", "clip:lumen-tiny:random"])
def test_run_app_opens_the_window_and_indexes_a_folder_argument(home: Path, photos: Path, encoder: str) -> None:
    # In a fresh process: run_app owns the QApplication's event loop and quits it. With a
    # torch model, the model runs in its own process: the window's never imports torch.
    code = (
        "import sys\n"
        "from PySide6.QtCore import QTimer\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from desktop import app as app_module\n"
        "from desktop.ui.main_window import MainWindow\n"
        "app_module.make_app()  # timers need the application first; run_app reuses it\n"
        "seen = {}\n"
        "def check():\n"
        "    wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]\n"
        # What the catalog holds, not the last run's report: a second run right after the
        # first (the folder's own request) reports 0 new and would hide the first's 12.
        "    stored = sum(wins[0].jobs.library.catalog.encoders_with_vectors().values()) if wins else 0\n"
        "    if stored:\n"
        "        seen['encoded'] = stored\n"
        "        wins[0].close()\n"
        "        QApplication.quit()\n"
        "    else:\n"
        "        QTimer.singleShot(50, check)\n"
        "QTimer.singleShot(50, check)\n"
        "QTimer.singleShot(150_000, QApplication.quit)  # never hang the test run\n"
        f"code = app_module.run_app(['--home', {str(home)!r}, '--encoder', {encoder!r}, {str(photos)!r}])\n"
        "print('torch' in sys.modules, code, seen.get('encoded'))\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-3:] == ["False", "0", "12"]


def test_describe_writes_a_caption_shown_in_the_detail_panel(qtbot, window: MainWindow, lib: Library,
                                                             photos: Path) -> None:
    lib.add_root(photos)
    start_and_wait(qtbot, window)
    qtbot.waitUntil(lambda: window.model.rowCount() == 12, timeout=WAIT_MS)
    window.grid.setCurrentIndex(window.model.index(names(window).index("red-1.jpg"), 0))
    qtbot.waitUntil(lambda: window.detail.details is not None, timeout=WAIT_MS)
    assert window.detail.caption_button.isEnabled()
    # `colors` knows no general concepts: the default captioner says so instead of making one up.
    window.detail.caption_button.click()
    qtbot.waitUntil(lambda: "does not understand general concepts" in window.detail.caption.text(),
                    timeout=WAIT_MS)
    photo_id = lib.catalog.photo_by_path(str(photos / "red-1.jpg")).id
    assert not lib.catalog.captions(photo_id)
    bank = photos.parent / "colours.txt"
    bank.write_text("a red photo.\na green photo.\na blue photo.\n")
    window.detail.set_captioner(f"retrieval:{bank}")  # a bank written for this encoder
    qtbot.waitUntil(window.detail.caption_button.isEnabled, timeout=WAIT_MS)
    window.detail.caption_button.click()
    qtbot.waitUntil(lambda: "wrote:" in window.detail.caption.text(), timeout=WAIT_MS)
    assert lib.catalog.captions(photo_id)  # stored, not only shown
    assert lib.catalog.captions(photo_id)[0].text in window.detail.caption.text()


def slow_encoder(monkeypatch: pytest.MonkeyPatch, seconds: float = 0.05) -> Callable[[], None]:
    """Make the colors encoder take its time; returns what restores its speed."""
    import plugins.colors as colors

    fast = colors.ColorsEncoder.encode_images

    def slowly(self, images):  # noqa: ANN001, ANN202 - a model that takes its time
        time.sleep(seconds)
        return fast(self, images)

    monkeypatch.setattr(colors.ColorsEncoder, "encode_images", slowly)
    return lambda: monkeypatch.setattr(colors.ColorsEncoder, "encode_images", fast)


def test_pause_and_resume_indexing(qtbot, window: MainWindow, lib: Library, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "many"
    for i in range(160):
        make_photo(folder / f"p{i:03d}.jpg", ["red", "green"][i % 2], seed=i)
    lib.add_root(folder)
    slow_encoder(monkeypatch)
    with qtbot.waitSignal(window.jobs.indexing.progressed, timeout=WAIT_MS,
                          check_params_cb=lambda p: p.stage == "encode"):
        window.start()
    assert window.pause_button.isVisible() and window.progress.isVisible()
    with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS) as paused:
        window.pause_button.click()
    assert paused.args[0].cancelled and window.pause_button.text() == "Resume"
    qtbot.waitUntil(lambda: window.jobs.indexing.state == "paused", timeout=WAIT_MS)
    assert "paused" in window.status_label.text().lower()
    done_before = 160 - lib.catalog.count_to_encode("colors:hist-v1")
    with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS) as resumed:
        window.pause_button.click()
    assert not resumed.args[0].cancelled and resumed.args[0].encoded == 160 - done_before
    assert window.pause_button.text() == "Pause"


def test_switching_encoders_reindexes_while_search_keeps_the_old_vectors(
    qtbot, window: MainWindow, lib: Library, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import desktop.store as library_module  # where the data dir creates its encoders
    import plugins.colors as colors

    lib.add_root(photos)
    start_and_wait(qtbot, window)
    real_create = library_module.create_encoder
    gate = threading.Event()

    class NewModel(colors.ColorsEncoder):
        """A second encoder (another id) whose indexing waits until the test lets it go."""

        def __init__(self) -> None:
            super().__init__()
            self.id = "colors-next:hist-v1"

        def encode_images(self, images):  # noqa: ANN001, ANN201
            gate.wait(10)
            return super().encode_images(images)

    monkeypatch.setattr(library_module, "create_encoder",
                        lambda spec, **kw: NewModel() if spec == "colors-next" else real_create(spec, **kw))
    with qtbot.waitSignal(window.jobs.indexing.encoder_switched, timeout=WAIT_MS):
        window.jobs.indexing.switch_encoder("colors-next", None, "auto")
    qtbot.waitUntil(lambda: window.jobs.indexing.state == "indexing", timeout=WAIT_MS)
    answered_by: list[str] = []
    real_query_encoder = lib.store.query_encoder  # what every search asks
    monkeypatch.setattr(lib.store, "query_encoder", lambda: answered_by.append(real_query_encoder().id) or
                        real_query_encoder())
    window.search_bar.set_text("red")  # while the new model has encoded nothing yet
    qtbot.waitUntil(lambda: bool(answered_by), timeout=WAIT_MS)
    assert answered_by[0] == "colors:hist-v1"  # the old vectors answer...
    with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS) as blocker:
        gate.set()  # (the query waited for the batch in flight: one encoder at a time)
    qtbot.waitUntil(lambda: window.results is not None and window.results.query.text == "red", timeout=WAIT_MS)
    assert sorted(names(window)[:2]) == ["red-1.jpg", "red-2.png"]
    assert blocker.args[0].encoded == 12
    assert real_query_encoder().id == "colors-next:hist-v1"  # ...until the new ones cover the library


def test_sidebar_shows_an_offline_library_and_switches_watching(qtbot, window: MainWindow, lib: Library,
                                                                photos: Path) -> None:
    lib.add_root(photos)
    start_and_wait(qtbot, window)
    qtbot.waitUntil(lambda: str(photos) in window.sidebar.rows, timeout=WAIT_MS)
    row = window.sidebar.rows[str(photos)]
    assert row.watch.isChecked()
    with qtbot.waitSignal(window.jobs.library_changed, timeout=WAIT_MS):
        row.watch.setChecked(False)
    assert not lib.roots()[0].watch
    photos.rename(photos.with_name("unplugged"))  # the disk goes away
    with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS) as blocker:
        window.jobs.indexing.request_index()
    assert blocker.args[0].offline == [str(photos)]
    qtbot.waitUntil(lambda: "offline" in window.sidebar.rows[str(photos)].counts.text(), timeout=WAIT_MS)
    assert "offline" in window.message_bar.text.text() and "kept" in window.message_bar.text.text()
    assert window.model.rowCount() == 12 or window.results is None or window.results.browsing  # photos kept


def item_named(widget, name: str):
    return next(widget.item(i) for i in range(widget.count())
                if widget.item(i).data(Qt.ItemDataRole.UserRole) == name)


def click_item(qtbot, widget, item) -> None:
    widget.scrollToItem(item)
    qtbot.mouseClick(widget.viewport(), Qt.MouseButton.LeftButton, pos=widget.visualItemRect(item).center())


def test_clicking_a_tag_in_the_sidebar_shows_its_photos(qtbot, window: MainWindow, lib: Library,
                                                       photos: Path) -> None:

    lib.add_root(photos)
    start_and_wait(qtbot, window)
    qtbot.waitUntil(lambda: window.model.rowCount() == 12, timeout=WAIT_MS)
    for name in ("red-1.jpg", "sub/blue-2.png"):
        lib.set_tags(lib.catalog.photo_by_path(str(photos / name)).id, ["holiday"])
    panel = window.sidebar.tags
    panel.refresh()
    qtbot.waitUntil(lambda: "holiday" in panel.visible_tags(), timeout=WAIT_MS)
    click_item(qtbot, panel.tag_list, item_named(panel.tag_list, "holiday"))
    qtbot.waitUntil(lambda: window.listing == "Tag “holiday”", timeout=WAIT_MS)
    assert sorted(names(window)) == ["blue-2.png", "red-1.jpg"]
    assert not window.model.browsing and "2 photos" in window.count_label.text()
    # A query typed afterwards replaces the tag's photos, as any new search does.
    qtbot.keyClicks(window.search_bar.edit, "yellow")
    qtbot.waitUntil(lambda: window.listing is None and window.results.query == Query("yellow"), timeout=WAIT_MS)


def test_editing_a_caption_in_the_detail_panel_makes_it_findable(qtbot, window: MainWindow, lib: Library,
                                                                 photos: Path) -> None:

    lib.add_root(photos)
    start_and_wait(qtbot, window)
    qtbot.waitUntil(lambda: window.model.rowCount() == 12, timeout=WAIT_MS)
    window.grid.setCurrentIndex(window.model.index(names(window).index("green-1.jpg"), 0))
    editor = window.detail.editor
    photo_id = lib.catalog.photo_by_path(str(photos / "green-1.jpg")).id
    qtbot.waitUntil(lambda: editor.photo_id == photo_id and editor._loaded is not None, timeout=WAIT_MS)
    editor.caption_edit.setPlainText("Lake Constance at noon")
    editor.tags_edit.setText("lake, holiday")
    assert editor.save_button.isEnabled()
    with qtbot.waitSignal(window.detail.text_changed, timeout=WAIT_MS) as sig:
        qtbot.mouseClick(editor.save_button, Qt.MouseButton.LeftButton)
    assert sig.args == [photo_id]
    assert [Path(h.path).name for h in lib.find_words("constance")] == ["green-1.jpg"]
    qtbot.waitUntil(lambda: editor.source_label.text() == "Your caption.", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "holiday" in window.sidebar.tags.visible_tags(), timeout=WAIT_MS)  # panel refreshed


def test_saving_the_current_search_as_an_album_lists_and_opens_it(qtbot, window: MainWindow, lib: Library,
                                                                  photos: Path, monkeypatch) -> None:
    from desktop.ui import main_window as main_window_module

    lib.add_root(photos)
    start_and_wait(qtbot, window)
    assert not window.save_album_button.isEnabled()  # nothing typed: nothing to save
    qtbot.keyClicks(window.search_bar.edit, "red")
    qtbot.waitUntil(lambda: window.results is not None and window.results.query == Query("red"), timeout=WAIT_MS)
    assert window.save_album_button.isEnabled()
    asked: list[str] = []
    monkeypatch.setattr(main_window_module, "ask_album_name", lambda parent, query: asked.append(query) or "Reds")
    panel = window.sidebar.tags
    qtbot.mouseClick(window.save_album_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.album_names() == ["Reds"], timeout=WAIT_MS)
    assert asked == ["red"] and [a.query for a in lib.catalog.albums()] == ["red"]
    click_item(qtbot, panel.album_list, item_named(panel.album_list, "Reds"))
    qtbot.waitUntil(lambda: window.listing == "Album “Reds”", timeout=WAIT_MS)
    assert sorted(names(window)[:2]) == ["red-1.jpg", "red-2.png"]


def test_the_ray_cluster_setting_reaches_the_index_runs(qtbot, window: MainWindow, lib: Library, photos: Path,
                                                        settings: QSettings) -> None:
    """Settings → Ray cluster: stored per machine, used by the next index run (here a head
    that is not there: the run stops at once with the address in the message, nothing is
    lost), and clearing it encodes on this computer again."""
    import socket

    from desktop.ui.settings_dialog import SettingsDialog, saved_cluster

    pytest.importorskip("ray")
    lib.add_root(photos)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    dialog = SettingsDialog(window.jobs, settings, window)
    qtbot.addWidget(dialog)
    dialog.cluster.setText(address)
    with qtbot.waitSignal(window.jobs.indexing.failed, timeout=WAIT_MS) as failure:
        dialog.apply()
        window.start()
    assert saved_cluster(settings) == address and window.jobs.indexing.cluster == address
    assert "cannot reach the Ray cluster" in failure.args[0] and address in failure.args[0]
    assert lib.catalog.count_to_encode(lib.encoder.id) == 12  # found, kept, waiting for an encoder
    dialog.cluster.setText("")
    with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS) as done:
        dialog.apply()
        window.jobs.indexing.request_index()
    assert done.args[0].encoded == 12 and saved_cluster(settings) is None
