#!/usr/bin/env python
"""Benchmark: images per second through the imaging job path against the bare forward pass.

    python bench/imaging.py [--arch resnet18] [--images 512] [--batch-size 64] [--image-size 256]
                            [--input-size N] [--model-file F] [--device cpu|cuda] [--threads N]
                            [--data-dir DIR] [--repeats 3]

Needs only torch, torchvision, numpy and Pillow (no Django, no pydicom). Source images are
PneumoniaMNIST validation images (``--data-dir``, else CDSS_DATA_DIR, else ../shared/data),
upscaled to ``--image-size`` and stored as 8-bit PNG files in memory, as an upload would be. Two
timings, same model, same batch size, same run, the passes alternating after one warm-up each
(the best of ``--repeats`` is shown):
1. bare forward: the already preprocessed batches, already on the device, through the network
   alone (inference mode, bf16 autocast on CUDA);
2. the whole path, timed through the functions the imaging job runs
   (``imaging.ml.pipeline.read_images`` with ``imaging.pixels.model_image``): PNG decoded on a
   thread pool one batch ahead, batched preprocessing (uint8 to float, resize, normalise), one
   forward pass per batch giving the probabilities and the Grad-CAM maps (closed form, no
   backward pass), and the heat map overlay PNGs encoded on the pool while the next batch runs.
With ``--store DIR`` the whole path also saves every overlay under DIR, in heat map packs as the
job does (``--store-on``: by the encoders, a pack per group they encode, the job's way with a
local storage folder; or by background threads, packs of 16, its way with an object store, where
``--pack off`` saves a file per overlay, as the job did before packs); ``bench/imaging_job.py`` measures the job
itself, files and PostgreSQL included. ``--source copies`` reads the analysis copies the job reads for DICOM files
(16-bit levels, float32 images) instead of 8-bit PNG files. Prints figures; asserts nothing. Without ``--model-file`` the network has
fresh weights (the throughput does not depend on their values).

Figures (2026-11-26; 2 CPU cores shared with other work, torch 2.14.1; more in imaging/README.md):
    OMP_NUM_THREADS=1 python bench/imaging.py --arch resnet18 --input-size 28
        bare 333-375 images/s, whole path 254-266 images/s: 71-76% kept (before: 161-167, 43-51%)
    OMP_NUM_THREADS=1 python bench/imaging.py --arch inception_v3 --images 256 --repeats 2
        bare 139 images/s, whole path 120 images/s: 87% kept
Later the same day, with the interpreter's switch interval at 0.1 ms while the pipeline runs (the
job's setting; ``--switch-interval``), the first command kept 86%, 81% and 91% against 69% and 66%
with the default 5 ms (runs alternating, shared machine). On an H200 (bf16, 4,096 images, 15
pool threads) Inception-V3 at 299 px keeps 26% (1,579 against 6,016 images/s, batch 64) and
ResNet-18 at 224 px 9-10%: the calling thread's breakdown and ``--profile`` say where the rest goes.
With torch's two default threads on the busy shared cores the figures swung by a factor of five
between runs (32-89% kept; whole path 53-389 images/s, 161-223 before these changes): the
pipeline's threads work during the forward pass and can take the cores its OpenMP threads wait for
(see imaging/README.md).
2026-11-27, H200, 15 decode processes, CUDA graphs: Inception-V3 at 299 px keeps 82-88% (batch 64
and 128) without a store, 42-45% with ``--store`` (one folder; see imaging/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_network, pneumonia_source  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=256, help="Side of the source PNG images (256)")
    parser.add_argument("--input-size", type=int, help="Network input side (default: the architecture's)")
    parser.add_argument("--stem", choices=["small", "standard"],
                        help="ResNet-18 / DenseNet-121 stem (default: a new model's for the input size, "
                             "imaging.ml.architectures.default_stem)")
    parser.add_argument("--model-file", type=Path, help="A trained imaging model file instead of fresh weights")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="Default: cuda when present")
    parser.add_argument("--threads", type=int, help="Decode and PNG threads of the whole path (default: the job's)")
    parser.add_argument("--processes", type=int, default=0,
                        help="Decode and PNG encode in this many worker processes instead of threads "
                             "(the job's CDSS_IMAGING_PROCESSES; default 0: threads)")
    parser.add_argument("--resize-on", choices=["device", "pool"],
                        help="Where uint8 images larger than the input are shrunk when no larger in bytes than "
                             "their shrunk copy (default: the job's: on the model's device for a GPU, on the pool "
                             "for the CPU)")
    parser.add_argument("--graphs", choices=["on", "off"],
                        help="CUDA graphs for the whole path's forward pass (default: the job's: on for CUDA)")
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="The whole path also saves every overlay PNG as a new file under DIR, as the job does "
                             "(the files are removed after each pass, untimed)")
    parser.add_argument("--store-on", choices=["encoders", "threads"], default="encoders",
                        help="With --store: written by the thread or process that encodes the PNG (the job's way "
                             "with a local storage folder; default), or by background threads of this process "
                             "(the job's way with an object store, here with plain files)")
    parser.add_argument("--pack", choices=["on", "off"], default="on",
                        help="With --store-on threads: overlays saved in heat map packs of 16, the job's way "
                             "(default), or one file per overlay (the job's way before packs)")
    parser.add_argument("--encode-lag", type=int, metavar="N",
                        help="At most N batches' overlays encoding at once (default: the job's, "
                             "pipeline.MAX_ENCODE_LAG; 1: one batch at a time, as before 2026-11-27)")
    parser.add_argument("--process-group", type=int, metavar="N",
                        help="With --processes: at least N images per call to a decode process (default: the "
                             "job's, pipeline.PROCESS_GROUP)")
    parser.add_argument("--decode-ahead", type=int, metavar="N",
                        help="With --processes: batches decoded ahead of the model (default: the job's, "
                             "pipeline.PROCESS_DECODE_AHEAD)")
    parser.add_argument("--decode-first", action="store_true",
                        help="With --processes: decode calls go to the processes before waiting overlay calls "
                             "(pipeline.DECODE_FIRST, the job's default since the H100 run: the flag is for "
                             "builds that turn it off)")
    parser.add_argument("--data-dir", type=Path, help="Folder holding imaging/pneumoniamnist.npz "
                                                      "(default: CDSS_DATA_DIR, else ../shared/data)")
    parser.add_argument("--torch-threads", type=int, help="torch's CPU threads (default: torch's choice)")
    parser.add_argument("--switch-interval", type=float,
                        help="The interpreter's switch interval while the whole path runs (default: the job's)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="After the timings, one more whole-path pass under cProfile (the calling thread only): "
                             "prints its N costliest functions by own time")
    parser.add_argument("--png-cache", type=Path,
                        help="Folder keeping the source PNGs between runs (made once per image count, size "
                             "and source file; default: none, made each run)")
    parser.add_argument("--source", choices=["png", "copies"], default="png",
                        help="What the whole path reads: 8-bit PNG files (an upload of PNG files; default), or "
                             "the analysis copies the job reads for DICOM files (imaging.pixels.analysis_bytes: "
                             "16-bit levels, float32 images; of at most 512 px a side)")
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes of each kind; the best is shown (3)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from imaging.ml import pipeline
    from imaging.ml.architectures import resolve_stem
    from imaging.ml.cpuwork import Span, Target
    from imaging.ml.inference import LoadedImagingModel
    from imaging.ml.pipeline import STAGES, SWITCH_INTERVAL, default_threads, read_images
    from imaging.ml.store import PACK_PNGS, PackSaves, folder_saver

    if args.pack == "off" and not (args.store and args.store_on == "threads"):
        parser.error("--pack off needs --store DIR --store-on threads (the encoders always write packs)")
    if args.encode_lag is not None:
        if args.encode_lag < 1:
            parser.error("--encode-lag must be at least 1")
        pipeline.MAX_ENCODE_LAG = args.encode_lag
    for option, value, constant in (("--process-group", args.process_group, "PROCESS_GROUP"),
                                    ("--decode-ahead", args.decode_ahead, "PROCESS_DECODE_AHEAD")):
        if value is not None:
            if value < 1 or not args.processes:
                parser.error(f"{option} must be at least 1, with --processes")
            setattr(pipeline, constant, value)
    if args.decode_first:
        if not args.processes:
            parser.error("--decode-first needs --processes")
        pipeline.DECODE_FIRST = True
    from imaging.pixels import model_image

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    source = pneumonia_source(parser, args.data_dir)
    with np.load(source) as npz:
        base = npz["val_images"]
    pngs = _source_pngs(base, args.images, args.image_size, args.png_cache)
    if args.source == "copies":  # what the job reads for a radiograph: its analysis copy (the same pixels)
        from imaging.pixels import ANALYSIS_MAX_SIDE, Rendering, analysis_bytes

        if args.image_size > ANALYSIS_MAX_SIDE:
            parser.error(f"--source copies: --image-size at most {ANALYSIS_MAX_SIDE} (an analysis copy's largest)")
        pngs = [analysis_bytes(Rendering(image=model_image(png).astype(np.float32) / np.float32(255.0), rgb=None,
                                         frame_index=0, preset=None)) for png in pngs]

    graphs = None if args.graphs is None else args.graphs == "on"
    if args.model_file:
        model = LoadedImagingModel.from_file(args.model_file, device=args.device, graphs=graphs)
    else:
        config, state = fresh_network(args.arch, args.input_size, stem=args.stem)
        model = LoadedImagingModel(name="bench", version="0", model_version_id=0, metrics={}, config=config,
                                   state_dicts=[state], device=args.device, graphs=graphs)
    bs = args.batch_size
    threads = args.threads or default_threads(model.device.type)
    switch = args.switch_interval or SWITCH_INTERVAL
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    # 1. bare forward on preprocessed batches (already on the device)
    images = [model_image(b) for b in pngs]
    batches = [model.preprocess(images[i:i + bs]).to(model.device) for i in range(0, len(images), bs)]

    # 2. the whole path: the job's own pipeline and decoder, on in-memory files
    seconds: dict[str, float] = {}

    def whole_path() -> int:
        stored = 0
        seconds.clear()
        folder, count = Path("heatmaps"), itertools.count()

        def new_name() -> str:  # in 256 folders, as the job's (imaging.jobs.heatmap_pack_name)
            n = next(count)
            return str(folder / f"{n % 256:02x}" / f"{n}.pack")

        with contextlib.ExitStack() as stack:
            threads_save = args.store and args.store_on == "threads"
            saves = (stack.enter_context(PackSaves(*folder_saver(args.store), new_name,
                                                   per_pack=PACK_PNGS if args.pack == "on" else 1))
                     if threads_save else None)
            packs = None
            if args.store and not threads_save:
                def packs() -> tuple[str, Target]:
                    name = new_name()
                    return name, (str(args.store / name), None)

            for out in read_images(model, pngs, model_image, lambda _: (args.image_size, args.image_size),
                                   batch_size=bs, threads=threads, seconds=seconds,
                                   switch_interval=switch, processes=args.processes,
                                   fetch=lambda png: (png, None),
                                   resize_on_device=None if args.resize_on is None
                                   else args.resize_on == "device", overlay_packs=packs):
                spans: list[Span] = list(out.written.values())
                stored += sum(len(png) for png in out.overlays.values()) + sum(length for _, length in spans)
                if saves is not None:
                    for png in out.overlays.values():
                        saves.add(png)
            if saves is not None:
                saves.names()
        return stored

    def clear_store() -> None:
        if args.store:
            shutil.rmtree(args.store / "heatmaps", ignore_errors=True)

    def bare_forward() -> int:
        for b in batches:
            model.forward(b)
        return 0

    # one warm-up of each, then the passes alternate (so a busy machine slows both alike); best of each
    best = {"bare": float("inf"), "whole": float("inf")}
    png_bytes = 0
    best_seconds: dict[str, float] = {}
    process_cpu: list[float] = []  # the decode processes' CPU seconds in each timed whole pass
    for repeat in range(args.repeats + 1):
        for kind, run in (("bare", bare_forward), ("whole", whole_path)):
            pids = pipeline.DecodeProcesses.get(args.processes).pids if args.processes and kind == "whole" else []
            cpu = _cpu_seconds(pids)
            t = time.perf_counter()
            stored = run()
            sync()
            took = time.perf_counter() - t
            if repeat and cpu is not None and pids:
                after = _cpu_seconds(pids)
                if after is not None:
                    process_cpu.append(after - cpu)
            clear_store()
            if repeat and took < best[kind]:
                best[kind] = took
                if kind == "whole":
                    best_seconds = dict(seconds)
            png_bytes = stored or png_bytes
    bare, full = best["bare"], best["whole"]
    n = len(pngs)
    device = torch.cuda.get_device_name() if model.device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"imaging bench: {model.architecture} at {model.input_size}px "
          f"({resolve_stem(model.architecture, model.config.get('stem'))} stem), "
          f"{len(model.members)} member(s), batch {bs}, "
          f"{n} images of {args.image_size}x{args.image_size} "
          f"{'PNG' if args.source == 'png' else 'as analysis copies (16-bit .npy)'}, device {device}"
          f"{', bf16 autocast (bf16 weights)' if model.precision == 'bf16' else ''}"
          f"{', CUDA graphs' if model.graphs else ''}, "
          f"{f'{args.processes} decode process(es)' if args.processes else f'{threads} pipeline thread(s)'}, "
          f"switch interval {switch * 1000:g} ms, "
          f"{'' if args.resize_on is None else f'resized on the {args.resize_on}, '}"
          f"overlays of at most {pipeline.MAX_ENCODE_LAG} batch(es) encoding at once, "
          f"{f'groups of {pipeline.PROCESS_GROUP}+ decoded {pipeline.PROCESS_DECODE_AHEAD} batch(es) ahead, ' if args.processes else ''}"
          f"{'decode calls first, ' if pipeline.DECODE_FIRST else ''}"
          f"{f'overlays saved by the {args.store_on} ' if args.store else ''}"
          f"{('in packs, ' if args.pack == 'on' else 'a file each, ') if args.store else ''}"
          f"torch {torch.__version__}")
    print(f"  bare forward:  {n / bare:9.1f} images/s  ({bare * 1000 / n:.2f} ms/image)")
    print(f"  whole path:    {n / full:9.1f} images/s  ({full * 1000 / n:.2f} ms/image; decode, preprocess, forward "
          f"with Grad-CAM, overlay PNG: {png_bytes / n / 1024:.1f} KiB/image)")
    print("  the whole path's calling thread: " + ", ".join(
        f"{stage.replace('_', ' ')} {best_seconds.get(stage, 0.0) * 1000 / n:.3f}" for stage in STAGES) + " ms/image")
    print(f"  whole path keeps {100 * bare / full:.0f}% of the bare forward throughput (goal >= 80%)")
    if process_cpu:
        per_image = min(process_cpu) / n
        print(f"  the decode processes' CPU: {per_image * 1000:.3f} ms/image (decode, shrink, overlay PNG"
              f"{', file' if args.store and args.store_on == 'encoders' else ''}; least of the timed passes): "
              f"each core given to them feeds at most {1 / per_image:,.0f} images/s")
    if model.graphs:
        # the graph replayed (through the job's launch) against the eager forward pass, same batch
        p_graph, h_graph = model.read(images[:bs])
        p_eager, h_eager = (t.float().cpu().numpy() for t in model.forward_with_cam(model.preprocess(images[:bs])))
        print(f"  CUDA graphs for batch shapes {model.graphed_shapes or 'none'}"
              f"{f' (capture failed: {model.graph_error})' if model.graph_error else ''}; replayed against eager, "
              f"max |p| difference {np.abs(p_graph - p_eager).max():.2e}, heat maps {np.abs(h_graph - h_eager).max():.2e}")
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(lambda: (whole_path(), sync()))
        clear_store()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)


def _cpu_seconds(pids: list[int]) -> float | None:
    """CPU seconds (user and system) these processes have used, from /proc; None where it cannot be
    read (not Linux, a process gone)."""
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def _source_pngs(base: Any, count: int, side: int, cache: Path | None) -> list[bytes]:
    """``count`` PNG files of ``side`` px made from the validation images ``base`` (cycled); with
    ``cache``, read from (or written to) a file there named by the count, the size and a digest of
    the source images, as raw bytes and offsets (no pickle)."""
    import hashlib

    import numpy as np
    from PIL import Image

    path = None
    if cache is not None:
        digest = hashlib.sha256(np.ascontiguousarray(base).tobytes()).hexdigest()[:16]
        path = cache / f"bench-pngs-{count}x{side}px-{digest}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                data, ends = stored["data"], stored["ends"]
            starts = [0, *ends[:-1].tolist()]
            return [data[a:b].tobytes() for a, b in zip(starts, ends.tolist(), strict=True)]
    pngs = []
    for i in range(count):
        img = Image.fromarray(base[i % len(base)]).resize((side, side), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        pngs.append(buf.getvalue())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, data=np.frombuffer(b"".join(pngs), dtype=np.uint8),
                 ends=np.cumsum([len(p) for p in pngs], dtype=np.int64))
    return pngs


if __name__ == "__main__":
    main()
