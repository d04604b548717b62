"""Handing a photo to the rest of the desktop: reveal it in the file manager, open it
with the default app. The command per platform is a plain function, so tests check what
would run without launching anything."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices

log = logging.getLogger(__name__)


def reveal_command(path: str, platform: str = sys.platform) -> list[str]:
    """The command that shows `path` selected in the platform's file manager (Linux has no
    portable "select": the folder is opened)."""
    path = os.path.abspath(path)
    if platform == "darwin":
        return ["open", "-R", path]
    if platform == "win32":
        return ["explorer", f"/select,{os.path.normpath(path)}"]
    return ["xdg-open", os.path.dirname(path)]


def file_url(path: str) -> QUrl:
    """The URL "Open with default app" hands to QDesktopServices."""
    return QUrl.fromLocalFile(os.path.abspath(path))


def reveal(path: str) -> str | None:
    """Run reveal_command without waiting; returns why it could not, or None."""
    if not os.path.exists(path):
        return f"{path}: the file is not there (moved, deleted or its disk is unplugged)"
    cmd = reveal_command(path)
    try:
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        # No xdg-open (a bare desktop): the folder URL through Qt still often works.
        if QDesktopServices.openUrl(QUrl.fromLocalFile(os.path.dirname(os.path.abspath(path)))):
            return None
        return f"{path}: cannot show it in the file manager ({cmd[0]}: {exc.strerror or exc})"
    return None


def open_default(path: str) -> str | None:
    """Open with the system's default app for the file type; returns why not, or None."""
    if not os.path.exists(path):
        return f"{path}: the file is not there (moved, deleted or its disk is unplugged)"
    if not QDesktopServices.openUrl(file_url(path)):
        return f"{path}: no application to open it with"
    return None
