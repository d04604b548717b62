"""The full-screen viewer: one photo at a time from the current results.

Arrow keys move through the results, 1/Z zooms to 100 % (one image pixel per screen
pixel) and back to fit, +/- zoom, a drag pans, Esc goes back to the grid. Pixels come
through the core's media decoders (desktop/media.py), which apply EXIF orientation, on a
worker: the GUI thread never decodes a 24 MP JPEG.
"""

from __future__ import annotations

import logging
import os

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPixmap,
    QWheelEvent,
)
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from desktop import media
from desktop.jobs import Jobs
from desktop.library import Hit
from desktop.ui import shortcuts, system

log = logging.getLogger(__name__)

FULL_SIDE = 16384  # decode at full size (media never upscales); larger is downscaled to this
ZOOM_STEP = 1.25


def load_full_image(path: str, max_side: int = FULL_SIDE) -> QImage:
    """The whole photo, oriented, as a QImage (runs on a worker)."""
    im = media.make_thumbnail(path, max_side)
    data = im.tobytes()
    return QImage(data, im.width, im.height, im.width * 3, QImage.Format.Format_RGB888).copy()


class ImageCanvas(QWidget):
    """Paints one image fitted or at a zoom factor, centred, with a pan offset."""

    zoom_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ViewerCanvas")
        self.pixmap: QPixmap | None = None
        self.message = ""
        self.fit = True
        self._zoom = 1.0  # image pixels -> device pixels, when not fitting
        self.offset = QPointF(0, 0)  # pan, in logical pixels
        self._drag: QPointF | None = None
        self.setMouseTracking(False)

    def set_image(self, image: QImage | None, message: str = "") -> None:
        self.pixmap = QPixmap.fromImage(image) if image is not None and not image.isNull() else None
        self.message = message
        self.fit = True
        self.offset = QPointF(0, 0)
        self.update()
        self.zoom_changed.emit()

    def fit_scale(self) -> float:
        """Logical pixels per image pixel when fitted (never above 100 %)."""
        if self.pixmap is None or self.pixmap.isNull():
            return 1.0
        dpr = self.devicePixelRatioF() or 1.0
        w, h = self.pixmap.width(), self.pixmap.height()
        return min(self.width() / w, self.height() / h, 1.0 / dpr)

    def scale(self) -> float:
        """Logical pixels per image pixel now."""
        if self.fit:
            return self.fit_scale()
        return self._zoom / (self.devicePixelRatioF() or 1.0)

    def zoom_percent(self) -> float:
        """Image pixels per device pixel, as a percentage: 100 means actual size."""
        return self.scale() * (self.devicePixelRatioF() or 1.0) * 100

    def set_zoom(self, zoom: float | None) -> None:
        """None: fit; else image pixels per device pixel (1.0 = 100 %)."""
        if zoom is None:
            self.fit = True
            self.offset = QPointF(0, 0)
        else:
            self.fit = False
            self._zoom = max(0.02, min(zoom, 32.0))
        self.update()
        self.zoom_changed.emit()

    def zoom_by(self, factor: float) -> None:
        self.set_zoom(self.zoom_percent() / 100 * factor)

    def image_rect(self) -> QRectF:
        if self.pixmap is None:
            return QRectF()
        s = self.scale()
        w, h = self.pixmap.width() * s, self.pixmap.height() * s
        x = (self.width() - w) / 2 + self.offset.x()
        y = (self.height() - h) / 2 + self.offset.y()
        return QRectF(x, y, w, h)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#0d0e10"))
        if self.pixmap is None:
            painter.setPen(QColor("#8a8f98"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.zoom_percent() < 100)
        painter.drawPixmap(self.image_rect(), self.pixmap, QRectF(self.pixmap.rect()))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and not self.fit:
            self._drag = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is not None:
            self.offset += event.position() - self._drag
            self._drag = event.position()
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None
        self.unsetCursor()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.set_zoom(None if not self.fit else 1.0)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom_by(ZOOM_STEP ** steps)


class Viewer(QWidget):
    """A top-level full-screen window over the results. `moved` says which result it shows
    (the grid follows), `closed` that the user went back."""

    moved = Signal(int)
    closed = Signal(int)
    failed = Signal(str)

    def __init__(self, jobs: Jobs, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("Viewer")
        self.setWindowTitle("Lumen — viewer")
        self.jobs = jobs
        self.hits: list[Hit] = []
        self.index = -1
        self._token = 0
        self.canvas = ImageCanvas(self)
        self.info = QLabel(self)
        self.info.setObjectName("ViewerInfo")
        self.zoom_label = QLabel(self)
        self.zoom_label.setObjectName("ViewerZoom")
        bar = QHBoxLayout()
        bar.setContentsMargins(14, 6, 14, 6)
        bar.addWidget(self.info, 1)
        bar.addWidget(self.zoom_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(bar)
        self.setStyleSheet("#Viewer { background: #0d0e10; } #ViewerInfo, #ViewerZoom { color: #c9ccd1; }")
        self.canvas.zoom_changed.connect(self._show_zoom)
        self.actions_ = shortcuts.install(self, "Viewer", {
            "viewer_next": lambda: self.go(self.index + 1),
            "viewer_prev": lambda: self.go(self.index - 1),
            "viewer_first": lambda: self.go(0),
            "viewer_last": lambda: self.go(len(self.hits) - 1),
            "viewer_actual": self.toggle_actual_size,
            "viewer_fit": lambda: self.canvas.set_zoom(None),
            "viewer_zoom_in": lambda: self.canvas.zoom_by(ZOOM_STEP),
            "viewer_zoom_out": lambda: self.canvas.zoom_by(1 / ZOOM_STEP),
            "reveal": lambda: self._hand_over(system.reveal),
            "open_default": lambda: self._hand_over(system.open_default),
            "viewer_close": self.close,
        })

    # -- navigation --
    def open(self, hits: list[Hit], index: int, full_screen: bool = True) -> None:
        self.hits = list(hits)
        if not self.hits:
            return
        if full_screen:
            self.showFullScreen()
        else:
            self.show()
        self.raise_()
        self.activateWindow()
        self.setFocus()
        self.go(index)

    def current(self) -> Hit | None:
        return self.hits[self.index] if 0 <= self.index < len(self.hits) else None

    def go(self, index: int) -> None:
        if not self.hits:
            return
        index = max(0, min(index, len(self.hits) - 1))
        if index == self.index and self.canvas.pixmap is not None:
            return
        self.index = index
        hit = self.hits[index]
        self._token += 1
        token = self._token
        self.canvas.set_image(None, "Loading…")
        self._show_info(hit)
        self.jobs.run(load_full_image, hit.photo.path,
                      on_result=lambda image, t=token: self._loaded(t, image),
                      on_error=lambda message, t=token: self._load_failed(t, message))
        self.moved.emit(index)

    def toggle_actual_size(self) -> None:
        self.canvas.set_zoom(1.0 if self.canvas.fit or abs(self.canvas.zoom_percent() - 100) > 0.5 else None)

    # -- slots --
    def _loaded(self, token: int, image: QImage) -> None:
        if token == self._token:
            self.canvas.set_image(image)

    def _load_failed(self, token: int, message: str) -> None:
        if token == self._token:
            self.canvas.set_image(None, f"Cannot show this photo:\n{message}")

    def _show_info(self, hit: Hit) -> None:
        p = hit.photo
        size = f" · {p.width}×{p.height}" if p.width and p.height else ""
        taken = f" · {p.taken_at[:16].replace('T', ' ')}" if p.taken_at else ""
        self.info.setText(f"{self.index + 1} / {len(self.hits)} · {os.path.basename(p.path)}{size}{taken}")

    def _show_zoom(self) -> None:
        if self.canvas.pixmap is None:
            self.zoom_label.setText("")
        else:
            self.zoom_label.setText(("Fit · " if self.canvas.fit else "") + f"{self.canvas.zoom_percent():.0f} %")

    def _hand_over(self, fn) -> None:  # noqa: ANN001 - system.reveal / system.open_default
        hit = self.current()
        if hit is not None and (problem := fn(hit.photo.path)):
            self.failed.emit(problem)

    def closeEvent(self, event) -> None:  # noqa: ANN001 - QCloseEvent
        self._token += 1  # a decode finishing late is dropped
        super().closeEvent(event)
        self.closed.emit(self.index)
