"""Review duplicates: exact copies and near-duplicates, the suggested keeper of each group,
and moving the others to the system trash — only after a confirmation, with undo while
the window is open. Nothing is deleted outright (desktop/trash.py).

All work (grouping, thumbnails, trashing, restoring) runs on workers through `Jobs`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.jobs import Jobs, load_preview
from desktop.library import Group, Library, Trashed

log = logging.getLogger(__name__)

ItemRole = Qt.ItemDataRole.UserRole + 1
GroupRole = Qt.ItemDataRole.UserRole + 2
ICON = 72
MODES = (("exact", "Exact copies (same bytes)"), ("near", "Similar photos"))


def confirm_trash(parent: QWidget, count: int, sample: list[str]) -> bool:
    """Ask before moving files to the trash (tests replace this)."""
    names = "\n".join(f"• {os.path.basename(p)}" for p in sample[:6]) + ("\n…" if len(sample) > 6 else "")
    answer = QMessageBox.question(
        parent, "Move to trash",
        f"Move {count} file{'s' if count != 1 else ''} to the system trash?\n\n{names}\n\n"
        "They can be restored with Undo while Lumen is open, or from the system trash later.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
    return answer == QMessageBox.StandardButton.Yes


def _trash_items(lib: Library, groups: list[tuple[str, str, int]]) -> tuple[list[Trashed], list[str]]:
    """(kind, path, photo id) -> trash. A near-duplicate is a photo: all its copies go."""
    paths: list[str] = []
    for kind, path, photo_id in groups:
        for p in ([path] if kind == "exact" else lib.paths_of(photo_id) or [path]):
            if p not in paths:
                paths.append(p)
    return lib.trash_files(paths)


class DuplicatesDialog(QDialog):
    """Groups on the left as a tree: each group's files under it, the keeper unchecked and
    marked, the others checked for the trash (the user can change any box)."""

    trashed = Signal(int)  # files moved
    restored = Signal(int)
    loaded = Signal()  # a grouping finished (tests wait on it)

    def __init__(self, jobs: Jobs, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DuplicatesDialog")
        self.setWindowTitle("Review duplicates")
        self.resize(1120, 700)
        self.jobs = jobs
        self.groups: list[Group] = []
        self.undo_stack: list[list[Trashed]] = []
        self._pairs: list[tuple[int, int, float]] | None = None
        self._token = 0
        self.busy = False
        default, floor = jobs.library.duplicate_thresholds()
        self.default_threshold = default

        self.mode = QComboBox(self)
        for key, label in MODES:
            self.mode.addItem(label, key)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(int(round(floor * 100)), 99)
        self.slider.setValue(int(round(default * 100)))
        self.slider.setToolTip(f"How alike two photos must be. The default ({default:.2f}) is the lowest value "
                               "with no wrong pair on the UKBench benchmark for this model.")
        self.threshold_label = QLabel(self)
        self.summary = QLabel(self)
        self.summary.setObjectName("DuplicatesSummary")
        top = QHBoxLayout()
        top.addWidget(QLabel("Show:", self))
        top.addWidget(self.mode)
        top.addSpacing(16)
        self.similarity_caption = QLabel("Similarity at least", self)
        top.addWidget(self.similarity_caption)
        top.addWidget(self.slider, 1)
        top.addWidget(self.threshold_label)

        self.tree = QTreeWidget(self)
        self.tree.setObjectName("DuplicatesTree")
        self.tree.setColumnCount(6)
        self.tree.setHeaderLabels(["File", "Folder", "Size", "Taken", "Similarity", "Note"])
        self.tree.setIconSize(QPixmap(ICON, ICON).size())
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.tree.header()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.tree.setUniformRowHeights(False)

        self.trash_button = QPushButton("Move checked to trash…", self)
        self.trash_button.setObjectName("TrashButton")
        self.undo_button = QPushButton("Undo", self)
        self.undo_button.setObjectName("UndoButton")
        self.undo_button.setEnabled(False)
        close = QPushButton("Close", self)
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.undo_button)
        bottom.addWidget(self.trash_button)
        bottom.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tree, 1)
        layout.addLayout(bottom)

        self._regroup = QTimer(self, singleShot=True, interval=250)  # the slider is dragged: group once
        self._regroup.timeout.connect(self.reload)
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self.slider.valueChanged.connect(self._threshold_moved)
        self.trash_button.clicked.connect(self.trash_checked)
        self.undo_button.clicked.connect(self.undo)
        close.clicked.connect(self.accept)
        self._mode_changed()

    # -- state --
    @property
    def threshold(self) -> float:
        return self.slider.value() / 100

    def kind(self) -> str:
        return self.mode.currentData()

    def set_mode(self, kind: str) -> None:
        self.mode.setCurrentIndex(next(i for i, (k, _) in enumerate(MODES) if k == kind))

    def checked(self) -> list[tuple[str, str, int]]:
        """(kind, path, photo id) of every checked file."""
        out = []
        for g in range(self.tree.topLevelItemCount()):
            group_item = self.tree.topLevelItem(g)
            group: Group = group_item.data(0, GroupRole)
            for c in range(group_item.childCount()):
                child = group_item.child(c)
                if child.checkState(0) == Qt.CheckState.Checked:
                    item = child.data(0, ItemRole)
                    out.append((group.kind, item.path, item.photo.id))
        return out

    # -- loading --
    def reload(self) -> None:
        self._token += 1
        token = self._token
        self.busy = True
        self.summary.setText("Looking for duplicates…")
        lib = self.jobs.library
        if self.kind() == "exact":
            self.jobs.run(lib.exact_duplicates, on_result=lambda groups: self._show(token, groups),
                          on_error=lambda message: self._failed(token, message))
            return
        threshold = self.threshold

        def groups() -> list[Group]:
            if self._pairs is None:
                self._pairs = lib.near_duplicate_pairs(self.slider.minimum() / 100)
            return lib.near_duplicates(self._pairs, threshold)

        self.jobs.run(groups, on_result=lambda found: self._show(token, found),
                      on_error=lambda message: self._failed(token, message))

    def _show(self, token: int, groups: list[Group]) -> None:
        if token != self._token:
            return
        self.busy = False
        self.groups = groups
        self.tree.clear()
        files = sum(len(g.items) for g in groups)
        for group in groups:
            self._add_group(group)
        self.tree.expandAll()
        what = "copies" if self.kind() == "exact" else "similar photos"
        self.summary.setText(f"{len(groups)} group{'s' if len(groups) != 1 else ''} of {what} · {files} files"
                             if groups else f"No {what} found.")
        self.trash_button.setEnabled(bool(groups))
        self.loaded.emit()

    def _add_group(self, group: Group) -> None:
        keep = group.keep
        title = (f"{len(group.items)} copies of {os.path.basename(keep.path)}" if group.kind == "exact"
                 else f"{len(group.items)} similar photos · keep {os.path.basename(keep.path)}")
        top = QTreeWidgetItem([title])
        top.setData(0, GroupRole, group)
        font = top.font(0)
        font.setBold(True)
        top.setFont(0, font)
        self.tree.addTopLevelItem(top)
        for i, item in enumerate(group.items):
            p = item.photo
            size = f"{p.width}×{p.height}" if p.width and p.height else "?"
            sim = "" if item.similarity is None else f"{item.similarity:.2f}"
            note = ("Keep (suggested: " + self._why(group) + ")") if i == 0 else "Move to trash"
            if item.edited:
                note += " · has your caption/tags"
            child = QTreeWidgetItem([os.path.basename(item.path), os.path.dirname(item.path), size,
                                     item.when[:16].replace("T", " "), sim, note])
            child.setData(0, ItemRole, item)
            child.setFlags(child.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            child.setCheckState(0, Qt.CheckState.Unchecked if i == 0 else Qt.CheckState.Checked)
            child.setToolTip(0, item.path)
            child.setToolTip(1, item.path)
            top.addChild(child)
            self._load_icon(child, item.photo)

    @staticmethod
    def _why(group: Group) -> str:
        keep, others = group.keep, group.others
        if others and keep.pixels > max(o.pixels for o in others):
            return "largest"
        if others and keep.when < min(o.when for o in others):
            return "oldest"
        if keep.edited and not all(o.edited for o in others):
            return "has your edits"
        if others and len(keep.path) < min(len(o.path) for o in others):
            return "shorter name"
        return "first found"

    def _load_icon(self, child: QTreeWidgetItem, photo) -> None:  # noqa: ANN001 - Photo
        token = self._token

        def done(image: QImage) -> None:
            if token == self._token:
                child.setIcon(0, QIcon(QPixmap.fromImage(image)))

        self.jobs.run(load_preview, self.jobs.library, photo, 256, on_result=done,
                      on_error=lambda message: log.info("no duplicate thumbnail: %s", message))

    def _failed(self, token: int, message: str) -> None:
        if token == self._token:
            self.busy = False
            self.summary.setText(f"Could not look for duplicates: {message}")
            self.loaded.emit()

    # -- slots --
    def _mode_changed(self) -> None:
        near = self.kind() == "near"
        for w in (self.slider, self.threshold_label, self.similarity_caption):
            w.setVisible(near)
        self._threshold_moved()
        self.reload()

    def _threshold_moved(self) -> None:
        self.threshold_label.setText(f"{self.threshold:.2f}")
        if self.kind() == "near" and self.sender() is self.slider:
            self._regroup.start()

    # -- trash and undo --
    def trash_checked(self) -> None:
        chosen = self.checked()
        if not chosen or not confirm_trash(self, len(chosen), [p for _, p, _ in chosen]):
            return
        self.busy = True
        self.summary.setText(f"Moving {len(chosen)} files to the trash…")
        self.trash_button.setEnabled(False)
        self._work(_trash_items, self.jobs.library, chosen, done=self._trashed)

    def undo(self) -> None:
        if not self.undo_stack:
            return
        batch = self.undo_stack.pop()
        self.busy = True
        self.undo_button.setEnabled(False)
        self.summary.setText(f"Restoring {len(batch)} files…")
        self._work(self.jobs.library.restore_files, batch, done=lambda r, b=batch: self._restored(b, r))

    def _work(self, fn: Callable, *args: object, done: Callable) -> None:  # noqa: ANN001
        def failed(message: str) -> None:
            self.busy = False
            self.summary.setText(message)
            self.undo_button.setEnabled(bool(self.undo_stack))
            self.loaded.emit()

        self.jobs.run(fn, *args, on_result=done, on_error=failed)

    def _trashed(self, result: tuple[list[Trashed], list[str]]) -> None:
        done, failed = result
        if done:
            self.undo_stack.append([t for t in done])
        self.undo_button.setEnabled(bool(self.undo_stack))
        self._pairs = None  # photos left: the pairs change
        self.trashed.emit(len(done))
        self.reload()
        if failed:
            self.summary.setText("; ".join(failed[:3]))
        if any(not t.restorable for t in done):
            log.warning("some trashed files cannot be restored from here: %s",
                        [t.original for t in done if not t.restorable])

    def _restored(self, batch: list[Trashed], result: tuple[list[str], list[str]]) -> None:
        back, failed = result
        if failed:
            left = [t for t in batch if t.original not in back]
            if left:
                self.undo_stack.append(left)
        self.undo_button.setEnabled(bool(self.undo_stack))
        self._pairs = None
        self.restored.emit(len(back))
        self.reload()
        if failed:
            self.summary.setText("; ".join(failed[:3]))
