"""Take resources/screenshot.png: the real window over a library of real photos.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python resources/make_screenshot.py

Builds a throwaway library from a few hundred Flickr8k dev photos and the EXIF camera
samples in ../shared (exits when they are absent), indexes it with the encoder a fresh
install gets (`auto`: the embedded two-tower when CLIP's weights are not on this machine),
lets that model caption and tag every photo (retrieval captions from the shipped bank,
ImageNet tags) — nothing written by hand, nothing from the datasets' own captions — runs a
text query, selects the first result so the detail panel shows its caption and tags, and
grabs the window.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

log = logging.getLogger("make_screenshot")


def pick_photos(dest: Path, flickr: int) -> tuple[Path, Path]:
    trips, cameras = dest / "Family and trips", dest / "Camera samples"
    trips.mkdir(parents=True)
    cameras.mkdir(parents=True)
    dev = (SHARED / "flickr8k" / "dev.txt").read_text().split()  # never the photos the heads trained on
    for name in dev[:flickr]:
        shutil.copy2(SHARED / "flickr8k" / "images" / name, trips / name)
    samples = SHARED / "photos" / "exif-samples" / "jpg"
    # Real camera files; not the deliberately broken ones (they would, rightly, put a
    # warning on the picture) nor the 100-pixel EXIF test thumbnails.
    for path in sorted(samples.glob("*.jpg")) + [p for d in ("exif-org", "gps", "mobile", "hdr")
                                                  for p in sorted((samples / d).glob("*.jpg"))]:
        with Image.open(path) as im:
            big_enough = max(im.size) >= 400
        if big_enough and "corrupt" not in path.name:
            name = path.name if path.parent == samples else f"{path.parent.name}-{path.name}"
            shutil.copy2(path, cameras / name)
    return trips, cameras


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "resources" / "screenshot.png"))
    parser.add_argument("--photos", type=int, default=300, help="Flickr8k dev photos to add")
    parser.add_argument("--query", default="a dog running on the grass")
    parser.add_argument("--encoder", default="auto", help="default: what a fresh install gets")
    parser.add_argument("--size", default="1440x900")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (SHARED / "flickr8k" / "images").is_dir():
        log.error("%s is absent: the screenshot needs the shared photos", SHARED)
        return 2

    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from desktop.app import create_window, make_app
    from desktop.library import Library

    app = make_app()
    query = args.query
    with tempfile.TemporaryDirectory(prefix="lumen-shot-") as tmp:
        tmpdir = Path(tmp)
        trips, cameras = pick_photos(tmpdir / "Pictures", args.photos)
        home = tmpdir / "home"
        with Library(home, encoder=args.encoder) as lib:
            lib.add_root(trips)
            lib.add_root(cameras)
            started = time.monotonic()
            report = lib.index()
            seconds = time.monotonic() - started
            log.info("indexed %d photos with %s in %.0f s (%.1f photos/s)", report.encoded, lib.encoder.id,
                     seconds, report.encoded / max(seconds, 1e-9))
            made = lib.caption_pending()
            log.info("captioned %d, tagged %d with %s", made.captioned, made.tagged, made.captioner)
        lib = Library(home)
        settings = QSettings(str(tmpdir / "settings.ini"), QSettings.Format.IniFormat)
        window = create_window(lib, settings)
        width, height = (int(v) for v in args.size.split("x"))
        window.resize(width, height)
        window.show()
        window.start()

        def wait(condition, timeout_s: float = 60.0) -> None:  # noqa: ANN001
            deadline = time.monotonic() + timeout_s
            loop = QEventLoop()
            while not condition() and time.monotonic() < deadline:
                QTimer.singleShot(30, loop.quit)
                loop.exec()
            if not condition():
                first, last = window.grid.visible_rows()
                log.error("timed out: visible rows %d-%d, thumbnails %s, pending %d", first, last,
                          [window.model.has_thumbnail(r) for r in range(first, last + 1)],
                          window.jobs.thumbnails.pending())
                window.close()
                raise TimeoutError("the window did not get there in time")

        wait(lambda: window.jobs.indexer.state in ("watching", "idle") and window.model.rowCount() > 0)
        window.search_bar.edit.setText(query)
        window.search_bar.search_now()
        wait(lambda: window.results is not None and not window.results.browsing)
        window.grid.setCurrentIndex(window.model.index(0, 0))  # the best match: its caption and tags
        def thumbnails_done() -> bool:
            return window.jobs.thumbnails.pending() == 0 and window.model.waiting() == 0

        wait(thumbnails_done)
        failed = [window.model.failure(r) for r in range(window.model.rowCount()) if window.model.failure(r)]
        if failed:
            log.warning("thumbnails that failed: %s", failed)
        wait(lambda: window.detail.preview.pixmap() is not None and window.detail.details is not None)
        window.search_bar.edit.setFocus()
        window.search_bar.edit.setCursorPosition(len(query))
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        shot = window.grab()
        shot.save(args.out, "PNG")
        log.info("saved %s (%dx%d)", args.out, shot.width(), shot.height())
        window.close()
        lib.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
