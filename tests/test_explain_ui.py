""""Why this photo" in the detail panel (pytest-qt, offscreen): the re-ranker's attention
over the selected result is painted over its preview, and its words are listed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QImage
from test_rerank import colour_photos, toy_reranker  # noqa: F401
from test_ui import WAIT_MS, make_window, names, settings, start_and_wait  # noqa: F401

from desktop.library import Library
from desktop.ui.explain import heatmap_image


def test_heatmap_image_is_hot_where_attention_is() -> None:
    heat = np.zeros((7, 7))
    heat[2, 5] = 1.0
    img = heatmap_image(heat)
    assert (img.width(), img.height()) == (7, 7)
    assert img.pixelColor(5, 2).alpha() > 100 and img.pixelColor(0, 0).alpha() == 0


def test_detail_panel_shows_the_attention_overlay(qtbot, toy_reranker, colour_photos: Path,  # noqa: F811
                                                  home: Path, settings) -> None:  # noqa: F811
    lib = Library(home, encoder="colors")
    window = make_window(qtbot, lib, settings)
    try:
        lib.add_root(colour_photos)
        start_and_wait(qtbot, window)
        qtbot.keyClicks(window.search_bar.edit, "red dog")
        qtbot.waitUntil(lambda: window.results is not None and window.results.query.text == "red dog",
                        timeout=WAIT_MS)
        window.grid.setCurrentIndex(window.model.index(0, 0))
        why = window.detail.why
        qtbot.waitUntil(lambda: why.isVisible() and window.detail.preview.overlay is not None, timeout=WAIT_MS)
        assert [b.text().split()[0] for b in why.word_buttons] == ["red", "dog"]
        assert "“red”" in why.summary.text()
        qtbot.waitUntil(lambda: window.detail.preview.pixmap() is not None, timeout=WAIT_MS)
        # The painted preview carries the heat map: the hot cell (row 0, column 2: two
        # words) changes colour, a cold cell does not (compared with the map hidden).
        preview = window.detail.preview
        pm = preview.pixmap()
        area = preview.rect().adjusted(12, 12, -12, -12)
        scale = min(area.width() / pm.width(), area.height() / pm.height())
        tw, th = int(pm.width() * scale), int(pm.height() * scale)
        x0, y0 = area.x() + (area.width() - tw) // 2, area.y() + (area.height() - th) // 2
        hot_xy = (x0 + int(tw * 2.5 / 7), y0 + int(th * 0.5 / 7))
        cold_xy = (x0 + int(tw * 5.5 / 7), y0 + int(th * 5.5 / 7))
        with_map: QImage = preview.grab().toImage()
        why.toggle.click()  # hide the heat map
        assert preview.overlay is None
        without: QImage = preview.grab().toImage()

        def diff(xy: tuple[int, int]) -> int:
            a, b = with_map.pixelColor(*xy), without.pixelColor(*xy)
            return abs(a.red() - b.red()) + abs(a.green() - b.green()) + abs(a.blue() - b.blue())

        assert diff(hot_xy) > 60 and diff(cold_xy) < 10, (diff(hot_xy), diff(cold_xy))
        why.toggle.click()
        why.word_buttons[1].click()
        assert why.selected == "dog" and preview.overlay is not None
    finally:
        window.close()
        lib.close()


@pytest.mark.parametrize("browsing", [True])
def test_no_explanation_when_browsing(qtbot, toy_reranker, colour_photos: Path, home: Path,  # noqa: F811
                                      settings, browsing: bool) -> None:  # noqa: F811
    lib = Library(home, encoder="colors")
    window = make_window(qtbot, lib, settings)
    try:
        lib.add_root(colour_photos)
        start_and_wait(qtbot, window)
        qtbot.waitUntil(lambda: window.model.rowCount() == 6, timeout=WAIT_MS)
        window.grid.setCurrentIndex(window.model.index(0, 0))
        qtbot.wait(300)
        assert not window.detail.why.isVisible() and window.detail.preview.overlay is None
    finally:
        window.close()
        lib.close()


def test_settings_switch_turns_reranking_off(qtbot, toy_reranker, colour_photos: Path, home: Path,  # noqa: F811
                                             settings) -> None:  # noqa: F811
    lib = Library(home, encoder="colors")
    window = make_window(qtbot, lib, settings)
    try:
        lib.add_root(colour_photos)
        start_and_wait(qtbot, window)
        reranked = [h.path for h in lib.search("red", k=6)]
        dialog = window.open_settings()
        assert dialog.rerank.isChecked()
        dialog.rerank.setChecked(False)
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
        qtbot.waitUntil(lambda: not lib.reranking.enabled, timeout=WAIT_MS)
        assert [h.path for h in lib.search("red", k=6)] == reranked[::-1]
    finally:
        window.close()
        lib.close()
