"""`lumen serve` under load: search latency and throughput at 1, 8 and 32 clients.

    python -m bench.serve [--quick] [--photos 100000] [--requests 2400]

The real server process (`python -m desktop serve --watch`, uvicorn) on a free loopback
port, over a data dir holding a 100 000-photo synthetic catalog (bench/common.py: real
schema, real Annoy index) plus a real, watched folder. While the clients search, a
feeder writes a new JPEG into that folder every 100 ms, so the server's watcher scans,
encodes and indexes them the whole time (the "while indexing runs" of issue 16).

Each client is a thread with its own keep-alive HTTP connection sending
`GET /api/v1/search?q=...&k=60` (the web page's request: words and meaning fused) back to
back. Queries are colour phrases for the `colors` encoder, whose text tower is nearly
free, so this measures the serving path itself: HTTP, the word index, the ANN search
over 100 000 vectors and the catalog rows of the results.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from bench.common import REPO, Table, emit, load_avg, machine_line, percentile, synthetic_library

ENCODER = "colors:hist-v1"
DIM = 76  # plugins/colors: 4^3 histogram bins + 2x2x3 layout
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray",
           "cyan", "magenta"]
MODS = ["", "dark ", "light ", "bright ", "pale "]


def query_list(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(COLOURS, 2)
        out.append(rng.choice([f"{rng.choice(MODS)}{a}", f"{a} and {b}", f"2:{a} + {b}", f"{a} - {b}"]))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_for(port: int, state: str, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lumen serve exited with {proc.returncode}")
        try:
            if get_json(port, "/api/v1/progress")["state"] == state:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the server did not reach {state!r} in {timeout_s:.0f} s")


class Feeder(threading.Thread):
    """Writes a new photo into the watched folder every `every_s` (the indexing load)."""

    def __init__(self, folder: Path, every_s: float = 0.1) -> None:
        super().__init__(daemon=True, name="feeder")
        self.folder, self.every_s, self.stop, self.written = folder, every_s, threading.Event(), 0

    def run(self) -> None:
        from PIL import Image

        rng = np.random.default_rng(1)
        while not self.stop.wait(self.every_s):
            pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
            pixels[:, :, rng.integers(0, 3)] //= 3  # a tint, so photos differ in colour
            tmp = self.folder / f".new-{self.written}.tmp"
            Image.fromarray(pixels).save(tmp, "JPEG", quality=85)
            os.replace(tmp, self.folder / f"new-{self.written:05d}.jpg")  # appears whole, as a camera import does
            self.written += 1


def run_clients(port: int, clients: int, per_client: int, queries: list[str]) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        start_gate.wait()
        for i in range(per_client):
            q = queries[(index * 7919 + i) % len(queries)]
            path = "/api/v1/search?" + urllib.parse.urlencode({"q": q, "k": 60})
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    with lock:
                        errors.append(f"{response.status} {body[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append((time.perf_counter() - t0) * 1000)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "error_samples": errors[:3],
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95), "p99": percentile(latencies, 99),
            "rps": len(latencies) / wall, "wall_s": wall}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 000 photos and few requests: proves it works")
    ap.add_argument("--photos", type=int, default=100_000)
    ap.add_argument("--requests", type=int, help="requests per concurrency level (default 1600; --quick 120)")
    ap.add_argument("--feed-every", type=float, default=0.1, help="seconds between new photos while measuring")
    args = ap.parse_args(argv)
    n = 2_000 if args.quick else args.photos
    per_level = args.requests or (120 if args.quick else 1600)
    synth = synthetic_library(n, encoder_id=ENCODER, dim=DIM)
    with tempfile.TemporaryDirectory(prefix="lumen-bench-serve-") as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(synth.home, home, ignore=shutil.ignore_patterns("bench-*.json", "writer.lock"))
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        from desktop.library import Library

        with Library(home) as lib:
            lib.add_root(inbox)
            # The synthetic photos' folder does not exist (they are catalog rows only): not watched.
            lib.set_watch(synth.root, False)
        port = free_port()
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "desktop", "serve", "--home", str(home), "--port", str(port), "--watch"],
                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log_file, stderr=subprocess.STDOUT)
        feeder = Feeder(inbox, args.feed_every)
        try:
            t0 = time.perf_counter()
            wait_for(port, "watching", proc)
            ready_s = time.perf_counter() - t0
            queries = query_list(200)
            run_clients(port, 4, 10, queries)  # warm-up: connections, thread pool, index pages, query cache
            feeder.start()
            time.sleep(1.0)
            before = get_json(port, "/api/v1/status")
            results = [run_clients(port, c, max(per_level // c, 5), queries) for c in (1, 8, 32)]
            after = get_json(port, "/api/v1/status")
        finally:
            feeder.stop.set()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        photos_before = sum(r["counts"]["ok"] for r in before["roots"] if r["path"] == str(inbox))
        photos_after = sum(r["counts"]["ok"] for r in after["roots"] if r["path"] == str(inbox))
        server_log = log_path.read_text()
        if os.environ.get("BENCH_DEBUG"):
            print(json.dumps(after["roots"]), after["progress"], server_log[:2500], file=sys.stderr)
    single = results[0]["p95"]  # like for like: p95 at N clients over p95 at one
    table = Table(
        f"lumen serve: GET /api/v1/search (k=60, words + meaning), {n:,} photos, while indexing",
        ["clients", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "req/s", "p95 / 1-client p95"],
    )
    for r in results:
        table.add(r["clients"], r["requests"], r["errors"], r["p50"], r["p95"], r["p99"], r["rps"], r["p95"] / single)
    at8 = results[1]["p95"] / single
    table.notes += [
        machine_line(),
        f"load average after: {load_avg()[0]:.1f}; server ready (catalog opened, scan, watching) in {ready_s:.1f} s",
        f"indexing meanwhile: {feeder.written} new photos written, {photos_after - photos_before} indexed "
        f"during the measurement ({photos_after} in total); query cache {after['query_cache']}",
        f"target p95 at 8 clients <= 2x the single-client p95: {at8:.2f}x "
        f"({'met' if at8 <= 2 else 'not met'}; 8 clients on {os.cpu_count()} cores)",
    ]
    if any(r["errors"] for r in results):
        table.notes.append(f"errors: {[r['error_samples'] for r in results if r['errors']]}")
    if "Traceback" in server_log:
        table.notes.append("the server logged a traceback: " + server_log[server_log.index("Traceback"):][:400])
    raw = {"levels": results, "photos": n, "fed": feeder.written, "indexed_during": photos_after - photos_before}
    emit([table], raw, "serve")
    return {"tables": [table], "results": raw}


if __name__ == "__main__":
    main()
