"""Take resources/viewer.png, resources/timeline.png and resources/duplicates.png: the real
window over a library of real photos.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python resources/make_media_screenshots.py

The library: ~40 Flickr8k photos (no EXIF: they get file times spread over 2024-2025 so
the timeline has months to show — the camera samples keep their real EXIF dates), the EXIF
camera samples, 12 UKBench photos (3 objects x 4 views: real near-duplicates) and two
byte-for-byte copies (exact duplicates). Indexed with bert_resnet when its heads and CNN
weights are here, else `colors`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from resources.make_screenshot import choose_encoder, pick_photos  # noqa: E402

log = logging.getLogger("make_media_screenshots")


def build(pictures: Path, flickr: int) -> list[Path]:
    trips, cameras = pick_photos(pictures, flickr)
    for i, path in enumerate(sorted(trips.iterdir())):  # Flickr8k has no dates: give them some
        month = 18 - i // 5  # five photos a month, going back from mid-2025
        when = datetime(2024 + month // 12, 1 + month % 12, 1 + (i * 5) % 27, 10 + i % 8).timestamp()
        os.utime(path, (when, when))
    objects = pictures / "Objects"
    objects.mkdir()
    for name in sorted((SHARED / "ukbench").glob("*.jpg"))[8:20]:
        shutil.copy2(name, objects / name.name)
    copies = pictures / "Copies"
    copies.mkdir()
    for path in sorted(trips.iterdir())[:2]:
        shutil.copy2(path, copies / f"{path.stem} (copy){path.suffix}")
    return [trips, cameras, objects, copies]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "resources"))
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--size", default="1440x900")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (SHARED / "flickr8k" / "images").is_dir():
        log.error("%s is absent: the screenshots need the shared photos", SHARED)
        return 2

    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from desktop.app import create_window, make_app
    from desktop.library import Library

    app = make_app()
    encoder = choose_encoder()
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="lumen-shots-") as tmp:
        tmpdir = Path(tmp)
        roots = build(tmpdir / "Pictures", args.photos)
        home = tmpdir / "home"
        with Library(home, encoder=encoder) as lib:
            for root in roots:
                lib.add_root(root)
            report = lib.index()
            log.info("indexed %d photos with %s", report.encoded, encoder)
        lib = Library(home)
        settings = QSettings(str(tmpdir / "settings.ini"), QSettings.Format.IniFormat)
        settings.setValue("timeline/unit", "month")
        window = create_window(lib, settings)
        width, height = (int(v) for v in args.size.split("x"))
        window.resize(width, height)
        window.show()
        window.start()

        def wait(condition, timeout_s: float = 300.0) -> None:  # noqa: ANN001
            deadline = time.monotonic() + timeout_s
            loop = QEventLoop()
            while not condition() and time.monotonic() < deadline:
                QTimer.singleShot(30, loop.quit)
                loop.exec()
            if not condition():
                window.close()
                raise TimeoutError("the window did not get there in time")

        def settle(n: int = 20) -> None:
            for _ in range(n):
                app.processEvents()
                time.sleep(0.02)

        def thumbnails_done() -> bool:
            return window.jobs.thumbnails.pending() == 0 and window.model.waiting() == 0

        wait(lambda: window.jobs.indexing.state in ("watching", "idle") and window.model.grouped)
        # Timeline: scroll so that two section headers show, select a photo.
        secs = window.model.sections()
        window.scrubber.jump(secs[min(2, len(secs) - 1)][0].key)
        first = secs[min(2, len(secs) - 1)][1]
        window.grid.setCurrentIndex(window.model.index(first, 0))
        window.scrubber.jump(secs[min(2, len(secs) - 1)][0].key)
        settle()
        wait(thumbnails_done)
        wait(lambda: window.detail.details is not None)
        settle()
        window.grab().save(str(out / "timeline.png"), "PNG")
        log.info("saved timeline.png")

        # Viewer: a camera sample, full size in the window's frame (xvfb has no WM).
        row = next(i for i in range(window.model.rowCount())
                   if (h := window.model.hit(i)) is not None and "Camera samples" in h.photo.path
                   and (h.photo.width or 0) >= 1600)
        window.grid.setCurrentIndex(window.model.index(row, 0))
        window.viewer_full_screen = False
        viewer = window.open_viewer()
        viewer.resize(width, height)
        wait(lambda: viewer.canvas.pixmap is not None)
        settle()
        viewer.grab().save(str(out / "viewer.png"), "PNG")
        log.info("saved viewer.png")
        viewer.close()

        dialog = window.open_duplicates()
        dialog.set_mode("near")
        wait(lambda: not dialog.busy and dialog.tree.topLevelItemCount() > 0)
        settle(60)  # the thumbnails of the groups
        dialog.grab().save(str(out / "duplicates.png"), "PNG")
        log.info("saved duplicates.png (%s)", dialog.summary.text())
        dialog.close()
        window.close()
        lib.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
