"""Runs `lumen --home HOME` (the real window) and reports, as one JSON line on stdout, when
the window became visible and interactive, when the grid held the library, and the RSS.

Not a public entry point: bench/startup.py starts it with `python -m bench._startup_child`
and the wall-clock time of the launch in LUMEN_BENCH_T0, so the figures include the
interpreter's start and every import, as a user's double-click does. Nothing in the app is
changed: an event filter and timers are attached to the QApplication the app creates.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

T0 = float(os.environ.get("LUMEN_BENCH_T0", time.time()))
IDLE_S = float(os.environ.get("LUMEN_BENCH_IDLE_S", "3"))
TIMEOUT_S = float(os.environ.get("LUMEN_BENCH_TIMEOUT_S", "120"))


def rss_mb(pid: int | None = None) -> float:
    with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def hwm_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    expected = int(os.environ.get("LUMEN_BENCH_EXPECT", "0"))
    out: dict[str, object] = {"imports_done_s": None}
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication, QMainWindow

    import desktop.app as app_mod

    out["imports_done_s"] = time.time() - T0
    beats: list[float] = []
    state: dict[str, object] = {"window": None}

    def now() -> float:
        return time.time() - T0

    def finish() -> None:
        window = state["window"]
        # Gaps once the window is up: before app.exec() the timer cannot beat at all, and
        # that wait is the start-up time measured above, not a stall a user sees.
        shown = T0 + float(out.get("interactive_s") or 0.0)
        live = [b for b in beats if b >= shown]
        gaps = [b - a for a, b in zip(live, live[1:], strict=False)]
        out["worst_gap_ms"] = max(gaps) * 1000 if gaps else None
        out["idle_rss_mb"] = rss_mb()
        lib = window.jobs.library if window is not None else None
        enc = getattr(lib, "_encoder", None) if lib is not None else None
        out["torch_imported"] = "torch" in sys.modules
        pid = getattr(enc, "pid", None)  # the model's own process (the window runs models there)
        out["model_process_rss_mb"] = rss_mb(pid) if pid else 0.0
        if enc is not None and getattr(enc, "loaded", False) and hasattr(enc, "unload"):
            enc.unload()  # "model unloaded": what stays is the libraries and the app itself
            gc.collect()
            out["idle_rss_unloaded_mb"] = rss_mb()
        out["peak_rss_mb"] = hwm_mb()
        print("LUMEN_BENCH " + json.dumps(out), flush=True)
        QApplication.instance().quit()

    def poll() -> None:
        window = state["window"]
        if window is None:
            return
        rows = window.model.rowCount()
        if "grid_filled_s" not in out and rows and rows >= expected:
            out["grid_filled_s"] = now()
            out["rss_at_grid_mb"] = rss_mb()
        indexer_state = window.jobs.indexing.state
        if "indexer_settled_s" not in out and indexer_state in ("watching", "idle") and out.get("model_loaded_s"):
            out["indexer_settled_s"] = now()
        if "grid_filled_s" in out and "indexer_settled_s" in out and "idle_from" not in state:
            state["idle_from"] = time.time()
            QTimer.singleShot(int(IDLE_S * 1000), finish)
        if now() > TIMEOUT_S and "done" not in state:
            state["done"] = True
            out["timeout"] = True
            finish()

    class Probe(QObject):
        def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
            if isinstance(obj, QMainWindow) and state["window"] is None and event.type() in (
                    QEvent.Type.Show, QEvent.Type.Expose, QEvent.Type.Paint):
                state["window"] = obj
                out["window_shown_s"] = now()
                out["rss_at_show_mb"] = rss_mb()
                QTimer.singleShot(0, interactive)  # runs once the event loop serves events
                obj.jobs.indexing.model_loaded.connect(lambda _id: out.setdefault("model_loaded_s", now()))
            return False

    def interactive() -> None:
        out["interactive_s"] = now()
        out["rss_at_interactive_mb"] = rss_mb()
        out["torch_at_interactive"] = "torch" in sys.modules

    make_app = app_mod.make_app
    probe = Probe()

    def patched_make_app(argv=()):  # noqa: ANN001, ANN202
        app = make_app(argv)
        app.installEventFilter(probe)
        heart = QTimer(app, interval=10)
        heart.timeout.connect(lambda: beats.append(time.time()))
        heart.start()
        poller = QTimer(app, interval=20)
        poller.timeout.connect(poll)
        poller.start()
        return app

    app_mod.make_app = patched_make_app
    sys.argv = ["lumen", *sys.argv[1:]]
    from desktop.cli import main as lumen_main

    code = lumen_main(sys.argv[1:])
    sys.exit(code)


if __name__ == "__main__":
    main()
