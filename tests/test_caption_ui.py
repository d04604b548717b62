"""The tag browser, smart albums list and caption editor widgets (pytest-qt, offscreen),
over a real catalog with the `colors` encoder and retrieval captions from a small bank."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer

from desktop.library import Library
from desktop.ui import tags_panel as tags_panel_module
from desktop.ui.caption_editor import CaptionEditor
from desktop.ui.tags_panel import TagsPanel


@pytest.fixture
def captioned(lib: Library, photos: Path, tmp_path: Path) -> Library:
    bank = tmp_path / "bank.txt"
    bank.write_text("".join(f"a {c} photo\n" for c in ("red", "green", "blue", "yellow", "white", "black")))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(
        "# @max_tags 1\n# @group colours: a {tag} photo.\nred\ngreen\nblue\nyellow\nwhite\nblack\n"
    )
    lib.add_root(photos)
    lib.index()
    lib.caption_pending(f"retrieval:{bank}", vocabulary=vocab)
    return lib


def photo_id(lib: Library, path: Path) -> int:
    return lib.catalog.photo_by_path(str(path)).id


def test_tags_panel_lists_counts_filters_and_activates(qtbot, captioned: Library) -> None:
    panel = TagsPanel(captioned)
    qtbot.addWidget(panel)
    panel.refresh()
    assert set(panel.visible_tags()) == {"red", "green", "blue", "yellow", "white", "black"}
    assert panel.tag_list.item(0).text().endswith("(2)")
    assert not panel.empty_label.isVisibleTo(panel)
    qtbot.keyClicks(panel.filter_edit, "RE")
    assert sorted(panel.visible_tags()) == ["green", "red"]
    item = next(
        panel.tag_list.item(i)
        for i in range(panel.tag_list.count())
        if panel.tag_list.item(i).data(Qt.ItemDataRole.UserRole) == "red"
    )
    with qtbot.waitSignal(panel.tag_activated) as sig:
        panel.tag_list.itemActivated.emit(item)
    assert sig.args == ["red"]


def test_smart_albums_are_added_listed_opened_and_deleted(qtbot, captioned: Library, monkeypatch) -> None:
    panel = TagsPanel(captioned)
    qtbot.addWidget(panel)
    panel.refresh()
    assert panel.album_names() == [] and not panel.delete_album_button.isEnabled()
    monkeypatch.setattr(tags_panel_module, "ask_album", lambda parent: ("Reds", "red"))
    with qtbot.waitSignal(panel.albums_changed):
        qtbot.mouseClick(panel.add_album_button, Qt.MouseButton.LeftButton)
    assert panel.album_names() == ["Reds"]
    with qtbot.waitSignal(panel.album_activated) as sig:
        panel.album_list.itemActivated.emit(panel.album_list.item(0))
    assert sig.args == ["Reds"]
    ranked = [Path(h.path).name for h in captioned.album_photos("Reds")]
    assert sorted(ranked[:2]) == ["red-1.jpg", "red-2.png"]  # words and meaning agree: first
    panel.album_list.setCurrentRow(0)
    with qtbot.waitSignal(panel.albums_changed):
        qtbot.mouseClick(panel.delete_album_button, Qt.MouseButton.LeftButton)
    assert panel.album_names() == [] and captioned.albums() == []


def test_a_bad_album_query_is_reported_not_raised(qtbot, captioned: Library) -> None:
    panel = TagsPanel(captioned)
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.failed) as sig:
        panel.save_album("nothing", "-red")
    assert "at least one word" in sig.args[0]


def test_caption_editor_saves_the_users_words(qtbot, captioned: Library, photos: Path) -> None:
    editor = CaptionEditor(captioned)
    qtbot.addWidget(editor)
    assert not editor.isEnabled()
    pid = photo_id(captioned, photos / "blue-1.jpg")
    editor.set_photo(pid)
    assert editor.caption_edit.toPlainText() == "a blue photo" and editor.tags_edit.text() == "blue"
    assert "Written by retrieval:" in editor.source_label.text() and not editor.save_button.isEnabled()
    editor.caption_edit.setPlainText("Lake Constance at noon")
    editor.tags_edit.setText("lake, holiday")
    assert editor.save_button.isEnabled()
    with qtbot.waitSignal(editor.saved) as sig:
        qtbot.mouseClick(editor.save_button, Qt.MouseButton.LeftButton)
    assert sig.args == [pid]
    assert captioned.catalog.caption_of(pid).text == "Lake Constance at noon"
    assert captioned.catalog.effective_tags(pid) == ["lake", "holiday"]
    assert [Path(h.path).name for h in captioned.find_words("constance")] == ["blue-1.jpg"]
    assert editor.source_label.text() == "Your caption." and editor.reset_button.isEnabled()
    assert editor.others_label.text() == "also: a blue photo"
    with qtbot.waitSignal(editor.saved):
        qtbot.mouseClick(editor.reset_button, Qt.MouseButton.LeftButton)
    assert editor.caption_edit.toPlainText() == "a blue photo" and editor.tags_edit.text() == "blue"


def test_caption_editor_drops_answers_for_a_photo_no_longer_shown(
    qtbot, captioned: Library, photos: Path
) -> None:
    def later(fn, ok, err) -> None:  # answers arrive on a later turn of the event loop
        result = fn()
        QTimer.singleShot(0, lambda: ok(result))

    editor = CaptionEditor(captioned, runner=later)
    qtbot.addWidget(editor)
    editor.set_photo(photo_id(captioned, photos / "red-1.jpg"))
    editor.set_photo(photo_id(captioned, photos / "green-1.jpg"))
    qtbot.waitUntil(lambda: editor.caption_edit.toPlainText() != "", timeout=5000)
    qtbot.wait(50)
    assert editor.caption_edit.toPlainText() == "a green photo"
