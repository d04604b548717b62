"""`lumen serve`: the HTTP API over a real catalog with the `colors` encoder.

TestClient runs the real FastAPI app in-process; one test starts the real server process
on a free loopback port; schemathesis fuzzes every endpoint from the generated schema;
headless Chromium drives the web page (skips when no browser is installed)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import pytest
from conftest import make_photo
from PIL import Image

fastapi = pytest.importorskip("fastapi", reason="the server extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from desktop import server  # noqa: E402
from desktop.library import Library, LibraryError  # noqa: E402
from desktop.server import ServerConfig, create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
API = "/api/v1"


@pytest.fixture
def indexed(lib: Library, photos: Path) -> Library:
    lib.add_root(photos)
    lib.index()
    return lib


def client_for(lib: Library, **config: object) -> TestClient:
    return TestClient(create_app(lib, ServerConfig(**config)), base_url="http://127.0.0.1")  # type: ignore[arg-type]


@pytest.fixture
def client(indexed: Library) -> TestClient:
    return client_for(indexed)


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [Path(h["path"]).name for h in response.json()["results"]]


def photo_id(lib: Library, name: str) -> int:
    hit = next(h for h in lib.search("red", k=50) if Path(h.path).name == name)
    return hit.photo_id


# ---- search -------------------------------------------------------------------------------
def test_text_search_meaning_words_and_filters(client: TestClient, indexed: Library) -> None:
    assert set(names(client.get(f"{API}/search", params={"q": "red", "k": 2, "mode": "meaning"}))) == {
        "red-1.jpg", "red-2.png"}
    assert set(names(client.get(f"{API}/search", params={"q": "red", "k": 2}))) == {"red-1.jpg", "red-2.png"}
    only_png = names(client.get(f"{API}/search", params={"q": "blue", "k": 5, "mode": "meaning", "type": "png"}))
    assert only_png[0] == "blue-2.png" and all(n.endswith(".png") for n in only_png)
    # full syntax: weights and exclusions reach the Library's query parser
    mixed = names(client.get(f"{API}/search", params={"q": "2:red + yellow - blue", "k": 4, "mode": "meaning"}))
    assert not any(n.startswith("blue") for n in mixed)
    # words: a caption set through the API is found by its words, and only that photo
    red = photo_id(indexed, "red-1.jpg")
    assert client.put(f"{API}/photos/{red}/caption", json={"text": "A fire engine at the station"}).status_code == 200
    assert names(client.get(f"{API}/search", params={"q": "engine", "mode": "words"})) == ["red-1.jpg"]
    both = client.get(f"{API}/search", params={"q": "engine", "mode": "both"}).json()["results"]
    assert both[0]["words"] and "[engine]" in both[0]["snippet"]
    # a library filter that is not a library is a clear 400, not a crash
    bad = client.get(f"{API}/search", params={"q": "red", "root": "/nowhere"})
    assert bad.status_code == 400 and "not a library" in bad.json()["detail"]


def test_request_bounds_are_enforced(client: TestClient) -> None:
    for params in ({"q": "x" * 501}, {"q": ""}, {"q": "   "}, {"q": "red", "k": 0}, {"q": "red", "k": 501},
                   {"q": "red", "mode": "magic"}):
        r = client.get(f"{API}/search", params=params)
        assert r.status_code == 422, params
        assert r.headers["content-type"] == "application/json" and "Traceback" not in r.text
    big = client.put(f"{API}/photos/1/caption", content=b"{" + b" " * 70_000 + b"}",
                     headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and "limit" in big.json()["detail"]


def test_query_embeddings_are_cached(client: TestClient, indexed: Library) -> None:
    before = indexed.query_cache_stats()
    first = client.get(f"{API}/search", params={"q": "green", "mode": "meaning"}).json()
    again = client.get(f"{API}/search", params={"q": "green", "mode": "meaning"}).json()
    after = indexed.query_cache_stats()
    assert first == again
    assert after["misses"] == before["misses"] + 1 and after["hits"] == before["hits"] + 1
    status = client.get(f"{API}/status").json()
    assert status["query_cache"]["size"] >= 1


def png_bytes(size: tuple[int, int], color: tuple[int, int, int] = (30, 60, 220)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (no image data): what a bomb looks like
    before its pixels are decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_image_search_by_upload(client: TestClient, photos: Path) -> None:
    blue = (photos / "blue-1.jpg").read_bytes()
    r = client.post(f"{API}/search/image", files={"file": ("query.jpg", blue, "image/jpeg")}, data={"k": "2"})
    assert set(names(r)) == {"blue-1.jpg", "blue-2.png"}
    # an image that is not in the library (no stored vector) is encoded like the indexer does
    r = client.post(f"{API}/search/image", files={"file": ("q.png", png_bytes((80, 60), (240, 220, 40)), "image/png")})
    assert names(r)[0].startswith("yellow")
    # words and an example together
    r = client.post(f"{API}/search/image", files={"file": ("q.jpg", blue, "image/jpeg")}, data={"q": "red", "k": "4"})
    assert {n.split("-")[0] for n in names(r)} <= {"blue", "red", "black", "green"}
    assert not list((client.app.state.lib.paths.cache / "uploads").iterdir())  # nothing left behind


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the bomb below, on purpose
def test_upload_limits_and_bomb_guard(indexed: Library) -> None:
    c = client_for(indexed, max_upload_bytes=40_000, max_pixels=1_000_000)
    noise = os.urandom(60_000)
    r = c.post(f"{API}/search/image", files={"file": ("big.jpg", noise, "image/jpeg")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunked():  # no Content-Length: the limit is counted while reading
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        for _ in range(10):
            yield b"x" * 10_000
        yield b"\r\n--b--\r\n"
    r = c.post(f"{API}/search/image", content=chunked(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    r = c.post(f"{API}/search/image", files={"file": ("notes.jpg", b"not an image at all", "image/jpeg")})
    assert r.status_code == 415 and "notes.jpg" in r.json()["detail"]
    # more pixels than the server's limit: refused from the header, before decoding
    r = c.post(f"{API}/search/image", files={"file": ("wide.png", png_bytes((2000, 1000)), "image/png")})
    assert r.status_code == 413 and "2000x1000" in r.json()["detail"]
    # beyond PIL's own guard (2 x MAX_IMAGE_PIXELS): DecompressionBombError becomes a 413 too
    lax = client_for(indexed, max_pixels=10**10)
    r = lax.post(f"{API}/search/image", files={"file": ("bomb.png", header_only_png(20_000, 20_000), "image/png")})
    assert r.status_code == 413 and "decompression bomb" in r.json()["detail"]


def test_similar_by_photo_id(client: TestClient, indexed: Library) -> None:
    red = photo_id(indexed, "red-1.jpg")
    got = names(client.get(f"{API}/photos/{red}/similar", params={"k": 3}))
    assert got[0] == "red-2.png" and "red-1.jpg" not in got
    assert client.get(f"{API}/photos/999999/similar").status_code == 404


# ---- photos and files ----------------------------------------------------------------------
def test_photo_metadata_paths_thumbnails(client: TestClient, indexed: Library, photos: Path) -> None:
    shutil.copy(photos / "green-1.jpg", photos / "sub" / "green-copy.jpg")
    indexed.index()
    green = photo_id(indexed, "green-1.jpg")
    detail = client.get(f"{API}/photos/{green}").json()
    assert detail["photo"]["width"] == 96 and detail["photo"]["format"] == "JPEG"
    assert sorted(Path(p).name for p in detail["paths"]) == ["green-1.jpg", "green-copy.jpg"]
    for size in (256, 512):
        r = client.get(detail["thumbnails"][str(size)])
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(r.content)).size) <= size
    assert client.get(f"{API}/photos/{green}/thumbnail", params={"size": 300}).status_code == 422
    assert client.get(f"{API}/photos/424242").json() == {"detail": "photo 424242 is not in the library"}


def test_original_file_by_id_with_ranges(client: TestClient, indexed: Library, photos: Path) -> None:
    red = photo_id(indexed, "red-1.jpg")
    data = (photos / "red-1.jpg").read_bytes()
    full = client.get(f"{API}/photos/{red}/file")
    assert full.status_code == 200 and full.content == data and full.headers["accept-ranges"] == "bytes"
    part = client.get(f"{API}/photos/{red}/file", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"{API}/photos/{red}/file", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    assert client.get(f"{API}/photos/{red}/file", headers={"Range": f"bytes={len(data) + 10}-"}).status_code == 416
    # every copy gone (disk offline): a clear 404, and a thumbnail that was never made cannot be
    (photos / "red-1.jpg").unlink()
    r = client.get(f"{API}/photos/{red}/file")
    assert r.status_code == 404 and "offline" in r.json()["detail"]
    r = client.get(f"{API}/photos/{red}/thumbnail", params={"size": 512})
    assert r.status_code == 404 and "red-1.jpg" in r.json()["detail"]


def test_no_path_traversal(client: TestClient) -> None:
    secret = "root:"  # /etc/passwd's first line
    for url in (
        f"{API}/photos/..%2F..%2F..%2Fetc%2Fpasswd/file",
        f"{API}/photos/1/file?path=/etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2F..%2F..%2Fdesktop%2Fserver.py",
        f"{API}/photos/1%2F..%2F2/file",
    ):
        r = client.get(url)
        assert r.status_code in (404, 422) or (r.status_code == 200 and url.startswith(f"{API}/photos/1/file")), url
        assert secret not in r.text and "def create_app" not in r.text, url
        if r.status_code != 200:
            assert r.headers["content-type"].startswith("application/json"), url


# ---- captions, tags, albums -----------------------------------------------------------------
def test_edit_caption_and_tags(client: TestClient, indexed: Library) -> None:
    pid = photo_id(indexed, "yellow-1.jpg")
    r = client.put(f"{API}/photos/{pid}/caption", json={"text": "  sunflowers in a field "})
    assert r.json()["caption"] == "sunflowers in a field" and r.json()["caption_edited"]
    r = client.put(f"{API}/photos/{pid}/tags", json={"tags": ["summer", "Flowers"]})
    assert sorted(r.json()["tags"]) == ["Flowers", "summer"]
    r = client.patch(f"{API}/photos/{pid}/tags", json={"add": ["field"], "remove": ["flowers"]})
    assert sorted(r.json()["tags"]) == ["field", "summer"]
    assert client.get(f"{API}/photos/{pid}/text").json()["tags_edited"]
    assert {"tag": "summer", "count": 1} in client.get(f"{API}/tags").json()
    assert names(client.get(f"{API}/tags/summer/photos")) == ["yellow-1.jpg"]
    assert client.put(f"{API}/photos/{pid}/tags", json={"tags": [""]}).status_code == 422
    assert client.put(f"{API}/photos/{pid}/caption", json={"text": "x" * 2001}).status_code == 422
    r = client.put(f"{API}/photos/{pid}/caption", json={"text": ""})  # back to the machines'
    assert not r.json()["caption_edited"]
    assert client.put(f"{API}/photos/9999/caption", json={"text": "x"}).status_code == 404
    # the edit went through the Library's writer: another connection sees it
    assert indexed.photo_text(pid).tags_edited


def test_albums(client: TestClient) -> None:
    r = client.put(f"{API}/albums/Reds", json={"query": "red", "mode": "meaning", "max_photos": 2})
    assert r.status_code == 200 and r.json()["name"] == "Reds"
    assert [a["name"] for a in client.get(f"{API}/albums").json()] == ["Reds"]
    assert set(names(client.get(f"{API}/albums/Reds/photos"))) == {"red-1.jpg", "red-2.png"}
    assert client.delete(f"{API}/albums/Reds").status_code == 204
    assert client.delete(f"{API}/albums/Reds").status_code == 404
    assert client.get(f"{API}/albums/Reds/photos").status_code == 404
    assert client.put(f"{API}/albums/x", json={"query": "-only", "mode": "words"}).status_code == 400


# ---- read-only, tokens, hosts, CORS -------------------------------------------------------
def test_read_only_refuses_writes(indexed: Library, home: Path) -> None:
    forced = client_for(indexed, read_only=True)
    r = forced.put(f"{API}/photos/1/caption", json={"text": "x"})
    assert r.status_code == 403 and "--read-only" in r.json()["detail"]
    assert forced.post(f"{API}/index").status_code == 403
    assert forced.get(f"{API}/search", params={"q": "red"}).status_code == 200
    # another Lumen (the fixture's library) holds the writer lock: attach read-only, answer 409
    with Library(home, readonly=None) as second:
        assert second.readonly
        c = client_for(second)
        for r in (c.put(f"{API}/photos/1/tags", json={"tags": ["a"]}), c.put(f"{API}/albums/a", json={"query": "q"}),
                  c.post(f"{API}/index"), c.delete(f"{API}/albums/a")):
            assert r.status_code == 409 and "another Lumen" in r.json()["detail"]
        status = c.get(f"{API}/status").json()
        assert status["readonly"] and not status["writable"]
        assert names(c.get(f"{API}/search", params={"q": "red", "k": 1}))[0].startswith("red")


def test_tokens(indexed: Library) -> None:
    token = server.new_token(indexed.paths.home)
    stored = server.token_path(indexed.paths.home)
    assert token not in stored.read_text() and (stored.stat().st_mode & 0o777) == 0o600
    digest = server.stored_token_hash(indexed.paths.home)
    c = client_for(indexed, token_hash=digest)
    assert c.get(f"{API}/health").status_code == 200  # liveness stays open
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                    {"Authorization": f"Bearer {token}x"}):
        r = c.get(f"{API}/status", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
        assert "token" in r.json()["detail"]
    assert c.get(f"{API}/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert server.new_token(indexed.paths.home) != token  # a new token replaces the old one
    assert server.stored_token_hash(indexed.paths.home) != digest


def test_network_binding_needs_a_token(home: Path) -> None:
    with pytest.raises(LibraryError, match="--new-token"):
        server.serve(server.ServeOptions(home=str(home), host="0.0.0.0", port=free_port()))
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and server.is_loopback("localhost")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("192.168.1.5")


def test_new_token_command(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from desktop.cli import main

    assert main(["serve", "--new-token", "--home", str(home)]) == 0
    token = capsys.readouterr().out.split("\n\n")[1].strip()
    assert server.token_matches(token, server.stored_token_hash(home) or "")


def test_host_header_and_cors(indexed: Library) -> None:
    c = client_for(indexed)
    r = c.get(f"{API}/status", headers={"Host": "attacker.example"})  # DNS rebinding
    assert r.status_code == 400 and "loopback" in r.json()["detail"]
    r = c.get(f"{API}/search", params={"q": "red"}, headers={"Origin": "https://elsewhere.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    cors = client_for(indexed, cors_origins=("https://app.example",))
    r = cors.options(f"{API}/search", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    page = c.get("/")
    assert page.status_code == 200 and "<title>Lumen</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert c.get("/static/app.js").status_code == 200


def test_requests_are_time_bounded(indexed: Library) -> None:
    c = client_for(indexed, request_timeout_s=1e-6)
    r = c.get(f"{API}/search", params={"q": "red"})
    assert r.status_code == 504 and "longer than" in r.json()["detail"]


@pytest.mark.slow
def test_model_stays_loaded_while_used_and_ends_when_idle(home: Path, photos: Path) -> None:
    """The server's Library runs the model in its own process with the window's idle
    release (model_host); a cached query needs no model at all."""
    pytest.importorskip("open_clip")
    from desktop.settings import MODEL_IDLE_S

    assert server.ServeOptions().model_idle_s == MODEL_IDLE_S  # `lumen serve` uses the window's idle time
    tiny = "clip:lumen-tiny:random"
    with Library(home, encoder=tiny, device="cpu") as setup:  # indexed in-process: one model process below
        setup.add_root(photos)
        setup.index()
    with Library(home, device="cpu", model_process=True, model_idle_s=1.0) as lib:
        c = client_for(lib)
        first = c.get(f"{API}/search", params={"q": "a red wall", "mode": "meaning"}).json()
        pid = lib.encoder.pid
        assert pid is not None and first["count"] == 12
        deadline = time.monotonic() + 30
        while lib.encoder.pid is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lib.encoder.pid is None  # released after the idle time
        again = c.get(f"{API}/search", params={"q": "a red wall", "mode": "meaning"}).json()
        assert again == first and lib.encoder.pid is None  # from the query cache: no model started
        # (a new query starts the process again: tests/test_model_host.py)


# ---- indexing and progress -------------------------------------------------------------------
def test_index_runs_in_background_with_progress(lib: Library, photos: Path) -> None:
    lib.add_root(photos)
    c = client_for(lib, stream_max_s=0.6, stream_interval_s=0.2)
    assert c.get(f"{API}/search", params={"q": "red", "mode": "meaning"}).json()["count"] == 0
    r = c.post(f"{API}/index")
    assert r.status_code == 202 and r.json()["started"]
    deadline = time.monotonic() + 30
    while c.get(f"{API}/progress").json()["state"] == "indexing" and time.monotonic() < deadline:
        time.sleep(0.1)
    p = c.get(f"{API}/progress").json()
    assert p["state"] == "idle" and p["to_encode"] == 0 and p["photos"] == 12, p
    assert names(c.get(f"{API}/search", params={"q": "red", "k": 1, "mode": "meaning"}))[0].startswith("red")
    with c.stream("GET", f"{API}/progress/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        body = "".join(stream.iter_text())
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert events and events[-1]["state"] == "idle" and events[-1]["photos"] == 12


# ---- schema fuzzing -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("with_token", [False, True], ids=["open", "token"])
def test_schema_fuzzing_every_endpoint(indexed: Library, with_token: bool) -> None:
    """schemathesis over every operation: no 5xx, responses match the schema (status codes,
    content types, bodies); with a token, wrong auth must be refused. Bounded: a few
    examples per operation (about 10 s)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    # Left out: "a schema-valid request is accepted". A filter naming a folder that is not a
    # library, or a words query of exclusions only, is schema-valid and still answered 400
    # with a message, on purpose. Every conformance check and "no 5xx" stay on.
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    token = server.new_token(indexed.paths.home) if with_token else None
    app = create_app(indexed, ServerConfig(allowed_hosts=("testserver",), stream_max_s=0.2, stream_interval_s=0.1,
                                           token_hash=server.stored_token_hash(indexed.paths.home)))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 19
    failures: list[str] = []
    for operation in operations:
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: object) -> None:
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])  # type: ignore[attr-defined]
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - gather every operation's failure, then report all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


# ---- the real server process ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "serve", "--home", str(home), "--port", str(port),
                             "--encoder", "colors", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"lumen serve exited {proc.returncode}: {proc.stdout.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}{API}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("lumen serve did not answer within 30 s")


def stop_server(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)  # Ctrl+C: uvicorn shuts down, then lumen exits 130 like any command
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Finished server process" in out, out
    return out


@pytest.mark.slow
def test_real_server_process_indexes_while_serving(home: Path, photos: Path) -> None:
    with Library(home, encoder="colors") as setup:
        setup.add_root(photos)
    proc, url = start_server(home, "--watch")
    try:
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}{API}/progress").json()["state"] != "watching" and time.monotonic() < deadline:
            time.sleep(0.2)
        r = httpx.get(f"{url}{API}/search", params={"q": "red", "k": 2, "mode": "meaning"})
        assert {Path(h["path"]).name for h in r.json()["results"]} == {"red-1.jpg", "red-2.png"}
        # a new photo arrives: the server's watcher indexes it while it answers searches
        make_photo(photos / "new" / "white-3.jpg", "white", seed=77)
        found = False
        while not found and time.monotonic() < deadline + 30:
            r = httpx.get(f"{url}{API}/search", params={"q": "white", "k": 3, "mode": "meaning"})
            found = "white-3.jpg" in {Path(h["path"]).name for h in r.json()["results"]}
            time.sleep(0.2)
        assert found
        # the server holds the writer lock: this process attaches read-only, as a second window would
        with Library(home, readonly=None) as other:
            assert other.readonly
        assert httpx.get(f"{url}{API}/status").json()["writable"]
        r = httpx.get(f"{url}{API}/status", headers={"Host": "evil.example"})
        assert r.status_code == 400
    finally:
        out = stop_server(proc)
    assert "Traceback" not in out
    with Library(home) as after:  # the lock was released on exit
        assert not after.readonly


@pytest.mark.slow
def test_real_server_process_read_only_beside_a_writer(indexed: Library, home: Path) -> None:
    proc, url = start_server(home)  # the fixture's library (a window) holds the writer lock
    try:
        assert httpx.get(f"{url}{API}/status").json()["readonly"]
        r = httpx.put(f"{url}{API}/photos/1/caption", json={"text": "x"})
        assert r.status_code == 409 and "another Lumen" in r.json()["detail"]
        r = httpx.get(f"{url}{API}/search", params={"q": "red", "k": 1, "mode": "meaning"})
        assert r.json()["results"][0]["path"].endswith(("red-1.jpg", "red-2.png"))
    finally:
        stop_server(proc)


# ---- a real browser -------------------------------------------------------------------------
def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
def test_web_page_in_headless_chromium(indexed: Library, home: Path, photos: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = find_chromium()
    red, green = photo_id(indexed, "red-1.jpg"), photo_id(indexed, "green-1.jpg")
    indexed.set_caption(red, "a red wall in the sun")
    indexed.set_tags(red, ["wall", "sunny"])
    indexed.close()  # the server process becomes the writer
    proc, url = start_server(home)
    try:
        with playwright.sync_playwright() as pw:
            try:
                browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"]) if chromium \
                    else pw.chromium.launch()
            except Exception as exc:  # noqa: BLE001 - no browser on this machine
                pytest.skip(f"no headless Chromium: install Debian's `chromium` or run "
                            f"`playwright install chromium` ({str(exc).splitlines()[0]})")
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)  # a phone
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.fill("#q", "red")
            page.press("#q", "Enter")
            page.wait_for_selector(".cell img[src^='blob:']", timeout=15_000)
            cells = page.locator(".cell")
            assert cells.count() >= 2
            assert "photos for" in page.inner_text("#message")
            page.locator(f".cell[data-id='{red}']").click()
            page.wait_for_selector("#viewer[open] #view-img[src^='blob:']", timeout=10_000)
            assert page.inner_text("#view-caption") == "a red wall in the sun"
            assert "sunny" in page.inner_text("#view-tags")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, "the page scrolls sideways on a phone"
            # drop-an-image path: the file picker feeds the same upload as a drop
            page.locator("#viewer .close button").click()
            page.set_input_files("#pick", str(photos / "green-1.jpg"))
            page.locator("#message", has_text="like green-1.jpg").wait_for(timeout=10_000)  # (CSP: no eval)
            assert page.locator(".cell").first.get_attribute("data-id") == str(green)
            assert not errors, errors
            browser.close()
    finally:
        stop_server(proc)
