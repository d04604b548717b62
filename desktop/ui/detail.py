"""The detail panel: a large preview and what Lumen knows about the selected photo.

The row's Photo fills the text at once; the preview, every path, the captions and tags
come from workers (a result for a photo that is no longer selected is ignored).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime

from PySide6.QtCore import QProcess, QRect, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QImage, QPainter, QPaintEvent, QPixmap
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from desktop.catalog import Photo
from desktop.jobs import Details, Jobs, load_preview, photo_details
from desktop.library import Hit
from desktop.media import clock
from desktop.ui.caption_editor import CaptionEditor
from desktop.ui.explain import WhyPanel, explain_hit, paint_overlay
from desktop.ui.tags_panel import jobs_runner

log = logging.getLogger(__name__)


def open_folder(path: str) -> bool:
    """Show the folder holding `path` in the system file manager (tests replace this)."""
    return QDesktopServices.openUrl(QUrl.fromLocalFile(os.path.dirname(path)))


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


def human_date(iso: str | None) -> str:
    if not iso:
        return "—"
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return when.strftime("%-d %B %Y, %H:%M") if (when.hour, when.minute) != (0, 0) else when.strftime("%-d %B %Y")


class Preview(QWidget):
    """Paints a pixmap fitted to its size (keeps the aspect ratio; no relayout on load)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Preview")
        self._pixmap: QPixmap | None = None
        self.overlay: QImage | None = None  # "why this photo": attention heat map over the photo
        self.message = ""
        self.setMinimumHeight(200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(320, 280)

    def set_pixmap(self, pixmap: QPixmap | None, message: str = "") -> None:
        self._pixmap, self.message = pixmap, message
        self.update()

    def pixmap(self) -> QPixmap | None:
        return self._pixmap

    def set_overlay(self, overlay: QImage | None) -> None:
        self.overlay = overlay
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.fillRect(self.rect(), QColor("#16171a"))
        area = self.rect().adjusted(12, 12, -12, -12)
        if self._pixmap is None or self._pixmap.isNull():
            painter.setPen(QColor("#7d828b"))
            painter.drawText(area.adjusted(12, 12, -12, -12), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self.message)
            return
        w, h = self._pixmap.width(), self._pixmap.height()
        scale = min(area.width() / w, area.height() / h)
        tw, th = int(w * scale), int(h * scale)
        target = QRect(area.x() + (area.width() - tw) // 2, area.y() + (area.height() - th) // 2, tw, th)
        painter.drawPixmap(target, self._pixmap)
        paint_overlay(painter, target, self.overlay)


class DetailPanel(QFrame):
    similar_requested = Signal(int, str)  # photo id, path
    text_changed = Signal(int)  # photo id: its caption or tags changed (edited or described)

    def __init__(self, jobs: Jobs, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DetailPanel")
        self.jobs = jobs
        self.hit: Hit | None = None
        self.details: Details | None = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.preview = Preview(self)
        outer.addWidget(self.preview, 4)

        scroll = QScrollArea(self)
        scroll.setObjectName("DetailScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget(scroll)
        body.setObjectName("DetailBody")
        scroll.setWidget(body)
        outer.addWidget(scroll, 5)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(16, 14, 16, 14)
        layout.setSpacing(8)

        self.title = QLabel("No photo selected", body)
        self.title.setObjectName("DetailTitle")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.title)
        self.path = QLabel("", body)
        self.path.setObjectName("DetailPath")
        self.path.setWordWrap(True)
        self.path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.path)

        buttons = QHBoxLayout()
        buttons.setSpacing(8)
        self.similar_button = QPushButton("Find similar", body)
        self.similar_button.setObjectName("PrimaryButton")
        self.similar_button.setToolTip("Show photos that look like this one")
        self.similar_button.clicked.connect(self._similar_clicked)
        buttons.addWidget(self.similar_button)
        self.folder_button = QPushButton("Open containing folder", body)
        self.folder_button.clicked.connect(self._open_folder_clicked)
        buttons.addWidget(self.folder_button)
        # A video: play it from the moment that matched (mpv/VLC take a start time; else the
        # default player opens it from the start).
        self.play_button = QPushButton("Play", body)
        self.play_button.clicked.connect(self._play_clicked)
        self.play_button.hide()
        buttons.addWidget(self.play_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.why = WhyPanel(body)
        self.why.overlay_changed.connect(self.preview.set_overlay)
        layout.addWidget(self.why)

        form = QFormLayout()
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(6)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.fields: dict[str, QLabel] = {}
        for name in ("Taken", "Camera", "Dimensions", "Duration", "Moment", "File size", "Match", "Also at"):
            value = QLabel("—", body)
            value.setObjectName("DetailValue")
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            key = QLabel(name, body)
            key.setObjectName("DetailKey")
            form.addRow(key, value)
            self.fields[name] = value
        layout.addLayout(form)

        caption_head = QHBoxLayout()
        head = QLabel("Caption", body)
        head.setObjectName("SectionTitle")
        caption_head.addWidget(head)
        caption_head.addStretch(1)
        self.caption_button = QPushButton("Describe", body)
        self.caption_button.setObjectName("SmallButton")
        self.caption_button.clicked.connect(self._caption_clicked)
        caption_head.addWidget(self.caption_button)
        layout.addLayout(caption_head)
        # One status line under the header ("Describing…", what the captioner wrote, errors);
        # the caption and tags themselves are shown and edited in the editor below.
        self.caption = QLabel("", body)
        self.caption.setObjectName("Hint")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.caption.hide()
        layout.addWidget(self.caption)
        self.editor = CaptionEditor(jobs.library, runner=jobs_runner(jobs), parent=body)
        self.editor.head.hide()  # the "Caption" header with "Describe" above stands for it
        self.editor.saved.connect(self._editor_saved)
        self.editor.failed.connect(self._set_status)
        layout.addWidget(self.editor)
        layout.addStretch(1)
        self.captioner: str | None = None
        self.show_hit(None)

    # -- public --
    def show_hit(self, hit: Hit | None, browsing: bool = True, query: str | None = None) -> None:
        """`query`: the words it was found by (the panel then explains the match)."""
        if hit is not None and self.hit is not None and hit.photo == self.hit.photo:
            # Same photo after a refresh of the results: keep the preview, update the score.
            moved = hit.at_s != self.hit.at_s
            self.hit = hit
            self.fields["Match"].setText("—" if browsing else f"{hit.score:.3f}")
            self._fill_moment(hit)
            if moved:  # another query matched another moment of the same video
                self._load_preview(hit)
            return
        self.hit = hit
        self.details = None
        self.why.set_explanation(None)
        enabled = hit is not None
        for button in (self.similar_button, self.folder_button):
            button.setEnabled(enabled)
        self.caption_button.setEnabled(enabled)
        self.caption_button.setToolTip(
            f"Write a caption with {self.captioner or 'the library’s captioner'} (Settings chooses which)")
        if hit is None:
            self.title.setText("No photo selected")
            self.path.setText("Select a photo to see it here.")
            for value in self.fields.values():
                value.setText("—")
            self._set_status("")
            self.editor.set_photo(None)
            self.preview.set_pixmap(None, "")
            self.play_button.hide()
            return
        photo = hit.photo
        self.title.setText(os.path.basename(photo.path))
        self.path.setText(photo.path + ("" if photo.online else "  (library offline)"))
        self._fill(photo, hit.score, browsing)
        self._set_status("")
        self.editor.set_photo(photo.id)
        self._fill_moment(hit)
        self.preview.set_pixmap(None, "Loading preview…")
        self._load_details(photo.id)
        if query and query.strip() and not browsing:
            self.jobs.run(explain_hit, self.jobs.library, query, hit,
                          on_result=lambda e, pid=photo.id: self._current(pid) and self.why.set_explanation(e),
                          on_error=lambda m: log.info("no explanation: %s", m))
        self._load_preview(hit)

    def _load_preview(self, hit: Hit) -> None:
        photo = hit.photo
        self.jobs.run(load_preview, self.jobs.library, photo, at_s=hit.at_s,
                      on_result=lambda img, pid=photo.id: self._preview_loaded(pid, img),
                      on_error=lambda m, pid=photo.id: self._preview_failed(pid, m))

    def _fill_moment(self, hit: Hit) -> None:
        photo = hit.photo
        self.fields["Duration"].setText(clock(photo.duration_s) if photo.duration_s is not None else "—")
        self.fields["Moment"].setText(clock(hit.at_s) if hit.at_s is not None else "—")
        self.play_button.setVisible(photo.is_video)
        self.play_button.setText(f"Play from {clock(hit.at_s)}" if hit.at_s else "Play")

    def reload(self) -> None:
        """Read the selected photo's details again (after its caption or tags changed)."""
        if self.hit is not None:
            self._load_details(self.hit.photo.id)

    def set_captioner(self, spec: str | None) -> None:
        """None: the library's own choice (the captions feature's default)."""
        self.captioner = spec or None

    # -- internals --
    def _fill(self, photo: Photo, score: float, browsing: bool) -> None:
        self.fields["Taken"].setText(human_date(photo.taken_at))
        self.fields["Camera"].setText(photo.camera or "—")
        dims = f"{photo.width} × {photo.height}" if photo.width and photo.height else "—"
        if photo.width and photo.height:
            dims += f"  ({photo.width * photo.height / 1e6:.1f} MP)"
        self.fields["Dimensions"].setText(dims)
        self.fields["File size"].setText(human_size(photo.size))
        self.fields["Match"].setText("—" if browsing else f"{score:.3f}")
        self.fields["Also at"].setText("—")

    def _current(self, photo_id: int) -> bool:
        return self.hit is not None and self.hit.photo.id == photo_id

    def _details_loaded(self, photo_id: int, details: Details | None) -> None:
        if not self._current(photo_id):
            return
        if details is None:
            self._set_status("This photo is no longer in the library.")
            return
        self.details = details
        others = [p for p in details.paths if p != details.photo.path]
        self.fields["Also at"].setText("\n".join(others) if others else "—")

    def _details_failed(self, photo_id: int, message: str) -> None:
        if self._current(photo_id):
            self._set_status(message)

    def _load_details(self, photo_id: int) -> None:
        self.jobs.run(photo_details, self.jobs.library, photo_id,
                      on_result=lambda d, pid=photo_id: self._details_loaded(pid, d),
                      on_error=lambda m, pid=photo_id: self._details_failed(pid, m))

    def _set_status(self, text: str) -> None:
        self.caption.setText(text)
        self.caption.setVisible(bool(text))

    def _editor_saved(self, photo_id: int) -> None:
        self._set_status("")
        if self._current(photo_id):
            self.reload()
        self.text_changed.emit(photo_id)

    def _preview_loaded(self, photo_id: int, image: QImage) -> None:
        if self._current(photo_id):
            self.preview.set_pixmap(QPixmap.fromImage(image))

    def _preview_failed(self, photo_id: int, message: str) -> None:
        if self._current(photo_id):
            self.preview.set_pixmap(None, f"Cannot show this photo.\n{message}")

    def _similar_clicked(self) -> None:
        if self.hit is not None:
            self.similar_requested.emit(self.hit.photo.id, self.hit.photo.path)

    def _open_folder_clicked(self) -> None:
        if self.hit is not None and not open_folder(self.hit.photo.path):
            log.warning("could not open the folder of %s", self.hit.photo.path)

    def play_command(self) -> list[str]:
        """What Play runs for the selected video: a player at the moment, or [] (default app)."""
        if self.hit is None or not self.hit.photo.is_video:
            return []
        try:
            return self.jobs.library.player_command(self.hit.photo, self.hit.at_s or 0.0)
        except Exception as exc:  # a vanished file: say so, open nothing
            self._set_status(str(exc))
            return []

    def _play_clicked(self) -> None:
        if self.hit is None:
            return
        command = self.play_command()
        started = QProcess.startDetached(command[0], command[1:]) if command else False
        if started[0] if isinstance(started, tuple) else started:
            return
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(self.hit.photo.path)):
            log.warning("could not open %s", self.hit.photo.path)

    def _caption_clicked(self) -> None:
        if self.hit is None:
            return
        photo = self.hit.photo
        self.caption_button.setEnabled(False)
        self._set_status("Describing…")

        def done(text: str) -> None:
            self.caption_button.setEnabled(True)
            if self._current(photo.id):
                self._set_status(f"{self.captioner or 'The captioner'} wrote: {text}")
                self.editor.set_photo(photo.id)  # shows it, unless the user's own caption wins
                self.reload()
            self.text_changed.emit(photo.id)

        def failed(message: str) -> None:
            self.caption_button.setEnabled(True)
            if self._current(photo.id):
                self._set_status(message)

        self.jobs.caption(photo, self.captioner, on_result=done, on_error=failed)
