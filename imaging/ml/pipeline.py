"""The read path of the imaging job, shared with ``bench/imaging.py``: images decoded on a thread
pool one batch ahead of the model, each batch preprocessed and run through the network once
(probabilities and Grad-CAM from the same forward pass), and the heat map overlay PNGs encoded
on the same pool while the next batch runs. Images larger than the network's input are shrunk on
the pool too (``modelfile.shrink``), right after decoding. Pure code (no Django): the caller says how an item
is decoded and how large its overlay is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from .inference import LoadedImagingModel, heatmap_overlay_png
from .modelfile import shrink

T = TypeVar("T")

BATCH = 64
THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ReadOut(Generic[T]):
    item: T
    probabilities: dict[str, float] | None  # None: the item could not be decoded
    positive: dict[str, bool]
    overlays: dict[str, bytes]  # label -> heat map overlay PNG at the item's size


def read_images(model: LoadedImagingModel, items: Sequence[T], decode: Callable[[T], np.ndarray | None],
                overlay_size: Callable[[T], tuple[int, int]], *, batch_size: int = BATCH,
                threads: int = THREADS) -> Iterator[ReadOut[T]]:
    """Yields one ``ReadOut`` per item, in order. ``decode`` returns the item's grey image (uint8,
    or float32 in [0, 1]) or None when it cannot be read; ``overlay_size`` its (width, height)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    chunks = [list(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]

    def load(item: T) -> np.ndarray | None:  # decoded and shrunk to the input size on the pool
        image = decode(item)
        return None if image is None else shrink(image, model.input_size)

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="imaging-read") as pool:
        ahead = [pool.submit(load, item) for item in chunks[0]] if chunks else []
        previous: list[tuple[T, dict[str, float] | None, dict[str, bool], dict[str, Future[bytes]]]] = []
        for k, chunk in enumerate(chunks):
            decoded = [future.result() for future in ahead]
            ahead = [pool.submit(load, item) for item in chunks[k + 1]] if k + 1 < len(chunks) else []
            readable = [i for i, image in enumerate(decoded) if image is not None]
            images = [image for image in decoded if image is not None]
            current: list[tuple[T, dict[str, float] | None, dict[str, bool], dict[str, Future[bytes]]]] = []
            results: dict[int, tuple[dict[str, float], dict[str, bool], dict[str, Future[bytes]]]] = {}
            if readable:
                probs, heat = model.read(images, offset=k * batch_size)
                for j, i in enumerate(readable):
                    width, height = overlay_size(chunk[i])
                    p = {label: float(probs[j, n]) for n, label in enumerate(model.labels)}
                    results[i] = (p, {label: p[label] >= model.thresholds[label] for label in model.labels},
                                  {label: pool.submit(heatmap_overlay_png, heat[j, n], width=width, height=height)
                                   for n, label in enumerate(model.labels)})
            for i, item in enumerate(chunk):
                p_, pos, pngs = results.get(i, (None, {}, {}))
                current.append((item, p_, pos, pngs))
            yield from _finished(previous)  # the previous batch's PNGs were encoded during this forward
            previous = current
        yield from _finished(previous)


def _finished(rows: list[tuple[T, dict[str, float] | None, dict[str, bool], dict[str, Future[bytes]]]]
              ) -> Iterator[ReadOut[T]]:
    for item, probabilities, positive, pngs in rows:
        yield ReadOut(item, probabilities, positive, {label: f.result() for label, f in pngs.items()})
