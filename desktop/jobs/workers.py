"""Generic background workers for the window: a cancellable job on a small pool of
long-lived Python threads, its result or error delivered as a Qt signal on the GUI thread.

Why Python threads and not QThreadPool: a QRunnable's Python thread state is created and
destroyed around every run(), which empties `threading.local` — and the library keeps each
thread's read-only SQLite connection there. On QThreadPool every job would open (and
leak) a new connection; long-lived Python threads keep theirs.

Workers report errors by signal and log them; nothing is swallowed. Workers produce
QImages or plain data, never QPixmaps (those are GUI-thread only).
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import logging
import threading
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QObject, Signal

from desktop import images
from desktop.encoders import (
    Encoder,
    EncoderError,
    UnknownPluginError,
    WeightsUnavailableError,
)
from desktop.library import Library, LibraryError

log = logging.getLogger(__name__)

# Library.encoder creates the encoder on first access without a lock; two workers
# asking at once would build two. Everything in this module goes through the gate.
encoder_gate = threading.Lock()


def ensure_encoder(lib: Library) -> Encoder:
    with encoder_gate:
        return lib.encoder


def encoder_message(spec: str, exc: BaseException) -> str:
    """What a user reads when the encoder cannot be used, with what to do about it."""
    if isinstance(exc, WeightsUnavailableError):
        return (f"No weights offline for the “{spec}” encoder: choose an encoder in Settings "
                f"or give --weights PATH. ({exc})")
    if isinstance(exc, UnknownPluginError):
        return f"The encoder “{spec}” is not installed: choose an encoder in Settings. ({exc})"
    return f"The encoder “{spec}” cannot be used: choose an encoder in Settings or give --weights PATH. ({exc})"


def user_message(exc: BaseException) -> str:
    if isinstance(exc, LibraryError | EncoderError | images.ImageError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    return f"Unexpected error: {type(exc).__name__}: {exc} (details in the log)"


def log_failure(what: str, exc: BaseException) -> None:
    # Expected, user-facing failures need no traceback; anything else is a bug.
    if isinstance(exc, LibraryError | EncoderError | images.ImageError | OSError):
        log.warning("%s failed: %s", what, exc)
    else:
        log.error("%s failed", what, exc_info=exc)


# ---- generic workers ------------------------------------------------------------------
class WorkerSignals(QObject):
    progressed = Signal(object)
    returned = Signal(object)
    failed = Signal(str)  # a sentence for the user; the log has the details
    finished = Signal()


class Worker:
    """One job on a pool thread: `fn(*args, **kwargs)`.

    A generator function reports progress by yielding (each value is emitted as
    `progressed`) and is cancelled between yields; its `return` value is the result. A
    function with a `cancel` parameter gets the worker's `threading.Event`.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.signals = WorkerSignals()
        self.name = getattr(fn, "__name__", repr(fn))
        self.cancel_event = threading.Event()
        try:
            if "cancel" in inspect.signature(fn).parameters:
                kwargs["cancel"] = self.cancel_event
        except (TypeError, ValueError):  # builtins without a signature
            pass
        self._call = lambda: fn(*args, **kwargs)

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def run(self) -> None:
        try:
            result = self._call()
            if inspect.isgenerator(result):
                result = self._drive(result)
            if not self.cancelled:
                self.signals.returned.emit(result)
        except Exception as exc:  # noqa: BLE001 - reported to the user and logged, never swallowed
            log_failure(self.name, exc)
            if not self.cancelled:
                self.signals.failed.emit(user_message(exc))
        finally:
            self.signals.finished.emit()

    def _drive(self, gen: Generator[Any, None, Any]) -> Any:
        while True:
            if self.cancelled:
                gen.close()
                return None
            try:
                value = next(gen)
            except StopIteration as stop:
                return stop.value
            self.signals.progressed.emit(value)


class WorkerPool:
    """A few long-lived Python threads running Workers (see the module note on why)."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self._executor = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._live: set[Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self, worker: Worker) -> Worker:
        with self._lock:
            if self._closed:
                log.debug("%s is shut down; %s not started", self.name, worker.name)
                return worker
            # Hold the worker until its `finished` reaches the GUI thread: if its signals
            # object were collected earlier, Qt would drop the queued results with it.
            self._live.add(worker)
        worker.signals.finished.connect(lambda: self._release(worker))
        self._executor.submit(worker.run)
        return worker

    def _release(self, worker: Worker) -> None:
        with self._lock:
            self._live.discard(worker)

    def active(self) -> int:
        with self._lock:
            return len(self._live)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            for worker in self._live:
                worker.cancel()
        self._executor.shutdown(wait=wait, cancel_futures=True)


