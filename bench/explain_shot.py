"""A screenshot of "why this photo": the main window with the attention overlay.

    xvfb-run -a python -m bench.explain_shot --query "a dog runs through the water" --out resources/explain.png

Indexes some Flickr8k dev photos (../shared) with bert_resnet and its shipped re-ranker
into a throwaway library, searches, selects the best hit and saves the window once the
detail panel shows the heat map.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--query", default="a dog runs through the water")
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--out", default="resources/explain.png")
    ap.add_argument("--word", help="show this word's own attention instead of all words'")
    args = ap.parse_args(argv)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from desktop.evaluation import read_split
    from desktop.jobs import Jobs, Query
    from desktop.library import Library
    from desktop.ui.main_window import MainWindow

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
    app = QApplication.instance() or QApplication(sys.argv)
    with tempfile.TemporaryDirectory(prefix="lumen-shot-") as tmp:
        root = Path(tmp) / "photos"
        root.mkdir()
        for n in read_split(shared / "dev.txt")[: args.photos]:
            (root / n).symlink_to(shared / "images" / n)
        lib = Library(Path(tmp) / "home", encoder="bert_resnet", device="cpu")
        lib.add_root(root)
        lib.index()
        window = MainWindow(Jobs(lib), QSettings(str(Path(tmp) / "ui.ini"), QSettings.Format.IniFormat))
        window.resize(1400, 860)
        window.show()

        def wait(cond, timeout: float = 120.0) -> None:  # noqa: ANN001
            end = time.monotonic() + timeout
            while not cond():
                app.processEvents()
                time.sleep(0.02)
                if time.monotonic() > end:
                    raise TimeoutError("the window did not get there in time")

        window.search_bar.edit.setText(args.query)
        window.jobs.search(Query(text=args.query))
        wait(lambda: window.results is not None and window.results.query.text == args.query)
        window.grid.setCurrentIndex(window.model.index(0, 0))
        wait(lambda: window.detail.preview.overlay is not None and window.detail.preview.pixmap() is not None)
        if args.word:
            window.detail.why.select_word(args.word)
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        window.grab().save(args.out)
        print(f"wrote {args.out}: {Path(window.results.hits[0].path).name}, "
              f"top words {window.detail.why.explanation.get('top_words')}")
        window.close()
        lib.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
