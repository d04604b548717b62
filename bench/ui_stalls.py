"""Does the window stay responsive? A heartbeat on the GUI thread while Lumen works.

    python -m bench.ui_stalls                      # 2 000 photos to index, a 100 000-row grid
    python -m bench.ui_stalls --photos 500 --rows 20000

A 10 ms `QTimer` on the GUI thread records when it fires; a gap between two beats is time
the event loop could not answer the user (a stall). Two scenarios, in the real window
(offscreen platform unless QT_QPA_PLATFORM says otherwise):

1. index: a folder of generated 640x480 JPEGs is added and indexed (scan, hash, decode,
   encode with the `colors` encoder, index build, thumbnails of what is on screen), while
   a query is typed every 1.5 s;
2. scroll: 100 000 results (the indexed photos, repeated) scrolled a few rows per frame at
   60 Hz with thumbnails loading, plus a jump to the end and back.

Prints a Markdown table: worst and p99 gap per scenario. The goal is a worst gap under
100 ms. Generated photos are cached under bench/out/ (ignored by git).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

log = logging.getLogger("bench.ui_stalls")
OUT = Path(__file__).resolve().parent / "out"
QUERIES = ["red", "blue sky", "green", "dark", "yellow -green", "white", "orange", "purple"]


def make_photos(folder: Path, n: int) -> Path:
    """n distinct 640x480 JPEGs (colour fields with noise), made once and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(n):
        path = folder / f"photo-{i:05d}.jpg"
        if path.exists():
            continue
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = ((xx / 640) * np.cos(i) + (yy / 480) * np.sin(i) + 1) / 2
        pixels = a * t[..., None] + b * (1 - t[..., None]) + rng.normal(0, 12, (480, 640, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=88)
    return folder


class Heartbeat:
    def __init__(self, interval_ms: int = 10) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.beats: list[float] = []
        self.cpu: list[float] = []  # the GUI thread's own CPU time at each beat
        self.stage = ""  # what the indexer was doing (set by the caller)
        self.stages: list[str] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        self.beats.append(time.perf_counter())
        self.cpu.append(time.thread_time())
        self.stages.append(self.stage)

    def start(self) -> None:
        self.beats.clear()
        self.cpu.clear()
        self.stages.clear()
        self.timer.start()

    def stop(self) -> dict[str, float]:
        self.timer.stop()
        gaps = np.diff(np.array(self.beats)) * 1000 if len(self.beats) > 1 else np.zeros(1)
        # CPU the GUI thread itself spent inside a gap: the part of a stall that is our own
        # work on the GUI thread, as opposed to waiting for a CPU (a busy machine) or the GIL.
        busy = np.diff(np.array(self.cpu)) * 1000 if len(self.cpu) > 1 else np.zeros(1)
        return {"seconds": self.beats[-1] - self.beats[0] if self.beats else 0.0, "beats": len(self.beats),
                "worst": float(gaps.max()), "p99": float(np.percentile(gaps, 99)),
                "median": float(statistics.median(gaps.tolist())), "over100": int((gaps > 100).sum()),
                "busy_worst": float(busy.max()), "busy_p99": float(np.percentile(busy, 99)),
                "stalls": ", ".join(f"{g:.0f} ms ({self.stages[i + 1] or 'idle'})"
                                    for i, g in enumerate(gaps) if g > 100)}


def run(photos: int, rows: int, scroll_s: float) -> list[tuple[str, dict[str, float], str]]:
    from PySide6.QtCore import QEventLoop, QTimer

    from desktop.app import create_window, make_app
    from desktop.library import Hit, Library

    app = make_app()
    folder = make_photos(OUT / f"photos-{photos}", photos)
    results = []
    with tempfile.TemporaryDirectory(prefix="lumen-bench-") as home:
        lib = Library(home, encoder="colors")
        window = create_window(lib)
        window.resize(1400, 900)
        window.show()
        app.processEvents()
        loop = QEventLoop()
        beat = Heartbeat()
        reports = []

        def indexed(report: object) -> None:
            if getattr(report, "encoded", 0) or getattr(report, "cancelled", False):
                reports.append(report)
                loop.quit()

        window.jobs.indexing.indexed.connect(indexed)
        window.jobs.indexing.progressed.connect(lambda p: setattr(beat, "stage", p.stage))
        typing = QTimer(interval=1500)
        queries = iter(QUERIES * 100)
        typing.timeout.connect(lambda: window.search_bar.set_text(next(queries)))
        beat.start()
        started = time.perf_counter()
        window.start(str(folder))
        typing.start()
        QTimer.singleShot(600_000, loop.quit)
        loop.exec()
        typing.stop()
        stats = beat.stop()
        report = reports[-1] if reports else None
        note = (f"{report.encoded} photos indexed in {time.perf_counter() - started:.1f} s "
                f"({report.images_per_s:.0f} img/s encode)" if report else "did not finish")
        results.append((f"index {photos} photos (+ a query every 1.5 s)", stats, note))

        # Scroll 100 000 results: the real photos repeated (thumbnails come from disk).
        window.search_bar.set_text("")
        base = [Hit(p, 0.0) for p in lib.catalog.photos(lib.catalog.filtered_ids().tolist()).values()]
        hits = [Hit(dataclasses.replace(h.photo), 0.0) for _ in range(rows // max(len(base), 1) + 1) for h in base]
        hits = hits[:rows]
        window.jobs.searched.disconnect()  # keep the synthetic results on screen
        beat.start()
        t0 = time.perf_counter()
        window.model.set_hits(hits, browsing=True)
        set_ms = (time.perf_counter() - t0) * 1000
        bar = window.grid.verticalScrollBar()
        step = window.grid.gridSize().height() // 3  # ~20 px per frame: a brisk wheel scroll
        scroll = QTimer(interval=16)
        frames = {"n": 0}

        def tick() -> None:
            frames["n"] += 1
            if frames["n"] == int(scroll_s * 60 * 0.5):
                bar.setValue(bar.maximum())  # jump to the end...
            elif frames["n"] == int(scroll_s * 60 * 0.75):
                bar.setValue(0)  # ...and back
            else:
                bar.setValue(bar.value() + step)

        scroll.timeout.connect(tick)
        scroll.start()
        QTimer.singleShot(int(scroll_s * 1000), loop.quit)
        loop.exec()
        scroll.stop()
        stats = beat.stop()
        results.append((f"scroll {rows:,} results at 60 Hz".replace(",", " "), stats,
                        f"set_hits {set_ms:.0f} ms; {window.jobs.thumbnails.requested} thumbnails requested"))
        window.close()
        lib.close()
    return results


def table(results: list[tuple[str, dict[str, float], str]]) -> str:
    lines = ["| scenario | seconds | beats | worst gap ms | p99 gap ms | median ms | gaps > 100 ms "
             "| GUI-thread CPU in a gap, worst / p99 ms | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, s, note in results:
        lines.append(f"| {name} | {s['seconds']:.1f} | {s['beats']} | {s['worst']:.0f} | {s['p99']:.0f} | "
                     f"{s['median']:.0f} | {s['over100']} | {s['busy_worst']:.0f} / {s['busy_p99']:.0f} | {note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scroll-seconds", type=float, default=8.0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import PySide6

    results = run(args.photos, args.rows, args.scroll_seconds)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{platform.processor() or platform.machine()} x{os.cpu_count()} (load average {load:.1f}), "
          f"Python {sys.version.split()[0]}, PySide6 {PySide6.__version__}, QPA {os.environ['QT_QPA_PLATFORM']}\n")
    print(table(results))
    for name, stats, _ in results:
        if stats["stalls"]:
            print(f"\nstalls over 100 ms while {name}: {stats['stalls']}")
    print("\nA gap is the time between two beats of a 10 ms timer on the GUI thread; goal: worst < 100 ms. "
          "GUI-thread CPU is the time the GUI thread itself computed during a gap; the rest of a gap is "
          "waiting for a CPU core or for the GIL.")


if __name__ == "__main__":
    main()
