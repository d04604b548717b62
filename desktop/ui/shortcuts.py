"""Keyboard shortcuts: one table that the window, the viewer and Help → Keyboard shortcuts
all read, so what the dialog says is what the keys do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class Shortcut:
    id: str
    label: str
    keys: tuple[str, ...]  # QKeySequence portable strings; the first is the main one
    where: str  # "Window", "Grid" (the grid has focus) or "Viewer"


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("search", "Search (focus the search bar)", ("Ctrl+F", "/"), "Window"),
    Shortcut("open_viewer", "Open the photo full screen (or double-click)", ("Space", "Return", "Enter"), "Grid"),
    Shortcut("similar", "Find similar photos", ("Ctrl+Shift+F",), "Window"),
    Shortcut("reveal", "Reveal in file manager", ("Ctrl+R",), "Window"),
    Shortcut("open_default", "Open with default app", ("Ctrl+O",), "Window"),
    Shortcut("add_folder", "Add folder…", ("Ctrl+Shift+O",), "Window"),
    Shortcut("duplicates", "Review duplicates…", ("Ctrl+D",), "Window"),
    Shortcut("timeline_unit", "Timeline: group by day / month", ("Ctrl+T",), "Window"),
    Shortcut("settings", "Settings…", ("Ctrl+,",), "Window"),
    Shortcut("shortcuts", "Keyboard shortcuts", ("F1", "Ctrl+/"), "Window"),
    Shortcut("quit", "Quit", ("Ctrl+Q",), "Window"),
    Shortcut("viewer_next", "Next photo", ("Right", "PgDown"), "Viewer"),
    Shortcut("viewer_prev", "Previous photo", ("Left", "PgUp"), "Viewer"),
    Shortcut("viewer_first", "First photo", ("Home",), "Viewer"),
    Shortcut("viewer_last", "Last photo", ("End",), "Viewer"),
    Shortcut("viewer_actual", "Zoom to 100 % (again: fit)", ("1", "Z"), "Viewer"),
    Shortcut("viewer_fit", "Fit to screen", ("0", "F"), "Viewer"),
    Shortcut("viewer_zoom_in", "Zoom in", ("+", "="), "Viewer"),
    Shortcut("viewer_zoom_out", "Zoom out", ("-",), "Viewer"),
    Shortcut("reveal", "Reveal in file manager", ("Ctrl+R",), "Viewer"),
    Shortcut("open_default", "Open with default app", ("Ctrl+O",), "Viewer"),
    Shortcut("viewer_close", "Back to the grid", ("Escape", "Backspace"), "Viewer"),
)


# Grid keys only while the grid has focus (Space in the search bar types a space).
CONTEXTS = {"Window": Qt.ShortcutContext.WindowShortcut, "Grid": Qt.ShortcutContext.WidgetShortcut,
            "Viewer": Qt.ShortcutContext.WidgetWithChildrenShortcut}


def shortcut(id_: str, where: str = "Window") -> Shortcut:
    return next(s for s in SHORTCUTS if s.id == id_ and s.where == where)


def key_sequences(id_: str, where: str = "Window") -> list[QKeySequence]:
    return [QKeySequence(k) for k in shortcut(id_, where).keys]


def install(widget: QWidget, where: str, handlers: dict[str, Callable[[], object]]) -> dict[str, QAction]:
    """QActions on `widget` for the table's rows of `where` that have a handler."""
    actions: dict[str, QAction] = {}
    for s in SHORTCUTS:
        if s.where != where or s.id not in handlers:
            continue
        action = QAction(s.label, widget)
        action.setShortcuts([QKeySequence(k) for k in s.keys])
        action.setShortcutContext(CONTEXTS[where])
        action.triggered.connect(lambda _=False, fn=handlers[s.id]: fn())
        widget.addAction(action)
        actions[s.id] = action
    return actions


def native(keys: tuple[str, ...]) -> str:
    return ", ".join(QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText) for k in keys)


class ShortcutsDialog(QDialog):
    """Help → Keyboard shortcuts: the table above, as the platform writes keys."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(520, 560)
        self.table = QTableWidget(len(SHORTCUTS), 3, self)
        self.table.setHorizontalHeaderLabels(["Where", "Action", "Keys"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        for row, s in enumerate(SHORTCUTS):
            for col, text in enumerate((s.where, s.label, native(s.keys))):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.resizeColumnToContents(0)
        self.table.resizeColumnToContents(2)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
