"""The sidebar: library folders (add, remove, online/offline, watch on/off), photo
counts, files that could not be used, which model answers queries, and below the
libraries the smart albums and tag browser (`TagsPanel`).

Built from `Jobs` alone: every read and write runs in a worker; `refresh()` asks for
`Library.status()` and redraws from its answer.
"""

from __future__ import annotations

import logging
import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.catalog import Skipped
from desktop.jobs import Jobs
from desktop.library import LibraryStatus, RootStatus
from desktop.ui.tags_panel import TagsPanel, jobs_runner

log = logging.getLogger(__name__)


def choose_folder(parent: QWidget) -> str | None:
    """Ask for a folder (tests replace this)."""
    folder = QFileDialog.getExistingDirectory(parent, "Add a photo folder to Lumen")
    return folder or None


class RootRow(QFrame):
    """One library folder: name, path, counts, online state and the watch switch."""

    watch_toggled = Signal(str, bool)

    def __init__(self, status: RootStatus, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("RootRow")
        self.path = status.root.path
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(2)
        top = QHBoxLayout()
        top.setSpacing(6)
        dot = QLabel("●", self)
        dot.setObjectName("OnlineDot" if status.root.online else "OfflineDot")
        dot.setToolTip("online" if status.root.online else "offline: the folder is missing (unplugged disk?); photos are kept")
        top.addWidget(dot)
        name = QLabel(os.path.basename(self.path.rstrip(os.sep)) or self.path, self)
        name.setObjectName("RootName")
        top.addWidget(name, 1)
        layout.addLayout(top)
        path = QLabel(self)
        path.setObjectName("RootPath")
        home = os.path.expanduser("~")
        shown = "~" + self.path[len(home):] if self.path.startswith(home + os.sep) else self.path
        path.setText(path.fontMetrics().elidedText(shown, Qt.TextElideMode.ElideMiddle, 200))
        path.setToolTip(self.path)
        layout.addWidget(path)
        c = status.counts
        parts = [f"{c['photos']:,} photos".replace(",", " ")]
        if c["new"]:
            parts.append(f"{c['new']:,} to analyse".replace(",", " "))
        if c["skipped"]:
            parts.append(f"{c['skipped']} skipped")
        if not status.root.online:
            parts.append("offline")
        self.counts = QLabel(" · ".join(parts), self)
        self.counts.setObjectName("RootCounts")
        layout.addWidget(self.counts)
        self.watch = QCheckBox("Watch for changes", self)
        self.watch.setChecked(status.root.watch)
        if status.root.watch and status.watching not in ("on", "off"):
            self.watch.setToolTip(f"not watching: {status.watching}; rescanned periodically instead")
        self.watch.toggled.connect(lambda on: self.watch_toggled.emit(self.path, on))
        layout.addWidget(self.watch)


class ProblemsDialog(QDialog):
    """Files Lumen could not use, and why (unreadable, corrupt, permission denied...)."""

    def __init__(self, skipped: list[Skipped], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Files Lumen could not use")
        self.resize(760, 420)
        layout = QVBoxLayout(self)
        intro = QLabel(f"{len(skipped)} file(s) or folder(s) were skipped. Fix or remove them, then index again.", self)
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.table = QTableWidget(len(skipped), 2, self)
        self.table.setHorizontalHeaderLabels(["File or folder", "Reason"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        for row, item in enumerate(skipped):
            self.table.setItem(row, 0, QTableWidgetItem(item.path))
            self.table.setItem(row, 1, QTableWidgetItem(item.reason))
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    @classmethod
    def show_for(cls, skipped: list[Skipped], parent: QWidget) -> ProblemsDialog:
        """Open it window-modal without a nested event loop; it deletes itself on close."""
        dialog = cls(skipped, parent)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog


class Sidebar(QFrame):
    status_loaded = Signal(object)  # LibraryStatus, for the status bar's idle line
    message = Signal(str, str)  # text, level — for the window's message bar

    def __init__(self, jobs: Jobs, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Sidebar")
        self.jobs = jobs
        self.status: LibraryStatus | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 14, 12, 12)
        layout.setSpacing(8)
        title = QLabel("LIBRARIES", self)
        title.setObjectName("SidebarTitle")
        layout.addWidget(title)
        self.list = QListWidget(self)
        self.list.setObjectName("RootList")
        self.list.setSelectionMode(QListWidget.SelectionMode.SingleSelection)
        self.list.setVerticalScrollMode(QListWidget.ScrollMode.ScrollPerPixel)
        self.list.itemSelectionChanged.connect(self._selection_changed)
        layout.addWidget(self.list, 1)
        buttons = QHBoxLayout()
        buttons.setSpacing(6)
        self.add_button = QPushButton("Add folder…", self)
        self.add_button.setObjectName("PrimaryButton")
        self.add_button.clicked.connect(self.add_folder)
        buttons.addWidget(self.add_button, 1)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.setEnabled(False)
        self.remove_button.setToolTip("Forget the selected folder (the files on disk are not touched)")
        self.remove_button.clicked.connect(self.remove_selected)
        buttons.addWidget(self.remove_button)
        layout.addLayout(buttons)
        self.problems_button = QPushButton("", self)
        self.problems_button.setObjectName("ProblemsButton")
        self.problems_button.setFlat(True)
        self.problems_button.clicked.connect(self.show_problems)
        self.problems_button.hide()
        layout.addWidget(self.problems_button)
        # Under the libraries: smart albums and the tag browser (the window wires their clicks).
        self.tags = TagsPanel(jobs.library, runner=jobs_runner(jobs), parent=self)
        self.tags.layout().setContentsMargins(0, 8, 0, 0)
        layout.addWidget(self.tags, 2)
        self.model_label = QLabel("", self)
        self.model_label.setObjectName("ModelLabel")
        self.model_label.setWordWrap(True)
        layout.addWidget(self.model_label)
        self.rows: dict[str, RootRow] = {}
        jobs.library_changed.connect(self.refresh)

    # -- actions --
    def add_folder(self, folder: str | None = None) -> None:
        folder = folder or choose_folder(self)
        if folder:
            self.jobs.add_root(folder)

    def remove_selected(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.jobs.remove_root(item.data(Qt.ItemDataRole.UserRole))

    def show_problems(self) -> None:
        ProblemsDialog.show_for(self.status.skipped if self.status else [], self)

    def refresh(self) -> None:
        self.jobs.status(on_result=self._apply)

    def set_model_text(self, text: str) -> None:
        self.model_label.setText(text)

    # -- internals --
    def _selection_changed(self) -> None:
        self.remove_button.setEnabled(self.list.currentItem() is not None and bool(self.list.selectedItems()))

    def _apply(self, status: LibraryStatus) -> None:
        self.status = status
        selected = self.list.currentItem().data(Qt.ItemDataRole.UserRole) if self.list.currentItem() else None
        self.list.clear()
        self.rows.clear()
        for rs in status.roots:
            item = QListWidgetItem(self.list)
            item.setData(Qt.ItemDataRole.UserRole, rs.root.path)
            row = RootRow(rs, self.list)
            row.watch_toggled.connect(self.jobs.set_watch)
            item.setSizeHint(row.sizeHint())
            self.list.setItemWidget(item, row)
            self.rows[rs.root.path] = row
            if rs.root.path == selected:
                self.list.setCurrentItem(item)
        self._selection_changed()
        n = len(status.skipped)
        self.problems_button.setText(f"⚠  {n} file{'s' if n != 1 else ''} could not be used — show")
        self.problems_button.setVisible(n > 0)
        self.status_loaded.emit(status)
