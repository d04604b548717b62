"""`lumen serve`'s API shapes and limits: request and response models, shared parameters."""

from __future__ import annotations

import dataclasses
import logging
from enum import IntEnum
from typing import Annotated, Any, Literal

from fastapi import Depends, Query
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from desktop.catalog import Photo
from desktop.library import Hit

log = logging.getLogger("desktop.server")

API = "/api/v1"

# Request bounds (part of the API contract, so they are in the OpenAPI schema).
MAX_QUERY_CHARS = 500
MAX_K = 500
MAX_TEXT_CHARS = 2000  # a caption
MAX_TAGS = 100
MAX_TAG_CHARS = 64
MAX_NAME_CHARS = 100
MAX_JSON_BYTES = 64 * 1024  # any body but an upload
THUMB_SIZES = (256, 512)  # what the window caches on disk (jobs.THUMB_DISK_SIZE and 2x)


class ThumbSize(IntEnum):
    """The thumbnail sizes the window caches on disk (jobs.THUMB_DISK_SIZE and 2x for HiDPI)."""

    small = 256
    large = 512



# ---- response and request models --------------------------------------------------------
class ErrorOut(BaseModel):
    detail: str


class PhotoOut(BaseModel):
    id: int
    hash: str
    path: str
    size: int
    width: int | None
    height: int | None
    format: str | None
    taken_at: str | None
    camera: str | None
    status: str
    reason: str | None
    online: bool
    mtime: float

    @classmethod
    def of(cls, p: Photo) -> PhotoOut:
        return cls(**dataclasses.asdict(p))


class HitOut(BaseModel):
    id: int
    score: float
    path: str
    taken_at: str | None
    width: int | None
    height: int | None
    online: bool
    words: bool = Field(False, description="matched by the words of its caption or tags")
    similarity: float | None = Field(None, description="cosine similarity to the query (meaning)")
    snippet: str | None = Field(None, description="the matching words in [brackets]")
    thumbnail: str
    file: str

    @classmethod
    def of(cls, h: Hit) -> HitOut:
        p = h.photo
        return cls(id=p.id, score=float(h.score), path=p.path, taken_at=p.taken_at, width=p.width,
                   height=p.height, online=p.online, words=bool(getattr(h, "words", False)),
                   similarity=getattr(h, "similarity", float(h.score)), snippet=getattr(h, "snippet", None),
                   thumbnail=f"{API}/photos/{p.id}/thumbnail", file=f"{API}/photos/{p.id}/file")


class ResultsOut(BaseModel):
    query: str | None = None
    mode: str
    count: int
    results: list[HitOut]


class TextOut(BaseModel):
    caption: str | None = None
    caption_source: str | None = None
    caption_edited: bool = False
    tags: list[str] = []
    tags_edited: bool = False


class PhotoDetailOut(BaseModel):
    photo: PhotoOut
    paths: list[str]
    text: TextOut
    thumbnails: dict[str, str]
    file: str


class CaptionIn(BaseModel):
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS,
                             description="your caption; empty or null returns to the machines'")


Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS, pattern=r"\S")]


class TagsIn(BaseModel):
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS,
                                   description="your tag set; null returns to the machines'")


class TagEditIn(BaseModel):
    add: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    remove: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


class TagCountOut(BaseModel):
    tag: str
    count: int


class FiltersModel(BaseModel):
    root: str | None = Field(None, max_length=4096)
    folder: str | None = Field(None, max_length=4096)
    date_from: str | None = Field(None, max_length=32)
    date_to: str | None = Field(None, max_length=32)
    exts: list[Annotated[str, Field(max_length=16)]] = Field(default_factory=list, max_length=20)


class AlbumIn(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S")
    mode: Literal["words", "meaning", "both"] = "both"
    filters: FiltersModel = Field(default_factory=FiltersModel)
    max_photos: int | None = Field(None, ge=1, le=10_000)
    min_score: float | None = Field(None, ge=-1.0, le=1.0)


class AlbumOut(BaseModel):
    name: str
    query: str
    mode: str
    filters: dict[str, Any]
    max_photos: int | None
    min_score: float | None


class RootOut(BaseModel):
    path: str
    online: bool
    watch: bool
    watching: str
    counts: dict[str, int]


class ProgressOut(BaseModel):
    state: str = Field(description="idle | indexing | watching | failed (this server's indexing)")
    stage: str | None = None
    done: int | None = None
    total: int | None = None
    rate: float | None = None
    eta_s: float | None = None
    message: str | None = None
    error: str | None = None
    to_encode: int | None = Field(None, description="photos without a vector yet (any writer's work)")
    photos: int = 0


class StatusOut(BaseModel):
    version: str
    home: str
    encoder: str
    encoder_id: str | None
    encoder_loaded: bool = Field(description="the model is in memory (false: the next search waits for it)")
    readonly: bool
    readonly_reason: str | None
    writable: bool
    roots: list[RootOut]
    vectors: dict[str, int]
    to_encode: int | None
    index_size: int
    index_built_at: float | None
    skipped: int
    query_cache: dict[str, int]
    progress: ProgressOut


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str


class StartedOut(BaseModel):
    started: bool
    progress: ProgressOut


ORIGINAL_TYPES = {"image/*": {}, "video/*": {}, "application/octet-stream": {}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": why}
    for code, why in {
        400: "bad request (the message says what)",
        401: "missing or wrong bearer token",
        403: "refused (read-only server)",
        404: "no such photo, album or file",
        409: "read-only: another Lumen is writing this library",
        413: "too large (body, upload or image pixels)",
        415: "not an image Lumen can read",
        503: "the encoder is not available",
        504: "took longer than the request time limit",
    }.items()
}


# Query parameters shared by the search endpoints (module level: the annotations are strings).
FilterRoot = Annotated[str | None, Query(max_length=4096, description="only this library folder")]
FilterFolder = Annotated[str | None, Query(max_length=4096, description="only below this folder")]
FilterDate = Annotated[str | None, Query(max_length=32, description="taken on/after, before (YYYY-MM-DD)")]
FilterType = Annotated[list[Annotated[str, Field(max_length=16)]] | None,
                       Query(max_length=20, description="file types, e.g. jpg, heic (repeatable)")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="how many results")]
PhotoId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="a photo id from a search result")]
Bearer = Annotated[HTTPAuthorizationCredentials | None,
                  Depends(HTTPBearer(auto_error=False, description="the token from `lumen serve --new-token`"))]
AlbumName = Annotated[str, PathParam(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"\S")]


