#!/usr/bin/env python
"""Benchmark: storing heat map overlays one file each against heat map packs, on a folder.

    python bench/heatmap_store.py [--dir DIR] [--processes 2] [--overlays 4096] [--size 11264]
                                  [--pack 16] [--repeats 3]

``--processes`` processes write ``--overlays`` overlays of ``--size`` bytes between them, as the
imaging job's decode processes do (``imaging.ml.cpuwork``): once as a new file per overlay in 256
folders (the job's way before packs: ``write_new_file`` per PNG), once as packs of ``--pack``
overlays (``deliver``: one new file per group); the passes alternate, the best of ``--repeats``
is shown, the files are removed after each pass (untimed). Prints overlays stored a second and
the processes' CPU time per overlay (from /proc); asserts nothing. Needs numpy and Pillow only
(no Django, no torch), so it runs on a GPU host from the kit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write(folder: str, first: int, count: int, size: int, per_pack: int | None) -> float:
    """``count`` overlays in 256 folders: a new file each (``per_pack`` None: ``write_new_file``, the
    job's way before packs) or in packs of ``per_pack`` (``deliver``); the process's CPU seconds."""
    from imaging.ml.cpuwork import deliver, write_new_file

    start = time.process_time()
    data = os.urandom(size)
    for n in range(first, first + count, per_pack or 1):
        if per_pack is None:
            write_new_file(os.path.join(folder, f"{n % 256:02x}", f"{n}.png"), data)
        else:
            group = [{"x": data} for _ in range(min(per_pack, first + count - n))]
            deliver(group, (os.path.join(folder, f"{n % 256:02x}", f"{n}.pack"), None))
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="Where the files go (default: a temporary folder)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--overlays", type=int, default=4096)
    parser.add_argument("--size", type=int, default=11 * 1024, help="Bytes per overlay (11 KiB: ResNet-18's at 224 px)")
    parser.add_argument("--pack", type=int, default=16, help="Overlays per pack (16: the job's group)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.processes < 1 or args.overlays < 1 or args.pack < 1 or args.size < 1:
        parser.error("--processes, --overlays, --pack and --size must be at least 1")

    base = args.dir or Path(tempfile.mkdtemp(prefix="cdss-heatmap-store-"))
    share = -(-args.overlays // args.processes)
    best = {"files": float("inf"), "packs": float("inf")}
    cpu = {"files": float("inf"), "packs": float("inf")}
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        list(pool.map(abs, range(args.processes)))  # the processes started before timing
        for repeat in range(args.repeats + 1):
            for kind in ("files", "packs"):
                folder = base / f"heatmaps-{kind}"
                t = time.perf_counter()
                per_pack = None if kind == "files" else args.pack
                futures = [pool.submit(write, str(folder), p * share, share, args.size, per_pack)
                           for p in range(args.processes)]
                spent = sum(f.result() for f in futures)
                took = time.perf_counter() - t
                shutil.rmtree(folder, ignore_errors=True)
                if repeat:  # the first pass of each warms up
                    best[kind] = min(best[kind], took)
                    cpu[kind] = min(cpu[kind], spent)
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    n = share * args.processes
    print(f"heat map store bench: {n} overlays of {args.size / 1024:.1f} KiB, {args.processes} process(es), "
          f"folder on {_filesystem(base)}, best of {args.repeats}")
    for kind, label in (("files", "a new file per overlay"), ("packs", f"packs of {args.pack}")):
        print(f"  {label:24s} {n / best[kind]:10,.0f} overlays/s  ({n / best[kind] / (1 if kind == 'files' else args.pack):9,.0f} "
              f"files/s; CPU {cpu[kind] * 1e6 / n:7.1f} us/overlay)")
    print(f"  packs store {best['files'] / best['packs']:.1f}x as many overlays a second")


def _filesystem(path: Path) -> str:
    """The file system type of ``path``'s mount (from /proc/mounts; "?" where it cannot be read)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "?"
    resolved = str(path.resolve())
    found = max((m for m in mounts if resolved.startswith(m[0].rstrip("/") + "/") or resolved == m[0]),
                key=lambda m: len(m[0]), default=None)
    return f"{found[1]} ({found[0]})" if found else "?"


if __name__ == "__main__":
    main()
