"""`lumen index --cluster`: decode + encode on a real Ray cluster of two nodes on loopback.

The session fixture starts a head node and a second worker node with `ray start` (1 CPU
each, a small object store, a private temp dir) on loopback addresses 127.0.0.2/127.0.0.3
(Ray rewrites 127.0.0.1 to the machine's network address; other loopback addresses it keeps)
and kills exactly the process groups it started. Real photos (Flickr8k) plus awkward and
corrupt files; a local run of the same library is the reference every cluster run must equal.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, shared_path

from desktop.library import Library

ray = pytest.importorskip("ray")

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
AWKWARD = ["broken.png", "16bit.cropped.tif", "1_trns.png", "chi.gif", "00r0_gray_l.jp2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], log: Path) -> subprocess.Popen:
    # `ray start --block` with this interpreter: the workers then run this checkout's code.
    # Its own session (process group), so teardown kills exactly what it started.
    return subprocess.Popen(
        [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--block",
         "--num-cpus", "1", "--object-store-memory", str(100 << 20), "--disable-usage-stats", *args],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **RAY_ENV},
    )


# A test cluster on loopback, with no token auth: a ~/.ray/auth_token left by any earlier
# local `ray.init()` would otherwise switch the head to token mode and lock out the drivers.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    # Short path: Ray's unix sockets live under it and sun_path is 107 bytes at most.
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)  # this process is a driver too
    temp = tempfile.mkdtemp(prefix="lumen-ray-", dir="/tmp")
    port = _free_port()
    address = f"{HEAD_IP}:{port}"
    common = ["--temp-dir", temp]
    procs = [_ray_start(["--head", "--node-ip-address", HEAD_IP, "--port", str(port), "--include-dashboard=false",
                         "--dashboard-agent-listen-port", str(_free_port()), *common], Path(temp, "head.log"))]
    try:
        _wait_nodes(address, 1, procs, temp)
        procs.append(_ray_start(["--address", address, "--node-ip-address", WORKER_IP,
                                 "--dashboard-agent-listen-port", str(_free_port()), *common],
                                Path(temp, "worker.log")))
        _wait_nodes(address, 2, procs, temp)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)  # `ray start --block` ignores SIGTERM for long
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait_nodes(address: str, n: int, procs: list[subprocess.Popen], temp: str, timeout: float = 90) -> None:
    code = (f"import ray,time\nray.init('{address}',log_to_driver=False)\n"
            f"while sum(x['Alive'] for x in ray.nodes())<{n}: time.sleep(0.3)\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        try:
            subprocess.run([sys.executable, "-c", code], timeout=max(5, deadline - time.monotonic()),
                           check=True, capture_output=True)
            return
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            time.sleep(1)
    logs = "\n".join(Path(temp, f).read_text(errors="replace")[-2000:] for f in os.listdir(temp) if f.endswith(".log"))
    pytest.fail(f"the Ray cluster at {address} did not come up with {n} nodes:\n{logs}")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos, a copy (one photo, two paths), awkward and corrupt files."""
    root = tmp_path_factory.mktemp("archive")
    flickr = sorted(shared_path("data", "flickr8k", "images").iterdir())[:30]
    for p in flickr:
        shutil.copy(p, root / p.name)
    shutil.copy(flickr[0], root / "copy-of-first.jpg")
    for name in AWKWARD:
        shutil.copy(shared_path("data", "awkward", name), root / name)
    (root / "truncated.jpg").write_bytes(flickr[1].read_bytes()[:3000])
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random open_clip model saved as a weights file (fixed seed: same file each run)."""
    torch = pytest.importorskip("torch")
    from plugins.clip import encoder_plugin

    torch.manual_seed(0)
    enc = encoder_plugin.create("lumen-tiny:random", device="cpu")
    enc.load()
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(enc.model.model.state_dict(), path)
    return str(path)


def _library(home: Path, root: Path, encoder: str, weights: str | None = None) -> Library:
    lib = Library(home, encoder=encoder, weights=weights)
    lib.add_root(root)
    return lib


def _by_hash(db: Path) -> tuple[dict[str, np.ndarray], dict[str, tuple]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        vectors = {h: np.frombuffer(v, np.float32) for h, v in con.execute(
            "SELECT p.hash, v.vector FROM vectors v JOIN photos p ON p.id = v.photo_id")}
        photos = {r[0]: r[1:] for r in con.execute(
            "SELECT hash, status, reason, width, height, format, taken_at, camera FROM photos")}
    finally:
        con.close()
    return vectors, photos


def _assert_same(local_db: Path, cluster_db: Path) -> None:
    va, pa = _by_hash(local_db)
    vb, pb = _by_hash(cluster_db)
    assert pb == pa  # statuses, skip reasons and metadata exactly as a local run stores them
    assert set(vb) == set(va) and len(va) >= 30
    cos = [float(va[h] @ vb[h] / (np.linalg.norm(va[h]) * np.linalg.norm(vb[h]))) for h in va]
    assert min(cos) >= 0.9999, min(cos)


@pytest.fixture(scope="module")
def local_colors(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("local-colors")
    with _library(home, archive, "colors") as lib:
        lib.index()
    return home / "catalog.db"


@pytest.fixture(scope="module")
def local_tiny(archive: Path, tiny_weights: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("local-tiny")
    with _library(home, archive, "clip:lumen-tiny", tiny_weights) as lib:
        lib.index()
    return home / "catalog.db"


def test_worker_decodes_bytes_exactly_as_a_local_run(archive, local_colors):
    """No cluster needed: the actor class is plain Python. Bytes in, the local run's vectors,
    metadata and skip reasons out (the file's own name never reaches the decoder)."""
    from desktop.cluster import EncodeWorker

    worker = EncodeWorker("colors", None, None, "cpu", 256)
    files = sorted(archive.iterdir())
    batch_dirs = set(Path(tempfile.gettempdir()).glob("lumen-batch-*"))
    rows, frames, skipped, seconds = worker.encode(
        [(i, f.name, f.read_bytes()) for i, f in enumerate(files)], 256)
    assert frames == {}  # stills only here
    va, pa = _by_hash(local_colors)
    from desktop.images import content_hash

    hashes = [content_hash(f) for f in files]
    for i, vec, meta in rows:
        np.testing.assert_allclose(vec, va[hashes[i]], atol=1e-6)
        assert (meta["width"], meta["height"], meta["format"]) == pa[hashes[i]][2:5]
    assert {hashes[i]: reason for i, reason in skipped} == {
        h: p[1] for h, p in pa.items() if p[0] == "skipped"}
    assert seconds > 0 and set(Path(tempfile.gettempdir()).glob("lumen-batch-*")) == batch_dirs  # files gone


@pytest.mark.slow
def test_a_node_without_the_weights_file_gets_it_from_the_driver(ray_cluster, tiny_weights, archive):
    """Workers may not share the driver's disks: the weights travel through the object store
    and give the same encoder id (it names the file's content) and the same vectors."""
    from desktop.cluster import EncodeWorker
    from plugins.clip import encoder_plugin

    here = encoder_plugin.create("lumen-tiny", weights=tiny_weights, device="cpu")
    ray.init(ray_cluster, log_to_driver=False)
    try:
        shipped = [ray.put(Path(tiny_weights).read_bytes())]
        worker = ray.remote(EncodeWorker).remote("clip:lumen-tiny", "/nonexistent/elsewhere/tiny.pt", shipped,
                                                 "cpu", 224)
        info = ray.get(worker.info.remote(), timeout=120)
        photo = sorted(archive.glob("*.jpg"))[0]
        rows, *_ = ray.get(worker.encode.remote([(1, photo.name, photo.read_bytes())], 224), timeout=120)
        ray.kill(worker)
    finally:
        ray.shutdown()
    assert info["encoder_id"] == here.id
    from desktop.images import load_for_encoding

    np.testing.assert_allclose(rows[0][1], here.encode_images([load_for_encoding(photo, 224)])[0], atol=1e-5)


@pytest.mark.slow
def test_colors_on_two_nodes_equal_a_local_run(ray_cluster, archive, local_colors, tmp_path):
    events = []
    with _library(tmp_path / "home", archive, "colors") as lib:
        report = lib.index(progress=events.append, cluster=ray_cluster, cluster_batch=4)
        va, pa = _by_hash(local_colors)
        assert report.encoded == len(va) and report.skipped == sum(p[0] == "skipped" for p in pa.values()) >= 2
        assert lib.search("red")  # the index was built from the cluster's vectors
    _assert_same(local_colors, tmp_path / "home" / "catalog.db")
    encode = [e for e in events if e.stage == "encode"]
    assert encode[-1].done == encode[-1].total == 30 + len(AWKWARD) + 1  # photos, not files: the copy is one
    assert all(e.rate > 0 for e in encode) and encode[0].eta_s is not None  # progress as in a local run


@pytest.mark.slow
def test_worker_killed_mid_run_has_its_batch_retried(ray_cluster, archive, tiny_weights, local_tiny, tmp_path):
    from desktop.cluster import RayBackend

    lib = _library(tmp_path / "home", archive, "clip:lumen-tiny", tiny_weights)
    backend = RayBackend(lib.store, ray_cluster, batch=3)
    killed: list[int] = []

    def progress(p) -> None:
        if p.stage == "encode" and not killed:
            assert {w.node_ip for w in backend.workers} == {HEAD_IP, WORKER_IP}  # one actor per node
            killed.append(backend.workers[-1].pid)
            os.kill(killed[0], signal.SIGKILL)  # mid-run: the other batches are queued or running

    try:
        report = lib.indexer.index(progress=progress, backend=backend)
    finally:
        backend.close()
        lib.close()
    assert killed and backend.stats.retried >= 1, backend.stats
    assert killed[0] not in {w.pid for w in backend.workers}  # Ray restarted that actor
    assert report.encoded == len(_by_hash(local_tiny)[0])
    _assert_same(local_tiny, tmp_path / "home" / "catalog.db")


@pytest.mark.slow
def test_driver_killed_and_run_again_resumes(ray_cluster, archive, tiny_weights, local_tiny, tmp_path):
    home = tmp_path / "home"
    _library(home, archive, "clip:lumen-tiny", tiny_weights).close()
    db = home / "catalog.db"
    cmd = [sys.executable, "-m", "desktop.cli", "index", "--home", str(home), "--encoder", "clip:lumen-tiny",
           "--weights", tiny_weights, "--cluster", ray_cluster, "--cluster-batch", "2", "--no-captions"]
    env = {**os.environ, "PYTHONPATH": str(REPO), **RAY_ENV}
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _count(db) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=30)
    total = len(_by_hash(local_tiny)[0])
    before = _rowids(db)
    assert 2 <= len(before) < total, f"{len(before)} vectors when the driver was killed: not mid-run"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    after = _rowids(db)
    assert len(after) == total  # nothing lost ...
    assert {p: after[p] for p in before} == before  # ... and nothing encoded twice: old rows untouched
    _assert_same(local_tiny, db)


def _count(db: Path) -> int:
    try:
        return len(_rowids(db))
    except sqlite3.Error:  # not created yet, or locked for a moment
        return 0


def _rowids(db: Path) -> dict[int, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return dict(con.execute("SELECT photo_id, rowid FROM vectors"))
    finally:
        con.close()
