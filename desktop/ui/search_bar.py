"""The search bar: words, image chips, and a pause-to-search debounce.

Typing searches once the user pauses (a single-shot timer restarted on every edit);
Return searches at once. An image dropped here — from the file manager or a result
dragged from the grid — becomes a removable chip, and words and images combine into one
query. "-word" excludes a word (the core's query parser does the rest).
"""

from __future__ import annotations

import os

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QImage, QKeyEvent, QPixmap
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QLineEdit, QToolButton, QWidget

from desktop.jobs import Query
from desktop.ui.grid import local_image_paths

DEBOUNCE_MS = 300
CHIP_ICON = 22


class Chip(QFrame):
    """A query image: small thumbnail, name, and a remove button."""

    removed = Signal(str)  # the chip's key (an image path, or "similar")

    def __init__(self, key: str, label: str, tooltip: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = key
        self.setObjectName("Chip")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(3, 2, 2, 2)
        layout.setSpacing(5)
        self.icon = QLabel(self)
        self.icon.setObjectName("ChipIcon")
        self.icon.setFixedSize(CHIP_ICON, CHIP_ICON)
        self.icon.setScaledContents(False)
        self.icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.icon)
        self.label = QLabel(self)
        self.label.setText(self.label.fontMetrics().elidedText(label, Qt.TextElideMode.ElideMiddle, 150))
        layout.addWidget(self.label)
        self.close_button = QToolButton(self)
        self.close_button.setObjectName("ChipClose")
        self.close_button.setText("×")
        self.close_button.setToolTip("Remove from the query")
        self.close_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.close_button.clicked.connect(lambda: self.removed.emit(self.key))
        layout.addWidget(self.close_button)
        self.setToolTip(tooltip)

    def set_image(self, image: QImage) -> None:
        dpr = self.devicePixelRatioF()
        pixmap = QPixmap.fromImage(image).scaled(
            int(CHIP_ICON * dpr), int(CHIP_ICON * dpr),
            Qt.AspectRatioMode.KeepAspectRatioByExpanding, Qt.TransformationMode.SmoothTransformation,
        )
        pixmap.setDevicePixelRatio(dpr)
        self.icon.setPixmap(pixmap)


class SearchBar(QFrame):
    query_changed = Signal(object)  # Query, after the debounce (or at once for chips/Return)
    images_added = Signal(list)  # paths of new chips (the window loads their thumbnails)
    drop_rejected = Signal(str)  # why a drop was not used

    def __init__(self, parent: QWidget | None = None, debounce_ms: int = DEBOUNCE_MS) -> None:
        super().__init__(parent)
        self.setObjectName("SearchBar")
        self.setAcceptDrops(True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.setSpacing(6)
        icon = QLabel("⌕", self)
        icon.setObjectName("SearchIcon")
        layout.addWidget(icon)
        self._chip_box = QHBoxLayout()
        self._chip_box.setSpacing(4)
        self._chip_box.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._chip_box)
        self.edit = QLineEdit(self)
        self.edit.setObjectName("SearchEdit")
        self.edit.setFrame(False)
        self.edit.setAcceptDrops(False)  # drops go to the bar: an image becomes a chip, not text
        self.edit.setPlaceholderText("Describe a photo — “dog running on a beach”, -word excludes — or drop a photo here")
        self.edit.setClearButtonEnabled(True)
        self.edit.textEdited.connect(self._edited)
        self.edit.returnPressed.connect(self.search_now)
        self.edit.installEventFilter(self)
        layout.addWidget(self.edit, 1)
        self._chips: dict[str, Chip] = {}
        self._images: list[str] = []
        self._similar: tuple[int, str] | None = None
        self._last: Query | None = None
        self._timer = QTimer(self, singleShot=True, interval=debounce_ms)
        self._timer.timeout.connect(self.search_now)

    # -- state --
    def query(self) -> Query:
        sim_id, sim_path = self._similar if self._similar else (None, None)
        return Query(self.edit.text().strip(), tuple(self._images), sim_id, sim_path)

    def images(self) -> list[str]:
        return list(self._images)

    def chips(self) -> list[Chip]:
        return list(self._chips.values())

    def set_text(self, text: str) -> None:
        self.edit.setText(text)
        self.search_now()

    def add_images(self, paths: list[str]) -> None:
        new = [os.path.abspath(p) for p in paths if os.path.abspath(p) not in self._images]
        for path in new:
            self._images.append(path)
            self._add_chip(path, os.path.basename(path), f"Image query: {path}")
        if new:
            self.images_added.emit(new)
            self.search_now()

    def set_similar(self, photo_id: int, path: str) -> None:
        """"Find similar": one chip standing for a library photo (replaces the query)."""
        for key in list(self._chips):
            self._remove_chip(key)
        self._images.clear()
        self.edit.clear()
        self._similar = (photo_id, path)
        self._add_chip("similar", f"≈ {os.path.basename(path)}", f"Photos like {path}")
        self.images_added.emit([path])
        self.search_now()

    def remove_image(self, key: str) -> None:
        if key == "similar":
            self._similar = None
        elif key in self._images:
            self._images.remove(key)
        self._remove_chip(key)
        self.search_now()

    def clear(self) -> None:
        for key in list(self._chips):
            self._remove_chip(key)
        self._images.clear()
        self._similar = None
        self.edit.clear()
        self.search_now()

    def set_chip_image(self, path: str, image: QImage) -> None:
        for key, chip in self._chips.items():
            if key == path or (key == "similar" and self._similar and self._similar[1] == path):
                chip.set_image(image)

    def search_now(self) -> None:
        self._timer.stop()
        query = self.query()
        if query != self._last:
            self._last = query
            self.query_changed.emit(query)

    def refresh(self) -> None:
        """Run the current query again (the library changed under it)."""
        self._last = None
        self.search_now()

    # -- internals --
    def _edited(self, _: str) -> None:
        self._timer.start()

    def _add_chip(self, key: str, label: str, tooltip: str) -> None:
        chip = Chip(key, label, tooltip, self)
        chip.removed.connect(self.remove_image)
        self._chips[key] = chip
        self._chip_box.addWidget(chip)

    def _remove_chip(self, key: str) -> None:
        chip = self._chips.pop(key, None)
        if chip is not None:
            self._chip_box.removeWidget(chip)
            chip.deleteLater()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        # Backspace in an empty field removes the last chip, as in mail address fields.
        if watched is self.edit and event.type() == QEvent.Type.KeyPress:
            key_event: QKeyEvent = event  # type: ignore[assignment]
            if key_event.key() == Qt.Key.Key_Backspace and not self.edit.text() and self._chips:
                self.remove_image(list(self._chips)[-1])
                return True
        return super().eventFilter(watched, event)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        # Accept files that are not images too, so the drop can say why it is refused.
        if event.mimeData().hasUrls():
            _accept_copy(event)
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        _accept_copy(event)

    def dropEvent(self, event: QDropEvent) -> None:
        paths = local_image_paths(event.mimeData())
        if not paths:
            names = ", ".join(os.path.basename(u.toLocalFile() or u.toString()) for u in event.mimeData().urls()[:3])
            self.drop_rejected.emit(f"Not an image file Lumen can search with: {names}")
            event.ignore()
            return
        _accept_copy(event)
        self.add_images(paths)


def _accept_copy(event: QDropEvent) -> None:
    # Always Copy: a file manager that is told "moved" may delete the user's original.
    event.setDropAction(Qt.DropAction.CopyAction)
    event.accept()
