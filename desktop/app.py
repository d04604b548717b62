"""`lumen` with no subcommand: the window.

Start-up order matters for "the window appears first": the Library is opened (SQLite,
no model), the window is shown, and only then does the indexer thread create the
encoder and load its weights. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QFont, QGuiApplication
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop.jobs import INDEXER_NICE, Jobs
from desktop.library import Library, LibraryError
from desktop.settings import MODEL_IDLE_S
from desktop.ui.grid import THUMB
from desktop.ui.main_window import MainWindow
from desktop.ui.settings_dialog import saved_cluster, saved_device

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumen", description="Lumen: find your photos by meaning.")
    parser.add_argument("folder", nargs="?", help="a photo folder to add to the library and index")
    parser.add_argument("--home", help="data dir (default: $LUMEN_HOME or the platform's user data dir)")
    parser.add_argument("--encoder", help="encoder spec, e.g. colors or clip:ViT-B-32:laion2b_s34b_b79k")
    parser.add_argument("--weights", help="weights for the encoder: a hub name or a local file")
    parser.add_argument("--device", help="auto, cpu, cuda or mps (default: as in Settings, else auto)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def load_style(app: QApplication) -> None:
    qss = RESOURCES / "style.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    else:
        log.warning("%s is missing; using the platform style", qss)


def make_app(argv: Sequence[str] = ()) -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "lumen", *argv])
    app.setApplicationName("Lumen")
    app.setOrganizationName("Lumen")
    app.setStyle("Fusion")  # the same widgets everywhere; the style sheet does the rest
    font = QFont(app.font())
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
        app.setFont(font)
    load_style(app)
    return app  # type: ignore[return-value]


def create_window(lib: Library, settings: QSettings | None = None) -> MainWindow:
    """The window over a library; the caller shows it, then calls `window.start()`."""
    screen = QGuiApplication.primaryScreen()
    dpr = screen.devicePixelRatio() if screen is not None else 1.0
    jobs = Jobs(lib, thumb_cell=THUMB, dpr=dpr)
    if settings is not None:
        jobs.indexing.cluster = saved_cluster(settings)  # Settings → Ray cluster
    return MainWindow(jobs, settings)


def run_app(argv: list[str]) -> int:
    args, qt_args = build_parser().parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
    )
    app = make_app(qt_args)
    settings = QSettings()
    device = args.device or saved_device(settings)
    try:
        # Models run in a child process: the window's process never imports torch (memory,
        # and no GIL stalls while a model loads), and a lower priority keeps it responsive.
        # Unused for MODEL_IDLE_S, the process ends and gives its memory back (as Immich's
        # model TTL does); the next search or new photo starts it again.
        lib = Library(args.home, encoder=args.encoder, weights=args.weights, device=device,
                      model_process=True, model_nice=INDEXER_NICE, model_idle_s=MODEL_IDLE_S)
    except LibraryError as exc:
        log.error("cannot open the library: %s", exc)
        QMessageBox.critical(None, "Lumen", f"Cannot open the library.\n\n{exc}")
        return 1
    window = create_window(lib, settings)
    window.show()
    folder = os.path.abspath(args.folder) if args.folder else None
    QTimer.singleShot(0, lambda: window.start(folder))  # after the first paint
    try:
        return app.exec()
    finally:
        window.jobs.shutdown()  # no-op when closeEvent already did it
        lib.close()


if __name__ == "__main__":
    raise SystemExit(run_app(sys.argv[1:]))
