"""An encoder whose model runs in a child process, so the window's process never imports torch.

Why: importing torch and open_clip costs ~800 MB of RSS that no `unload()` can give back,
and loading their shared libraries holds the GIL for up to half a second at a time, which
freezes the window (measured: bench/README.md, `python -m bench.startup`). In a child
process the model's memory goes back to the system when the process ends, and the GUI
thread never waits for the model's GIL.

`RemoteEncoder` wraps the light encoder object a plugin's `create()` returns (its `id`,
`dim` and `joint` need no model) and forwards the calls that need the model to a child
(`python -m desktop.model_host`, started on first use; requests and answers are pickles
over its stdin/stdout, so no main module is re-imported as multiprocessing's spawn
would, and it works the same on Linux, macOS and Windows). Each request is answered on its own thread in the child, so a
text query is not queued behind an indexing batch; torch releases the GIL while it
computes. `unload()` ends the child; the next call starts a new one. If the child dies
(killed, out of memory), the calls it owed are sent once more to a new child, and fail
with ModelProcessDied (an EncoderError) if that one dies too.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

import numpy as np

from desktop.encoders import EncoderError, create_captioner, create_encoder, create_reranker

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
CHILD_THREADS = 2  # requests served at once: an indexing batch and a query


class ModelProcessDied(EncoderError):
    """The model process ended before answering (killed, out of memory, crashed)."""


class RemoteEncoder:
    """An Encoder (and Tagger, when the wrapped one is) backed by a model process; with
    kind="captioner", a Captioner. Any public method of the wrapped object runs there."""

    def __init__(self, local: Any, spec: str, weights: str | None, device: str, nice: int = 0,
                 kind: str = "encoder", options: dict[str, Any] | None = None,
                 idle_unload_s: float | None = None) -> None:
        """`idle_unload_s`: end the process after that long without a request (the next
        request starts it again); None keeps it until unload()."""
        self._local = local  # the plugin's own object: attributes that need no model
        self._args = (kind, spec, weights, device, nice, options or {})
        self.idle_unload_s = idle_unload_s
        self._last_used = time.monotonic()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._loaded = False

    def __repr__(self) -> str:
        return f"RemoteEncoder({self._local!r}, pid={self.pid})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        local = self._local
        if name == "decode_size" and hasattr(type(local), "decode_size"):
            return self._call("getattr", "decode_size")  # a property that reads the model
        value = getattr(local, name)
        if callable(value):  # tags(), caption(), caption_with_scores(): the model's work
            return lambda *args, **kwargs: self._call(name, *args, **kwargs)
        return value

    # -- the Encoder protocol --
    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        return self._call("encode_images", list(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._call("encode_texts", list(texts))

    # -- LazyModel's lifecycle --
    def load(self) -> None:
        self._call("load")

    @property
    def loaded(self) -> bool:
        proc = self._proc
        return self._loaded and proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def unload(self) -> None:
        """End the model process: all of its memory goes back to the system."""
        with self._lock:
            proc = self._detach()
        if proc is not None:
            _stop(proc)

    def _detach(self) -> subprocess.Popen | None:
        """(Under the lock.) Forget the process and close its stdin: it finishes what runs,
        then exits. A later call starts a new one."""
        proc, self._proc, self._loaded = self._proc, None, False
        if proc is not None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
        return proc

    def _reap_when_idle(self, proc: subprocess.Popen) -> None:
        """End `proc` once no request has come for idle_unload_s (and none is running)."""
        idle = float(self.idle_unload_s or 0)
        while True:
            time.sleep(min(max(idle / 4, 0.05), 30.0))
            with self._lock:
                if self._proc is not proc:
                    return  # unloaded or replaced meanwhile
                if self._pending or time.monotonic() - self._last_used < idle:
                    continue
                log.info("model process %s idle for %.0f s: ending it", proc.pid, idle)
                self._detach()
            _stop(proc)
            return

    # -- plumbing --
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Forward one call; every call is a pure function of its arguments, so one that a
        dying process never answered is sent once more, to a new process."""
        try:
            return self._call_once(method, args, kwargs)
        except ModelProcessDied as exc:
            log.warning("%s; retrying %s in a new model process", exc, method)
            return self._call_once(method, args, kwargs)

    def _call_once(self, method: str, args: tuple, kwargs: dict) -> Any:
        future: Future = Future()
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None
            rid = next(self._ids)
            self._pending[rid] = future
            self._last_used = time.monotonic()
            try:
                _send(proc.stdin, (rid, method, args, kwargs))  # under the lock: whole messages
            except OSError as exc:
                self._pending.pop(rid, None)
                raise ModelProcessDied(f"the model process is gone ({exc})") from exc
        result = future.result()  # (the reply thread stamped the use before handing it over)
        if method != "getattr" or args[0] == "decode_size":
            self._loaded = True
        return result

    def _start(self) -> None:
        level = logging.getLogger().getEffectiveLevel()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # as multiprocessing does
        proc = subprocess.Popen([sys.executable, "-m", "desktop.model_host"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        _send(proc.stdin, (*self._args, level))
        self._proc, self._pending = proc, {}
        log.info("model process %s started for %s", proc.pid, self._local.id)
        threading.Thread(target=self._read, args=(proc, self._pending), daemon=True,
                         name="lumen-model-replies").start()
        if self.idle_unload_s:
            threading.Thread(target=self._reap_when_idle, args=(proc,), daemon=True,
                             name="lumen-model-idle").start()

    def _read(self, proc: subprocess.Popen, pending: dict[int, Future]) -> None:
        """Hand each answer to its caller; when the process ends, fail whoever still waits."""
        assert proc.stdout is not None
        while True:
            try:
                rid, ok, value = pickle.load(proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            self._last_used = time.monotonic()  # before the caller sees it: never idle mid-answer
            future = pending.pop(rid, None)
            if future is not None:
                (future.set_result if ok else future.set_exception)(value)
        try:
            code = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        proc.stdout.close()
        with self._lock:
            if self._proc is proc:
                self._proc, self._loaded = None, False
            waiting = list(pending.values())
            pending.clear()
        if waiting:
            err = ModelProcessDied(f"the model process stopped (exit code {code})")
            for future in waiting:
                future.set_exception(err)


def end_process(model: object) -> None:
    """End the model process behind `model` if it has one (in-process models: nothing to do)."""
    if isinstance(model, RemoteEncoder):
        model.unload()


def _stop(proc: subprocess.Popen) -> None:
    """Wait for a process whose stdin is closed; kill it if it does not end."""
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("model process %s did not stop in %.0f s; killing it", proc.pid, STOP_TIMEOUT_S)
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)


def _send(stream: IO[bytes], message: object) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The child: create the encoder, answer requests until stdin ends (the app closed it,
    or died: either way there is nobody left to serve)."""
    kind, spec, weights, device, nice, options, log_level = pickle.load(requests)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s [model] %(name)s: %(message)s",
                        stream=sys.stderr)
    if nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(nice)  # the whole process: the window's process keeps the CPU first
        except OSError:
            pass
    send_lock = threading.Lock()

    def reply(message: tuple) -> None:
        with send_lock:
            try:
                _send(answers, message)
            except OSError:  # the app is gone
                pass

    try:
        make = {"encoder": create_encoder, "reranker": create_reranker}.get(kind, create_captioner)
        encoder: Any = make(spec, weights=weights, device=device, **options)
        failure: BaseException | None = None
    except BaseException as exc:  # noqa: BLE001 - every request gets the reason
        encoder, failure = None, _portable(exc)

    def run(rid: int, method: str, args: tuple, kwargs: dict) -> None:
        try:
            if failure is not None:
                raise failure
            result = getattr(encoder, args[0]) if method == "getattr" else getattr(encoder, method)(*args, **kwargs)
            reply((rid, True, result))
        except BaseException as exc:  # noqa: BLE001 - sent to the caller, who raises it
            reply((rid, False, _portable(exc)))

    with ThreadPoolExecutor(CHILD_THREADS, thread_name_prefix="lumen-model") as pool:
        while True:
            try:
                request = pickle.load(requests)
            except (EOFError, OSError):
                break
            pool.submit(run, *request)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling (our EncoderErrors do), else an
    EncoderError that keeps its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return EncoderError(f"{type(exc).__name__}: {exc}")


def main() -> None:
    answers = os.fdopen(os.dup(1), "wb")  # the protocol's own copy of stdout...
    os.dup2(2, 1)  # ...and fd 1 now goes to stderr: a library's stray print cannot corrupt it
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
