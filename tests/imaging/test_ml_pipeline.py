"""The imaging read path without a database: the model-input decoder, batched preprocessing,
closed-form Grad-CAM, the shared pipeline, and the pure modules importing without Django."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from imaging.imagefile import ImageFileError
from imaging.ml.architectures import ARCHITECTURES, architecture, build_model, fuse_batch_norms
from imaging.ml.cpuwork import overlay_dims
from imaging.ml.gradcam import GradCAM
from imaging.ml.inference import LoadedImagingModel, heat_levels, heatmap_overlay_png, overlay_png
from imaging.ml.modelfile import preprocess, resize_batch, shrink
from imaging.ml.pipeline import STAGES, DecodeProcesses, _groups, default_threads, read_images
from imaging.pixels import load_image, model_image
from tests.conftest import require_data

ROOT = Path(__file__).resolve().parents[2]
CONFIG: dict[str, Any] = {"architecture": "resnet18", "labels": ["x"], "thresholds": {"x": 0.5}, "input_size": 28,
          "normalisation": {"mean": 0.5, "std": 0.25}}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _decode_or_none(data: bytes) -> np.ndarray | None:
    """The job's decoding, with an unreadable file as None."""
    try:
        return model_image(data)
    except ImageFileError:
        return None


def _model(config: dict[str, Any] | None = None) -> LoadedImagingModel:
    config = config or CONFIG
    torch.manual_seed(0)
    net = build_model(config["architecture"], len(config["labels"]), init_weights="")
    return LoadedImagingModel(name="t", version="1", model_version_id=1, metrics={}, config=config,
                              state_dicts=[net.state_dict()], device="cpu")


def test_model_image_is_the_rendered_image_of_grey_colour_and_16_bit_files():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    colour = rng.integers(0, 256, (20, 25, 3), dtype=np.uint8)
    deep = (rng.integers(0, 4096, (16, 16)) * 16).astype(np.uint16)
    for array in (grey, colour, deep):
        data = _png(array)
        fast, full = model_image(data), load_image(data).rendering.image
        as_float = fast.astype(np.float32) / np.float32(255.0) if fast.dtype == np.uint8 else fast
        assert as_float.shape == full.shape and np.array_equal(as_float, full)
    assert model_image(_png(grey)).dtype == np.uint8
    with pytest.raises(ImageFileError, match="empty"):
        model_image(b"")
    with pytest.raises(ImageFileError):
        model_image(_png(grey)[:60])


def test_uint8_and_float_images_preprocess_to_the_same_batch_in_any_order_of_sizes():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((64, 64), (30, 50), (64, 64), (28, 28))]
    floats = [im.astype(np.float32) / 255.0 for im in images]
    batch = preprocess(images, CONFIG)
    assert batch.shape == (4, 1, 28, 28)
    assert torch.allclose(batch, preprocess(floats, CONFIG), atol=1e-5)
    one_by_one = torch.cat([preprocess([im], CONFIG) for im in images])
    assert torch.equal(batch, one_by_one)
    # what the read path's pool shrank is taken as it is, to the same batch
    assert torch.equal(preprocess([shrink(im, 28) for im in images], CONFIG, shrunk=True), batch)
    # shrinking (Pillow, float32) is torch's antialiased bilinear resize
    for image in floats[:2]:
        reference = resize_batch(torch.from_numpy(image)[None, None], 28)[0, 0].numpy()
        assert np.abs(shrink(image, 28) - reference).max() < 1e-5
    with pytest.raises(ValueError, match=r"image 1: contains NaN"):
        preprocess([floats[0], np.full((5, 5), np.nan, np.float32)], CONFIG)


def test_uint8_images_a_device_resizes_are_kept_as_they_are_when_no_larger_than_their_shrunk_copy():
    rng = np.random.default_rng(2)
    small, large = rng.integers(0, 256, (40, 50), dtype=np.uint8), rng.integers(0, 256, (60, 60), dtype=np.uint8)
    # 2,000 bytes <= 28 x 28 float32 (3,136 bytes): handed over as they are for the device to shrink
    assert shrink(small, 28, keep_uint8=True) is small
    assert shrink(small, 28).dtype == np.float32 and shrink(small, 28).shape == (28, 28)
    # 3,600 bytes: shrunk on the CPU all the same, and float images always
    assert shrink(large, 28, keep_uint8=True).shape == (28, 28)
    as_float = small.astype(np.float32) / 255.0
    assert shrink(as_float, 28, keep_uint8=True).shape == (28, 28)
    # the device's antialiased resize gives the batch the CPU's shrinking gives
    kept = [shrink(im, 28, keep_uint8=True) for im in (small, large, small[:20])]
    on_cpu = preprocess([small, large, small[:20]], CONFIG)
    assert torch.allclose(preprocess(kept, CONFIG, shrunk=True), on_cpu, atol=1e-5)


@pytest.mark.parametrize("processes", [0, 2])
def test_read_images_resizing_on_the_device_gives_what_shrinking_on_the_pool_gives(processes):
    model = _model()
    rng = np.random.default_rng(3)
    files = [_png(rng.integers(0, 256, (36 + i, 40), dtype=np.uint8)) for i in range(7)]
    kwargs: dict[str, Any] = {"batch_size": 3, "threads": 2, "processes": processes, "fetch": lambda d: (d, None)}
    launch, dtypes = model.launch, []

    def recording(images: list[np.ndarray], **kw: Any) -> Any:
        dtypes.append({image.dtype.str for image in images})
        return launch(images, **kw)

    model.launch = recording  # type: ignore[method-assign]
    pool = list(read_images(model, files, model_image, lambda _: (40, 36), resize_on_device=False, **kwargs))
    assert dtypes == [{"<f4"}] * 3  # shrunk on the pool
    dtypes.clear()
    device = list(read_images(model, files, model_image, lambda _: (40, 36), resize_on_device=True, **kwargs))
    assert dtypes == [{"|u1"}] * 3  # handed over as decoded
    for a, b in zip(pool, device, strict=True):
        assert a.probabilities is not None and b.probabilities is not None
        assert b.probabilities["x"] == pytest.approx(a.probabilities["x"], abs=1e-5)
        levels_a, levels_b = (np.asarray(Image.open(io.BytesIO(o.overlays["x"]))) for o in (a, b))
        assert levels_a.shape == levels_b.shape == (36, 40)
        assert np.abs(levels_a.astype(int) - levels_b.astype(int)).max() <= 1
    model.close()


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_closed_form_grad_cam_equals_grad_cam_by_backpropagation(name):
    arch = architecture(name)
    torch.manual_seed(0)
    net = build_model(name, 2, init_weights="").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    side = max(arch.default_input_size, 28)
    x = torch.randn(3, 1, side, side)
    by_grad = GradCAM(arch.cam_layer(net))
    logits_a, heat_a = by_grad(lambda: net(x))
    by_grad.close()
    closed = GradCAM(arch.cam_layer(net), arch.cam_head(net))
    logits_b, heat_b = closed(lambda: net(x))
    closed.close()
    assert torch.allclose(logits_a, logits_b, atol=1e-5)
    assert heat_a.shape == heat_b.shape and float(heat_a.max()) > 0
    assert torch.allclose(heat_a, heat_b, atol=1e-4)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_batch_norms_folded_into_their_convolutions_leave_outputs_and_heat_maps_as_they_were(name):
    import copy

    arch = architecture(name)
    torch.manual_seed(1)
    net = build_model(name, 2, init_weights="").eval()
    for module in net.modules():  # statistics and affine terms far from the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    fused = copy.deepcopy(net)
    folded = fuse_batch_norms(fused)
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    # ResNet and Inception: every norm follows a convolution; DenseNet normalises before each
    # convolution (only its stem's norm follows one)
    assert (folded, left) == {"densenet121": (1, 120), "inception_v3": (94, 0)}.get(name, (20, 0))
    x = torch.randn(3, 1, max(arch.default_input_size, 28), max(arch.default_input_size, 28))
    cams = [GradCAM(arch.cam_layer(m), arch.cam_head(m)) for m in (net, fused)]
    (logits_a, heat_a), (logits_b, heat_b) = (cam(lambda m=m: m(x)) for cam, m in zip(cams, (net, fused), strict=True))
    for cam in cams:
        cam.close()
    scale = float(logits_a.abs().max())
    assert scale > 0 and float((logits_a - logits_b).abs().max()) <= 1e-5 * scale
    assert float(heat_a.max()) > 0 and torch.allclose(heat_a, heat_b, atol=1e-4)
    with pytest.raises(ValueError, match="eval"):
        fuse_batch_norms(build_model(name, 2, init_weights=""))


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_a_bf16_model_keeps_its_weights_in_bf16_and_reads_what_the_float32_model_reads(name):
    """The GPU's precision (bf16 autocast, weights stored in bf16 once), run by the CPU's autocast."""
    config = {**CONFIG, "architecture": name, "labels": ["a", "b"], "thresholds": {"a": 0.5, "b": 0.5}}
    torch.manual_seed(0)
    state = build_model(name, 2, init_weights="").state_dict()
    images = [np.random.default_rng(i).integers(0, 256, (40, 36), dtype=np.uint8) for i in range(5)]
    reads = {}
    for precision in ("fp32", "bf16"):
        model = LoadedImagingModel(name="t", version="1", model_version_id=1, metrics={}, config=config,
                                   state_dicts=[state], device="cpu", precision=precision)
        dtypes = {m.weight.dtype for m in model.members[0].modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}
        assert dtypes == {torch.bfloat16 if precision == "bf16" else torch.float32}
        reads[precision] = model.read(images)
        model.close()
    (p32, h32), (p16, h16) = reads["fp32"], reads["bf16"]
    assert p16.dtype == h16.dtype == np.float32 and h16.shape == h32.shape
    assert np.abs(p16 - p32).max() < 0.01
    assert float(h32.max()) > 0 and np.corrcoef(h16.ravel(), h32.ravel())[0, 1] > 0.99
    assert model.graphs is False  # CUDA graphs are for CUDA devices only
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        LoadedImagingModel(name="t", version="1", model_version_id=1, metrics={}, config=config,
                           state_dicts=[state], device="cpu", graphs=True)
    with pytest.raises(ValueError, match="precision must be one of"):
        LoadedImagingModel(name="t", version="1", model_version_id=1, metrics={}, config=config,
                           state_dicts=[state], device="cpu", precision="fp16")


@pytest.mark.parametrize(("size", "dims"), [
    ((64, 48), (64, 48)), ((128, 128), (128, 128)), ((28, 28), (28, 28)),  # never enlarged
    ((1024, 850), (128, 106)), ((850, 1024), (106, 128)), ((256, 256), (128, 128)),  # the shape kept
    ((3000, 2), (128, 1)), ((129, 1), (128, 1)),  # at least a pixel
])
def test_overlays_are_stored_at_most_overlay_max_side_a_side_with_the_images_shape(size, dims):
    assert overlay_dims(*size) == dims
    with pytest.raises(ValueError, match="positive"):
        overlay_dims(0, 10)


@pytest.mark.parametrize("cells", [7, 8])  # the CAM grids of ResNet-18/DenseNet-121 at 224 px, Inception-V3 at 299
def test_a_small_overlay_stretched_over_the_preview_looks_like_one_drawn_at_its_size(cells):
    """The viewer stretches the stored overlay over a preview of up to 1,024 px (a browser
    upsamples bilinearly): against one drawn at the preview's size, from CAMs of random cells (the
    steepest maps), opacity within 12 of 255 and colour (opacity-weighted) within 32."""
    rng = np.random.default_rng(cells)
    width, height = 1024, 850
    for _ in range(3):
        heat = rng.random((cells, cells)).astype(np.float32)
        full = np.asarray(Image.open(io.BytesIO(heatmap_overlay_png(heat, width=width, height=height)))
                          .convert("RGBA")).astype(np.int32)
        small = Image.open(io.BytesIO(heatmap_overlay_png(heat, width=128, height=106))).convert("RGBA")
        assert small.size == overlay_dims(width, height)
        shown = np.asarray(small.convert("RGBa").resize((width, height), Image.Resampling.BILINEAR)
                           .convert("RGBA")).astype(np.int32)
        assert np.abs(shown[..., 3] - full[..., 3]).max() <= 12
        weighted = np.abs(shown[..., :3] * shown[..., 3:] - full[..., :3] * full[..., 3:]) / 255
        assert weighted.max() <= 32
        assert full[..., 3].min() == 0 and full[..., 3].max() > 150  # the maps do vary


def test_the_overlay_is_a_png_of_the_image_size_transparent_where_cold():
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    png = heatmap_overlay_png(heat, width=64, height=48)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (64, 48)
    assert image.mode == "P" and "transparency" in image.info  # palette with an alpha table
    alpha = np.asarray(image.convert("RGBA"))[..., 3]
    assert alpha[0, 0] > 100 and alpha[-1, -1] == 0


def _palette_levels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.mode == "P"
    return np.asarray(image).astype(int)


def test_heat_maps_finished_by_torch_match_the_overlays_pillow_resizes():
    """The GPU path resizes and quantises the maps with torch (``heat_levels``); its overlays are
    the CPU path's (Pillow) within one colour level, growing or shrinking, and keep the sizes asked."""
    rng = np.random.default_rng(5)
    heat = torch.from_numpy(rng.random((3, 2, 7, 7), dtype=np.float32))
    heat[0, 0, 0, 0] = float("nan")  # read as 0, as the Pillow path does
    sizes = [(64, 48), (5, 4), (64, 48)]
    levels = heat_levels(heat, sizes)
    assert [lv.shape for lv in levels] == [(2, 48, 64), (2, 4, 5), (2, 48, 64)]
    assert all(lv.dtype == np.uint8 for lv in levels)
    for i, (width, height) in enumerate(sizes):
        for n in range(2):
            pillow = _palette_levels(heatmap_overlay_png(heat[i, n].numpy(), width=width, height=height))
            assert np.abs(pillow - levels[i][n].astype(int)).max() <= 1
            png = overlay_png(levels[i][n])
            assert np.array_equal(_palette_levels(png), levels[i][n])
            assert Image.open(io.BytesIO(png)).info.get("transparency") is not None
    with pytest.raises(ValueError, match="3 sizes"):
        heat_levels(heat[:2], sizes)
    with pytest.raises(ValueError, match="uint8"):
        overlay_png(np.zeros((4, 4), np.float32))


def test_read_levels_gives_reads_probabilities_and_its_heat_maps_finished():
    model = _model()
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, (40, 36), dtype=np.uint8) for _ in range(4)]
    sizes = [(36, 40), (20, 10), (36, 40), (90, 70)]
    probs, heat = model.read(images)
    probs2, levels = model.read_levels(images, sizes)
    assert np.array_equal(probs, probs2)
    for i, (width, height) in enumerate(sizes):
        pillow = _palette_levels(heatmap_overlay_png(heat[i, 0], width=width, height=height))
        assert levels[i].shape == (1, height, width)
        assert np.abs(pillow - levels[i][0].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="one overlay size per image"):
        model.read_levels(images, sizes[:2])
    model.close()


@pytest.mark.parametrize(("n", "parts"), [(64, 15), (64, 2), (3, 8), (1, 1), (0, 4), (7, 7)])
def test_the_pool_gets_at_most_one_task_per_thread_covering_every_image_in_order(n, parts):
    groups = _groups(n, parts)
    assert len(groups) <= max(1, parts)
    assert [i for g in groups for i in range(n)[g]] == list(range(n))
    assert all(g.stop > g.start for g in groups)


def test_the_pool_takes_every_core_but_one_beside_a_gpu_and_a_few_beside_a_cpu_model():
    assert 1 <= default_threads("cpu") <= 4
    assert default_threads("cuda") >= default_threads("cpu")
    assert default_threads("cuda") <= 16


@pytest.mark.parametrize("behind", [None, 1])
def test_read_images_keeps_order_reports_unreadable_items_and_matches_predict(behind):
    """behind=1 is what a GPU runs (each batch collected after the next is queued): same results."""
    model = _model()
    rng = np.random.default_rng(2)
    files = [_png(rng.integers(0, 256, (32 + i, 40), dtype=np.uint8)) for i in range(7)]
    files[3] = b"not an image"

    seconds: dict[str, float] = {}
    outs = list(read_images(model, files, _decode_or_none, lambda data: (300, 150 + len(data) % 7), batch_size=3,
                            threads=2,
                            seconds=seconds, behind=behind))
    assert set(seconds) == set(STAGES) and seconds["forward"] > 0
    assert sys.getswitchinterval() == pytest.approx(0.005)  # the interpreter's own, given back
    assert [o.item for o in outs] == files
    assert outs[3].probabilities is None and outs[3].overlays == {}
    readable = [i for i in range(7) if i != 3]
    expected = model.predict([load_image(files[i]).rendering.image for i in readable], cam=False)
    for i, pred in zip(readable, expected, strict=True):
        out = outs[i]
        assert out.probabilities is not None
        assert out.probabilities["x"] == pytest.approx(pred.probabilities["x"], abs=1e-5)
        assert out.positive["x"] == (out.probabilities["x"] >= 0.5)
        overlay = Image.open(io.BytesIO(out.overlays["x"]))
        assert overlay.size == (128, round((150 + len(files[i]) % 7) * 128 / 300))  # at most 128 a side
    model.close()


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_decoding_and_encoding_in_worker_processes_gives_what_the_threads_give():
    model = _model()
    rng = np.random.default_rng(5)
    files: list[bytes | None] = [_png(rng.integers(0, 256, (30 + 3 * i, 44), dtype=np.uint8)) for i in range(9)]
    files[2] = b"not an image"  # unreadable: decoded to None in the process
    files[6] = None  # the file is gone: fetch says None

    def decode(data: bytes | None) -> np.ndarray | None:
        return None if data is None else _decode_or_none(data)

    def size(data: bytes | None) -> tuple[int, int]:
        return 40, 20 + (len(data) % 9 if data else 0)

    threads = list(read_images(model, files, decode, size, batch_size=4, threads=2))
    seconds: dict[str, float] = {}
    procs = list(read_images(model, files, decode, size, batch_size=4, processes=2, seconds=seconds, behind=1,
                             fetch=lambda data: None if data is None else (data, None)))
    assert [o.item for o in procs] == files and seconds["forward"] > 0
    assert procs[2].probabilities is None and procs[6].probabilities is None and procs[6].overlays == {}
    for a, b in zip(threads, procs, strict=True):
        assert a.probabilities == b.probabilities and a.positive == b.positive
        assert a.overlays == b.overlays  # the same PNG bytes
    pool = DecodeProcesses.get(2)
    assert len(pool.pids) == 2 and os.getpid() not in pool.pids
    assert not any(torch_loaded for _, torch_loaded in pool.facts)  # spawned, importing cpuwork only
    assert DecodeProcesses.get(2) is pool  # kept for the next job
    # a GPU host's tuning (smaller groups a call, more batches decoded ahead) changes nothing read
    from imaging.ml import pipeline

    for group, ahead, first in ((1, 1, False), (2, 3, False), (1, 2, True), (4, 1, True)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pipeline, "PROCESS_GROUP", group)
            patch.setattr(pipeline, "PROCESS_DECODE_AHEAD", ahead)
            patch.setattr(pipeline, "DECODE_FIRST", first)
            tuned = list(read_images(model, files, decode, size, batch_size=4, processes=2,
                                     fetch=lambda data: None if data is None else (data, None)))
        assert [(o.item, o.probabilities, o.overlays) for o in tuned] == [(o.item, o.probabilities, o.overlays)
                                                                          for o in threads]
    model.close()


def test_decoded_images_come_back_through_shared_memory_as_through_the_pipe(monkeypatch, caplog):
    from multiprocessing.shared_memory import SharedMemory

    from imaging.ml import cpuwork

    rng = np.random.default_rng(7)
    deep = (rng.integers(0, 4096, (40, 30)) * 16).astype(np.uint16)  # 16-bit: a float32 image
    blobs: list[tuple[bytes, int | None] | None] = [
        (_png(rng.integers(0, 256, (20 + 9 * i, 50), dtype=np.uint8)), None) for i in range(6)]
    blobs[2] = (b"not an image", None)
    blobs[4] = None  # a file that is gone
    blobs.append((_png(deep), None))
    pool = DecodeProcesses(2)
    try:
        for keep in (False, True):
            piped = pool.call(cpuwork.decode_shrink, blobs, 28, keep)
            shared = pool.decode(blobs, 28, keep)
            assert [a is None for a in piped] == [b is None for b in shared] == [False, False, True, False, True,
                                                                                 False, False]
            for a, b in zip(piped, shared, strict=True):
                assert a is None or (a.dtype == b.dtype and np.array_equal(a, b))
            assert {b.dtype for b in shared if b is not None} == ({np.dtype(np.uint8), np.dtype(np.float32)} if keep
                                                                 else {np.dtype(np.float32)})
        held = pool.shm_bytes
        assert held > 0 and pool.shm_error == ""
        for _ in range(3):
            pool.decode(blobs, 28)
        assert pool.shm_bytes == held  # the block is reused
        names = [block.name for block in pool._blocks]
        assert all(Path("/dev/shm", name).exists() for name in names)
    finally:
        pool.close()
    assert not any(Path("/dev/shm", name).exists() for name in names)  # unlinked with the pool

    # no shared memory to be had: through the pipe, the same images
    pool = DecodeProcesses(1)
    pool.shm_budget = 0
    try:
        assert all(a is None or np.array_equal(a, b) for a, b in
                   zip(pool.call(cpuwork.decode_shrink, blobs, 28, False), pool.decode(blobs, 28), strict=True))
        assert pool.shm_bytes == 0
    finally:
        pool.close()

    # /dev/shm full (a container's small default): said once in the log, then the pipe
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    def ours() -> set[str]:
        return {n for n in os.listdir("/dev/shm") if n.startswith(f"cdss-img-{os.getpid()}-")}

    before = ours()  # other tests' pools, kept for the process's life
    pool = DecodeProcesses(1)
    try:
        with monkeypatch.context() as patched, caplog.at_level("WARNING", logger="imaging.ml.pipeline"):
            patched.setattr(os, "posix_fallocate", full)
            for _ in range(2):
                out = pool.decode(blobs, 28)
        assert all(a is None or np.array_equal(a, b) for a, b in
                   zip(pool.call(cpuwork.decode_shrink, blobs, 28, False), out, strict=True))
        assert pool.shm_bytes == 0 and "could not be reserved (No space left on device)" in pool.shm_error
        assert [r.getMessage().count("--shm-size") for r in caplog.records] == [1]
        assert ours() == before  # the block that could not be reserved was unlinked
    finally:
        pool.close()

    # a block too small for every image: the rest come back as arrays
    block = SharedMemory(create=True, size=4096)
    try:
        png = _png(rng.integers(0, 256, (28, 28), dtype=np.uint8))
        block.buf[:len(png)] = png
        start = -(-len(png) // cpuwork.ALIGN) * cpuwork.ALIGN
        # room for one 28 x 28 uint8 image (784 bytes) after the file
        placed = cpuwork.decode_into([(0, len(png), None)] * 3, 28, False, block.name, start, start + 900)
        assert isinstance(placed[0], tuple) and all(isinstance(p, np.ndarray) for p in placed[1:])
        cpuwork._ATTACHED.pop(block.name).close()
    finally:
        block.close()
        block.unlink()


@pytest.mark.parametrize("first", [False, True])
def test_decode_calls_go_first_only_with_decode_first_and_results_errors_and_closing_pass_through(first, monkeypatch):
    """One process, busy for a moment: three calls wait, then a decode call (``call``). With
    DECODE_FIRST it runs before them; without, after them (the executor's order). Each call's
    result or error reaches its caller either way; closing cancels the calls still waiting."""
    import threading

    from imaging.ml import pipeline

    monkeypatch.setattr(pipeline, "DECODE_FIRST", first)
    pool = DecodeProcesses(1)
    try:
        pool.call(time.time)  # started
        busy = pool.submit(time.sleep, 0.5)
        later = [pool.submit(time.time) for _ in range(3)]
        answered: list[float] = []
        caller = threading.Thread(target=lambda: answered.append(pool.call(time.time)))
        caller.start()
        caller.join(30)
        busy.result(30)
        ran_at = [f.result(30) for f in later]
        assert len(answered) == 1
        assert (answered[0] < min(ran_at)) == first and (answered[0] > max(ran_at)) == (not first)
        failing = pool.submit(int, "not a number")
        with pytest.raises(ValueError, match="invalid literal"):
            failing.result(30)
        with pytest.raises(ValueError, match="invalid literal"):
            pool.call(int, "x")
        assert pool.call(sum, [1, 2, 3]) == 6
        busy = pool.submit(time.sleep, 0.5)
        waiting = [pool.submit(time.time) for _ in range(2)]
    finally:
        pool.close()
    if first:  # still here, not yet with the executor: cancelled
        assert all(f.cancelled() for f in waiting)
    else:  # the executor's own: cancelled there (shutdown with cancel_futures)
        assert all(f.done() for f in waiting)


@pytest.mark.parametrize("first", [False, True])
def test_a_killed_decode_process_fails_that_read_and_the_next_read_gets_a_new_pool(first, monkeypatch):
    import signal

    from imaging.ml import pipeline

    monkeypatch.setattr(pipeline, "DECODE_FIRST", first)
    model = _model()
    files = [_png(np.full((30, 30), 40 * i, np.uint8)) for i in range(5)]

    def read() -> list:
        return list(read_images(model, files, model_image, lambda _: (30, 30), batch_size=2, processes=3,
                                fetch=lambda data: (data, None)))

    first = read()
    pool = DecodeProcesses.get(3)
    os.kill(pool.pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while not pool.broken and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pool.broken
    again = read()  # a new pool, started by this read
    assert DecodeProcesses.get(3) is not pool and len(DecodeProcesses.get(3).pids) == 3
    assert [o.probabilities for o in again] == [o.probabilities for o in first]
    model.close()


def test_worker_processes_need_a_fetch_and_a_sane_count():
    model = _model()
    with pytest.raises(ValueError, match="needs fetch"):
        list(read_images(model, [b""], model_image, lambda _: (4, 4), processes=2))
    with pytest.raises(ValueError, match="0 or more"):
        list(read_images(model, [b""], model_image, lambda _: (4, 4), processes=-1, fetch=lambda d: (d, None)))
    with pytest.raises(ValueError, match="behind must be 0 or 1"):
        list(read_images(model, [b""], model_image, lambda _: (4, 4), behind=2))
    model.close()


def test_worker_processes_start_from_a_daemonic_process_and_end_when_their_parent_dies():
    """A Celery prefork pool process is daemonic; the decode processes start there all the same, and
    end by themselves when that process dies without shutting them down (killed, os._exit)."""
    code = ("import multiprocessing, os, sys\n"
            "from imaging.ml.pipeline import DecodeProcesses\n"
            "def child(queue):\n"
            "    pool = DecodeProcesses(2)\n"
            "    queue.put((multiprocessing.current_process().daemon, pool.pids))\n"
            "    queue.close()\n"
            "    queue.join_thread()\n"
            "    os._exit(0)  # no shutdown of the pool\n"
            "if __name__ == '__main__':\n"
            "    ctx = multiprocessing.get_context('spawn')\n"
            "    queue = ctx.Queue()\n"
            "    p = ctx.Process(target=child, args=(queue,), daemon=True)\n"
            "    p.start()\n"
            "    daemon, pids = queue.get(timeout=120)\n"
            "    p.join(30)\n"
            "    print(daemon, *pids)\n")
    script = ROOT / "test-output" / "decode_processes_parent.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=180,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    daemon, *pids = done.stdout.split()
    assert daemon == "True" and len(pids) == 2
    deadline = time.monotonic() + 15
    while any(alive(int(pid)) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(int(pid)) for pid in pids)


BLOCKED = ("import sys\n"
           "for name in ('django', 'celery', 'cdss', 'pydicom', 'tqdm', 'rest_framework'):\n"
           "    sys.modules[name] = None\n")


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKED + code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def test_the_pure_imaging_modules_import_without_django_pydicom_or_tqdm():
    done = _run("import imaging.ml.train, imaging.ml.inference, imaging.ml.pipeline, imaging.ml.store, imaging.pixels\n"
                "import numpy as np, io\n"
                "from PIL import Image\n"
                "buf = io.BytesIO(); Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format='PNG')\n"
                "print(imaging.pixels.model_image(buf.getvalue()).shape)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(8, 8)"
    refused = _run("import imaging.dicom")  # the check itself works: DICOM needs pydicom
    assert refused.returncode != 0 and "pydicom" in refused.stderr


@pytest.mark.needs_data
def test_the_bench_keeps_its_source_pngs_between_runs(tmp_path, monkeypatch):
    from bench.imaging import _source_pngs

    base = np.random.default_rng(4).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    made = _source_pngs(base, 5, 32, tmp_path)
    assert len(made) == 5 and made[3] == made[0] != made[1]  # cycled through the 3 sources
    assert Image.open(io.BytesIO(made[1])).size == (32, 32)
    monkeypatch.setattr(Image, "fromarray", lambda *a, **k: pytest.fail("made again instead of read"))
    assert _source_pngs(base, 5, 32, tmp_path) == made
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_the_benches_run_without_django(tmp_path):
    data = require_data("imaging/breastmnist.npz").parent.parent
    require_data("imaging/pneumoniamnist.npz")
    runner = ("import runpy\n"
              "sys.argv = sys.argv[1:]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    for _ in range(2):  # the source PNGs made, then read back from the cache
        bench = _run(runner, "bench/imaging.py", "--images", "6", "--batch-size", "4", "--repeats", "1",
                     "--device", "cpu", "--data-dir", str(data), "--png-cache", str(tmp_path / "pngs"))
        assert bench.returncode == 0, bench.stderr
        assert "whole path keeps" in bench.stdout and "6 images of 256x256 PNG" in bench.stdout
        assert len(list((tmp_path / "pngs").glob("bench-pngs-6x256px-*.npz"))) == 1
    for where, processes, pack in (("encoders", "1", "on"), ("threads", "0", "on"), ("threads", "0", "off")):
        store = tmp_path / f"store-{where}-{pack}"  # the job's store, without Django
        bench = _run(runner, "bench/imaging.py", "--images", "6", "--batch-size", "4", "--repeats", "1",
                     "--device", "cpu", "--data-dir", str(data), "--png-cache", str(tmp_path / "pngs"),
                     "--store", str(store), "--store-on", where, "--processes", processes, "--pack", pack,
                     *(["--process-group", "4", "--decode-ahead", "3", "--decode-first"] if processes == "1" else []))
        assert bench.returncode == 0, bench.stderr
        assert ("groups of 4+ decoded 3 batch(es) ahead, decode calls first" in bench.stdout) == (processes == "1")
        assert f"overlays saved by the {where} {'in packs' if pack == 'on' else 'a file each'}" in bench.stdout
        assert ("the decode processes' CPU: " in bench.stdout) == (processes == "1")  # their CPU time, per image
        assert store.is_dir() and not any(p.is_file() for p in store.rglob("*"))  # removed after each pass
    refused = _run(runner, "bench/imaging.py", "--store", str(tmp_path / "s"), "--pack", "off")
    assert refused.returncode != 0 and "--pack off needs --store DIR --store-on threads" in refused.stderr
    refused = _run(runner, "bench/imaging.py", "--decode-ahead", "3")
    assert refused.returncode != 0 and "--decode-ahead must be at least 1, with --processes" in refused.stderr
    refused = _run(runner, "bench/imaging.py", "--decode-first")
    assert refused.returncode != 0 and "--decode-first needs --processes" in refused.stderr
    copies = _run(runner, "bench/imaging.py", "--images", "6", "--batch-size", "4", "--repeats", "1", "--device", "cpu",
                  "--data-dir", str(data), "--source", "copies", "--image-size", "64", "--input-size", "28")
    assert copies.returncode == 0, copies.stderr
    assert "6 images of 64x64 as analysis copies" in copies.stdout and "whole path keeps" in copies.stdout
    stem = _run(runner, "bench/imaging.py", "--images", "4", "--batch-size", "4", "--repeats", "1", "--device", "cpu",
                "--data-dir", str(data), "--input-size", "32", "--stem", "standard")
    assert stem.returncode == 0, stem.stderr
    assert "resnet18 at 32px (standard stem)" in stem.stdout
    for rate in ("0", "400"):  # the host alone, around a paced device (the job's store: packs by the processes)
        host_store = tmp_path / "store-host"
        host = _run(runner, "bench/imaging_host.py", "--rate", rate, "--processes", "1", "--arch", "resnet18",
                    "--input-size", "28", "--images", "48", "--batch-size", "8", "--repeats", "1",
                    "--data-dir", str(data), "--store", str(host_store),
                    *(["--profile", "3"] if rate == "0" else ["--decode-first"]))
        assert host.returncode == 0, host.stderr
        assert "resnet18 at 28px, small stem" in host.stdout and "packs written by the processes" in host.stdout
        assert host_store.is_dir() and not any(p.is_file() for p in host_store.rglob("*"))  # removed after each pass
        speed = float(re.search(r"whole path: +([0-9.]+) images/s", host.stdout).group(1))  # type: ignore[union-attr]
        if rate == "0":
            assert "a paced device of no cost" in host.stdout and "keeps the device busy" not in host.stdout
            assert "function calls" in host.stdout and "Ordered by: internal time" in host.stdout  # --profile
        else:  # never faster than the device it waits for
            assert speed <= 400 * 1.01 and "keeps the device busy" in host.stdout
            assert "decode calls first" in host.stdout
    store = tmp_path / "store-bench"
    packs = _run(runner, "bench/heatmap_store.py", "--processes", "1", "--overlays", "40", "--repeats", "1",
                 "--dir", str(store))
    assert packs.returncode == 0, packs.stderr
    assert "a new file per overlay" in packs.stdout and "packs of 16" in packs.stdout and "as many overlays" in packs.stdout
    assert store.is_dir() and not any(store.iterdir())  # removed after each pass
    ipc = _run(runner, "bench/imaging_ipc.py", "--processes", "1", "--calls", "2", "--input-size", "28")
    assert ipc.returncode == 0, ipc.stderr
    assert ipc.stdout.count("ms CPU/image") == 8 and "shared memory held: " in ipc.stdout
    out = tmp_path / "runs.json"
    search = _run(runner, "bench/imaging_gpu_search.py", "--device", "cpu", "--data-dir", str(data), "--recipe",
                  "epochs=1,members=1,max_train_images=60,augment=0.5", "--json", str(out))
    assert search.returncode == 0, search.stderr
    assert "val AUC" in search.stdout and out.is_file()
    bad = _run(runner, "bench/imaging_gpu_search.py", "--data-dir", str(data), "--recipe", "colour=blue")
    assert bad.returncode != 0 and "'colour=blue' is not key=value" in bad.stderr


def test_overlays_of_enough_batches_encode_at_once_to_give_every_worker_a_group():
    from imaging.ml.pipeline import MAX_ENCODE_LAG, encode_lag

    assert encode_lag(15, 15) == 1  # threads: a group per thread in every batch
    assert encode_lag(4, 15) == 4  # processes, batch 64 in groups of 16: four batches for 15 processes
    assert encode_lag(1, 2) == 2
    assert encode_lag(1, 64) == MAX_ENCODE_LAG  # bounded: rows wait for at most MAX_ENCODE_LAG batches
    assert encode_lag(0, 0) == 1


@pytest.mark.parametrize("processes", [0, 2])
def test_overlays_are_written_in_packs_by_whoever_encodes_them(processes, tmp_path):
    """With ``overlay_packs`` each group of images encoded together becomes one new file holding
    its PNGs one after another; every item says where its PNGs are, and they are the very bytes
    that come back without packs."""
    import itertools
    import stat

    model = _model({**CONFIG, "labels": ["x", "y"], "thresholds": {"x": 0.5, "y": 0.5}})
    rng = np.random.default_rng(11)
    files = [_png(rng.integers(0, 256, (30 + i, 44), dtype=np.uint8)) for i in range(7)]
    files[1] = b"not an image"

    kwargs: dict[str, Any] = {"batch_size": 4, "threads": 2, "processes": processes, "fetch": lambda d: (d, None)}
    as_bytes = list(read_images(model, files, _decode_or_none, lambda _: (40, 36), **kwargs))
    folder = tmp_path / "heatmaps" / "new"  # made by the writer
    named: list[str] = []

    def packs() -> tuple[str, tuple[str, int | None]]:
        named.append(f"pack-{len(named)}")
        return named[-1], (str(folder / named[-1]), 0o640)

    in_packs = list(read_images(model, files, _decode_or_none, lambda _: (40, 36), overlay_packs=packs, **kwargs))
    assert [o.item for o in in_packs] == files
    # batches of 4 (3 readable in the first) in groups for 2 threads (with processes: one group a batch)
    assert named == (["pack-0", "pack-1", "pack-2", "pack-3"] if processes == 0 else ["pack-0", "pack-1"])
    assert sorted(p.name for p in folder.iterdir()) == named  # nothing else written
    for i, (a, b) in enumerate(zip(as_bytes, in_packs, strict=True)):
        assert b.overlays == {} and a.probabilities == b.probabilities
        if i == 1:  # unreadable: in no pack
            assert b.written == {} and b.pack == ""
            continue
        data = (folder / b.pack).read_bytes()
        assert set(b.written) == {"x", "y"}
        for label, (offset, length) in b.written.items():
            assert data[offset:offset + length] == a.overlays[label]
    for name in named:  # a pack is its PNGs and nothing else, one after another
        spans = sorted(span for o in in_packs if o.pack == name for span in o.written.values())
        assert spans[0][0] == 0 and all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert spans[-1][0] + spans[-1][1] == (folder / name).stat().st_size
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o640

    # an existing file is never overwritten: the error comes with the items
    named.clear()
    (folder / "pack-0").unlink()
    (folder / "pack-1").write_bytes(b"kept")
    with pytest.raises(FileExistsError):
        list(read_images(model, files, _decode_or_none, lambda _: (40, 36), overlay_packs=packs, **kwargs))
    assert (folder / "pack-1").read_bytes() == b"kept"
    model.close()


def test_pngs_gathered_into_packs_are_saved_whole_and_discarded_whole(tmp_path):
    from imaging.ml.store import PackSaves, folder_saver

    names = iter(f"p{i}.pack" for i in range(100))
    pngs = [bytes([i]) * (i + 1) for i in range(7)]
    with PackSaves(*folder_saver(tmp_path), lambda: next(names), per_pack=3, threads=2) as saves:
        placed = [saves.add(png) for png in pngs]
        assert saves.names() == ["p0.pack", "p1.pack", "p2.pack"]  # the last, partial pack saved too
    assert [name for name, _, _ in placed] == ["p0.pack"] * 3 + ["p1.pack"] * 3 + ["p2.pack"]
    for png, (name, offset, length) in zip(pngs, placed, strict=True):
        assert (tmp_path / name).read_bytes()[offset:offset + length] == png
    assert (tmp_path / "p1.pack").read_bytes() == pngs[3] + pngs[4] + pngs[5]

    with pytest.raises(RuntimeError), PackSaves(*folder_saver(tmp_path), lambda: next(names), per_pack=2) as saves:
        for png in pngs[:3]:  # one pack saved, one being gathered
            saves.add(png)
        raise RuntimeError("the pipeline failed")
    assert sorted(p.name for p in tmp_path.glob("*.pack")) == ["p0.pack", "p1.pack", "p2.pack"]
    with pytest.raises(ValueError, match="at least one"):
        PackSaves(*folder_saver(tmp_path), lambda: "p", per_pack=0)
