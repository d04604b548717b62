"""Downloading a model's weights on the user's request: progress, cancel, no half files.

Qt-free. The window's "Download CLIP…" offer (desktop/ui/model_offer.py) runs `download()`
in a worker thread. What to fetch comes from the encoder plugin: a plugin may offer
``download_target(model) -> DownloadTarget | None`` (the clip plugin does, for its known hub
models); the file lands where that plugin looks for weights, so once it is there the plain
spec loads offline.

A download is written to ``<dest>.part`` and renamed when complete and of the announced
length, so a cancelled or broken one never looks like weights. Only http(s) URLs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from desktop.encoders import EncoderError, get_plugin, split_spec

log = logging.getLogger(__name__)

CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 10.0


class DownloadError(EncoderError):
    """The file could not be fetched (network, HTTP status, disk); the message says which."""


class DownloadCancelled(DownloadError):
    """The user cancelled; nothing was kept."""


@dataclass(frozen=True)
class DownloadTarget:
    """One file to fetch and the encoder it enables."""

    title: str  # for people: "CLIP ViT-B-32 (LAION-2B)"
    url: str
    dest: Path
    size_bytes: int  # approximate until the server says (Content-Length)
    spec: str  # the encoder spec to switch to afterwards
    weights: str | None = None  # and its weights argument (None: the plugin finds `dest` itself)

    @property
    def size_mb(self) -> int:
        return round(self.size_bytes / 1e6)


ProgressCb = Callable[[int, int], None]  # bytes done, bytes total (0 when unknown)


def target_for(spec: str) -> DownloadTarget | None:
    """What to download for an encoder spec, when its plugin knows (else None)."""
    name, model = split_spec(spec)
    try:
        plugin = get_plugin(name)
    except EncoderError:
        return None
    offer = getattr(plugin, "download_target", None)
    return offer(model) if callable(offer) else None


def download(url: str, dest: Path, progress: ProgressCb | None = None,
             cancel: threading.Event | None = None, timeout: float = CONNECT_TIMEOUT_S) -> Path:
    """Fetch `url` to `dest` (atomically). Raises DownloadCancelled / DownloadError."""
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http(s) downloads are supported")
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{dest.parent}: cannot create the folder ({exc.strerror or exc})") from exc
    request = urllib.request.Request(url, headers={"User-Agent": "Lumen"})
    started, done = time.monotonic(), 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            if progress:
                progress(0, total)
            while True:
                if cancel is not None and cancel.is_set():
                    raise DownloadCancelled(f"download of {url} cancelled")
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if total and done != total:
            raise DownloadError(f"{url}: the connection closed after {done} of {total} bytes; try again")
        os.replace(part, dest)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the server answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot download ({reason}); check the network and try again") from exc
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest}: cannot write the download ({exc.strerror or exc})") from exc
    log.info("downloaded %s -> %s (%.1f MB in %.1f s)", url, dest, done / 1e6, time.monotonic() - started)
    return dest


def reachable(url: str, timeout: float = 2.5) -> bool:
    """Can a TCP connection to `url`'s host be opened within `timeout`? DNS is not bounded
    by socket timeouts, so the attempt runs in a daemon thread we stop waiting for."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, name="lumen-download-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
