"""Take resources/screenshot.png: the real window over a library of real photos.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python resources/make_screenshot.py

Builds a throwaway library from ~60 Flickr8k photos and the EXIF camera samples in
../shared (skips when they are absent), indexes it with the `colors` encoder (or
`bert_resnet` once its trained heads exist), shows the Flickr8k reference captions as
captions (source "flickr8k", so nobody mistakes them for a model's), runs a query,
selects a result so the detail panel is filled, and grabs the window.
"""

from __future__ import annotations

import argparse
import collections
import csv
import logging
import re
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
STOP = set("a an the and of in on at to with is are its his her their two one three some while for from by "
           "into near other over through up down as it this that there out".split())


def pick_photos(dest: Path, flickr: int) -> tuple[Path, Path]:
    trips, cameras = dest / "Family and trips", dest / "Camera samples"
    trips.mkdir(parents=True)
    cameras.mkdir(parents=True)
    images = sorted((SHARED / "flickr8k" / "images").glob("*.jpg"))
    step = max(1, len(images) // flickr)
    for path in images[::step][:flickr]:
        shutil.copy2(path, trips / path.name)
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


def reference_captions(names: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = collections.defaultdict(list)
    with open(SHARED / "flickr8k" / "captions.tsv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) >= 2 and row[0] in names:
                found[row[0]].append(row[1].strip())
    return found


def keywords(captions: list[str], n: int = 6) -> list[str]:
    words = collections.Counter(w for c in captions for w in re.findall(r"[a-z]+", c.lower()) if w not in STOP)
    return [w for w, _ in words.most_common(n)]


def choose_encoder() -> str:
    heads = REPO / "plugins" / "bert_resnet" / "heads"
    return "bert_resnet" if heads.is_dir() and any(heads.iterdir()) else "colors"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "resources" / "screenshot.png"))
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--query", help="default: a colour for `colors`, a sentence for bert_resnet")
    parser.add_argument("--size", default="1440x900")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (SHARED / "flickr8k" / "images").is_dir():
        log.error("%s is absent: the screenshot needs the shared photos", SHARED)
        return 2

    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from desktop.app import create_window, make_app
    from desktop.catalog import Catalog
    from desktop.library import Library

    app = make_app()
    encoder = choose_encoder()
    query = args.query or ("blue" if encoder == "colors" else "a dog running on the grass")
    with tempfile.TemporaryDirectory(prefix="lumen-shot-") as tmp:
        tmpdir = Path(tmp)
        trips, cameras = pick_photos(tmpdir / "Pictures", args.photos)
        home = tmpdir / "home"
        with Library(home, encoder=encoder) as lib:
            lib.add_root(trips)
            lib.add_root(cameras)
            report = lib.index()
            log.info("indexed %d photos with %s", report.encoded, encoder)
        # Demo captions and tags, written while no Library holds the data dir.
        cat = Catalog(home / "catalog.db")
        refs = reference_captions({p.name for p in trips.iterdir()})
        for name, captions in refs.items():
            photo = cat.photo_by_path(str(trips / name))
            if photo is not None:
                cat.set_caption(photo.id, "flickr8k", captions[0])
                cat.set_tags(photo.id, "flickr8k", [(w, None) for w in keywords(captions)])
        cat.close()

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
        # A result from the Flickr folder, so the caption and tags show.
        row = next((i for i, h in enumerate(window.model.hits()) if h.photo.path.startswith(str(trips))), 0)
        window.grid.setCurrentIndex(window.model.index(row, 0))
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
