"""`lumen serve`'s FastAPI app over the Library facade, and the server process."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from desktop import __version__, media
from desktop.catalog import Photo
from desktop.encoders import EncoderError
from desktop.library import Filters, Library, LibraryError, Progress, ReadOnlyError
from desktop.server.models import (
    API,
    ERRORS,
    MAX_JSON_BYTES,
    MAX_K,
    MAX_QUERY_CHARS,
    MAX_TAG_CHARS,
    ORIGINAL_TYPES,
    THUMB_SIZES,
    AlbumIn,
    AlbumName,
    AlbumOut,
    Bearer,
    CaptionIn,
    FilterDate,
    FilterFolder,
    FilterRoot,
    FilterType,
    HealthOut,
    HitOut,
    K,
    PhotoDetailOut,
    PhotoId,
    PhotoOut,
    ProgressOut,
    ResultsOut,
    RootOut,
    StartedOut,
    StatusOut,
    TagCountOut,
    TagEditIn,
    TagsIn,
    TextOut,
    ThumbSize,
)
from desktop.server.security import is_loopback, stored_token_hash, token_matches
from desktop.settings import MODEL_IDLE_S

log = logging.getLogger("desktop.server")

WEB = Path(__file__).resolve().parents[2] / "resources" / "web"

# ---- configuration --------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    read_only: bool = False  # refuse writes even when this process holds the writer lock
    token_hash: str | None = None  # required on every API request when set
    cors_origins: tuple[str, ...] = ()
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000  # below PIL's bomb warning (89 MP); checked from the header
    request_timeout_s: float = 30.0
    stream_max_s: float = 600.0  # a progress stream ends then (EventSource reconnects)
    stream_interval_s: float = 1.0
    allowed_hosts: tuple[str, ...] | None = None  # None: loopback names when bound to loopback

    def hosts(self) -> tuple[str, ...] | None:
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        return ("127.0.0.1", "localhost", "::1") if is_loopback(self.host) else None


# ---- background indexing ----------------------------------------------------------------
class IndexRunner:
    """One indexing run (then optionally watching) in a thread, with its last progress."""

    def __init__(self, lib: Library) -> None:
        self.lib = lib
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.state = "idle"  # idle | indexing | watching | failed
        self.progress: Progress | None = None
        self.error: str | None = None

    def _on_progress(self, p: Progress) -> None:
        self.progress = p

    def start(self, watch: bool = False) -> bool:
        """Start a run unless one is going; True if this call started it."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self.stop.clear()
            self.state, self.error, self.progress = "indexing", None, None
            self._thread = threading.Thread(target=self._run, args=(watch,), daemon=True,
                                            name="lumen-serve-index")
            self._thread.start()
            return True

    def _run(self, watch: bool) -> None:
        try:
            self.lib.index(progress=self._on_progress, cancel=self.stop)
            if watch and not self.stop.is_set():
                self.state = "watching"
                self.lib.watch(self.stop, progress=self._on_progress)
            self.state = "idle"
        except (LibraryError, EncoderError) as exc:
            log.error("indexing failed: %s", exc)
            self.state, self.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - report it in /progress instead of killing the thread silently
            log.exception("indexing failed")
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"

    def close(self, timeout: float = 30.0) -> None:
        self.stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)



# ---- the app -----------------------------------------------------------------------------
def create_app(lib: Library, config: ServerConfig | None = None, runner: IndexRunner | None = None) -> FastAPI:
    """The HTTP API and web page over an open Library (the caller owns and closes it)."""
    config = config or ServerConfig()
    runner = runner or IndexRunner(lib)
    app = FastAPI(
        title="Lumen",
        version=__version__,
        description="Search a Lumen photo library by meaning and by words; read and edit captions, "
        "tags and smart albums. Send `Authorization: Bearer TOKEN` when the server has a token.",
        responses=ERRORS,
    )
    app.state.lib, app.state.config, app.state.runner = lib, config, runner
    allowed_hosts = config.hosts()

    def authorize(cred: Bearer) -> None:
        if config.token_hash is None:
            return
        if cred is None or not token_matches(cred.credentials, config.token_hash):
            raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    def writable() -> None:
        if config.read_only:
            raise HTTPException(403, "this server was started with --read-only: edits are refused")
        if lib.readonly:
            raise HTTPException(409, "another Lumen is writing this library, so this server is read-only; "
                                     "edit there, or close it and restart `lumen serve`")

    def photo_or_404(photo_id: int) -> Photo:
        photo = lib.photo(photo_id)
        if photo is None:
            raise HTTPException(404, f"photo {photo_id} is not in the library")
        return photo

    # ---- errors: always JSON, never a traceback
    @app.exception_handler(ReadOnlyError)
    async def _readonly(_: Request, exc: ReadOnlyError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 409)

    @app.exception_handler(LibraryError)
    async def _library(_: Request, exc: LibraryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 400)

    @app.exception_handler(EncoderError)
    async def _encoder(_: Request, exc: EncoderError) -> JSONResponse:
        return JSONResponse({"detail": f"the encoder is not available: {exc}"}, 503)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server's log"}, 500)

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Response:
        if allowed_hosts is not None and (request.url.hostname or "") not in allowed_hosts:
            return JSONResponse({"detail": "this server only answers requests addressed to loopback "
                                           "(Host header); use --host to serve a network"}, 400)
        try:
            response = await asyncio.wait_for(call_next(request), config.request_timeout_s)
        except TimeoutError:
            return JSONResponse({"detail": f"the request took longer than {config.request_timeout_s:g} s"}, 504)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
                "connect-src 'self'; frame-ancestors 'none'",
            )
        return response

    app.add_middleware(BodyLimit, default=MAX_JSON_BYTES,
                       limits={f"{API}/search/image": config.max_upload_bytes + 64 * 1024})  # + multipart framing
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])

    # ---- unauthenticated: health and the page
    @app.get(f"{API}/health", response_model=HealthOut, tags=["status"])
    def health() -> HealthOut:
        """Liveness for monitors; reveals nothing about the library."""
        return HealthOut(status="ok", version=__version__)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    # Declared (and in the schema) only when there is a token to check: the schema tells the truth.
    api = APIRouter(prefix=API, dependencies=[Depends(authorize)] if config.token_hash else [])

    def filters_of(root: str | None, folder: str | None, date_from: str | None, date_to: str | None,
                   types: Sequence[str] | None) -> Filters:
        return Filters(root or None, folder or None, date_from or None, date_to or None,
                       tuple(t.lower().lstrip(".") for t in types or () if t))


    def progress_now() -> ProgressOut:
        p = runner.progress
        try:
            to_encode = lib.catalog.count_to_encode(lib.encoder.id)
        except EncoderError:
            to_encode = None
        return ProgressOut(
            state=runner.state, error=runner.error, to_encode=to_encode,
            photos=lib.catalog.counts().get("photos", 0),
            **({"stage": p.stage, "done": p.done, "total": p.total, "rate": p.rate, "eta_s": p.eta_s,
                "message": p.message} if p is not None else {}),
        )

    # ---- search
    @api.get("/search", response_model=ResultsOut, tags=["search"])
    def search(
        q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S",
                                description='e.g. "a dog on the beach", "2:dog + beach - people", '
                                            '"tag:sunset -people", "caption:\\"red car\\""')],
        k: K = 50,
        mode: Annotated[Literal["both", "words", "meaning"],
                        Query(description="words (captions, tags), meaning (the encoder) or both fused")] = "both",
        exact: Annotated[bool, Query(description="meaning only: exact search instead of the ANN index")] = False,
        root: FilterRoot = None, folder: FilterFolder = None, date_from: FilterDate = None,
        date_to: FilterDate = None, type: FilterType = None,  # noqa: A002 - the query parameter's name
    ) -> ResultsOut:
        """Text search with the full query syntax and the window's filters."""
        filters = filters_of(root, folder, date_from, date_to, type)
        hits = (lib.search(q, k=k, filters=filters, exact=exact) if mode == "meaning"
                else lib.find(q, k, filters, mode))
        return ResultsOut(query=q, mode=mode, count=len(hits), results=[HitOut.of(h) for h in hits])

    @api.post("/search/image", response_model=ResultsOut, tags=["search"])
    def search_image(
        file: Annotated[UploadFile, File(description="an example photo (JPEG, PNG, HEIC, ...)")],
        q: Annotated[str | None, Form(max_length=MAX_QUERY_CHARS, description="words to add to the example")] = None,
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 50,
    ) -> ResultsOut:
        """Search by an uploaded example image (size and pixel limits apply), optionally with words."""
        if file.size is not None and file.size > config.max_upload_bytes:
            raise HTTPException(413, f"the upload is {file.size} bytes; the limit is {config.max_upload_bytes}")
        suffix = os.path.splitext(file.filename or "")[1].lower()
        suffix = suffix if media.is_media_name("x" + suffix) else ".img"
        upload_dir = lib.paths.cache / "uploads"
        try:
            upload_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=suffix, dir=upload_dir)
        except OSError:  # a read-only data folder (searching still works): the system's temp dir
            fd, tmp = tempfile.mkstemp(prefix="lumen-upload-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as out:
                total = 0
                while chunk := file.file.read(1 << 20):
                    total += len(chunk)
                    if total > config.max_upload_bytes:
                        raise HTTPException(413, f"the upload is over the limit of {config.max_upload_bytes} bytes")
                    out.write(chunk)
            _check_image(tmp, config.max_pixels, file.filename)
            hits = lib.search(q.strip() if q and q.strip() else None, [tmp], k=k)
        finally:
            os.unlink(tmp)
        return ResultsOut(query=q, mode="image", count=len(hits), results=[HitOut.of(h) for h in hits])

    @api.get("/photos/{photo_id}/similar", response_model=ResultsOut, tags=["search"])
    def similar(
        photo_id: PhotoId, k: K = 50, root: FilterRoot = None, folder: FilterFolder = None,
        date_from: FilterDate = None, date_to: FilterDate = None, type: FilterType = None,  # noqa: A002
    ) -> ResultsOut:
        """Photos that look like this one (near-duplicates first): image search by photo id."""
        photo_or_404(photo_id)
        hits = lib.similar(photo_id, k=k, filters=filters_of(root, folder, date_from, date_to, type))
        return ResultsOut(mode="similar", count=len(hits), results=[HitOut.of(h) for h in hits])

    # ---- photos
    @api.get("/photos/{photo_id}", response_model=PhotoDetailOut, tags=["photos"])
    def photo(photo_id: PhotoId) -> PhotoDetailOut:
        """Metadata, every path holding the photo's bytes, caption and tags."""
        p = photo_or_404(photo_id)
        return PhotoDetailOut(
            photo=PhotoOut.of(p), paths=lib.paths_of(photo_id), text=text_of(photo_id),
            thumbnails={str(s): f"{API}/photos/{photo_id}/thumbnail?size={s}" for s in THUMB_SIZES},
            file=f"{API}/photos/{photo_id}/file",
        )

    def text_of(photo_id: int) -> TextOut:
        t = lib.photo_text(photo_id)
        if t is None:
            return TextOut()
        return TextOut(caption=t.caption, caption_source=t.caption_source, caption_edited=t.caption_edited,
                       tags=list(t.tags), tags_edited=t.tags_edited)

    @api.get("/photos/{photo_id}/thumbnail", tags=["photos"], response_class=FileResponse,
             responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG thumbnail"}})
    def thumbnail(photo_id: PhotoId, size: Annotated[ThumbSize, Query()] = ThumbSize.small) -> FileResponse:
        """A JPEG whose longer side is `size` (the window's thumbnail cache, keyed by content hash)."""
        p = photo_or_404(photo_id)
        try:
            target = lib.thumbnail(p, int(size))
        except LibraryError as exc:
            raise HTTPException(404, f"no thumbnail: {exc}") from exc
        return FileResponse(target, media_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=86400"})

    @api.get("/photos/{photo_id}/file", tags=["photos"], response_class=FileResponse,
             responses={200: {"content": ORIGINAL_TYPES, "description": "the original"},
                        206: {"content": ORIGINAL_TYPES, "description": "a byte range"},
                        416: {"description": "the range is outside the file"}})
    def original(photo_id: PhotoId) -> FileResponse:
        """The original file, by photo id only (never by a path); supports HTTP Range."""
        photo_or_404(photo_id)
        for path in lib.paths_of(photo_id):
            if os.path.isfile(path):
                return FileResponse(path, filename=os.path.basename(path), content_disposition_type="inline",
                                    headers={"Cache-Control": "private, no-cache"})
        raise HTTPException(404, f"photo {photo_id}: no copy of the file is reachable (its disk is offline?)")

    # ---- captions and tags
    @api.get("/photos/{photo_id}/text", response_model=TextOut, tags=["captions and tags"])
    def get_text(photo_id: PhotoId) -> TextOut:
        photo_or_404(photo_id)
        return text_of(photo_id)

    @api.put("/photos/{photo_id}/caption", response_model=TextOut, tags=["captions and tags"],
             dependencies=[Depends(writable)])
    def put_caption(photo_id: PhotoId, body: CaptionIn) -> TextOut:
        """Your caption for the photo (a machine never overwrites it); empty: back to the machines'."""
        photo_or_404(photo_id)
        lib.set_caption(photo_id, body.text.strip() if body.text and body.text.strip() else None)
        return text_of(photo_id)

    @api.put("/photos/{photo_id}/tags", response_model=TextOut, tags=["captions and tags"],
             dependencies=[Depends(writable)])
    def put_tags(photo_id: PhotoId, body: TagsIn) -> TextOut:
        photo_or_404(photo_id)
        lib.set_tags(photo_id, None if body.tags is None else [t.strip() for t in body.tags])
        return text_of(photo_id)

    @api.patch("/photos/{photo_id}/tags", response_model=TextOut, tags=["captions and tags"],
               dependencies=[Depends(writable)])
    def patch_tags(photo_id: PhotoId, body: TagEditIn) -> TextOut:
        """Add and remove tags, starting from the ones shown now."""
        photo_or_404(photo_id)
        lib.edit_tags(photo_id, [t.strip() for t in body.add], [t.strip() for t in body.remove])
        return text_of(photo_id)

    @api.get("/tags", response_model=list[TagCountOut], tags=["captions and tags"])
    def tags(contains: Annotated[str | None, Query(max_length=MAX_TAG_CHARS)] = None,
             limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> list[TagCountOut]:
        return [TagCountOut(tag=t, count=n) for t, n in lib.tag_counts(contains or None, limit)]

    @api.get("/tags/{tag}/photos", response_model=ResultsOut, tags=["captions and tags"])
    def tag_photos(tag: Annotated[str, PathParam(max_length=MAX_TAG_CHARS)], k: K = 100) -> ResultsOut:
        hits = lib.photos_with_tag(tag)[:k]
        return ResultsOut(query=tag, mode="tag", count=len(hits), results=[HitOut.of(h) for h in hits])

    # ---- albums
    def album_out(a: Any) -> AlbumOut:
        return AlbumOut(name=a.name, query=a.query, mode=a.mode, filters=dict(a.filters),
                        max_photos=a.max_photos, min_score=a.min_score)

    @api.get("/albums", response_model=list[AlbumOut], tags=["albums"])
    def albums() -> list[AlbumOut]:
        """Smart albums: saved searches, evaluated when opened."""
        return [album_out(a) for a in lib.albums()]

    @api.put("/albums/{name}", response_model=AlbumOut, tags=["albums"], dependencies=[Depends(writable)])
    def put_album(name: AlbumName, body: Annotated[AlbumIn, Body()]) -> AlbumOut:
        f = body.filters
        filters = Filters(f.root, f.folder, f.date_from, f.date_to, tuple(f.exts))
        return album_out(lib.save_album(name, body.query, body.mode, filters, body.max_photos, body.min_score))

    @api.delete("/albums/{name}", status_code=204, tags=["albums"], dependencies=[Depends(writable)],
                response_class=Response)
    def delete_album(name: AlbumName) -> Response:
        if not lib.delete_album(name):
            raise HTTPException(404, f"no smart album named {name!r}")
        return Response(status_code=204)

    @api.get("/albums/{name}/photos", response_model=ResultsOut, tags=["albums"])
    def album_photos(name: AlbumName, k: K = 200) -> ResultsOut:
        album = next((a for a in lib.albums() if a.name == name), None)
        if album is None:
            raise HTTPException(404, f"no smart album named {name!r}")
        hits = lib.album_photos(album)[:k]
        return ResultsOut(query=album.query, mode=album.mode, count=len(hits), results=[HitOut.of(h) for h in hits])

    # ---- status and progress
    @api.get("/status", response_model=StatusOut, tags=["status"])
    def status() -> StatusOut:
        """Folders and counts, encoder, index, what is still to encode, and indexing progress."""
        st = lib.status()
        return StatusOut(
            version=__version__, home=st.home, encoder=st.encoder, encoder_id=st.encoder_id,
            encoder_loaded=bool(getattr(lib.query_encoder(), "loaded", True)) if st.encoder_id else False,
            readonly=st.readonly or config.read_only,
            readonly_reason=("started with --read-only" if config.read_only else
                             "another Lumen is writing this library" if st.readonly else None),
            writable=not (st.readonly or config.read_only),
            roots=[RootOut(path=r.root.path, online=r.root.online, watch=r.root.watch, watching=r.watching,
                           counts=r.counts) for r in st.roots],
            vectors=st.vectors, to_encode=st.to_encode, index_size=st.index_size,
            index_built_at=st.index_built_at, skipped=len(st.skipped),
            query_cache=lib.query_cache_stats(), progress=progress_now(),
        )

    @api.get("/progress", response_model=ProgressOut, tags=["status"])
    def progress() -> ProgressOut:
        """Indexing progress, for polling."""
        return progress_now()

    @api.get("/progress/stream", tags=["status"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "server-sent events: `progress` with a ProgressOut as data"}})
    def progress_stream() -> StreamingResponse:
        """The same as /progress as server-sent events: one when it changes (and every 15 s);
        the stream ends after a while and EventSource reconnects."""

        def events() -> Iterator[str]:
            end = time.monotonic() + config.stream_max_s
            last, last_sent = None, 0.0
            yield f"retry: {int(config.stream_interval_s * 1000)}\n\n"
            while True:
                now = time.monotonic()
                data = progress_now().model_dump_json()
                if data != last or now - last_sent >= 15:
                    yield f"event: progress\ndata: {data}\n\n"
                    last, last_sent = data, now
                if now >= end:
                    return
                time.sleep(min(config.stream_interval_s, max(end - now, 0.0)))

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.post("/index", response_model=StartedOut, status_code=202, tags=["status"],
              dependencies=[Depends(writable)])
    def start_index() -> StartedOut:
        """Scan, encode and index every library folder in the background (one run at a time)."""
        started = runner.start(watch=False)
        return StartedOut(started=started, progress=progress_now())

    app.include_router(api)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _plain(exc.errors())}, 422)

    return app


class BodyLimit:
    """Refuse request bodies over a byte limit (per path), by Content-Length up front and by
    counting while the body is read (a chunked upload has no length), always as JSON 413."""

    def __init__(self, app: Any, default: int, limits: dict[str, int]) -> None:
        self.app, self.default, self.limits = app, default, limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        too_large = f"the request body is over the limit of {limit} bytes"
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await JSONResponse({"detail": too_large if length.isdigit() else "bad Content-Length"},
                               413 if length.isdigit() else 400)(scope, receive, send)
            return
        total = 0

        async def limited() -> dict[str, Any]:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:  # raised inside the endpoint's body read: answered by FastAPI as JSON
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)


def _plain(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as FastAPI documents them (loc, msg, type), without echoing input."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors]


def _check_image(path: str, max_pixels: int, name: str | None) -> None:
    """Refuse what is not an image, or too many pixels to decode safely, from its header."""
    label = name or "the upload"
    try:
        meta = media.read_meta(path)
    except media.MediaError as exc:
        if isinstance(exc.__cause__, Image.DecompressionBombError) or "decompression bomb" in exc.reason:
            raise HTTPException(413, f"{label}: too many pixels ({exc.reason}; decompression bomb guard)") from exc
        raise HTTPException(415, f"{label}: not an image Lumen can read ({exc.reason})") from exc
    pixels = (meta.width or 0) * (meta.height or 0)
    if pixels > max_pixels:
        raise HTTPException(413, f"{label}: {meta.width}x{meta.height} pixels is more than the limit of "
                                 f"{max_pixels / 1e6:g} MP")


# ---- `lumen serve` ------------------------------------------------------------------------
@dataclass
class ServeOptions:
    home: str | None = None
    encoder: str | None = None
    weights: str | None = None
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8765
    read_only: bool = False
    watch: bool = False
    cors_origins: list[str] = field(default_factory=list)
    model_idle_s: float = MODEL_IDLE_S
    log_level: str = "info"


def serve(opts: ServeOptions) -> int:
    """Open the library, check the safety rules, and run uvicorn until Ctrl+C."""
    import uvicorn

    token_hash = stored_token_hash(opts.home)
    if not is_loopback(opts.host) and token_hash is None:
        raise LibraryError(
            f"serving on {opts.host} makes the library reachable from the network, so it needs a token: "
            "run `lumen serve --new-token` first (it is shown once), then send it as "
            "`Authorization: Bearer TOKEN`"
        )
    lib = Library(opts.home, encoder=opts.encoder, weights=opts.weights, device=opts.device,
                  readonly=True if opts.read_only else None, model_process=True,
                  model_idle_s=opts.model_idle_s)
    runner = IndexRunner(lib)
    try:
        config = ServerConfig(host=opts.host, port=opts.port, read_only=opts.read_only, token_hash=token_hash,
                              cors_origins=tuple(opts.cors_origins))
        app = create_app(lib, config, runner)
        # Load the model now, not in the first search (which would wait for it, maybe past the
        # request time limit); it still ends after the idle time like the window's.
        threading.Thread(target=_warm_up, args=(lib,), daemon=True, name="lumen-serve-warm").start()
        if opts.watch:
            if lib.readonly:
                log.warning("--watch ignored: this server is read-only (%s)",
                            "--read-only" if opts.read_only else "another Lumen is writing this library")
            else:
                runner.start(watch=True)
        log.info("Lumen %s serving %s on http://%s:%d/ (%s%s)", __version__, lib.paths.home, opts.host, opts.port,
                 "read-only" if lib.readonly else "writer", ", token required" if token_hash else "")
        server = uvicorn.Server(uvicorn.Config(
            app, host=opts.host, port=opts.port, log_level=opts.log_level, server_header=False,
            timeout_keep_alive=5, limit_concurrency=256, timeout_graceful_shutdown=5,
        ))
        server.run()
    finally:
        runner.close()
        lib.close()
    return 0


def _warm_up(lib: Library) -> None:
    try:
        load = getattr(lib.query_encoder(), "load", None)
        if callable(load):
            load()
    except (LibraryError, EncoderError) as exc:  # said again, with the reason, by the first search
        log.warning("the encoder is not ready: %s", exc)
