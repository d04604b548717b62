"""A video in the window: the grid shows its poster with its length, and the detail panel
shows the frame that matched the query, its time, and plays the video from there."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_photo
from PySide6.QtCore import QSettings

from desktop.jobs import Jobs
from desktop.library import Library
from desktop.ui.main_window import MainWindow

pytest.importorskip("av")
from test_video_raw import write_video  # noqa: E402

WAIT_MS = 15_000


def test_a_video_hit_shows_its_moment_and_plays_from_it(qtbot, lib: Library, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    write_video(root / "party.mp4")
    make_photo(root / "yellow.jpg", "yellow")
    lib.add_root(root)
    settings = QSettings(str(tmp_path / "lumen.ini"), QSettings.Format.IniFormat)
    settings.setValue("timeline/unit", "none")  # this test counts rows: the timeline pads them
    window = MainWindow(Jobs(lib), settings)
    qtbot.addWidget(window)
    window.show()
    try:
        with qtbot.waitSignal(window.jobs.indexing.indexed, timeout=WAIT_MS):
            window.start()
        qtbot.waitUntil(lambda: window.model.rowCount() == 2, timeout=WAIT_MS)
        window.search_bar.set_text("blue")
        qtbot.waitUntil(lambda: window.results is not None and window.results.query.text == "blue"
                        and window.model.rowCount() > 0, timeout=WAIT_MS)
        hit = window.model.hit(0)
        assert hit is not None and hit.photo.path.endswith("party.mp4") and 3.9 <= hit.at_s < 6.0
        window.grid.setCurrentIndex(window.model.index(0, 0))
        detail = window.detail
        assert detail.fields["Duration"].text().startswith("0:06") or detail.fields["Duration"].text() == "0:05.9"
        assert detail.fields["Moment"].text().startswith("0:04")
        assert detail.play_button.isVisibleTo(window) and detail.play_button.text().startswith("Play from 0:04")
        # the preview is the matched (blue) frame, not the (green) poster
        qtbot.waitUntil(lambda: detail.preview.pixmap() is not None, timeout=WAIT_MS)
        image = detail.preview.pixmap().toImage()
        c = image.pixelColor(image.width() // 2, image.height() // 2)
        assert c.blue() > 150 and c.green() < 120, c.name()
        command = detail.play_command()
        assert command == [] or (str(root / "party.mp4") in command and any("4." in a for a in command))
        # the poster thumbnail in the grid is the first (green) frame
        qtbot.waitUntil(lambda: window.model.has_thumbnail(0), timeout=WAIT_MS)
        window.grid.grab().save(str(tmp_path / "grid.png"))
        # a photo selected afterwards hides the video's controls
        window.search_bar.set_text("yellow")
        qtbot.waitUntil(lambda: window.results is not None and window.results.query.text == "yellow"
                        and window.model.rowCount() > 0, timeout=WAIT_MS)
        row = next(i for i in range(window.model.rowCount()) if window.model.hit(i).photo.path.endswith(".jpg"))
        window.grid.setCurrentIndex(window.model.index(row, 0))
        assert not detail.play_button.isVisibleTo(window) and detail.fields["Moment"].text() == "—"
    finally:
        window.close()
