"""The imaging job's CPU work that needs no torch: checking and shrinking decoded images, and the
heat map overlay PNGs (colour map, palette PNG). Imports only numpy, Pillow and ``imaging.pixels``
(pure: no pydicom until a DICOM file is decoded), so the worker processes of
``pipeline.DecodeProcesses`` start in a fraction of a second and never touch the GPU; ``modelfile``
and ``inference`` re-export what they used to define here.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from typing import Any

import numpy as np
from PIL import Image

from imaging.pixels import fit_size


def check_image(image: Any, index: int) -> np.ndarray:
    """A 2-D image the network can take: uint8 (0-255 standing for [0, 1]) as it is, anything else
    as float32 in [0, 1]; otherwise a ValueError naming the image and the problem."""
    if not isinstance(image, np.ndarray) or image.ndim != 2 or min(image.shape) < 1:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"image {index}: expected a 2-D grey array, got {shape}")
    if image.dtype == np.uint8:
        return image
    arr = image.astype(np.float32, copy=False)
    low, high = float(arr.min()), float(arr.max())  # NaN propagates into both
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"image {index}: contains NaN or infinite values")
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"image {index}: values must lie in [0, 1] (found {low:.3g} to {high:.3g})")
    return np.clip(arr, 0.0, 1.0) if low < 0.0 or high > 1.0 else arr


def largest_bytes(size: int) -> int:
    """The most bytes ``shrink`` returns for one image at input ``size``: float32, size x size."""
    return 4 * size * size


def shrink(image: Any, size: int, *, index: int = 0, keep_uint8: bool = False) -> np.ndarray:
    """A checked image (``check_image``) larger than ``size`` on either side, resized to
    ``size`` x ``size`` float32 in [0, 1]: bilinear, antialiased (the triangle filter widened by the
    scale factor; Pillow's resampling, which torch's ``antialias=True`` reproduces, on float32
    pixels, releasing the GIL, so decoding threads can do it). Any other image is returned checked.

    ``keep_uint8``: for a device that resizes batches itself (a GPU, ``modelfile.preprocess``), a
    uint8 image of no more bytes than its shrunk float32 copy is returned as it is (a 256 x 256
    image: 64 KiB, against 196 KiB shrunk to 224 x 224), sparing the CPU the resize and a third of
    the bytes to hand over; larger ones (a radiograph's thousands of pixels a side) are shrunk here."""
    arr = check_image(image, index)
    if arr.shape[0] <= size and arr.shape[1] <= size:
        return arr
    if keep_uint8 and arr.dtype == np.uint8 and arr.size <= largest_bytes(size):
        return arr
    pil = Image.fromarray(np.ascontiguousarray(arr))  # "L" for uint8, "F" for float32
    if pil.mode != "F":
        pil = pil.convert("F")
    out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    if arr.dtype == np.uint8:
        out = out / np.float32(255.0)
    return np.clip(out, 0.0, 1.0)


# Anchors of a perceptually ordered "inferno"-like colour map (black-purple-red-orange-yellow),
# expanded once into a 256-entry RGBA lookup table; heat below _COLD is fully transparent.
_CMAP_POS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_CMAP_RGB = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)
_COLD = 0.15
_MAX_ALPHA = 200


def _lut() -> np.ndarray:
    levels = np.linspace(0.0, 1.0, 256)
    lut = np.empty((256, 4), dtype=np.uint8)
    for c in range(3):
        lut[:, c] = np.round(np.interp(levels, _CMAP_POS, _CMAP_RGB[:, c]))
    lut[:, 3] = np.round(np.clip((levels - _COLD) / (1.0 - _COLD), 0.0, 1.0) * _MAX_ALPHA)
    return lut


_LUT = _lut()
_LUT_BYTES = _LUT.tobytes()


def overlay_png(levels: np.ndarray) -> bytes:
    """The overlay PNG of a 2-D uint8 array of colour-map levels (``heat_levels``): 8-bit palette
    with a transparency table (the 256 RGBA colours of the map), fast zlib level."""
    if levels.ndim != 2 or levels.dtype != np.uint8:
        raise ValueError(f"levels must be a 2-D uint8 array, got {levels.dtype} {levels.shape}")
    image = Image.fromarray(levels)  # "L"
    image.putpalette(_LUT_BYTES, rawmode="RGBA")
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# Heat map overlays are stored at most this many pixels a side, the image's shape kept (its preview
# is up to 1,024). A Grad-CAM map has the CAM layer's few cells (8 x 8 for Inception-V3 at 299 px,
# 7 x 7 for ResNet-18 and DenseNet-121 at 224), so a larger PNG holds no more of it; the viewer
# stretches the overlay over the image, as it upsamples bilinearly (a 128-pixel overlay of an 8 x 8
# map stretched to 1,024 x 850 is within 8 of 255 in opacity of one drawn at that size). At
# 1,024 x 850 the PNG took 6.5-16 ms to encode and 0.2 MB; at 128 px, 0.15 ms and about 11 KB.
OVERLAY_MAX_SIDE = 128


def overlay_dims(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the overlay of an image of that size: the same, or scaled down to
    ``OVERLAY_MAX_SIDE`` on its longer side (``imaging.pixels.fit_size``)."""
    return fit_size(width, height, OVERLAY_MAX_SIDE)


def heatmap_overlay_png(heatmap: np.ndarray, *, width: int, height: int) -> bytes:
    """PNG of the heat map alone (colour map, transparent where cold) sized to the image: a heat
    map of another size (e.g. the CAM layer's few pixels) is upsampled bilinearly first. The PNG is
    8-bit palette with a transparency table (the 256 RGBA colours of the map): the same pixels as
    an RGBA PNG, a quarter of the data to compress."""
    if heatmap.ndim != 2:
        raise ValueError(f"heat map must be 2-D, got shape {heatmap.shape}")
    if width < 1 or height < 1:
        raise ValueError("width and height must be positive")
    heat = np.clip(np.nan_to_num(heatmap.astype(np.float32, copy=False)), 0.0, 1.0)
    if heat.shape != (height, width):
        heat = np.asarray(Image.fromarray(heat).resize((width, height), Image.Resampling.BILINEAR))
    return overlay_png(np.clip(heat * 255.0 + 0.5, 0, 255).astype(np.uint8))


# --- Work done in the pipeline's worker processes (``pipeline.DecodeProcesses``) -----------------
# Module-level functions, so a spawned process finds them by importing this module alone (numpy,
# Pillow and imaging.pixels: no torch, no Django, no CUDA).

Blob = tuple[bytes, int | None]  # a stored file's bytes and the frame to read (None: the default)
_WATCH_SECONDS = 1.0


def worker_start(parent: int) -> None:
    """Initialiser of each worker process: one thread for numpy and Pillow's own pools (the process
    is one of many), and a watchdog that ends the process when ``parent`` is gone, so a worker
    killed without shutting its pool down leaves no process behind."""
    import threading
    import time

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")

    def watch() -> None:
        while True:
            time.sleep(_WATCH_SECONDS)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_facts() -> tuple[int, bool]:
    """(pid, whether torch is loaded here): a worker process answers once it has started."""
    import sys

    return os.getpid(), "torch" in sys.modules


def decode_blob(blob: Blob | None) -> np.ndarray | None:
    """A stored file's image as the models read it (``imaging.pixels.model_image``: the preview's
    rendering of that frame); None for a missing file (a None blob) or one that cannot be read."""
    from imaging.imagefile import ImageFileError
    from imaging.pixels import model_image

    if blob is None:
        return None
    try:
        return model_image(blob[0], frame=blob[1])
    except (OSError, ImageFileError):
        return None


def decode_shrink(blobs: list[Blob | None], size: int, keep_uint8: bool = False) -> list[np.ndarray | None]:
    """Each file's image (``decode_blob``), shrunk to at most ``size`` (``shrink``, with
    ``keep_uint8``); None where ``decode_blob`` gives None."""
    out: list[np.ndarray | None] = []
    for blob in blobs:
        image = decode_blob(blob)
        out.append(None if image is None else shrink(image, size, keep_uint8=keep_uint8))
    return out


# Shared-memory blocks of the parent (``pipeline.DecodeProcesses``) this process has attached,
# by name; a few at most (the parent reuses its blocks), the oldest closed past _ATTACH_MAX.
_ATTACHED: dict[str, Any] = {}
_ATTACH_MAX = 32
ALIGN = 64  # bytes: where each file and image starts in a shared block


def aligned(n: int, unit: int = ALIGN) -> int:
    """``n`` rounded up to a multiple of ``unit``."""
    return -(-n // unit) * unit


# a file placed in a shared-memory block by the parent: (offset, length, frame)
Placed = tuple[int, int, int | None]


def decode_into(files: list[Placed | None], size: int, keep_uint8: bool, block: str, start: int,
                capacity: int) -> list[tuple[int, tuple[int, ...], str] | np.ndarray | None]:
    """``decode_shrink`` of files the parent wrote into its shared-memory ``block`` (each as
    offset, length, frame; None for a missing file), with the images written into the same block
    from ``start`` to ``capacity`` instead of being sent back through the pipe: per image (offset,
    shape, dtype) in the block, the array itself when the block is full, or None. Neither the
    files nor the images travel through the pipe; the parent copies the images out."""
    from multiprocessing.shared_memory import SharedMemory

    shm = _ATTACHED.get(block)
    if shm is None:
        while len(_ATTACHED) >= _ATTACH_MAX:
            _ATTACHED.pop(next(iter(_ATTACHED))).close()
        shm = _ATTACHED[block] = SharedMemory(name=block)
    buf = shm.buf
    assert buf is not None
    blobs: list[Blob | None] = [None if f is None else (bytes(buf[f[0]:f[0] + f[1]]), f[2]) for f in files]
    out: list[tuple[int, tuple[int, ...], str] | np.ndarray | None] = []
    offset = start
    for image in decode_shrink(blobs, size, keep_uint8):
        if image is None:
            out.append(None)
            continue
        arr = np.ascontiguousarray(image)
        if offset + arr.nbytes > min(capacity, shm.size):
            out.append(arr)
            continue
        np.ndarray(arr.shape, arr.dtype, buffer=buf, offset=offset)[...] = arr
        out.append((offset, arr.shape, arr.dtype.str))
        offset += aligned(arr.nbytes)
    return out


# Where a group's overlays go: None, their PNGs come back as bytes; else one new file, a heat map
# pack, is written at that path with these permissions (None: as the umask leaves them), holding
# the group's PNGs one after another, and each PNG's place in it comes back instead (``Span``).
Target = tuple[str, int | None] | None
Span = tuple[int, int]  # a PNG's (offset, length) in bytes in its pack


def encode_heat(heat: np.ndarray, sizes: list[tuple[int, int]], labels: list[str],
                target: Target = None) -> list[dict[str, bytes | Span]]:
    """Per image, per label, the overlay PNG of its heat map (N x L x h x w) at the image's
    (width, height) in ``sizes`` (``heatmap_overlay_png``); with a ``target``, all of them written
    there as one pack (``deliver``) and their places given instead."""
    return deliver([{label: heatmap_overlay_png(heat[j, n], width=width, height=height)
                     for n, label in enumerate(labels)}
                    for j, (width, height) in enumerate(sizes)], target)


def deliver(pngs: list[dict[str, bytes]], target: Target) -> list[dict[str, bytes | Span]]:
    """``pngs`` themselves, or written to ``target`` as one new file (``write_new_file``), in
    order, and each one's (offset, length) in it. One file per group rather than per PNG: a
    file system creates a folder's files one at a time, and an object store charges (and limits)
    each write, while a GPU worker makes thousands of overlays a second."""
    if target is None:
        return [dict(per_label) for per_label in pngs]
    spans: list[dict[str, bytes | Span]] = []
    offset = 0
    for per_label in pngs:
        placed: dict[str, bytes | Span] = {}
        for label, png in per_label.items():
            placed[label] = (offset, len(png))
            offset += len(png)
        spans.append(placed)
    write_new_file(target[0], b"".join(png for per_label in pngs for png in per_label.values()), target[1])
    return spans


def write_new_file(path: str, data: bytes, mode: int | None = None) -> None:
    """A new file with ``data`` at ``path``, as Django's FileSystemStorage saves one: its folders
    made, the file created exclusively (an existing file is an error, never overwritten), then
    given ``mode`` when set. A file that could not be written whole is removed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(path, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
