"""Edit one photo's caption and tags (for the detail panel).

Built from the Library alone; reads and writes go through a runner like the tags panel's
(`desktop.ui.tags_panel.run_now` by default, `jobs_runner(jobs)` in the window). What the
user saves is stored as *their* caption / tag set, which no captioner overwrites; "Use
automatic" forgets it and shows the machines' words again.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QStringListModel, Qt, Signal
from PySide6.QtWidgets import (
    QCompleter,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.catalog import USER, Caption, PhotoText
from desktop.library import Library, parse_tags
from desktop.ui.tags_panel import Runner, run_now

log = logging.getLogger(__name__)


class CaptionEditor(QWidget):
    saved = Signal(int)  # photo id
    failed = Signal(str)

    def __init__(self, library: Library, runner: Runner | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("CaptionEditor")
        self.library = library
        self.runner: Runner = runner or run_now
        self.photo_id: int | None = None
        self._loaded: PhotoText | None = None
        self._token = 0  # a late answer for a photo no longer shown is dropped

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.head = QLabel("Caption", self)  # a host with its own caption header may hide it
        self.head.setObjectName("SectionTitle")
        layout.addWidget(self.head)
        self.caption_edit = QPlainTextEdit(self)
        self.caption_edit.setPlaceholderText("Describe this photo in your own words")
        self.caption_edit.setFixedHeight(64)
        self.caption_edit.textChanged.connect(self._changed)
        layout.addWidget(self.caption_edit)
        self.source_label = QLabel("", self)
        self.source_label.setObjectName("RootPath")
        self.source_label.setWordWrap(True)
        layout.addWidget(self.source_label)
        self.others_label = QLabel("", self)
        self.others_label.setObjectName("Caption")
        self.others_label.setWordWrap(True)
        self.others_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.others_label)

        tags_head = QLabel("Tags", self)
        tags_head.setObjectName("SectionTitle")
        layout.addWidget(tags_head)
        self.tags_edit = QLineEdit(self)
        self.tags_edit.setPlaceholderText("beach, sunset, family")
        self.tags_edit.textChanged.connect(self._changed)
        self._known_tags = QStringListModel(self)
        completer = QCompleter(self._known_tags, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.tags_edit.setCompleter(completer)
        layout.addWidget(self.tags_edit)

        buttons = QHBoxLayout()
        self.save_button = QPushButton("Save", self)
        self.save_button.setObjectName("PrimaryButton")
        self.save_button.clicked.connect(self.save)
        self.reset_button = QPushButton("Use automatic", self)
        self.reset_button.setObjectName("SmallButton")
        self.reset_button.setToolTip("Forget your caption and tags for this photo; show the machines' again")
        self.reset_button.clicked.connect(self.reset)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.reset_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.set_photo(None)

    # -- loading --
    def set_photo(self, photo_id: int | None) -> None:
        self._token += 1
        self.photo_id, self._loaded = photo_id, None
        self.setEnabled(photo_id is not None)
        self._fill(None, [])
        if photo_id is None:
            return
        token, lib = self._token, self.library

        def load() -> tuple[PhotoText | None, list[Caption], list[str]]:
            known = [t for t, _ in lib.tag_counts(limit=5000)]
            return lib.photo_text(photo_id), lib.catalog.captions(photo_id), known

        self.runner(load, lambda result: self._loaded_for(token, result), self.failed.emit)

    def _loaded_for(self, token: int, result: tuple[PhotoText | None, list[Caption], list[str]]) -> None:
        if token != self._token:
            return
        text, all_captions, known = result
        self._loaded = text
        self._known_tags.setStringList(known)
        self._fill(text, all_captions)

    def _fill(self, text: PhotoText | None, all_captions: list[Caption]) -> None:
        for w in (self.caption_edit, self.tags_edit):
            w.blockSignals(True)
        self.caption_edit.setPlainText((text.caption or "") if text else "")
        self.tags_edit.setText(", ".join(text.tags) if text else "")
        for w in (self.caption_edit, self.tags_edit):
            w.blockSignals(False)
        if text is None or not text.caption:
            self.source_label.setText("No caption yet." if text else "")
        elif text.caption_edited:
            self.source_label.setText("Your caption.")
        else:
            self.source_label.setText(f"Written by {text.caption_source}; edit it to make it yours.")
        others = [c for c in all_captions if text and c.source not in (text.caption_source, USER)]
        self.others_label.setText("\n".join(f"also: {c.text}" for c in others))
        self.others_label.setVisible(bool(others))
        self.reset_button.setEnabled(bool(text and (text.caption_edited or text.tags_edited)))
        self._changed()

    # -- editing --
    def caption_text(self) -> str:
        return " ".join(self.caption_edit.toPlainText().split())

    def tags(self) -> list[str]:
        return parse_tags(self.tags_edit.text())

    def dirty(self) -> bool:
        shown = self._loaded
        if shown is None:
            return False
        return self.caption_text() != (shown.caption or "") or self.tags() != shown.tags

    def _changed(self) -> None:
        self.save_button.setEnabled(self.dirty())

    def save(self) -> None:
        """Store what changed as the user's own caption and/or tag set."""
        shown, photo_id, lib = self._loaded, self.photo_id, self.library
        if shown is None or photo_id is None or not self.dirty():
            return
        caption, tags = self.caption_text(), self.tags()
        new_caption = caption != (shown.caption or "")
        new_tags = tags != shown.tags

        def write() -> int:
            if new_caption:
                lib.set_caption(photo_id, caption)
            if new_tags:
                lib.set_tags(photo_id, tags)
            return photo_id

        self.runner(write, self._written, self.failed.emit)

    def reset(self) -> None:
        photo_id, lib = self.photo_id, self.library
        if photo_id is None:
            return

        def write() -> int:
            lib.set_caption(photo_id, None)
            lib.set_tags(photo_id, None)
            return photo_id

        self.runner(write, self._written, self.failed.emit)

    def _written(self, photo_id: int) -> None:
        self.saved.emit(photo_id)
        if photo_id == self.photo_id:
            self.set_photo(photo_id)  # show what is stored now
