"""The read path of the imaging job, shared with ``bench/imaging.py``: images decoded on a thread
pool one batch ahead of the model, each batch preprocessed and run through the network once
(probabilities and Grad-CAM from the same forward pass), and the heat map overlay PNGs encoded
on the same pool while the next batch runs. Images larger than the network's input are shrunk on
the pool too (``modelfile.shrink``), right after decoding, unless they are uint8 and no larger in
bytes than their shrunk copy: a GPU resizes those itself. On a GPU the batch is copied as uint8
and converted there, and the heat maps are resized to their overlays and quantised there too
(``LoadedImagingModel.read_levels``): the CPU side is left with decoding and PNG encoding, which
Pillow does without holding the GIL, so the pool's threads spread it over the cores. Pure code (no
Django): the caller says how an item is decoded and how large its overlay is.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import math
import multiprocessing
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.process import AuthenticationString  # type: ignore[attr-defined]
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Generic, TypeVar

import numpy as np

from . import cpuwork
from .cpuwork import Blob, Span, Target, deliver, overlay_png, shrink
from .inference import LoadedImagingModel, PendingRead

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BATCH = 64
THREADS = max(1, min(4, os.cpu_count() or 1))  # a CPU worker: the rest of the cores are torch's


def default_threads(device: str) -> int:
    """Pool threads for a model on ``device``: ``THREADS`` beside a CPU model; beside a GPU
    model, which needs the CPU only to feed it, every core but one (at most 16)."""
    if device == "cpu":
        return THREADS
    return max(THREADS, min(16, (os.cpu_count() or 1) - 1))


STAGES = ("wait_decode", "forward", "wait_device", "wait_encode")

# While the pool's threads run Python (opening and saving PNGs), a thread that gave the GIL up
# waits for it up to the interpreter's switch interval (5 ms by default), and the calling thread
# gives it up at every torch operation. A short interval while the pipeline runs hands it back
# within 0.1 ms: on the CPU the whole path went from 66-69% to 81-91% of the bare forward; on a GPU
# (2026-11-26, H200) the gain was smaller (1.04-1.08 ms of the calling thread's time per image became
# 0.80-0.94 for ResNet-18 at 224 px), so something else costs it most of that time there (see
# imaging/README.md).
SWITCH_INTERVAL = 1e-4

# Images per call to a decode process, at least: a call costs this process about 0.3 ms of CPU
# (the executor's threads, pickling, the pipe; 2026-11-27, 2 cores), 0.05 ms an image in the
# groups of 4 to 5 that 15 processes made of a batch of 64.
PROCESS_GROUP = 16
# Batches decoded ahead of the model with processes (with threads: one). Tunable for a GPU host
# (``bench/imaging.py --decode-ahead``), as PROCESS_GROUP is (``--process-group``).
PROCESS_DECODE_AHEAD = 2
# Decode calls handed to the processes before overlay calls that wait for one (``DecodeProcesses``:
# at most one call per process with the executor, the rest waiting here in two queues). Off: the
# executor's own first-come order, where a batch's decoding may queue behind the overlays of up to
# MAX_ENCODE_LAG batches. The model waits for decoded images and not for overlays (their rows wait
# up to MAX_ENCODE_LAG batches), so decoding first keeps a GPU busier: on an H100 (Inception-V3,
# 299 px, bf16, batch 64, 15 processes, the store in packs) the whole path kept 89% of the bare
# forward with it against 81% without (imaging/README.md); on the CPU the same either way.
DECODE_FIRST = True


@dataclass(frozen=True)
class ReadOut(Generic[T]):
    item: T
    probabilities: dict[str, float] | None  # None: the item could not be decoded
    positive: dict[str, bool]
    overlays: dict[str, bytes]  # label -> heat map overlay PNG at the item's size (``cpuwork.overlay_dims``)
    written: dict[str, Span] = field(default_factory=dict)  # label -> the PNG's place in ``pack`` instead
    pack: str = ""  # the name (``overlay_packs``) of the pack file that holds the ``written`` PNGs


def read_images(model: LoadedImagingModel, items: Sequence[T], decode: Callable[[T], np.ndarray | None],
                overlay_size: Callable[[T], tuple[int, int]], *, batch_size: int = BATCH,
                threads: int | None = None, seconds: dict[str, float] | None = None,
                switch_interval: float | None = SWITCH_INTERVAL, processes: int = 0,
                fetch: Callable[[T], Blob | None] | None = None, behind: int | None = None,
                resize_on_device: bool | None = None,
                overlay_packs: Callable[[], tuple[str, Target]] | None = None) -> Iterator[ReadOut[T]]:
    """Yields one ``ReadOut`` per item, in order. ``decode`` returns the item's grey image (uint8,
    or float32 in [0, 1]) or None when it cannot be read; ``overlay_size`` its (width, height), which
    the overlays keep, at most ``cpuwork.OVERLAY_MAX_SIDE`` a side (``cpuwork.overlay_dims``).
    ``threads``: the pool's (default ``default_threads``). ``seconds``, if given, gathers where the
    calling thread spent its time (``STAGES``: waiting for decoded images; preprocessing, queuing
    the forward pass with the heat maps and handing out the results; waiting for the device to
    finish a batch, nearly nothing on the CPU, where the work is done as it is queued; waiting for
    the overlay PNGs). On a GPU, a thread that waits for the device most of the time means that
    the GPU is the bottleneck; one that spends it in "forward", the CPU side of feeding it. ``switch_interval``: the
    interpreter's thread switch interval while the pipeline runs (restored after; None: unchanged).

    ``processes`` > 0: decoding and PNG encoding run in that many worker processes
    (``DecodeProcesses``, kept for the life of this process) instead of threads, so they share no
    GIL with the thread that feeds the network. Then ``fetch`` gives an item's file bytes and frame
    (or None when the file is gone), read on the threads (as many as processes), and the file is
    decoded in a worker process with ``imaging.pixels.model_image`` (``decode`` is not called).

    ``behind``: batches queued on the model's device before the oldest is collected (default: 1 on
    a GPU, so the GPU runs a batch while the CPU finishes the one before; 0 on the CPU, where the
    forward pass is done when it returns).

    ``resize_on_device``: uint8 images larger than the input but no larger in bytes than their
    shrunk float32 copy reach the model as they are and are shrunk on its device (``shrink``'s
    ``keep_uint8``; default: on a GPU), instead of on the pool; on the CPU the pool shrinks them.

    ``overlay_packs``: called once per group of images whose overlays are encoded together (a few
    per batch), it gives a name and a path (and permissions) for a new file: the thread or process
    that encodes the group's PNGs writes them all there, one after another, as one new file (a heat
    map pack, ``cpuwork.deliver``), and each item's ``written`` gives its PNGs' (offset, length) in
    the file named by its ``pack`` instead of ``overlays`` giving their bytes, so the bytes never
    come back through a pipe or take this process's GIL to be saved, and a file is created per
    group rather than per overlay. An existing file is an error (raised when the group's first item
    is yielded)."""
    if behind is not None and behind not in (0, 1):
        raise ValueError("behind must be 0 or 1")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if processes < 0:
        raise ValueError("processes must be 0 or more")
    if processes and fetch is None:
        raise ValueError("decoding in processes needs fetch (an item's file bytes and frame)")
    procs = DecodeProcesses.get(processes) if processes else None
    if procs is not None:
        threads = processes
    threads = default_threads(model.device.type) if threads is None else threads
    spent = seconds if seconds is not None else {}
    for stage in STAGES:
        spent.setdefault(stage, 0.0)
    chunks = [list(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]

    previous_interval = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(min(previous_interval, switch_interval))
    try:
        yield from _pipeline(model, chunks, decode, overlay_size, batch_size, threads, spent, procs, fetch,
                             (1 if model.device.type == "cuda" else 0) if behind is None else behind,
                             model.device.type != "cpu" if resize_on_device is None else resize_on_device,
                             overlay_packs)
    finally:
        sys.setswitchinterval(previous_interval)


def _groups(n: int, parts: int) -> list[slice]:
    """``range(n)`` cut into at most ``parts`` contiguous slices of (nearly) equal length."""
    size = max(1, math.ceil(n / max(1, parts)))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


# an item's overlays being encoded: the group's future, the item's place in the group, the group's pack name
_Handle = tuple["Future[list[dict[str, bytes | Span]]]", int, str]
_Row = tuple[T, dict[str, float] | None, dict[str, bool], "_Handle | None"]
# a batch queued on the model's device: its items, which of them were readable, their overlay sizes
_Launched = tuple[list[T], list[int], list[tuple[int, int]], "PendingRead | None"]


def _pipeline(model: LoadedImagingModel, chunks: list[list[T]], decode: Callable[[T], np.ndarray | None],
              overlay_size: Callable[[T], tuple[int, int]], batch_size: int, threads: int,
              spent: dict[str, float], procs: DecodeProcesses | None = None,
              fetch: Callable[[T], Blob | None] | None = None, behind: int = 0,
              keep_uint8: bool = False,
              overlay_packs: Callable[[], tuple[str, Target]] | None = None) -> Iterator[ReadOut[T]]:
    """The pool gets one task per group of images (as many groups as threads), not one per image:
    each submission wakes a thread that takes the GIL from the calling thread, so fewer of them
    leave the calling thread more of its time for the network. With worker processes (``procs``)
    each thread reads its group's files and waits for a process to decode them (groups of at least
    ``PROCESS_GROUP`` images, ``PROCESS_DECODE_AHEAD`` batches ahead; files and images through shared memory,
    ``DecodeProcesses.decode``); the heat maps come to the host at the CAM layer's few pixels and a
    process resizes and encodes them."""
    on_device = model.device.type != "cpu" and procs is None  # heat maps resized and quantised by the GPU
    labels = model.labels
    size = model.input_size

    def load(items: list[T]) -> list[np.ndarray | None]:  # decoded and shrunk to the input size on the pool
        if procs is not None and fetch is not None:
            return procs.decode([fetch(item) for item in items], size, keep_uint8)
        out: list[np.ndarray | None] = []
        for item in items:
            image = decode(item)
            out.append(None if image is None else shrink(image, size, keep_uint8=keep_uint8))
        return out

    def encode_levels(levels: list[np.ndarray], target: Target) -> list[dict[str, bytes | Span]]:
        return deliver([{label: overlay_png(lv[n]) for n, label in enumerate(labels)} for lv in levels], target)

    def parts(n: int) -> int:  # groups of a batch: one per thread; with processes, of PROCESS_GROUP or more
        return threads if procs is None else min(threads, math.ceil(n / PROCESS_GROUP))

    def submit_load(chunk: list[T]) -> list[Future[list[np.ndarray | None]]]:
        return [pool.submit(load, chunk[g]) for g in _groups(len(chunk), parts(len(chunk)))]

    def collect(entry: _Launched[T]) -> list[_Row[T]]:
        """A launched batch's probabilities and heat maps; its overlay PNGs handed to the pool."""
        chunk, readable, sizes, pending = entry
        results: dict[int, _Row[T]] = {}
        if pending is not None:
            t = time.perf_counter()
            probs, maps = pending.result()
            spent["wait_device"] += time.perf_counter() - t
            handles: list[_Handle] = []
            for g in _groups(len(readable), parts(len(readable))):
                name, target = ("", None) if overlay_packs is None else overlay_packs()
                future: Future[list[dict[str, bytes | Span]]]
                if isinstance(maps, list):  # finished on the device (on_device)
                    future = pool.submit(encode_levels, maps[g], target)
                else:
                    run_on = pool if procs is None else procs
                    future = run_on.submit(cpuwork.encode_heat, maps[g], sizes[g], list(labels), target)
                handles.extend((future, j, name) for j in range(g.stop - g.start))
            for j, i in enumerate(readable):
                p = {label: float(probs[j, n]) for n, label in enumerate(labels)}
                results[i] = (chunk[i], p, {label: p[label] >= model.thresholds[label] for label in labels},
                              handles[j])
        return [results.get(i, (item, None, {}, None)) for i, item in enumerate(chunk)]

    # behind=1 (a GPU): a batch is collected after the next one is queued, so the GPU runs that one
    # while the CPU hands out this one's overlays and waits for the next decoded images.
    # With processes, decoding runs PROCESS_DECODE_AHEAD (2) batches ahead: a batch is cut into
    # fewer, larger groups there, and the next-but-one batch keeps the other processes busy.
    depth = 1 if procs is None else max(1, PROCESS_DECODE_AHEAD)
    # A batch's overlays are encoded in parts(batch) groups; with processes a batch of 64 is 4 groups
    # of 16, so with one batch encoding at a time 4 processes of 15 would encode while the others
    # idle. The rows of as many batches as it takes to give every process a group wait for their
    # PNGs (their order kept); with threads, one batch as before.
    encoding = encode_lag(parts(batch_size), threads)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="imaging-read") as pool:
        ahead = [submit_load(chunk) for chunk in chunks[:depth]]
        launched: list[_Launched[T]] = []
        waiting: deque[list[_Row[T]]] = deque()
        for k, chunk in enumerate(chunks):
            t0 = time.perf_counter()
            decoded = [image for future in ahead.pop(0) for image in future.result()]
            t1 = time.perf_counter()
            spent["wait_decode"] += t1 - t0
            if k + depth < len(chunks):
                ahead.append(submit_load(chunks[k + depth]))
            readable = [i for i, image in enumerate(decoded) if image is not None]
            images = [image for image in decoded if image is not None]
            sizes = [cpuwork.overlay_dims(*overlay_size(chunk[i])) for i in readable]
            pending = (model.launch(images, offset=k * batch_size, shrunk=True, sizes=sizes if on_device else None)
                       if readable else None)
            launched.append((chunk, readable, sizes, pending))
            spent["forward"] += time.perf_counter() - t1
            while len(launched) > (behind if k + 1 < len(chunks) else 0):  # the last batch: collect them all
                t, waited = time.perf_counter(), spent["wait_device"]
                waiting.append(collect(launched.pop(0)))
                spent["forward"] += time.perf_counter() - t - (spent["wait_device"] - waited)
                while len(waiting) > encoding:  # the oldest batch's PNGs were encoded meanwhile
                    yield from _finished(waiting.popleft(), spent)
        while waiting:
            yield from _finished(waiting.popleft(), spent)


MAX_ENCODE_LAG = 4


def encode_lag(groups: int, workers: int) -> int:
    """Batches whose overlays may be encoding while the pipeline goes on: enough for ``workers``
    (threads or processes) to have a group each when a batch is cut into ``groups``, at least one
    and at most ``MAX_ENCODE_LAG``."""
    return max(1, min(MAX_ENCODE_LAG, math.ceil(workers / max(1, groups))))


def _finished(rows: list[_Row[T]], spent: dict[str, float]) -> Iterator[ReadOut[T]]:
    t = time.perf_counter()
    done = []
    for item, probabilities, positive, handle in rows:
        out = {} if handle is None else handle[0].result()[handle[1]]
        written = {k: v for k, v in out.items() if isinstance(v, tuple)}
        done.append(ReadOut(item, probabilities, positive, {k: v for k, v in out.items() if isinstance(v, bytes)},
                            written, handle[2] if handle is not None and written else ""))
    spent["wait_encode"] += time.perf_counter() - t
    yield from done


# a call waiting for a decode process (DECODE_FIRST): its future, function and arguments
_Call = tuple["Future[Any]", Callable[..., Any], tuple[object, ...]]

# Shared memory a pool of decode processes may hold for handing decoded images back (blocks of
# whole MiB, reused; as many in use at once as threads wait on the pool). Where /dev/shm is small
# (a container's default 64 MiB) a block that cannot be reserved switches the pool to the pipe.
SHM_BUDGET = 128 * 1024 * 1024
_SHM_UNIT = 1024 * 1024


class DecodeProcesses:
    """Worker processes for the pipeline's decoding and PNG encoding: started once per process
    and size (``get``), reused by every later job, shut down at exit.

    Spawned, not forked (a fork of a process holding a CUDA context or OpenMP threads is unsafe),
    and they import only ``cpuwork`` (numpy, Pillow, ``imaging.pixels``) and, as spawned processes
    do, the main module (which must keep its work under ``if __name__ == "__main__"``: ``celery``,
    ``manage.py``, ``pytest`` and the bench scripts do). A Celery prefork worker's pool processes
    are daemonic, and Python refuses children to a daemonic process (so that none outlives it);
    every process is started at once here, with that check lifted for the moment of starting (and
    billiard's key swapped for the standard library's, which can be sent to a child), and each one
    ends itself when its parent is gone (``cpuwork.worker_start``), which is what the check
    protects. A pool that broke (a process killed) is replaced at the next ``get``.

    Decoded images come back through shared memory (``decode``): the process writes them into a
    block this process created and reserved, and only their places travel through the pipe; this
    process copies them out and reuses the block. Through the pipe a 64 KiB image was pickled,
    written, read and unpickled, with the GIL held for most of it, by the process that feeds the GPU.
    """

    _pools: dict[int, DecodeProcesses] = {}
    _lock = threading.Lock()

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a process pool needs at least one process")
        self.size = size
        context = multiprocessing.get_context("spawn")
        self.executor = ProcessPoolExecutor(max_workers=size, mp_context=context,
                                            initializer=cpuwork.worker_start, initargs=(os.getpid(),))
        config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
        saved = dict(config)
        try:
            config["daemon"] = False
            # Celery's pool process carries billiard's authentication key, which only billiard may
            # pickle: the children get the same key as the standard library's kind.
            config["authkey"] = AuthenticationString(bytes(config["authkey"]))
            # One call per process: each submission finds no idle process and starts one.
            started = [self.executor.submit(cpuwork.worker_facts) for _ in range(size)]
        finally:
            config.clear()
            config.update(saved)
        # (pid, torch loaded) from whichever process answered each call
        self.facts: list[tuple[int, bool]] = [future.result() for future in started]
        # DECODE_FIRST: calls not yet handed to the executor (decode calls, then the others), and
        # how many it holds
        self._order_lock = threading.Lock()
        self._queued: tuple[deque[_Call], deque[_Call]] = (deque(), deque())
        self._handed = 0
        self._blocks_lock = threading.Lock()
        self._blocks: list[SharedMemory] = []  # every block created (closed and unlinked by close)
        self._free: list[SharedMemory] = []
        self.shm_budget = SHM_BUDGET
        self.shm_error = ""  # why images come back through the pipe instead (empty: they do not)

    @classmethod
    def get(cls, size: int) -> DecodeProcesses:
        with cls._lock:
            pool = cls._pools.get(size)
            if pool is None or pool.broken:
                if pool is not None:
                    pool.close()
                pool = cls._pools[size] = DecodeProcesses(size)
            return pool

    @classmethod
    def close_all(cls) -> None:
        with cls._lock:
            for pool in cls._pools.values():
                pool.close()
            cls._pools.clear()

    @property
    def broken(self) -> bool:
        return bool(getattr(self.executor, "_broken", False))

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return sorted(getattr(self.executor, "_processes", None) or {})

    def submit(self, fn: Callable[..., R], /, *args: object, first: bool = False) -> Future[R]:
        """``fn(*args)`` in a worker process. With ``DECODE_FIRST`` the call waits here until a
        process is free, behind every waiting ``first`` call (``first``: ahead of every other)."""
        if not DECODE_FIRST:
            return self.executor.submit(fn, *args)
        future: Future[R] = Future()
        with self._order_lock:
            self._queued[0 if first else 1].append((future, fn, args))
        self._hand_on()
        return future

    def _hand_on(self) -> None:
        """Waiting calls to the executor while it holds fewer than one per process: the executor
        keeps its own first-come order, so only a call it does not hold yet can be put first."""
        while True:
            with self._order_lock:
                queue = self._queued[0] or self._queued[1]
                if self._handed >= self.size or not queue:
                    return
                future, fn, args = queue.popleft()
                self._handed += 1
            if not future.set_running_or_notify_cancel():  # cancelled while it waited
                self._returned()
                continue
            try:
                handed = self.executor.submit(fn, *args)
            except Exception as exc:  # noqa: BLE001 - a broken or shut down pool: this call fails, the rest go on
                self._returned()
                future.set_exception(exc)
                continue
            handed.add_done_callback(functools.partial(self._done, future))

    def _returned(self) -> None:
        with self._order_lock:
            self._handed -= 1

    def _done(self, future: Future[Any], handed: Future[Any]) -> None:
        """A handed call finished (on the executor's thread): its result to the caller's future,
        and the next waiting call to the executor."""
        self._returned()
        try:
            future.set_result(handed.result())
        except Exception as exc:  # noqa: BLE001 - the call's own error, a broken pool, a cancellation: the caller's
            future.set_exception(exc)
        self._hand_on()

    def call(self, fn: Callable[..., R], /, *args: object) -> R:
        """``fn(*args)`` in a worker process, waited for; with ``DECODE_FIRST``, ahead of the calls
        given with ``submit`` (the decoding the model waits for)."""
        try:
            return self.submit(fn, *args, first=True).result()
        except BrokenProcessPool as exc:
            raise RuntimeError("an imaging decode process ended unexpectedly; the pool is started again "
                               "at the next job") from exc

    def decode(self, blobs: list[Blob | None], size: int, keep_uint8: bool = False) -> list[np.ndarray | None]:
        """``cpuwork.decode_shrink`` in a worker process, the images handed back through a
        shared-memory block (``cpuwork.decode_into``) when one can be had, else through the pipe."""
        start = sum(cpuwork.aligned(len(blob[0])) for blob in blobs if blob is not None)  # the files first
        need = start + max(1, len(blobs)) * cpuwork.aligned(cpuwork.largest_bytes(size))  # then the images
        block = self._take_block(need)
        if block is None:
            return self.call(cpuwork.decode_shrink, blobs, size, keep_uint8)
        buf = block.buf
        assert buf is not None
        try:
            files: list[cpuwork.Placed | None] = []
            offset = 0
            for blob in blobs:
                if blob is None:
                    files.append(None)
                    continue
                buf[offset:offset + len(blob[0])] = blob[0]
                files.append((offset, len(blob[0]), blob[1]))
                offset += cpuwork.aligned(len(blob[0]))
            placed = self.call(cpuwork.decode_into, files, size, keep_uint8, block.name, start, need)
            return [p if p is None or isinstance(p, np.ndarray)
                    else np.ndarray(p[1], np.dtype(p[2]), buffer=buf, offset=p[0]).copy() for p in placed]
        finally:
            with self._blocks_lock:
                self._free.append(block)

    @property
    def shm_bytes(self) -> int:
        """Bytes of shared memory the pool holds."""
        with self._blocks_lock:
            return self._held()

    def _held(self) -> int:  # under the lock
        return sum(block.size for block in self._blocks)

    def _take_block(self, need: int) -> SharedMemory | None:
        with self._blocks_lock:
            fits = [block for block in self._free if block.size >= need]
            if fits:
                block = min(fits, key=lambda b: b.size)
                self._free.remove(block)
                return block
            size = cpuwork.aligned(need, _SHM_UNIT)
            if self.shm_error or self._held() + size > self.shm_budget:
                return None
            try:
                block = SharedMemory(name=f"cdss-img-{os.getpid()}-{secrets.token_hex(4)}", create=True, size=size)
            except OSError as exc:
                self._no_shm(f"shared memory unavailable ({exc.strerror or exc})")
                return None
            try:
                # reserve the pages now: a block larger than what /dev/shm has left would otherwise
                # kill the process that writes into it (SIGBUS)
                os.posix_fallocate(block._fd, 0, size)  # type: ignore[attr-defined]
            except OSError as exc:
                block.close()
                block.unlink()
                self._no_shm(f"{size >> 20} MiB of shared memory could not be reserved ({exc.strerror or exc})")
                return None
            self._blocks.append(block)
            return block

    def _no_shm(self, why: str) -> None:
        self.shm_error = why
        logger.warning("imaging decode processes: %s; decoded images come back through the pipe "
                       "(give /dev/shm more room, e.g. a container's --shm-size)", why)

    def close(self) -> None:
        with self._order_lock:
            waiting = [*self._queued[0], *self._queued[1]]
            self._queued[0].clear()
            self._queued[1].clear()
        for future, _, _ in waiting:
            future.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)
        with self._blocks_lock:
            for block in self._blocks:
                with contextlib.suppress(BufferError):  # a view still held elsewhere: unlinked all the same
                    block.close()
                block.unlink()
            self._blocks.clear()
            self._free.clear()


atexit.register(DecodeProcesses.close_all)
