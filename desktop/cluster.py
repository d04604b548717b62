"""Encoding on a Ray cluster: the decode + encode of new photos as Ray work (`lumen index --cluster`).

The scan, the hashing and every catalog write stay in the driver (the machine that owns the
catalog, one writer thread, one transaction per batch: desktop/indexer.py). Only the work in
between, bytes -> pixels -> vectors, runs on the cluster:

- A pool of Ray actors, each of which loads the encoder once (on a GPU when its node has one
  and the cluster offers GPUs) and then encodes batch after batch.
- Batches carry the files' BYTES, not their paths: a worker on another machine does not see
  the driver's disks (an external drive, a NAS mounted only here, a laptop's home folder), and
  the driver has to read every file anyway to hash it. On the worker the bytes go to a private
  temporary file and are decoded and encoded by the very code a local run uses
  (media.iter_decoded with the same size, then indexer.encode_decoded), so vectors, video
  frames, metadata and skip reasons are the ones a local run stores.
- Nothing lost, nothing twice: a batch whose worker dies (killed, OOM, node lost) is sent again
  to another worker, up to MAX_ATTEMPTS times; the actor itself is restarted by Ray
  (max_restarts). Results are written only by the driver, one transaction per batch, and the
  catalog only hands out photos that have no vector yet, so a driver that is killed and run
  again resumes with the batches it had not written, and none twice.

Ray is an optional extra: `pip install 'lumen[cluster]'`. Every node needs the same Lumen (and
plugins) installed; a worker whose encoder id differs from the driver's is refused, so vectors
of different models or weights never mix.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from desktop import media
from desktop.indexer import VANISHED, EncodedBatch, encode_decoded
from desktop.store import LibraryError

if TYPE_CHECKING:
    from desktop.store import Store

log = logging.getLogger(__name__)

CLUSTER_BATCH = 32  # photos per Ray task: big enough to amortise a task's overhead
MAX_BATCH_BYTES = 64 << 20  # and at most this many file bytes, so huge files do not flood the object store
IN_FLIGHT_PER_WORKER = 2  # one running, one queued: a worker never waits for the driver
MAX_ATTEMPTS = 3  # a batch is tried on this many workers before the run gives up
ACTOR_RESTARTS = 2  # Ray restarts a dead worker (reloading the encoder) this often
START_TIMEOUT_S = 600.0  # loading a large model on a cold node can take minutes


class ClusterError(LibraryError):
    """The cluster cannot be reached or used; nothing unwritten is lost (run again to resume)."""


REACH_TIMEOUT_S = 3.0  # ray.init waits minutes for a head that is not there; a TCP probe says so at once


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Fail fast, with the address in the message, when a head at HOST:PORT (or
    ray://HOST:PORT) does not accept connections; `auto` and `local` are Ray's to resolve."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"{address!r} is not a Ray address: use auto, local, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class WorkerInfo:
    pid: int
    node_ip: str
    device: str
    encoder_id: str
    dim: int


@dataclass
class ClusterStats:
    batches: int = 0
    photos: int = 0
    retried: int = 0  # batches sent again after their worker died
    worker_seconds: float = 0.0  # decode + encode time measured inside the workers
    read_seconds: float = 0.0  # reading file bytes in the driver
    deaths: list[str] = field(default_factory=list)


@dataclass
class _Job:
    rows: list[tuple[int, str]]  # (photo id, path the bytes came from)
    payload: list[tuple[int, str, bytes]]  # (photo id, file name, bytes)
    skipped: list[tuple[int, str]]  # unreadable in the driver already
    count: int  # photos this batch accounts for (incl. vanished ones, left for the next scan)
    attempts: int = 0
    last: _Slot | None = None  # the worker it failed on: try another one


@dataclass
class _Slot:
    actor: Any
    info: WorkerInfo
    busy: int = 0


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ClusterError("Ray is not installed: pip install 'lumen[cluster]'") from exc
    return ray


class RayBackend:
    """An EncodeBackend (see desktop/indexer.py) that runs decode + encode on Ray actors."""

    def __init__(
        self,
        store: Store,
        address: str,
        workers: int | None = None,
        batch: int = CLUSTER_BATCH,
        cpus_per_worker: float = 1.0,
        gpus: bool | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        """`address`: auto, local (start a Ray runtime here), host:port or ray://host:10001.
        `workers`: actors to start (default: one per GPU, else one per `cpus_per_worker` CPUs).
        `gpus`: None = use GPUs when the cluster has any."""
        self.store, self.address = store, address
        self.n_workers, self.batch, self.cpus_per_worker = workers, max(1, batch), cpus_per_worker
        self.gpus, self.max_attempts = gpus, max(1, max_attempts)
        self.stats = ClusterStats()
        self._slots: list[_Slot] = []
        self._size: int | None = None
        self._started_ray = False

    # ---- lifecycle ----------------------------------------------------------------------
    def connect(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            check_reachable(self.address)
            kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if self.address == "local":
                kwargs["include_dashboard"] = False
            try:
                ray.init(address=self.address, **kwargs)
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError ...: say where and why
                raise ClusterError(f"cannot reach the Ray cluster at {self.address!r}: {exc}") from exc
            self._started_ray = True
        return ray

    @property
    def workers(self) -> list[WorkerInfo]:
        return [s.info for s in self._slots]

    def start(self, size: int) -> list[WorkerInfo]:
        """Start the actors (each loads the encoder once) unless they run for this size."""
        if self._slots and self._size == size:
            return self.workers
        self.close_workers()
        ray = self.connect()
        resources = ray.cluster_resources()
        use_gpu = bool(resources.get("GPU", 0) >= 1) if self.gpus is None else self.gpus
        if use_gpu:
            count = self.n_workers or int(resources.get("GPU", 0))
        else:
            count = self.n_workers or max(1, int(resources.get("CPU", 1) // self.cpus_per_worker))
        weights = self.store.weights
        shipped = None
        if weights and os.path.isfile(weights):
            # Lazily fetched: a worker that sees the same file (same machine, shared disk) never pulls it.
            shipped = [ray.put(open(weights, "rb").read())]
        actor_cls = ray.remote(EncodeWorker).options(
            num_cpus=self.cpus_per_worker,
            num_gpus=1 if use_gpu else 0,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=0,  # the driver re-sends a failed batch itself, to another worker
        )
        device = self.store.device
        actors = [
            actor_cls.remote(self.store.encoder_spec, weights, shipped, device, size) for _ in range(count)
        ]
        want = self.store.encoder.id
        infos = [a.info.remote() for a in actors]
        ready, waiting = ray.wait(infos, num_returns=len(infos), timeout=START_TIMEOUT_S)
        if waiting:
            for a in actors:
                ray.kill(a)
            raise ClusterError(
                f"{len(waiting)} of {count} Ray workers did not start within {START_TIMEOUT_S:.0f}s "
                f"(cluster resources: {resources}); are CPUs/GPUs free?"
            )
        for actor, ref in zip(actors, infos, strict=True):
            try:
                info = WorkerInfo(**ray.get(ref))
            except Exception as exc:
                for a in actors:
                    ray.kill(a)
                raise ClusterError(f"a Ray worker could not load the encoder {self.store.encoder_spec}: {exc}") from exc
            if info.encoder_id != want:
                for a in actors:
                    ray.kill(a)
                raise ClusterError(
                    f"the worker on {info.node_ip} made encoder {info.encoder_id}, this library uses {want}: "
                    "install the same Lumen, plugins and weights on every node"
                )
            self._slots.append(_Slot(actor, info))
        self._size = size
        log.info("Ray workers: %s", ", ".join(f"{w.node_ip}/{w.pid} on {w.device}" for w in self.workers))
        return self.workers

    def close_workers(self) -> None:
        if self._slots:
            ray = import_ray()
            for slot in self._slots:
                try:
                    ray.kill(slot.actor)
                except Exception:  # already gone with its node: nothing left to free
                    log.debug("kill of a Ray worker failed", exc_info=True)
        self._slots = []

    def close(self) -> None:
        self.close_workers()
        if self._started_ray:
            import_ray().shutdown()
            self._started_ray = False

    # ---- the EncodeBackend --------------------------------------------------------------
    def encode_batches(self, rows: Iterable[tuple[int, str]], size: int) -> Iterator[EncodedBatch]:
        ray = import_ray()
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

        self.start(size)
        jobs = self._jobs(rows)
        retry: deque[_Job] = deque()
        flight: dict[Any, tuple[_Job, _Slot]] = {}
        limit = IN_FLIGHT_PER_WORKER * len(self._slots)
        try:
            while True:
                while len(flight) < limit:
                    job = retry.popleft() if retry else next(jobs, None)
                    if job is None:
                        break
                    if not job.payload:  # nothing readable: no worker needed
                        yield EncodedBatch(job.count, [], job.skipped)
                        continue
                    slot = self._pick(avoid=job.last)
                    flight[slot.actor.encode.remote(job.payload, size)] = (job, slot)
                    slot.busy += 1
                if not flight:
                    return
                (ref,), _ = ray.wait(list(flight), num_returns=1)
                job, slot = flight.pop(ref)
                slot.busy -= 1
                try:
                    rows, frames, skipped, seconds = ray.get(ref)
                except (RayActorError, WorkerCrashedError, ObjectLostError) as exc:
                    # The worker died under this batch: send it to another one. Nothing of
                    # it was written, so nothing is lost and nothing will be there twice.
                    job.attempts += 1
                    self.stats.retried += 1
                    self.stats.deaths.append(f"{slot.info.node_ip}/{slot.info.pid}: {type(exc).__name__}")
                    log.warning(
                        "Ray worker %s/%s died with a batch of %d photos (attempt %d of %d): %s",
                        slot.info.node_ip, slot.info.pid, len(job.payload), job.attempts, self.max_attempts,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    )
                    if job.attempts >= self.max_attempts:
                        raise ClusterError(
                            f"a batch of {len(job.payload)} photos (first {job.rows[0][1]}) failed on "
                            f"{job.attempts} Ray workers; nothing of it was written, run again to resume"
                        ) from exc
                    job.last = slot
                    self._refresh(slot)
                    retry.append(job)
                    continue
                except RayTaskError as exc:  # a bug on the worker (bad files are values, not errors)
                    raise ClusterError(f"a Ray worker failed on {job.rows[0][1]} and its batch: {exc}") from exc
                self.stats.batches += 1
                self.stats.photos += job.count
                self.stats.worker_seconds += seconds
                by_id = dict(job.rows)
                for photo_id, reason in skipped:
                    log.info("skipped %s: %s", by_id[photo_id], reason)
                yield EncodedBatch(job.count, rows, job.skipped + list(skipped), frames)
        finally:
            for pending in flight:  # a cancelled or failed run: drop the work in flight
                try:
                    ray.cancel(pending)
                except Exception:
                    log.debug("cancel of a Ray task failed", exc_info=True)

    def _pick(self, avoid: _Slot | None = None) -> _Slot:
        slots = [s for s in self._slots if s is not avoid] or self._slots
        return min(slots, key=lambda s: s.busy)

    def _refresh(self, slot: _Slot) -> None:
        """After a death: Ray restarts the actor (max_restarts), with a new pid; learn it."""
        ray = import_ray()
        try:
            slot.info = WorkerInfo(**ray.get(slot.actor.info.remote(), timeout=START_TIMEOUT_S))
        except Exception:  # restarts used up or its node is gone: work on without it
            log.warning("Ray worker %s/%s is gone for good", slot.info.node_ip, slot.info.pid)
            if len(self._slots) > 1:
                self._slots.remove(slot)

    def _jobs(self, rows: Iterable[tuple[int, str]]) -> Iterator[_Job]:
        """Read the files' bytes in the driver, in batches of `batch` photos or MAX_BATCH_BYTES."""
        job = _Job([], [], [], 0)
        nbytes = 0
        for photo_id, path in rows:
            started = time.monotonic()
            got = self._read(photo_id, path)
            self.stats.read_seconds += time.monotonic() - started
            job.count += 1
            if got is None:
                pass  # vanished with no copy left: the next scan sees the move or the deletion
            elif isinstance(got[1], str):
                job.skipped.append((photo_id, got[1]))
                log.info("skipped %s: %s", got[0], got[1])
            else:
                found, data = got
                job.rows.append((photo_id, found))
                job.payload.append((photo_id, os.path.basename(found), data))
                nbytes += len(data)
            if job.count >= self.batch or nbytes >= MAX_BATCH_BYTES:
                yield job
                job, nbytes = _Job([], [], [], 0), 0
        if job.count:
            yield job

    def _read(self, photo_id: int, path: str) -> tuple[str, bytes | str] | None:
        """(path, bytes) or (path, reason); another copy when this path vanished; None if none is left."""
        for candidate in [path] + [p for p in self.store.read().paths_of(photo_id) if p != path]:
            try:
                with open(candidate, "rb") as f:
                    return candidate, f.read()
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                return candidate, "not a regular file"
            except OSError as exc:
                return candidate, f"cannot read file ({exc.strerror or exc})"
        log.info("%s vanished before it was read; the next scan finds where it went", path)
        return None


class EncodeWorker:
    """One Ray actor: loads the encoder once, then decodes and encodes batches of file bytes.

    A plain class (Ray wraps it with ray.remote in RayBackend.start) so this module imports
    without Ray and the worker imports it by name, the same code as the driver's.
    """

    def __init__(self, spec: str, weights: str | None, shipped: list[Any] | None, device: str, size: int) -> None:
        from desktop.encoders import LazyModel, create_encoder, resolve_device

        if weights and not os.path.isfile(weights) and shipped:
            import ray

            # This node does not see the driver's weights file: use the copy it sent, under
            # the same name (plugins that name weights by file content give the same id).
            # Ray's session folder holds it, so `ray stop` clears it with the rest.
            session_tmp = getattr(ray.get_runtime_context(), "get_temp_dir", lambda: None)()
            folder = tempfile.mkdtemp(prefix="lumen-weights-", dir=session_tmp)
            local = os.path.join(folder, os.path.basename(weights))
            with open(local, "wb") as f:
                f.write(ray.get(shipped[0]))
            weights = local
        self.device = resolve_device(device)
        self.encoder = create_encoder(spec, weights=weights, device=self.device)
        if isinstance(self.encoder, LazyModel):
            self.encoder.load()  # once per actor, now, so the first batch is not slow
        self.size = size

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "pid": os.getpid(),
            "node_ip": ray.util.get_node_ip_address(),
            "device": self.device,
            "encoder_id": self.encoder.id,
            "dim": int(self.encoder.dim),
        }

    def encode(
        self, items: list[tuple[int, str, bytes]], size: int
    ) -> tuple[list[tuple[int, np.ndarray, dict[str, object]]], dict[int, list[tuple[float, np.ndarray]]],
               list[tuple[int, str]], float]:
        """(rows for save_encoded, video frames, [(photo id, skip reason)], seconds)."""
        started = time.monotonic()
        folder = tempfile.mkdtemp(prefix="lumen-batch-")  # removed below, whatever happens
        try:
            paths = []
            for i, (_, name, data) in enumerate(items):
                # The original extension, for decoders that go by it; the content decides the rest.
                path = os.path.join(folder, f"{i}{os.path.splitext(name)[1][:16]}")
                with open(path, "wb") as f:
                    f.write(data)
                paths.append(path)
            ok: list[tuple[int, media.Decoded]] = []
            skipped: list[tuple[int, str]] = []
            # The local run's decoders, with the local run's size: the same pixels, the same metadata.
            for (photo_id, _name, _data), (_path, result) in zip(
                items, media.iter_decoded(paths, size=size), strict=True
            ):
                if isinstance(result, media.MediaError):
                    # VANISHED cannot happen here (the file is ours), any other reason is the file's.
                    skipped.append((photo_id, result.reason if result.reason != VANISHED else "cannot read file"))
                    continue
                ok.append((photo_id, result))
            rows, frames = encode_decoded(
                lambda pictures: np.asarray(self.encoder.encode_images(pictures), np.float32), self.encoder.dim, ok
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return rows, frames, skipped, time.monotonic() - started
