"""The tag browser (every tag with how many photos show it) and the smart albums list.

Built from the Library alone. Reads and writes go through `runner(fn, on_result,
on_error)`; the default runs them at once (tests, small libraries). In the window pass
`jobs_runner(jobs)`, so the work happens on a worker thread and the answer comes back as
a Qt signal on the GUI thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.catalog import Album
from desktop.library import Library

log = logging.getLogger(__name__)

Runner = Callable[[Callable[[], Any], Callable[[Any], None], Callable[[str], None]], None]
NameRole = Qt.ItemDataRole.UserRole


def run_now(fn: Callable[[], Any], on_result: Callable[[Any], None], on_error: Callable[[str], None]) -> None:
    """The default runner: call at once, report an error as a message (and log it)."""
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - reported to the widget and logged, not swallowed
        log.exception("%s failed", getattr(fn, "__name__", fn))
        on_error(str(exc))
        return
    on_result(result)


def jobs_runner(jobs: Any) -> Runner:
    """A runner over desktop.jobs.Jobs: the work runs on its worker pool."""
    return lambda fn, ok, err: jobs.run(fn, on_result=ok, on_error=err)


def ask_album(parent: QWidget) -> tuple[str, str] | None:
    """Ask for a new smart album's name and query (tests replace this)."""
    query, ok = QInputDialog.getText(parent, "New smart album", "Photos matching (words and meaning):")
    if not ok or not query.strip():
        return None
    name, ok = QInputDialog.getText(parent, "New smart album", "Album name:", text=query.strip())
    return (name, query) if ok and name.strip() else None


class TagsPanel(QWidget):
    """Smart albums on top, the tag list with counts below (filterable)."""

    tag_activated = Signal(str)
    album_activated = Signal(str)
    albums_changed = Signal()
    failed = Signal(str)

    def __init__(self, library: Library, runner: Runner | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("TagsPanel")
        self.library = library
        self.runner: Runner = runner or run_now
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(6)

        head = QHBoxLayout()
        title = QLabel("SMART ALBUMS", self)
        title.setObjectName("SidebarTitle")
        head.addWidget(title)
        head.addStretch(1)
        self.add_album_button = QPushButton("+", self)
        self.add_album_button.setObjectName("SmallButton")
        self.add_album_button.setToolTip("New smart album: a saved search that fills in as photos arrive")
        self.add_album_button.clicked.connect(self._add_album_clicked)
        head.addWidget(self.add_album_button)
        self.delete_album_button = QPushButton("−", self)
        self.delete_album_button.setObjectName("SmallButton")
        self.delete_album_button.setToolTip("Delete the selected smart album (its photos stay)")
        self.delete_album_button.clicked.connect(self._delete_album_clicked)
        head.addWidget(self.delete_album_button)
        layout.addLayout(head)
        self.album_list = QListWidget(self)
        self.album_list.setObjectName("AlbumList")
        self.album_list.itemActivated.connect(lambda item: self.album_activated.emit(item.data(NameRole)))
        self.album_list.itemClicked.connect(lambda item: self.album_activated.emit(item.data(NameRole)))
        layout.addWidget(self.album_list, 1)

        tags_title = QLabel("TAGS", self)
        tags_title.setObjectName("SidebarTitle")
        layout.addWidget(tags_title)
        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Filter tags")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self._apply_filter)
        layout.addWidget(self.filter_edit)
        self.tag_list = QListWidget(self)
        self.tag_list.setObjectName("TagList")
        self.tag_list.itemActivated.connect(lambda item: self.tag_activated.emit(item.data(NameRole)))
        self.tag_list.itemClicked.connect(lambda item: self.tag_activated.emit(item.data(NameRole)))
        layout.addWidget(self.tag_list, 3)
        self.empty_label = QLabel("No tags yet: they appear as photos are captioned.", self)
        self.empty_label.setWordWrap(True)
        self.empty_label.setObjectName("RootPath")
        layout.addWidget(self.empty_label)
        self._tags: list[tuple[str, int]] = []

    # -- loading --
    def refresh(self) -> None:
        """Reload tags and albums (call after captioning batches, edits, album changes)."""
        lib = self.library
        self.runner(lambda: lib.tag_counts(), self._show_tags, self.failed.emit)
        self.runner(lambda: lib.albums(), self._show_albums, self.failed.emit)

    def _show_tags(self, counts: list[tuple[str, int]]) -> None:
        self._tags = counts
        self.tag_list.clear()
        for tag, n in counts:
            item = QListWidgetItem(f"{tag}  ({n})")
            item.setData(NameRole, tag)
            item.setToolTip(f"{n} photo{'s' if n != 1 else ''} tagged “{tag}”")
            self.tag_list.addItem(item)
        self.empty_label.setVisible(not counts)
        self._apply_filter(self.filter_edit.text())

    def _show_albums(self, albums: list[Album]) -> None:
        self.album_list.clear()
        for album in albums:
            item = QListWidgetItem(album.name)
            item.setData(NameRole, album.name)
            item.setToolTip(f"{album.query!r} — {album.mode}")
            self.album_list.addItem(item)
        self.delete_album_button.setEnabled(bool(albums))

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().casefold()
        for i in range(self.tag_list.count()):
            item = self.tag_list.item(i)
            item.setHidden(bool(needle) and needle not in item.data(NameRole).casefold())

    def visible_tags(self) -> list[str]:
        return [
            self.tag_list.item(i).data(NameRole)
            for i in range(self.tag_list.count())
            if not self.tag_list.item(i).isHidden()
        ]

    def album_names(self) -> list[str]:
        return [self.album_list.item(i).data(NameRole) for i in range(self.album_list.count())]

    # -- albums --
    def save_album(self, name: str, query: str, mode: str = "both", filters: Any = None) -> None:
        """Save a search as a smart album (the window's "Save search" calls this too)."""
        lib = self.library

        def saved(_: object) -> None:
            self.albums_changed.emit()
            self.refresh()

        self.runner(lambda: lib.save_album(name, query, mode, filters), saved, self.failed.emit)

    def _add_album_clicked(self) -> None:
        answer = ask_album(self)
        if answer is not None:
            self.save_album(*answer)

    def _delete_album_clicked(self) -> None:
        item = self.album_list.currentItem()
        if item is None:
            return
        name, lib = item.data(NameRole), self.library

        def deleted(_: object) -> None:
            self.albums_changed.emit()
            self.refresh()

        self.runner(lambda: lib.delete_album(name), deleted, self.failed.emit)
