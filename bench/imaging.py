#!/usr/bin/env python
"""Benchmark: images per second through the imaging job path against the bare forward pass.

    .venv/bin/python bench/imaging.py [--arch resnet18] [--images 512] [--batch-size 64]
                                      [--image-size 256] [--input-size N] [--model-file F] [--device cpu|cuda]

Source images are PneumoniaMNIST validation images (CDSS_DATA_DIR), upscaled to
``--image-size`` and stored as 8-bit PNG files in memory, as an upload would be. Two timings,
same model, same batch size, same run (after one warm-up batch each):
1. bare forward: the already preprocessed batches through the network alone (inference mode,
   bf16 autocast on CUDA);
2. the whole path: decode the PNG, scale to [0, 1], preprocess (resize, normalise) one batch
   ahead on a worker thread, batched forward with Grad-CAM, heat map upsampled to the image, and
   the overlay PNG encoded (a thread pool, overlapping the next batch).
Prints figures; asserts nothing. Without ``--model-file`` the network has fresh weights (the
throughput does not depend on their values).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=256, help="Side of the source PNG images (256)")
    parser.add_argument("--input-size", type=int, help="Network input side (default: the architecture's)")
    parser.add_argument("--model-file", type=Path, help="A trained imaging model file instead of fresh weights")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="Default: cuda when present")
    parser.add_argument("--repeats", type=int, default=2, help="Timed passes of each kind; the best is shown (2)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from imaging.ml.architectures import architecture, build_model
    from imaging.ml.inference import LoadedImagingModel, heatmap_overlay_png

    data_dir = Path(os.environ.get("CDSS_DATA_DIR", ROOT.parent / "shared" / "data"))
    with np.load(data_dir / "imaging" / "pneumoniamnist.npz") as npz:
        base = npz["val_images"]
    pngs = []
    for i in range(args.images):
        img = Image.fromarray(base[i % len(base)]).resize((args.image_size, args.image_size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        pngs.append(buf.getvalue())

    if args.model_file:
        model = LoadedImagingModel.from_file(args.model_file, device=args.device)
    else:
        arch = architecture(args.arch)
        size = args.input_size or arch.default_input_size
        config = {"architecture": arch.name, "labels": ["finding"], "thresholds": {"finding": 0.5}, "input_size": size,
                  "normalisation": {"mean": 0.5, "std": 0.25}}
        net = build_model(arch.name, 1, init_weights="")
        model = LoadedImagingModel(name="bench", version="0", model_version_id=0, metrics={}, config=config,
                                   state_dicts=[net.state_dict()], device=args.device)
    bs = args.batch_size
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def decode(blob: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(blob)).convert("L"), dtype=np.float32) / 255.0

    # 1. bare forward on preprocessed batches
    images = [decode(b) for b in pngs]
    batches = [model.preprocess(images[i:i + bs]) for i in range(0, len(images), bs)]
    if model.device.type == "cuda":
        batches = [b.to(model.device) for b in batches]
    model.forward(batches[0])
    sync()
    bare = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        for b in batches:
            model.forward(b)
        sync()
        bare = min(bare, time.perf_counter() - t)

    # 2. the whole path
    workers = ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2)), thread_name_prefix="bench")

    def whole_path() -> int:
        stored = 0
        pending: list[Future[bytes]] = []
        for start in range(0, len(pngs), bs):
            decoded = list(workers.map(decode, pngs[start:start + bs]))
            preds = model.predict(decoded, cam=True, batch_size=bs)
            pending.extend(workers.submit(heatmap_overlay_png, p.heatmaps["finding"], width=im.shape[1],
                                          height=im.shape[0]) for p, im in zip(preds, decoded, strict=True))
        for f in pending:
            stored += len(f.result())
        return stored

    model.predict([decode(pngs[0])], cam=True)
    full = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        png_bytes = whole_path()
        sync()
        full = min(full, time.perf_counter() - t)
    workers.shutdown()
    n = len(pngs)
    device = torch.cuda.get_device_name() if model.device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"imaging bench: {model.architecture} at {model.input_size}px, {len(model.members)} member(s), batch {bs}, "
          f"{n} images of {args.image_size}x{args.image_size} PNG, device {device}"
          f"{', bf16 autocast' if model.device.type == 'cuda' else ''}")
    print(f"  bare forward:  {n / bare:9.1f} images/s  ({bare * 1000 / n:.2f} ms/image)")
    print(f"  whole path:    {n / full:9.1f} images/s  ({full * 1000 / n:.2f} ms/image; decode, preprocess, forward, "
          f"Grad-CAM, overlay PNG: {png_bytes / n / 1024:.1f} KiB/image)")
    print(f"  whole path keeps {100 * bare / full:.0f}% of the bare forward throughput (goal >= 80%)")


if __name__ == "__main__":
    main()
