"""The window's indexing job: one long-running QThread that owns `Library.index` and
`Library.watch` (and loads the model before the first batch). Pause, resume, re-index,
encoder switches and shutdown are requests it picks up between batches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal

from desktop import images
from desktop.encoders import (
    EncoderError,
)
from desktop.jobs.workers import encoder_gate, encoder_message, ensure_encoder, log_failure, user_message
from desktop.library import IndexReport, Library, Progress

log = logging.getLogger(__name__)

INDEXER_NICE = 10  # background work yields the CPU to the GUI thread...
PROGRESS_INTERVAL_S = 0.1  # progress signals per second are capped: the GUI repaints, not counts


class _Throttle:
    """Passes on at most one Progress per interval, but always stage changes and ends."""

    def __init__(self, emit_fn: Callable[[Progress], None], interval: float = PROGRESS_INTERVAL_S) -> None:
        self.emit = emit_fn
        self.interval = interval
        self.last = 0.0
        self.stage = ""

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        end = p.total > 0 and p.done >= p.total
        if p.stage != self.stage or end or now - self.last >= self.interval:
            self.last, self.stage = now, p.stage
            self.emit(p)


class _LoopThread(QThread):
    def __init__(self, target: Callable[[], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target = target
        self.setObjectName("lumen-indexer")

    def run(self) -> None:
        self._target()


class IndexingJob(QObject):
    """The one long-running worker: loads the model, indexes, then watches.

    Requests (index again, pause, resume, switch encoder, stop) are flags read between
    batches; the cancel event of a running `Library.index` or `Library.watch` is set to
    make it return early. Library.index is resumable, so pausing is cancelling: every
    finished batch is in the catalog and resume continues from there.
    """

    progressed = Signal(object)  # Progress
    indexed = Signal(object)  # IndexReport (also for a cancelled run)
    changed = Signal(int, object)  # a watcher batch: number of changes, IndexReport
    model_loading = Signal(str)  # encoder spec
    model_loaded = Signal(str)  # encoder id
    model_failed = Signal(str)  # actionable message (no weights offline, ...)
    encoder_switched = Signal(str)  # new spec
    failed = Signal(str)
    state_changed = Signal(str)  # loading | indexing | watching | idle | paused | stopped

    def __init__(self, lib: Library, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.lib = lib
        self._cond = threading.Condition()
        self._interrupt = threading.Event()
        self._want_index = False
        self._want_watch = False
        self._paused = False
        self._stopping = False
        self._pending_encoder: tuple[str, str | None, str] | None = None
        self._model_ok = False
        self._state = "idle"
        self._thread = _LoopThread(self._loop)
        self.last_report: IndexReport | None = None
        # A Ray address: index runs encode there (Library.index(cluster=)); read per run.
        self.cluster: str | None = None

    # -- requests (GUI thread) --
    def start(self) -> None:
        """Start the thread and index once (which resumes an interrupted run)."""
        with self._cond:
            self._want_index = True
        if not self._thread.isRunning():
            self._thread.start()

    def request_index(self) -> None:
        with self._cond:
            self._want_index = True
            if self._state in ("watching", "idle"):
                self._interrupt.set()
            self._cond.notify_all()

    def restart_watch(self) -> None:
        """Watch settings changed: restart the watcher with the current roots."""
        with self._cond:
            self._want_watch = True
            if self._state == "watching":
                self._interrupt.set()
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._interrupt.set()
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._want_index = True
            self._cond.notify_all()

    def switch_encoder(self, spec: str, weights: str | None, device: str) -> None:
        with self._cond:
            self._pending_encoder = (spec, weights, device)
            self._interrupt.set()
            self._cond.notify_all()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop the watcher, cancel indexing between batches and wait. True once stopped."""
        with self._cond:
            self._stopping = True
            self._interrupt.set()
            self._cond.notify_all()
        if not self._thread.isRunning():
            return True
        ok = self._thread.wait() if timeout_s is None else self._thread.wait(int(timeout_s * 1000))
        if not ok:
            log.warning("the indexer did not stop within %.0f s", timeout_s or 0)
        return bool(ok)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def state(self) -> str:
        return self._state

    def is_running(self) -> bool:
        return self._thread.isRunning()

    # -- the loop (indexer thread) --
    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    def _loop(self) -> None:
        log.debug("indexer started")
        images.lower_thread_priority(INDEXER_NICE)  # and its hash/decode pools
        try:
            while True:
                with self._cond:
                    while not self._stopping and (
                        self._paused or not (self._want_index or self._want_watch or self._pending_encoder)
                    ):
                        self._state = "paused" if self._paused else "idle"
                        self.state_changed.emit(self._state)
                        self._cond.wait()
                    if self._stopping:
                        break
                    self._interrupt.clear()
                    pending, self._pending_encoder = self._pending_encoder, None
                    run_index, self._want_index = self._want_index, False
                    self._want_watch = False
                if pending is not None:
                    if not self._switch(*pending):
                        continue
                    run_index = True  # the new encoder's vectors, while search keeps the old ones
                if not self._model_ok:
                    self._model_ok = self._load_model()
                ok = True
                if run_index:
                    ok = self._index()
                if ok and self._model_ok and not self._interrupt.is_set():
                    self._watch()
        except Exception as exc:  # noqa: BLE001 - the loop itself must never die silently
            log.error("indexer crashed", exc_info=exc)
            self.failed.emit(user_message(exc))
        finally:
            self._set_state("stopped")
            log.debug("indexer stopped")

    def _switch(self, spec: str, weights: str | None, device: str) -> bool:
        try:
            with encoder_gate:
                self.lib.set_encoder(spec, weights, device)
        except Exception as exc:  # noqa: BLE001
            log_failure(f"switching to encoder {spec}", exc)
            self.model_failed.emit(encoder_message(spec, exc))
            return False
        log.info("encoder switched to %s; re-indexing in the background", spec)
        self._model_ok = False
        self.encoder_switched.emit(spec)
        return True

    def _load_model(self) -> bool:
        spec = self.lib.encoder_spec
        self._set_state("loading")
        self.model_loading.emit(spec)
        try:
            encoder = ensure_encoder(self.lib)
            load = getattr(encoder, "load", None)
            if callable(load):
                load()  # weights now, in this thread, not at the first query
        except Exception as exc:  # noqa: BLE001
            log_failure(f"loading encoder {spec}", exc)
            self.model_failed.emit(encoder_message(spec, exc))
            return False
        self.model_loaded.emit(encoder.id)
        return True

    def _index(self) -> bool:
        self._set_state("indexing")
        throttle = _Throttle(self.progressed.emit)
        try:
            if self._model_ok:
                report = self.lib.index(progress=throttle, cancel=self._interrupt, cluster=self.cluster)
            else:
                # No usable encoder: still find and record the photos, so the user sees
                # them; encoding waits until an encoder is chosen.
                report = self.lib.scan(progress=throttle, cancel=self._interrupt)
                report.cancelled = self._interrupt.is_set()
        except Exception as exc:  # noqa: BLE001
            self._report_failure("indexing", "Indexing stopped", exc)
            return False
        self.last_report = report
        self.indexed.emit(report)
        if self._model_ok and not report.cancelled:
            self._caption_new(throttle)
        return not report.cancelled

    def _caption_new(self, progress: Callable[[Progress], None]) -> None:
        """Captions and tags for photos that have none yet, after each indexing pass.
        A captioner that cannot run is reported; the photos stay indexed and searchable."""

        try:
            self.lib.caption_pending(None, progress=progress, cancel=self._interrupt)
        except Exception as exc:  # noqa: BLE001
            log_failure("captioning", exc)
            self.failed.emit(f"Captioning stopped: {user_message(exc)}")

    def _on_watch_batch(self, changes: list, report: IndexReport) -> None:
        self.changed.emit(len(changes), report)
        if report.encoded and self._model_ok:
            self._caption_new(_Throttle(self.progressed.emit))

    def _watch(self) -> None:
        roots = [r for r in self.lib.roots() if r.watch and r.online]
        if not roots:
            return
        with self._cond:
            # Under the lock that requests take: a request either sees "watching" (and
            # interrupts the watcher) or is seen here (and the loop serves it first).
            if self._want_index or self._pending_encoder or self._stopping or self._paused:
                return
            self._state = "watching"
        self.state_changed.emit("watching")
        try:
            self.lib.watch(
                self._interrupt,
                on_batch=self._on_watch_batch,
                progress=_Throttle(self.progressed.emit),
            )
        except Exception as exc:  # noqa: BLE001
            self._report_failure("watching", "Watching for changes stopped", exc)

    def _report_failure(self, what: str, stopped: str, exc: Exception) -> None:
        """Log it; an encoder failure marks the model unusable (the user can pick another),
        anything else is shown as `stopped: reason`."""
        log_failure(what, exc)
        if isinstance(exc, EncoderError):
            self._model_ok = False
            self.model_failed.emit(encoder_message(self.lib.encoder_spec, exc))
        else:
            self.failed.emit(f"{stopped}: {user_message(exc)}")


