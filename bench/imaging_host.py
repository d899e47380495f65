#!/usr/bin/env python
"""Benchmark: can this host's CPUs feed an imaging model on a device of a given speed?

    python bench/imaging_host.py --rate 6500 --processes 15 [--arch inception_v3] [--input-size 299]
                                 [--batch-size 64] [--images 4096] [--store DIR] [--repeats 3]
    python bench/imaging_host.py --rate 0 --processes 15     # the host's own ceiling

A GPU worker's whole path is the job's pipeline (``imaging.ml.pipeline.read_images``, decode
processes, as on a GPU host) around a forward pass that runs on the device while the CPUs decode
the next batches and encode the last ones' overlays. This bench runs that pipeline, unchanged and
with every CPU step real (PNG decoding, shrinking, the calling thread's handling of each batch, the
overlay PNGs, the heat map packs with ``--store``), around a **paced device** instead of a GPU: a
batch of N images queued at time t is done at max(t, the previous batch's end) + N / ``--rate``,
and waiting for it sleeps, as a GPU's event wait does. The results it hands back are the Grad-CAM
maps and probabilities a real model (fresh weights, on the CPU, once before timing) computed for
the first batch, cycled, so the overlays have the real maps' content and size.

So the figure is the share of a device of that speed the host keeps busy: what the GPU bench
(``bench/imaging.py --device cuda``) measures, on any machine, with the device's speed as an
input. ``--rate 0`` (a device with no cost) gives the host's ceiling: the images per second its
CPUs can put through the pipeline at all. A rate the host's ceiling is well above, kept at less
than 80%, points at the pipeline's scheduling rather than its CPU cost. What it cannot show: the
GPU's own calling-thread costs (CUDA graph replay, pinned copies: 0.05 ms an image for Inception-V3
on an H200) beyond the stacking of each batch, done here as the real launch does it.

Prints figures; asserts nothing. Needs torch, torchvision, numpy and Pillow (no Django, no GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_network, pneumonia_source  # noqa: E402
from bench.imaging import _cpu_seconds, _source_pngs  # noqa: E402


class PacedDevice:
    """What ``read_images`` needs of a loaded model, with a device of ``rate`` images per second
    (0: no cost) in place of the network: ``launch`` stacks the batch (the host copy a real launch
    makes) and queues it; the result is ready when the device would have finished it."""

    def __init__(self, rate: float, input_size: int, labels: list[str], probs: np.ndarray, maps: np.ndarray) -> None:
        self.rate = rate
        self.input_size = input_size
        self.labels = labels
        self.thresholds = {label: 0.5 for label in labels}
        self.device = types.SimpleNamespace(type="cuda")  # read_images' choices for a GPU model
        self._probs, self._maps = probs, maps
        self._free_at = 0.0
        self.busy = 0.0  # seconds the device was given work

    def launch(self, images: Sequence[np.ndarray], *, offset: int = 0, shrunk: bool = False,
               sizes: Sequence[tuple[int, int]] | None = None) -> _Paced:
        if sizes is not None:
            raise ValueError("the paced device runs with decode processes, which finish the heat maps")
        staged = np.stack(images)  # the batch in one host buffer, as the real launch copies it
        n = len(staged)
        cost = n / self.rate if self.rate else 0.0
        start = max(time.perf_counter(), self._free_at)
        self._free_at = start + cost
        self.busy += cost
        pick = np.arange(offset, offset + n) % len(self._probs)
        return _Paced(self._free_at, self._probs[pick], self._maps[pick])


class _Paced:
    def __init__(self, ready_at: float, probs: np.ndarray, maps: np.ndarray) -> None:
        self.ready_at, self.probs, self.maps = ready_at, probs, maps

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        left = self.ready_at - time.perf_counter()
        if left > 0:
            time.sleep(left)
        return self.probs, self.maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, required=True,
                        help="The device's images per second (0: a device with no cost, for the host's ceiling)")
    parser.add_argument("--processes", type=int, required=True, help="Decode processes (a GPU host's way)")
    parser.add_argument("--arch", default="inception_v3")
    parser.add_argument("--input-size", type=int, help="Network input side (default: the architecture's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=256, help="Side of the source PNG images (256)")
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="Overlays written in heat map packs under DIR by the decode processes, as the job "
                             "does on a local storage folder (removed after each pass, untimed)")
    parser.add_argument("--process-group", type=int, metavar="N", help="pipeline.PROCESS_GROUP (default: the job's)")
    parser.add_argument("--decode-ahead", type=int, metavar="N",
                        help="pipeline.PROCESS_DECODE_AHEAD (default: the job's)")
    parser.add_argument("--encode-lag", type=int, metavar="N", help="pipeline.MAX_ENCODE_LAG (default: the job's)")
    parser.add_argument("--decode-first", action="store_true",
                        help="pipeline.DECODE_FIRST: decode calls before waiting overlay calls (default: the job's, off)")
    parser.add_argument("--data-dir", type=Path, help="Folder holding imaging/pneumoniamnist.npz "
                                                      "(default: CDSS_DATA_DIR, else ../shared/data)")
    parser.add_argument("--png-cache", type=Path, help="Folder keeping the source PNGs between runs")
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes; the best is shown (3)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="After the timings, one more pass under cProfile (the calling thread only): prints its "
                             "N costliest functions by own time")
    args = parser.parse_args()
    if args.rate < 0 or min(args.processes, args.batch_size, args.images, args.repeats) < 1:
        parser.error("--rate must be 0 or more; --processes, --batch-size, --images and --repeats at least 1")

    from imaging.ml import pipeline
    from imaging.ml.cpuwork import Target
    from imaging.ml.inference import LoadedImagingModel
    from imaging.pixels import model_image

    for option, value, constant in (("--process-group", args.process_group, "PROCESS_GROUP"),
                                    ("--decode-ahead", args.decode_ahead, "PROCESS_DECODE_AHEAD"),
                                    ("--encode-lag", args.encode_lag, "MAX_ENCODE_LAG")):
        if value is not None:
            if value < 1:
                parser.error(f"{option} must be at least 1")
            setattr(pipeline, constant, value)
    pipeline.DECODE_FIRST = pipeline.DECODE_FIRST or args.decode_first

    with np.load(pneumonia_source(parser, args.data_dir)) as npz:
        base = npz["val_images"]
    pngs = _source_pngs(base, args.images, args.image_size, args.png_cache)
    config, state = fresh_network(args.arch, args.input_size)
    size = config["input_size"]
    real = LoadedImagingModel(name="bench", version="0", model_version_id=0, metrics={}, config=config,
                              state_dicts=[state], device="cpu")
    probs, maps = real.read([model_image(png) for png in pngs[:args.batch_size]])
    device = PacedDevice(args.rate, size, list(real.labels), probs, maps)
    del real, state

    seconds: dict[str, float] = {}

    def whole_path() -> int:
        seconds.clear()
        count, stored = itertools.count(), 0

        def packs() -> tuple[str, Target]:
            k = next(count)
            name = f"heatmaps/{k % 256:02x}/{k}.pack"
            return name, (str(args.store / name), None)

        for out in pipeline.read_images(device, pngs, model_image,  # type: ignore[arg-type]
                                        lambda _: (args.image_size, args.image_size),
                                        batch_size=args.batch_size, seconds=seconds, processes=args.processes,
                                        fetch=lambda png: (png, None), overlay_packs=packs if args.store else None):
            stored += sum(len(png) for png in out.overlays.values()) + sum(n for _, n in out.written.values())
        return stored

    best, best_seconds, cpu_per_pass, stored, device_seconds = float("inf"), {}, [], 0, 0.0
    for repeat in range(args.repeats + 1):  # the first pass warms the processes up, untimed
        pids = pipeline.DecodeProcesses.get(args.processes).pids
        cpu = _cpu_seconds(pids)
        busy = device.busy
        t = time.perf_counter()
        stored = whole_path()
        took = time.perf_counter() - t
        after = _cpu_seconds(pids)
        if args.store:
            shutil.rmtree(args.store / "heatmaps", ignore_errors=True)
        if repeat and cpu is not None and after is not None:
            cpu_per_pass.append(after - cpu)
        if repeat and took < best:
            best, best_seconds = took, dict(seconds)
            device_seconds = device.busy - busy
    n = len(pngs)
    print(f"imaging host bench: {config['architecture']} at {size}px, {config['stem']} stem (its Grad-CAM maps, {maps.shape[-2]}x{maps.shape[-1]}), "
          f"batch {args.batch_size}, {n} images of {args.image_size}x{args.image_size} PNG, "
          f"{args.processes} decode process(es), groups of {pipeline.PROCESS_GROUP}+ decoded "
          f"{pipeline.PROCESS_DECODE_AHEAD} batch(es) ahead, overlays of at most {pipeline.MAX_ENCODE_LAG} "
          f"batch(es) encoding at once{', decode calls first' if pipeline.DECODE_FIRST else ''}"
          f"{', packs written by the processes' if args.store else ''}; "
          f"a paced device of {f'{args.rate:,.0f} images/s' if args.rate else 'no cost'}")
    print(f"  whole path: {n / best:9.1f} images/s ({best * 1000 / n:.3f} ms/image; overlays "
          f"{stored / n / 1024:.1f} KiB/image)")
    if args.rate:
        print(f"  keeps the device busy {100 * device_seconds / best:.0f}% of the time "
              f"({100 * n / best / args.rate:.0f}% of its {args.rate:,.0f} images/s; goal >= 80%)")
    print("  the calling thread: " + ", ".join(
        f"{stage.replace('_', ' ')} {best_seconds.get(stage, 0.0) * 1000 / n:.3f}" for stage in pipeline.STAGES)
        + " ms/image")
    if cpu_per_pass:
        per_image = min(cpu_per_pass) / n
        print(f"  the decode processes' CPU: {per_image * 1000:.3f} ms/image (least of the timed passes): "
              f"{args.processes} of them feed at most {args.processes / per_image:,.0f} images/s")
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(whole_path)
        if args.store:
            shutil.rmtree(args.store / "heatmaps", ignore_errors=True)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)
    with contextlib.suppress(Exception):
        pipeline.DecodeProcesses.close_all()


if __name__ == "__main__":
    main()
