"""Take resources/server.png: the web page of `lumen serve` on a phone-sized screen.

    .venv/bin/python resources/make_server_screenshot.py

Builds the same throwaway library as make_screenshot.py (Flickr8k photos and camera
samples from ../shared, reference captions as source "flickr8k"), starts the real
`lumen serve` on a free loopback port, and drives headless Chromium (Debian's
`chromium`, or Playwright's own) at 390x844: a search, then a photo opened. The two
views are saved side by side.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resources.make_screenshot import SHARED, choose_encoder, keywords, pick_photos, reference_captions  # noqa: E402

log = logging.getLogger("make_server_screenshot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "resources" / "server.png"))
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--query", default="a dog running on the grass")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (SHARED / "flickr8k" / "images").is_dir():
        log.error("%s is absent: the screenshot needs the shared photos", SHARED)
        return 2
    from playwright.sync_api import sync_playwright

    from desktop.catalog import Catalog
    from desktop.library import Library

    encoder = choose_encoder()
    with tempfile.TemporaryDirectory(prefix="lumen-serve-shot-") as tmp:
        tmpdir = Path(tmp)
        trips, cameras = pick_photos(tmpdir / "Pictures", args.photos)
        home = tmpdir / "home"
        with Library(home, encoder=encoder) as lib:
            lib.add_root(trips)
            lib.add_root(cameras)
            log.info("indexed %d photos with %s", lib.index().encoded, encoder)
        cat = Catalog(home / "catalog.db")
        for name, captions in reference_captions({p.name for p in trips.iterdir()}).items():
            photo = cat.photo_by_path(str(trips / name))
            if photo is not None:
                cat.set_caption(photo.id, "flickr8k", captions[0])
                cat.set_tags(photo.id, "flickr8k", [(w, None) for w in keywords(captions)])
        cat.close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "desktop", "serve", "--home", str(home), "--port", str(port)],
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        url = f"http://127.0.0.1:{port}/"
        try:
            shots = []
            with sync_playwright() as pw:
                chromium = shutil.which("chromium") or shutil.which("chromium-browser")
                browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"]) if chromium \
                    else pw.chromium.launch()
                page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, bypass_csp=True)
                deadline = time.monotonic() + 60
                while True:
                    try:
                        page.goto(url)
                        break
                    except Exception:  # noqa: BLE001 - the server is still starting
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.3)
                # The model loads in the server's background (the page would retry meanwhile).
                while not json.loads(page.request.get(url + "api/v1/status").text())["encoder_loaded"]:
                    if time.monotonic() > deadline + 300:
                        raise TimeoutError("the model did not load")
                    time.sleep(1)
                page.fill("#q", args.query)
                page.press("#q", "Enter")
                page.wait_for_selector(".cell img[src^='blob:']", timeout=240_000)
                page.wait_for_function("() => [...document.querySelectorAll('.cell img')].slice(0, 24)"
                                       ".every(i => i.complete && i.naturalWidth > 0)", timeout=240_000)
                page.locator("#q").blur()
                shots.append(page.screenshot())
                page.locator(".cell").first.click()
                page.wait_for_selector("#viewer[open] #view-img[src^='blob:']", timeout=30_000)
                page.wait_for_function("() => document.getElementById('view-img').naturalWidth > 0")
                shots.append(page.screenshot())
                browser.close()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    frames = [Image.open(io.BytesIO(s)).convert("RGB") for s in shots]
    gap = 24
    out = Image.new("RGB", (sum(f.width for f in frames) + gap * (len(frames) + 1), frames[0].height + 2 * gap),
                    (40, 42, 48))
    x = gap
    for f in frames:
        out.paste(f, (x, gap))
        x += f.width + gap
    out = out.resize((out.width // 2, out.height // 2), Image.Resampling.LANCZOS)  # README-sized
    out.save(args.out, "PNG", optimize=True)
    log.info("saved %s (%dx%d)", args.out, out.width, out.height)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
