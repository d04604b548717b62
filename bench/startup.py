"""Benchmark 6: start-up time and memory.

    python -m bench.startup            # the window over a 100 000-photo catalog; RSS while indexing
    python -m bench.startup --quick    # 2 000 photos, the tiny model

- **window**: `python -m desktop --home H` (what `lumen` runs) over a copy of the
  synthetic 100 000-photo library (bench.common), offscreen. Measured from the launch
  (interpreter start and imports included) to: the main window shown; the event loop
  serving events (interactive: a click or a keystroke would be handled now); the grid
  holding all photos; the indexer settled (model loaded, nothing to encode). RSS at each
  point, idle RSS a few seconds later, and idle RSS after `encoder.unload()` ("model
  unloaded"). Median of a few launches.
- **indexing**: `python -m desktop index` (the CLI) on the real-photo set of benchmark 1
  with the default CLIP architecture: peak RSS of the process (wait4 rusage).
- **pieces**: RSS of a bare Python with each layer imported, to say where memory goes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_CLIP,
    OUT,
    REPO,
    Table,
    add_common_args,
    emit,
    machine_line,
    median,
    photo_set,
    synthetic_library,
    verdict,
)

log = logging.getLogger("bench.startup")

INTERACTIVE_TARGET_S = 1.5
IDLE_RSS_TARGET_MB = 400


def copy_home(src: Path) -> Path:
    """A private copy of a synthetic data dir: the catalog is copied (the app writes to it),
    the index files are hard-linked (a build writes new files; these are never changed)."""
    dst = Path(tempfile.mkdtemp(prefix="lumen-startup-", dir=OUT))
    for p in src.rglob("*"):
        rel = p.relative_to(src)
        if p.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif p.parent.name != "thumbs":
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            if p.suffix in (".ann", ".npy"):
                os.link(p, dst / rel)
            else:
                shutil.copy2(p, dst / rel)
    return dst


def caption_once(home: Path, spec: str) -> dict[str, Any]:
    """Caption the synthetic library once (cached): a real library has its captions after
    its first run, so a launch then measures start-up, not a first captioning pass."""
    marker = home / "bench-captions.json"
    if marker.exists():
        return json.loads(marker.read_text())
    from desktop.library import Library

    log.warning("captioning the synthetic library once (cached) ...")
    t = time.perf_counter()
    with Library(home, encoder=spec) as lib:
        report = lib.caption_pending()
    info = {"seconds": time.perf_counter() - t, "captioned": report.captioned, "tagged": report.tagged}
    marker.write_text(json.dumps(info))
    return info


def compile_bytecode() -> None:
    """Write Lumen's .pyc files first, as `pip install` does (and as Python itself does on
    a user's first launch). Without them every launch compiles ~25 modules from source,
    ~0.25 s here, and this VM sets PYTHONDONTWRITEBYTECODE=1, so nothing would cache them."""
    import compileall

    for pkg in ("desktop", "plugins", "resources"):
        compileall.compile_dir(str(REPO / pkg), quiet=1)


def launch_window(home: Path, expected: int, idle_s: float, timeout_s: float) -> dict[str, Any]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LUMEN_BENCH_EXPECT=str(expected),
               LUMEN_BENCH_IDLE_S=str(idle_s), LUMEN_BENCH_TIMEOUT_S=str(timeout_s),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LUMEN_HOME", None)
    env["LUMEN_BENCH_T0"] = repr(time.time())
    proc = subprocess.run([sys.executable, "-m", "bench._startup_child", "--home", str(home)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=timeout_s + 60)
    for line in proc.stdout.splitlines():
        if line.startswith("LUMEN_BENCH "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"the window did not report (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                       f"{proc.stderr[-3000:]}")


def index_peak_rss(folder: Path, spec: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="lumen-rss-", dir=OUT))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LUMEN_HOME", None)
    try:
        subprocess.run([sys.executable, "-m", "desktop", "add", str(folder), "--home", str(home),
                        "--encoder", spec], env=env, cwd=REPO, check=True, capture_output=True)
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "desktop", "index", "--home", str(home)], env=env,
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"lumen index failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        return {"peak_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds}
    finally:
        shutil.rmtree(home, ignore_errors=True)


PIECES = [
    ("python + numpy + annoy + sqlite", "import numpy, annoy, sqlite3"),
    ("+ desktop core (library, catalog, index)", "import desktop.library"),
    ("+ Qt + the window's modules", "from PySide6.QtWidgets import QApplication; a = QApplication([]); import desktop.app"),
    ("+ torch", "import torch"),
    ("+ open_clip", "import open_clip"),
]


def pieces() -> list[tuple[str, float]]:
    out = []
    code = ""
    for name, stmt in PIECES:
        code += stmt + "\n"
        src = code + ("import sys\nfor l in open('/proc/self/status'):\n"
                      "    l.startswith('VmRSS') and print(int(l.split()[1]) / 1024)\n")
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        r = subprocess.run([sys.executable, "-c", src], env=env, cwd=REPO, capture_output=True, text=True)
        out.append((name, float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else float("nan")))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--n", type=int, help="photos in the catalog (default 100 000; --quick 2 000)")
    ap.add_argument("--launches", type=int, help="window launches (median; default 3, --quick 1)")
    ap.add_argument("--encoder", help=f"encoder spec (default {DEFAULT_CLIP}; --quick clip:lumen-tiny:random)")
    ap.add_argument("--no-index", action="store_true", help="skip the peak-RSS-while-indexing run")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a launch may take to settle")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    n = args.n or (2_000 if args.quick else 100_000)
    launches = args.launches or (1 if args.quick else 3)
    spec = args.encoder or ("clip:lumen-tiny:random" if args.quick else DEFAULT_CLIP)
    from desktop.encoders import create_encoder

    probe = create_encoder(spec, device="cpu")
    syn = synthetic_library(n, encoder_id=probe.id, dim=probe.dim)
    first_captions = caption_once(syn.home, spec)
    compile_bytecode()

    runs = []
    for i in range(launches):
        log.warning("startup bench: launch %d/%d over %d photos ...", i + 1, launches, n)
        home = copy_home(syn.home)
        try:
            runs.append(launch_window(home, n, idle_s=2 if args.quick else 3, timeout_s=args.timeout))
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def med(key: str) -> float:
        vals = [r[key] for r in runs if r.get(key) is not None]
        return median(vals) if vals else float("nan")

    t = Table(f"Start-up and memory: `lumen --home H` over {n:,} photos (encoder {spec})",
              ["measure", "value", "target"])
    inter = med("interactive_s")
    t.add("window shown (s from launch)", med("window_shown_s"), "")
    t.add("window interactive (s from launch)", inter,
          f"≤ {INTERACTIVE_TARGET_S} s " + verdict(inter <= INTERACTIVE_TARGET_S) if n >= 100_000 else "–")
    t.add(f"grid holds all {n:,} photos (s)", med("grid_filled_s"), "")
    t.add("model loaded, indexer settled (s)", med("indexer_settled_s"), "")
    t.add("RSS when interactive (MB)", med("rss_at_interactive_mb"), "")
    t.add("RSS idle, model loaded: window process (MB)", med("idle_rss_mb"), "")
    t.add("RSS idle, model loaded: model process (MB)", med("model_process_rss_mb"), "")
    unloaded = med("idle_rss_unloaded_mb")
    t.add("RSS idle, model unloaded (the model process ended) (MB)", unloaded,
          f"< {IDLE_RSS_TARGET_MB} MB " + verdict(unloaded < IDLE_RSS_TARGET_MB) if n >= 100_000 else "–")
    t.add("worst GUI-thread gap once the window is up, until idle (ms)", med("worst_gap_ms"), "")
    t.add("torch imported in the window's process", "yes" if any(r.get("torch_imported") for r in runs) else "no", "")
    results: dict[str, Any] = {"n": n, "spec": spec, "launches": runs}
    if not args.no_index:
        folder = photo_set(8, max_mp=4.0) if args.quick else photo_set(200)
        log.warning("startup bench: peak RSS of `lumen index` ...")
        idx = index_peak_rss(folder, spec)
        t.add(f"peak RSS, `lumen index` of {len(list(folder.rglob('*.*')))} photos (MB)", idx["peak_rss_mb"], "")
        results["index"] = idx
    pcs = [] if args.quick else pieces()
    if pcs:
        t.notes.append("RSS by layer (fresh interpreters, MB): " + "; ".join(f"{k} {v:.0f}" for k, v in pcs))
    t.notes.append(f"the library was captioned once beforehand, as after its first run "
                   f"({first_captions['captioned']:,} captions in {first_captions['seconds']:.0f} s, not timed here)")
    t.notes.append("Lumen's bytecode compiled before the launches, as an installed copy has it "
                   "(this VM sets PYTHONDONTWRITEBYTECODE=1: without it, imports cost ~0.25 s more)")
    t.notes.append(f"{machine_line()}; median of {launches} launch(es); offscreen Qt")
    results["pieces"] = pcs
    emit([t], results, "startup")
    return {"tables": [t], "results": results}


if __name__ == "__main__":
    main()
