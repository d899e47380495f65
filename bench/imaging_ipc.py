#!/usr/bin/env python
"""Benchmark: what handing images to decode processes and back costs the process that feeds the
network, per image (its CPU time: every thread of it, the executor's included).

    python bench/imaging_ipc.py [--processes 2] [--calls 128] [--image-size 256] [--input-size 224]

The imaging job's decode processes (``imaging.ml.pipeline.DecodeProcesses``) get PNG files and
give back decoded images, either pickled through the pipe (``call(cpuwork.decode_shrink, ...)``)
or through a shared-memory block (``decode``). Rows: each way, for groups of 5 images (what 15
processes made of a batch of 64) and of 16 (``pipeline.PROCESS_GROUP``), images kept as uint8 for
a GPU to shrink (``keep_uint8``) or shrunk to float32 here. Needs numpy and Pillow only (no
torch, no Django). Prints figures; asserts nothing.

Measured 2026-11-27 (2 CPU cores, 2 decode processes, 256 x 256 PNG, input 224; this process's CPU
ms per image, best of two passes): see imaging/README.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--calls", type=int, default=128, help="calls per row and pass (128)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from imaging.ml import cpuwork
    from imaging.ml.pipeline import DecodeProcesses

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    pngs = []
    for i in range(16):
        out = io.BytesIO()
        Image.fromarray(np.roll(base, i)).resize((args.image_size, args.image_size),
                                                 Image.Resampling.BILINEAR).save(out, format="PNG")
        pngs.append(out.getvalue())
    procs = DecodeProcesses(args.processes)
    threads = ThreadPoolExecutor(max(2, args.processes))
    print(f"imaging ipc bench: {args.processes} decode process(es), {args.image_size} px PNG "
          f"({sum(map(len, pngs)) // len(pngs) // 1024} KiB), input {args.input_size} px; this process's CPU per image")
    try:
        for group in (5, 16):
            blobs: list[tuple[bytes, int | None] | None] = [(png, None) for png in pngs[:group]]
            for keep in (True, False):
                for way in ("pipe", "shared memory"):
                    def one(keep: bool = keep, way: str = way, blobs: list = blobs) -> object:
                        if way == "pipe":
                            return procs.call(cpuwork.decode_shrink, blobs, args.input_size, keep)
                        return procs.decode(blobs, args.input_size, keep)

                    best_cpu, best_wall = float("inf"), float("inf")
                    for _ in range(3):  # the first pass warms up
                        t, c = time.perf_counter(), time.process_time()
                        for future in [threads.submit(one) for _ in range(args.calls)]:
                            future.result()
                        n = args.calls * group
                        best_cpu = min(best_cpu, (time.process_time() - c) * 1000 / n)
                        best_wall = min(best_wall, (time.perf_counter() - t) * 1000 / n)
                    kind = "uint8 as decoded" if keep else "float32 shrunk"
                    print(f"  groups of {group:2d}, {kind:16s}, {way:13s}: {best_cpu:.3f} ms CPU/image "
                          f"(wall {best_wall:.3f} ms/image)")
        print(f"  shared memory held: {procs.shm_bytes >> 20} MiB{f' ({procs.shm_error})' if procs.shm_error else ''}")
    finally:
        threads.shutdown()
        procs.close()


if __name__ == "__main__":
    main()
