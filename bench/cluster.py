"""Benchmark: encoding locally vs on Ray with 1 and 2 worker processes, the same photos, one run.

    python -m bench.cluster                         # 200 Flickr8k photos; colors and bert_resnet
    python -m bench.cluster --photos 60 --encoders colors --quick

It starts its own one-node Ray runtime on loopback (127.0.0.2, 2 CPUs, a 200 MB object
store, a private temp dir) with `ray start --block`, and kills exactly that process group at
the end. Every configuration indexes the same folder into a fresh library:

- **local**: `Library.index()` as today (decode threads + the encoder in this process).
- **Ray, N workers**: `Indexer.index(backend=RayBackend(workers=N))`: the driver reads the
  files' bytes, N actors (1 CPU each) decode and encode, the driver writes the catalog.
  The actors are started (encoder loaded) before the clock starts; their start-up is
  reported apart, since a real run pays it once per run, not per photo.

images/s = photos encoded / encode-stage seconds (the figure `lumen index` prints).
Ray overhead per batch = (encode wall time × workers − time the workers spent decoding and
encoding, measured inside them) / batches: what a batch costs beyond its own work
(scheduling, moving bytes and vectors, idle waits). The cosine column checks that every
Ray vector equals the local one.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import OUT, SHARED, Table, add_common_args, emit, machine_line

log = logging.getLogger("bench.cluster")
HEAD_IP = "127.0.0.2"  # Ray turns 127.0.0.1 into the machine's network address; this it keeps
# A private loopback runtime without token auth (a ~/.ray/auth_token would otherwise turn it on).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(cpus: int) -> tuple[subprocess.Popen, str, str]:
    temp = tempfile.mkdtemp(prefix="lumen-rayb-", dir="/tmp")  # short: unix socket paths live here
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--block", "--head",
         "--node-ip-address", HEAD_IP, "--port", str(port), "--num-cpus", str(cpus), "--include-dashboard=false",
         "--object-store-memory", str(200 << 20), "--temp-dir", temp, "--disable-usage-stats"],
        stdout=open(os.path.join(temp, "head.log"), "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **RAY_ENV},
    )
    return proc, f"{HEAD_IP}:{port}", temp


def stop_ray(proc: subprocess.Popen, temp: str) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # only the group this bench started
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


def photo_folder(n: int) -> Path:
    src = SHARED / "data" / "flickr8k" / "images"
    folder = OUT / f"cluster-photos-{n}"
    if not folder.exists() or len(list(folder.iterdir())) != n:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for p in sorted(src.iterdir())[:n]:
            shutil.copy(p, folder / p.name)
    return folder


def vectors_of(home: Path) -> dict[str, np.ndarray]:
    con = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True)
    try:
        return {h: np.frombuffer(v, np.float32) for h, v in con.execute(
            "SELECT p.hash, v.vector FROM vectors v JOIN photos p ON p.id = v.photo_id")}
    finally:
        con.close()


def run_config(encoder: str, folder: Path, work: Path, address: str | None, workers: int, batch: int) -> dict[str, Any]:
    from desktop.cluster import RayBackend
    from desktop.indexer import decode_size
    from desktop.library import Library

    home = work / f"{encoder.replace(':', '_')}-{'local' if address is None else f'ray{workers}'}"
    shutil.rmtree(home, ignore_errors=True)
    lib = Library(home, encoder=encoder)
    lib.add_root(folder)
    backend, startup = None, 0.0
    try:
        if address is None:
            t = time.perf_counter()
            if hasattr(lib.encoder, "load"):
                lib.encoder.load()  # as the actors do before the clock starts
            startup = time.perf_counter() - t
            report = lib.index()
        else:
            backend = RayBackend(lib.store, address, workers=workers, batch=batch)
            t = time.perf_counter()
            backend.start(decode_size(lib.encoder))
            startup = time.perf_counter() - t
            report = lib.indexer.index(backend=backend)
    finally:
        if backend is not None:
            backend.close()
        lib.close()
    out: dict[str, Any] = {"encoder": encoder, "workers": workers if address else 0, "encoded": report.encoded,
                           "encode_s": report.encode_seconds, "images_per_s": report.images_per_s,
                           "startup_s": startup, "home": home}
    if backend is not None:
        st = backend.stats
        busy = report.encode_seconds * workers
        out.update(batches=st.batches, worker_s=st.worker_seconds, read_s=st.read_seconds,
                   overhead_ms=1e3 * max(0.0, busy - st.worker_seconds) / max(1, st.batches))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--photos", type=int, help="Flickr8k photos (default 200; --quick 40)")
    ap.add_argument("--encoders", nargs="*", default=None, help="default: colors bert_resnet")
    ap.add_argument("--batch", type=int, default=16, help="photos per Ray task")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import ray  # noqa: F401 - fail here, clearly, without lumen[cluster]

    os.environ.update(RAY_ENV)  # this process is the driver

    n = args.photos or (40 if args.quick else 200)
    encoders = args.encoders or (["colors"] if args.quick else ["colors", "bert_resnet"])
    folder = photo_folder(n)
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=OUT))
    proc, address, temp = start_ray(2)
    rows: list[dict[str, Any]] = []
    t = Table(f"Encoding {n} Flickr8k photos: local vs Ray (1 and 2 worker processes, 1 CPU each, batch {args.batch})",
              ["encoder", "run", "images/s", "encode s", "worker start-up s", "batches",
               "Ray overhead ms/batch", "min cosine vs local"])
    try:
        time.sleep(3)
        for enc in encoders:
            local = run_config(enc, folder, work, None, 0, args.batch)
            ref = vectors_of(local["home"])
            rows.append(local)
            t.add(enc, "local (this process)", local["images_per_s"], local["encode_s"], local["startup_s"], "–", "–", "–")
            for w in (1, 2):
                r = run_config(enc, folder, work, address, w, args.batch)
                got = vectors_of(r["home"])
                r["min_cos"] = min(float(ref[h] @ got[h] / (np.linalg.norm(ref[h]) * np.linalg.norm(got[h])))
                                   for h in ref) if set(got) == set(ref) else float("nan")
                rows.append(r)
                t.add(enc, f"Ray, {w} worker{'s' if w > 1 else ''}", r["images_per_s"], r["encode_s"], r["startup_s"],
                      r["batches"], r["overhead_ms"], f"{r['min_cos']:.6f}")
            # Local again, after the Ray runs: the machine's load drifts, and order must not decide.
            again = run_config(enc, folder, work, None, 0, args.batch)
            rows.append({**again, "again": True})
            t.add(enc, "local again (after Ray)", again["images_per_s"], again["encode_s"], again["startup_s"],
                  "–", "–", "–")
    finally:
        stop_ray(proc, temp)
        shutil.rmtree(work, ignore_errors=True)
    t.notes.append(f"{machine_line()}; all on one machine, so Ray's workers and the local run share the same "
                   "2 cores: the figures show Ray's cost, not a second machine's gain")
    for r in rows:
        r.pop("home", None)
    emit([t], {"runs": rows}, "cluster")
    return {"tables": [t], "results": rows}


if __name__ == "__main__":
    main()
