""""Why this photo": the query's words' attention over the selected photo.

The re-ranker's explanation (Library.explain: a heat map over the CNN's grid and a score
per word) is fetched on a worker when a search result is selected. The preview paints
the heat map over the photo (`paint_overlay`); the panel below lists the words that
matched most, and clicking a word shows where that word looked.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from PySide6.QtCore import QRect, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop.library import Hit, Library

log = logging.getLogger(__name__)

OVERLAY_ALPHA = 150  # at the hottest cell; cold cells stay clear


def explain_hit(lib: Library, text: str, hit: Hit) -> dict[str, Any] | None:
    """Worker side: the explanation of one hit (None when the re-ranker cannot say)."""
    return lib.explain(text, [hit])[0]


def heatmap_image(heat: Any) -> QImage:
    """A (h, w) attention grid -> a small ARGB image: warm and opaque where attention is
    high, transparent where it is low (min-max scaled: the shape matters, not the scale)."""
    a = np.asarray(heat, np.float32)
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-9)
    h, w = a.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = (200 * (1 - a)).astype(np.uint8)  # yellow (low) -> red (high)
    rgba[..., 2] = 40
    rgba[..., 3] = (OVERLAY_ALPHA * a).astype(np.uint8)
    image = QImage(rgba.tobytes(), w, h, 4 * w, QImage.Format.Format_RGBA8888)
    return image.copy()  # own the pixels (the numpy buffer goes away)


def paint_overlay(painter: QPainter, target: QRect, overlay: QImage | None) -> None:
    """Stretch the grid over the painted photo, smoothly (bilinear), as a heat map."""
    if overlay is None or overlay.isNull():
        return
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    painter.drawImage(target, overlay.scaled(target.size(), Qt.AspectRatioMode.IgnoreAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation))
    painter.restore()


class WhyPanel(QWidget):
    """The words that matched most; a word's button shows its own attention map."""

    overlay_changed = Signal(object)  # QImage | None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("WhyPanel")
        self.explanation: dict[str, Any] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.setSpacing(4)
        head = QHBoxLayout()
        title = QLabel("Why this photo", self)
        title.setObjectName("SectionTitle")
        head.addWidget(title)
        head.addStretch(1)
        self.toggle = QPushButton("Hide map", self)
        self.toggle.setObjectName("SmallButton")
        self.toggle.setCheckable(True)
        self.toggle.toggled.connect(self._toggled)
        head.addWidget(self.toggle)
        layout.addLayout(head)
        self.summary = QLabel("", self)
        self.summary.setObjectName("Hint")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.words_row = QHBoxLayout()
        self.words_row.setSpacing(4)
        layout.addLayout(self.words_row)
        self.word_buttons: list[QPushButton] = []
        self.selected: str | None = None  # None: all words together
        self.hide()

    def set_explanation(self, explanation: dict[str, Any] | None) -> None:
        self.explanation = explanation
        self.selected = None
        for b in self.word_buttons:
            b.deleteLater()
        self.word_buttons = []
        if not explanation or not explanation.get("words"):
            self.hide()
            self.overlay_changed.emit(None)
            return
        top = explanation.get("top_words") or []
        self.summary.setText("Matched most: " + ", ".join(f"“{w}”" for w in top)
                             + ". The heat map shows where the words looked; a word shows its own.")
        for w in explanation["words"]:
            b = QPushButton(w["word"], self)
            b.setObjectName("TagChip")
            b.setCheckable(True)
            b.setToolTip(f"Where “{w['word']}” looked in this photo (match {w['score']:.2f})")
            b.clicked.connect(lambda checked, word=w["word"]: self.select_word(word if checked else None))
            self.words_row.addWidget(b)
            self.word_buttons.append(b)
        self.show()
        self._emit()

    def select_word(self, word: str | None) -> None:
        self.selected = word
        for b in self.word_buttons:
            b.setChecked(word is not None and b.text() == word)
        self._emit()

    def current_grid(self) -> Any | None:
        e = self.explanation
        if not e or self.toggle.isChecked():
            return None
        if self.selected is None:
            return e["heatmap"]
        return next((w["attention"] for w in e["words"] if w["word"] == self.selected), e["heatmap"])

    def _toggled(self, hidden: bool) -> None:
        self.toggle.setText("Show map" if hidden else "Hide map")
        self._emit()

    def _emit(self) -> None:
        grid = self.current_grid()
        self.overlay_changed.emit(heatmap_image(grid) if grid is not None else None)


def overlay_color_at(image: QImage, x: int, y: int) -> QColor:
    """The overlay's colour at a pixel of the painted widget (tests read it back)."""
    return QColor(image.pixel(x, y))
