"""Helpers for tests/test_reliability.py: tiny image files, catalog snapshots, subprocess drivers.

Nothing here fakes Lumen's own code: drivers run the real library in a real process, and
the only stand-ins are for the operating system or third-party boundaries (named where used).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# How to undo each EXIF orientation, written out independently of desktop.images.
UNDO = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def png_bytes(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A valid RGB PNG of one colour, written by hand (10 000 files in a couple of seconds)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\x00" + bytes(rgb) * size
    ihdr = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def distinct_rgb(i: int) -> tuple[int, int, int]:
    """A different colour for every i < 2**24 (so every file has its own content hash)."""
    return ((i * 97) % 256, (i // 256 * 61 + i % 7) % 256, (i // 65536 * 37 + 11) % 256)


def write_pngs(folder: Path, n: int, start: int = 0, size: int = 8, per_dir: int = 0) -> list[Path]:
    out = []
    for i in range(start, start + n):
        target = folder / f"d{i // per_dir:03d}" if per_dir else folder
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"p{i:05d}.png"
        path.write_bytes(png_bytes(distinct_rgb(i), size))
        out.append(path)
    return out


def noisy_photo(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    """A small real JPEG/PNG with a random base colour and noise (files differ by seed)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    pixels = np.clip(base + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def mad(a: Image.Image, b: Image.Image) -> float:
    if a.size != b.size:
        return float("inf")
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def assert_same_picture(ref: Image.Image, got: Image.Image, name: str) -> None:
    """`got` must match `ref` better than any other rotation/flip of `ref` does (pixels, not flags)."""
    ref = ref.convert("RGB")
    got = got.convert("RGB")
    scores = {}
    for k, t in UNDO.items():
        cand = ref if t is None else ref.transpose(t)
        if (got.width >= got.height) != (cand.width >= cand.height):
            scores[k] = float("inf")  # turned by 90 degrees: the shape alone rules it out
            continue
        scores[k] = mad(got if got.size == cand.size else got.resize(cand.size, Image.Resampling.BILINEAR), cand)
    best = min(scores, key=scores.__getitem__)
    assert best == 1, f"{name}: looks like the upright picture turned by orientation {best}: {scores}"


# --- catalog snapshots ----------------------------------------------------------------------


def db_rows(db: Path, sql: str, args: Sequence = ()) -> list[tuple]:
    """Read the catalog with a plain sqlite3 connection (not Lumen's code)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=30)  # read-write: recovers a hot WAL like the app would
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def vector_rowids(db: Path, encoder: str) -> dict[int, int]:
    """photo id -> rowid of its vector: a re-encoded photo gets a new rowid."""
    return dict(db_rows(db, "SELECT photo_id, rowid FROM vectors WHERE encoder=?", (encoder,)))


def file_photos(db: Path) -> dict[str, int]:
    return {os.fsdecode(p) if isinstance(p, bytes) else p: pid for p, pid in db_rows(
        db, "SELECT path, photo_id FROM files")}


# --- subprocesses -----------------------------------------------------------------------------


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def spawn(code: str, *args: str, user: str | None = None, **kwargs: object) -> subprocess.Popen:
    cmd = [PYTHON, "-c", code, *args]
    if user is not None:
        cmd = [*as_user(user), *cmd]
    return subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)  # type: ignore[call-overload]


def run(code: str, *args: str, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "-c", code, *args]
    if user is not None:
        cmd = [*as_user(user), *cmd]
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def as_user(user: str) -> list[str]:
    """A command prefix that drops root for `user` (real permission checks), or skip."""
    if os.name != "posix":
        pytest.skip("permission tests need POSIX users")
    if os.geteuid() != 0:
        return []  # already unprivileged: permissions apply as they are
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop privileges to test permissions")
    return [setpriv, "--reuid", user, "--regid", "nogroup", "--clear-groups"]


@contextmanager
def world_dir(prefix: str) -> Iterator[Path]:
    """A temp folder an unprivileged user can reach (pytest's tmp_path is root-only when root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o777)
    try:
        yield path
    finally:
        for p in [path, *path.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(path, ignore_errors=True)


def chown_tree(path: Path, user: str) -> None:
    """Give a tree to `user` (when root; an unprivileged run owns its files already)."""
    import pwd

    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.lchown(p, pw.pw_uid, pw.pw_gid)


# --- drivers (run the real library in a child process) ---------------------------------------

INDEX_DRIVER = r"""
import dataclasses, json, sys
from desktop.library import Library

def progress(p):
    print("P", json.dumps([p.stage, p.done, p.total]), flush=True)

with Library(sys.argv[1], encoder="colors") as lib:
    report = lib.index(progress=progress)
print("DONE", json.dumps(dataclasses.asdict(report)), flush=True)
"""


def last_json(stdout: str, tag: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise AssertionError(f"no {tag} line in output:\n{stdout[-2000:]}")


STORM_DRIVER = r"""
import json, resource, sys, threading, time
from pathlib import Path

import numpy as np
import plugins.colors as colors

sys.path.insert(0, "tests")
from reliability_helpers import write_pngs  # noqa: E402

from desktop.library import Library  # noqa: E402

# Speed only: the colors test encoder's histogram with np.bincount instead of np.add.at
# (the same numbers, ~6x faster), so 10 000 photos fit in a test run.
def _soft_hist(pixels):
    pos = pixels.astype(np.float32) / 256.0 * colors.BINS - 0.5
    lo = np.clip(np.floor(pos), 0, colors.BINS - 1).astype(int)
    hi = np.clip(lo + 1, 0, colors.BINS - 1)
    w_hi = np.clip(pos - lo, 0, 1)
    w_lo = 1 - w_hi
    hist = np.zeros(colors.BINS**3, np.float64)
    for r, wr in ((lo[:, 0], w_lo[:, 0]), (hi[:, 0], w_hi[:, 0])):
        for g, wg in ((lo[:, 1], w_lo[:, 1]), (hi[:, 1], w_hi[:, 1])):
            for b, wb in ((lo[:, 2], w_lo[:, 2]), (hi[:, 2], w_hi[:, 2])):
                hist += np.bincount((r * colors.BINS + g) * colors.BINS + b, wr * wg * wb, colors.BINS**3)
    return np.sqrt(hist.astype(np.float32) / max(len(pixels), 1))

colors._soft_hist = _soft_hist

home, root, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
root.mkdir(parents=True, exist_ok=True)
lib = Library(home, encoder="colors")
lib.add_root(root)
write_pngs(root / "warm-up", 64, start=10**6, size=8)
lib.index()  # warm every code path once: what grows after this is what the burst costs
stop = threading.Event()
batches = []
watcher = threading.Thread(target=lib.watch, args=(stop,),
                           kwargs={"on_batch": lambda ch, rep: batches.append((len(ch), rep.encoded))})
watcher.start()
time.sleep(1.0)
base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
write_pngs(root / "burst", n, size=8, per_dir=1000)  # one burst: 10 folders of 1 000
burst_s = time.monotonic() - started
deadline = time.monotonic() + 400
while time.monotonic() < deadline and lib.catalog.counts()["ok"] < n + 64:
    time.sleep(0.25)
elapsed = time.monotonic() - started
stop.set()
watcher.join(timeout=60)
counts = lib.catalog.counts()
hits = lib.search("red", k=3)
lib.close()
print("STORM", json.dumps({"base_kb": base_kb, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                           "batches": batches, "counts": counts, "burst_s": burst_s, "elapsed_s": elapsed,
                           "hits": len(hits)}), flush=True)
"""
