"""`lumen serve`'s access rules: the bearer token (made once, stored hashed) and loopback."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from pathlib import Path

from desktop.library import LibraryError
from desktop.settings import paths

log = logging.getLogger("desktop.server")

TOKEN_FILE = "server-token.json"


# ---- tokens -------------------------------------------------------------------------------
def token_path(home: str | os.PathLike | None) -> Path:
    return paths(home).home / TOKEN_FILE


def _digest(token: str) -> str:
    # The token is 256 random bits, so a plain hash suffices: there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(home: str | os.PathLike | None) -> str:
    """Create a fresh token (replacing any old one) and return it; only its hash is kept."""
    token = secrets.token_urlsafe(32)
    target = token_path(home)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"sha256": _digest(token), "created": time.time()}, fh)
    os.replace(tmp, target)
    return token


def stored_token_hash(home: str | os.PathLike | None) -> str | None:
    """The stored token hash, or None when no token was made."""
    try:
        data = json.loads(token_path(home).read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LibraryError(f"{token_path(home)}: unreadable token file ({exc}); make a new one with "
                           "`lumen serve --new-token`") from exc
    digest = data.get("sha256") if isinstance(data, dict) else None
    if not isinstance(digest, str) or len(digest) != 64:
        raise LibraryError(f"{token_path(home)}: not a Lumen token file; make a new one with "
                           "`lumen serve --new-token`")
    return digest


def token_matches(token: str, digest: str) -> bool:
    return hmac.compare_digest(_digest(token), digest)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


