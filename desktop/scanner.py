"""Finding out what changed on disk: a stat-first reconcile walk, and a watchdog watcher.

Neither writes to the catalog. They produce plans and `Change`s; library.py applies them
on the writer thread. The walk only stats; hashing happens later and only for paths whose
size or mtime differ from what the catalog remembers.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from desktop import media
from desktop.catalog import FileState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One thing the watcher saw. kind: created | modified | deleted | moved."""

    kind: str
    path: str
    dest: str | None = None
    is_dir: bool = False


@dataclass
class ScanPlan:
    """The difference between a folder tree and the catalog's memory of it."""

    root: str
    to_hash: list[tuple[str, int, float]] = field(default_factory=list)  # new or changed: (path, size, mtime)
    deleted: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    unchanged: int = 0
    seen: int = 0


_SCANDIR_FD = os.scandir in os.supports_fd  # POSIX; Windows lists by path


def _list_folder(
    folder: str, stack: list[str], links: list[str]
) -> tuple[list[tuple[str, int, float]], list[tuple[str, str]]]:
    """The image files of one folder as (path, size, mtime), and what could not be read.
    Subfolders go onto `stack` (symlinked ones onto `links`). This is the re-scan's hot
    loop (one pass per file of every library): plain tuples and inlined tests, no Path
    objects and no per-file function calls but the one stat the answer needs."""
    files: list[tuple[str, int, float]] = []
    problems: list[tuple[str, str]] = []
    fd = -1
    try:
        if _SCANDIR_FD:
            # Listed through a descriptor, each entry.stat() is an fstatat() of one name
            # instead of a lookup of the whole path from / (about 10% of a re-scan).
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            with os.scandir(fd) as it:
                entries = list(it)
        else:
            with os.scandir(folder) as it:
                entries = list(it)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        problems.append((folder, f"cannot list folder: {exc.strerror or exc}"))
        return files, problems
    prefix = folder if folder.endswith(os.sep) else folder + os.sep
    exts = media.registry.extensions
    is_reg = stat.S_ISREG
    add = files.append
    try:
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue  # hidden files and folders: .thumbnails, .git, ._AppleDouble
            try:
                if entry.is_dir():  # follows symlinks; loops are caught by `visited`
                    (links if entry.is_symlink() else stack).append(prefix + name)
                    continue
                # media.is_media_name inlined; the hidden-name cases it also rules out are gone already
                dot = name.rfind(".")
                if dot <= 0 or name[dot:].lower() not in exts:
                    continue
                st = entry.stat()
            except OSError as exc:
                problems.append((prefix + name, f"cannot stat: {exc.strerror or exc}"))
                continue
            if is_reg(st.st_mode):
                add((prefix + name, st.st_size, st.st_mtime))
    finally:
        if fd >= 0:
            os.close(fd)
    return files, problems


def _walk_folders(root: str) -> Iterator[tuple[list[tuple[str, int, float]], list[tuple[str, str]]]]:
    """(image files, problems) per folder under root, depth first. Symlinked folders are
    followed once (a loop is reported, not walked forever)."""
    visited: set[tuple[int, int]] = set()
    stack = [root]
    links: list[str] = []  # symlinked folders: walked after every real one, so a folder that
    # is also reachable through a link is always catalogued under its real path (stable ids
    # of paths from one scan to the next, whatever order the directory lists them in)
    while stack or links:
        folder = stack.pop() if stack else links.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            yield [], [(folder, f"cannot open folder: {exc.strerror or exc}")]
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            yield [], [(folder, "symlink loop or second link: folder already scanned")]
            continue
        visited.add(key)
        yield _list_folder(folder, stack, links)


def walk(root: str) -> Iterator[tuple[str, int, float] | tuple[str, str]]:
    """Yield (path, size, mtime) for image files under root, and (path, reason) for
    folders or files that cannot be read. Symlinked folders are followed once (a loop
    is reported, not walked forever)."""
    for files, problems in _walk_folders(root):
        yield from problems
        yield from files


def plan(root: str, known: Mapping[str, FileState]) -> ScanPlan:
    """Walk a root and compare with the catalog. Unchanged files cost one stat."""
    result = ScanPlan(root)
    found: list[list[tuple[str, int, float]]] = []
    get = known.get
    to_hash = result.to_hash
    matched = unchanged = 0  # paths of `known` seen on disk; of those, the unchanged ones
    for files, problems in _walk_folders(root):
        result.problems += problems
        found.append(files)
        for item in files:
            state = get(item[0])
            if state is None:
                to_hash.append(item)
                continue
            matched += 1
            # FileState by index (id, size, mtime, photo_id): the same test, a little cheaper
            if state[1] == item[1] and state[2] == item[2] and state[3] is not None:
                unchanged += 1
            else:
                to_hash.append(item)
    result.seen = sum(map(len, found))
    result.unchanged = unchanged
    if matched < len(known):
        # Something the catalog knows was not seen (paths are unique: `visited` walks each
        # folder once). Only then is the set of every path on disk worth building.
        present = {item[0] for files in found for item in files}
        unreadable = {p for p, _ in result.problems}
        for path in known:
            if path not in present and path not in unreadable and not _under_any(path, unreadable):
                result.deleted.append(path)
    return result


def _under_any(path: str, folders: set[str]) -> bool:
    # A folder we could not list is not evidence that its files were deleted.
    return any(path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


class Watcher:
    """Watches library roots with watchdog and hands out coalesced batches of Changes.

    The observer thread only queues. `batches()` is consumed by the writer side: it waits
    for the first change, then keeps collecting until the folder is quiet for `quiet_s`
    (or `max_batch` changes), so a burst of 10 000 copied files becomes a few batches.
    If the OS refuses more watches (inotify limit), `degraded` says why and the library
    falls back to periodic rescans.
    """

    def __init__(self, quiet_s: float = 0.5, max_batch: int = 5000, max_wait_s: float = 5.0) -> None:
        from watchdog.observers import Observer

        self.quiet_s = quiet_s
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[Change] = queue.Queue()
        self._observer = Observer()
        self._observer.daemon = True
        self._watches: dict[str, object] = {}
        self.degraded: dict[str, str] = {}  # root -> reason watching failed
        self._started = False

    def watch(self, root: str) -> bool:
        """Start watching a root. False (and `degraded[root]`) when the OS refuses."""
        from watchdog.events import FileSystemEventHandler

        watcher = self

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # noqa: ANN001 - watchdog's type
                watcher._on_event(event)

        if root in self._watches:
            return True
        before = _inotify_watches()
        needed = _count_folders(root) if before is not None else 0
        try:
            self._watches[root] = self._observer.schedule(_Handler(), root, recursive=True)
            if not self._started:
                self._observer.start()
                self._started = True
        except OSError as exc:
            reason = LIMIT_REACHED if exc.errno in (errno.ENOSPC, errno.EMFILE) else (
                f"cannot watch: {exc.strerror or exc}; Lumen rescans this library periodically instead"
            )
            log.warning("%s: %s", root, reason)
            self.degraded[root] = reason
            self._watches.pop(root, None)
            return False
        # watchdog only reports a refused watch on the root itself; one refused on a subfolder
        # (the limit reached half-way through a big tree) is dropped silently, and changes there
        # would never be seen. Count what the kernel really holds (Linux) against the folders.
        after = _inotify_watches()
        if before is not None and after is not None and after - before < needed:
            log.warning("%s: %s", root, LIMIT_REACHED)
            self.degraded[root] = LIMIT_REACHED
            return False  # the watches that were granted stay: those folders are still live
        self.degraded.pop(root, None)
        return True

    def watching(self, root: str) -> bool:
        """True while root has a watch (possibly degraded: see `degraded`)."""
        return root in self._watches

    def unwatch(self, root: str) -> None:
        handle = self._watches.pop(root, None)
        if handle is not None:
            try:
                self._observer.unschedule(handle)
            except (KeyError, OSError):
                pass  # the root vanished; the observer already dropped it

    def _on_event(self, event) -> None:  # noqa: ANN001
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        if kind == "closed":  # a file finished being written: treat as modified
            kind = "modified"
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else None
        if not event.is_directory and not (media.is_media_path(src) or (dest and media.is_media_path(dest))):
            return
        if event.is_directory and kind == "modified":
            return  # a folder's mtime changes with every file in it: nothing to do
        self._queue.put(Change(kind, src, dest, event.is_directory))

    def put(self, change: Change) -> None:
        """Queue a change by hand (tests, the periodic rescan)."""
        self._queue.put(change)

    def next_batch(self, timeout: float | None = None, stop: threading.Event | None = None) -> list[Change]:
        """Block up to `timeout` for a change, then coalesce until quiet. [] on timeout."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        batch = [first]
        started = time.monotonic()
        while len(batch) < self.max_batch and time.monotonic() - started < self.max_wait_s:
            if stop is not None and stop.is_set():
                break
            try:
                batch.append(self._queue.get(timeout=self.quiet_s))
            except queue.Empty:
                break
        return coalesce(batch)

    def stop(self) -> None:
        if self._started:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._started = False


LIMIT_REACHED = (
    "the system's limit on watched folders is reached (raise fs.inotify.max_user_watches); "
    "Lumen rescans this library periodically instead"
)


def _inotify_watches() -> int | None:
    """inotify watches this process holds, from /proc (Linux); None where that is unknown."""
    if not os.path.isdir("/proc/self/fdinfo"):
        return None
    total = 0
    try:
        fds = os.listdir("/proc/self/fdinfo")
    except OSError:
        return None
    for fd in fds:
        try:
            with open(f"/proc/self/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
                total += f.read().count("inotify wd:")
        except OSError:  # closed meanwhile
            continue
    return total


def _count_folders(root: str) -> int:
    """Watches a recursive watch of root needs: the folders watchdog walks (symlinks are
    not followed) that inotify may watch (a folder we may not read cannot be)."""
    total = 1
    for folder, dirs, _ in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            if not os.path.islink(path) and os.access(path, os.R_OK):
                total += 1
    return total


def coalesce(changes: list[Change]) -> list[Change]:
    """Keep the last word per path: create+modify+modify -> one upsert, create+delete -> delete."""
    last: dict[tuple[str, bool], Change] = {}
    for change in changes:
        key = (change.path, change.is_dir)
        if change.kind == "moved":
            last.pop(key, None)
            last[(change.path, change.is_dir, "move")] = change  # type: ignore[index]
        else:
            last.pop(key, None)  # keep insertion order = order of the last event
            last[key] = change
    return list(last.values())
