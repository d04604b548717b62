"""Moving files to the system trash and back: what the duplicates review uses.

The move is send2trash's (the platform's own trash). send2trash cannot restore, so undo
remembers where each file went: on Linux (freedesktop trash) the new `.trashinfo` whose
`Path=` is the original path names the file under `files/`; restoring moves it back and
drops the `.trashinfo`. Nothing here ever deletes a photo outright.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

log = logging.getLogger(__name__)


class TrashError(Exception):
    """A file could not be trashed or restored (the message says which and why)."""


@dataclass(frozen=True)
class Trashed:
    """Where one file went: enough to put it back while the app is open."""

    original: str
    trashed: str | None  # the file inside the trash, when it could be found
    info: str | None  # its .trashinfo (freedesktop), removed on restore

    @property
    def restorable(self) -> bool:
        return self.trashed is not None and os.path.exists(self.trashed)


def home_trash() -> Path:
    """The user's freedesktop trash, read from the environment at call time (tests point
    XDG_DATA_HOME at a temporary folder so the real trash is never touched)."""
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "Trash"


def _mount_point(path: str) -> str:
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def trash_dirs(path: str) -> list[Path]:
    """Every trash a file at `path` can land in: the home trash, and the volume's own
    (`.Trash/$uid`, `.Trash-$uid`) for a file on another device."""
    dirs = [home_trash()]
    if sys.platform.startswith("linux") or sys.platform.startswith("freebsd"):
        top = Path(_mount_point(os.path.dirname(os.path.abspath(path))))
        uid = str(os.getuid())
        dirs += [top / ".Trash" / uid, top / f".Trash-{uid}"]
    return dirs


def _info_paths(dirs: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for d in dirs:
        info = d / "info"
        if info.is_dir():
            found |= set(info.glob("*.trashinfo"))
    return found


def _info_target(info: Path) -> str | None:
    """The original path a .trashinfo names (absolute, or relative to the volume top)."""
    try:
        for line in info.read_text("utf-8", errors="replace").splitlines():
            if line.startswith("Path="):
                value = unquote(line[5:])
                if not os.path.isabs(value):
                    value = os.path.join(os.path.dirname(os.path.dirname(info.parent)), value)
                return os.path.abspath(value)
    except OSError:
        return None
    return None


def move_to_trash(path: str) -> Trashed:
    """Move one file to the system trash and say where it went."""
    import send2trash  # lazy: only the duplicates review needs it

    path = os.path.abspath(path)
    if not os.path.lexists(path):
        raise TrashError(f"{path}: no such file")
    dirs = trash_dirs(path)
    before = _info_paths(dirs)
    try:
        send2trash.send2trash(path)
    except Exception as exc:  # noqa: BLE001 - send2trash raises OSError or its own kinds
        raise TrashError(f"{path}: could not move to the trash ({exc})") from exc
    for info in sorted(_info_paths(dirs) - before, key=lambda p: p.stat().st_mtime, reverse=True):
        if _info_target(info) == path:
            trashed = info.parent.parent / "files" / info.name[: -len(".trashinfo")]
            return Trashed(path, str(trashed), str(info))
    if sys.platform == "darwin":  # Finder's trash: ~/.Trash/<name> (renamed on a clash)
        guess = Path.home() / ".Trash" / os.path.basename(path)
        return Trashed(path, str(guess) if guess.exists() else None, None)
    log.info("%s: trashed, but where it went is not known here; undo will not be offered", path)
    return Trashed(path, None, None)


def restore(item: Trashed) -> str:
    """Put a trashed file back where it was; returns that path. Refuses to overwrite."""
    if not item.restorable:
        raise TrashError(f"{item.original}: not found in the trash any more, cannot restore")
    if os.path.lexists(item.original):
        raise TrashError(f"{item.original}: a file of that name exists again; restore it by hand "
                         f"from {item.trashed}")
    os.makedirs(os.path.dirname(item.original), exist_ok=True)
    shutil.move(item.trashed, item.original)  # type: ignore[arg-type]
    if item.info:
        try:
            os.remove(item.info)
        except OSError as exc:
            log.info("%s: restored, but its trash record stays (%s)", item.original, exc)
    return item.original
