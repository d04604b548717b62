"""The status bar's model line: which model answers searches and why, and — when a better
one (CLIP) is not on this machine — a "Download CLIP…" offer.

Nothing here blocks the window: whether the hub is reachable is a short probe in a daemon
thread, and the download runs in a worker thread behind a non-modal dialog with its size,
a progress bar and Cancel. When the file is complete the library switches encoders through
the indexing job (`switch_encoder`): the old vectors keep answering until the new ones
cover the library.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.downloads import (
    DownloadCancelled,
    DownloadError,
    DownloadTarget,
    download,
    reachable,
    target_for,
)
from desktop.encoders import split_spec
from desktop.jobs import Jobs

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.5


def model_title(spec: str) -> str:
    """A spec as people read it: "the built-in model", "CLIP ViT-B-32"."""
    name, model = split_spec(spec)
    if name == "bert_resnet":
        return "the built-in model (MiniLM + MobileNetV2)" if not model or "mobilenet_v2" in model else (
            f"the two-tower model {model}")
    if name == "clip":
        return f"CLIP {(model or 'ViT-B-32').split(':')[0]}"
    return spec


class _Bridge(QObject):
    """Carries results from worker threads to the GUI thread (queued signals)."""

    probed = Signal(bool)
    progressed = Signal(int, int)
    finished = Signal(str)  # the downloaded file
    failed = Signal(str)  # a sentence for the user
    cancelled = Signal()


class DownloadDialog(QDialog):
    """Non-modal: size, progress, Cancel. Emits `switched(spec)` once the library moved on."""

    switched = Signal(str)

    def __init__(self, jobs: Jobs, target: DownloadTarget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs, self.target = jobs, target
        self.setObjectName("DownloadDialog")
        self.setWindowTitle(f"Download {target.title}")
        self.setModal(False)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._bridge = _Bridge(self)
        self._bridge.progressed.connect(self._progressed)
        self._bridge.finished.connect(self._finished)
        self._bridge.failed.connect(self._failed)
        self._bridge.cancelled.connect(self._cancelled)

        layout = QVBoxLayout(self)
        host = urlsplit(target.url).hostname or target.url
        self.intro = QLabel(
            f"Download {target.title}, about {target.size_mb} MB from {host}, to {target.dest.parent}.\n"
            "Lumen then re-analyses your photos with it in the background; until that is done the "
            "current model keeps answering searches.", self)
        self.intro.setWordWrap(True)
        layout.addWidget(self.intro)
        self.bar = QProgressBar(self)
        self.bar.setObjectName("DownloadProgress")
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        layout.addWidget(self.bar)
        self.state = QLabel(f"0 of {target.size_mb} MB", self)
        self.state.setObjectName("DownloadState")
        layout.addWidget(self.state)
        self.buttons = QDialogButtonBox(self)
        self.start_button = self.buttons.addButton("Download", QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        layout.addWidget(self.buttons)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._cancel.clear()
        self.start_button.setEnabled(False)
        self.state.setText("Connecting…")
        self._thread = threading.Thread(target=self._run, name="lumen-download", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop a running download (its partial file is deleted) or close the offer."""
        if self.running:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self.state.setText("Cancelling…")
        else:
            self.reject()

    def _run(self) -> None:
        t = self.target
        try:
            path = download(t.url, t.dest, progress=self._bridge.progressed.emit, cancel=self._cancel)
        except DownloadCancelled:
            self._bridge.cancelled.emit()
        except DownloadError as exc:
            self._bridge.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - a worker thread must report, not die silently
            log.exception("download of %s failed", t.url)
            self._bridge.failed.emit(f"{type(exc).__name__}: {exc}")
        else:
            self._bridge.finished.emit(str(path))

    def _progressed(self, done: int, total: int) -> None:
        total = total or self.target.size_bytes
        self.bar.setValue(int(1000 * min(done / max(total, 1), 1.0)))
        self.state.setText(f"{done / 1e6:.1f} of {total / 1e6:.0f} MB")

    def _finished(self, path: str) -> None:
        self.bar.setValue(1000)
        self.state.setText(f"Downloaded to {path}. Switching to {self.target.title}…")
        lib = self.jobs.library
        self.jobs.indexing.switch_encoder(self.target.spec, self.target.weights, lib.device or "auto")
        self.switched.emit(self.target.spec)
        self.accept()

    def _failed(self, message: str) -> None:
        self.state.setText(message)
        self.start_button.setText("Try again")
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(True)

    def _cancelled(self) -> None:
        self.state.setText("Cancelled; nothing was kept.")
        self.bar.setValue(0)
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(True)

    def done(self, result: int) -> None:  # closing the dialog stops a running download
        if self.running:
            self._cancel.set()
        super().done(result)


class ModelOffer(QWidget):
    """"Offline: using the built-in model · [Download CLIP…]" in the status bar."""

    def __init__(self, jobs: Jobs, parent: QWidget | None = None, probe: bool = True) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.setObjectName("ModelOffer")
        self._probe = probe
        self._online: bool | None = None
        self.target: DownloadTarget | None = None
        self.dialog: DownloadDialog | None = None
        self._bridge = _Bridge(self)
        self._bridge.probed.connect(self._probed)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 8, 0)
        self.label = QLabel(self)
        self.label.setObjectName("ModelText")
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.label)
        self.button = QPushButton(self)
        self.button.setObjectName("DownloadModelButton")
        self.button.clicked.connect(self.offer)
        self.button.hide()
        row.addWidget(self.button)
        self.refresh()

    def set_target(self, target: DownloadTarget | None) -> None:
        """What the button downloads (the library's better encoder's file by default)."""
        self.target = target
        self._update()

    def refresh(self) -> None:
        """Re-read the library's encoder (after a load or a switch) and what could be better."""
        lib = self.jobs.library
        better = lib.encoder_better
        self.target = target_for(better) if better else None
        if self.target is not None and self._probe and self._online is None:
            url = self.target.url
            threading.Thread(target=lambda: self._bridge.probed.emit(reachable(url, PROBE_TIMEOUT_S)),
                             name="lumen-hub-probe", daemon=True).start()
        self._update()

    def _probed(self, online: bool) -> None:
        self._online = online
        self._update()

    def _update(self) -> None:
        lib = self.jobs.library
        using = model_title(lib.encoder_spec)
        if self.target is None:
            self.label.setText(f"Model: {using} ({lib.encoder_reason})")
            self.button.hide()
            return
        better = self.target.title.split(" (")[0]
        if self._online is False:
            text = f"Offline: using {using}"
        else:
            text = f"{better} is not downloaded: using {using}"
        self.label.setText(text)
        self.button.setText(f"Download {better.split()[0]}…")
        self.button.setToolTip(f"{self.target.title}, about {self.target.size_mb} MB")
        self.button.show()

    def offer(self) -> DownloadDialog | None:
        """Open (or raise) the non-modal download dialog."""
        if self.target is None:
            return None
        if self.dialog is None or self.dialog.target != self.target:
            self.dialog = DownloadDialog(self.jobs, self.target, self.window())
            self.dialog.switched.connect(lambda _spec: self.refresh())
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog
