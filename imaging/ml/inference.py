"""Batched inference with Grad-CAM heat maps, one loaded model per process and registry name.

The active registry version of a name is loaded once per process (its file's sha256 checked by
the registry first) and cached; a later call that finds another active version loads that one and
closes the old one's Grad-CAM hooks. ``predict`` preprocesses images on a worker thread one batch
ahead, so resizing stays off the network's critical path; ``read`` runs one batch for the job's
pipeline (``pipeline.read_images``). One forward pass gives the probabilities and the Grad-CAM
maps (closed form, ``gradcam``); on CUDA it runs under bf16 autocast, the convolutions' and
linear layers' weights stored in bf16 once (``precision``), and the batch norms that follow a
convolution are folded into it when the model loads. Only ``get_loaded_model`` touches Django (the
model registry).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .architectures import architecture, fuse_batch_norms
from .cpuwork import heatmap_overlay_png as heatmap_overlay_png  # re-exported: defined there, without torch
from .cpuwork import overlay_png as overlay_png
from .data import DATASETS
from .data import model_names_for as model_names_for  # re-exported: defined there, without torch
from .gradcam import GradCAM
from .modelfile import build_members, load_model_file, preprocess

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImagePrediction:
    probabilities: dict[str, float]  # label -> probability
    positive: dict[str, bool]  # label -> probability >= that label's threshold
    heatmaps: dict[str, np.ndarray]  # label -> Grad-CAM float32 HxW in [0, 1], the input image's size


class NoActiveModel(LookupError):
    """No version of a registry name is active."""


class LoadedImagingModel:
    def __init__(self, *, name: str, version: str, model_version_id: int, metrics: dict[str, Any],
                 config: dict[str, Any], state_dicts: Sequence[dict[str, torch.Tensor]],
                 device: str | torch.device | None = None, precision: str | None = None,
                 graphs: bool | None = None) -> None:
        self.name = name
        self.version = version
        self.model_version_id = model_version_id
        self.metrics = metrics
        self.config = config
        self.architecture: str = config["architecture"]
        self.labels: list[str] = list(config["labels"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in config["thresholds"].items()}
        self.input_size: int = int(config["input_size"])
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision or ("bf16" if self.device.type == "cuda" else "fp32")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        members = build_members(config, state_dicts)
        for member in members:  # one kernel per convolution and its norm (fewer launches on a GPU)
            fuse_batch_norms(member)
            if self.precision == "bf16":
                _weights_to_bf16(member)
        self.members = [m.to(self.device) for m in members]
        if self.device.type == "cuda":
            self.members = [m.to(memory_format=torch.channels_last) for m in self.members]
        arch = architecture(self.architecture)
        # one per member, for life; closed form (no backward pass) through the known pooled head
        self._cams = [GradCAM(arch.cam_layer(m), arch.cam_head(m)) for m in self.members]
        self._lock = threading.Lock()  # one prediction at a time per loaded model
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imaging-preprocess")
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        if self.graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self._graphed: dict[tuple[int, ...], _Graphed] = {}
        self.graph_error = ""  # why capturing failed (the forward pass then stays eager)

    @classmethod
    def from_file(cls, path: Path, *, name: str = "", version: str = "", model_version_id: int = 0,
                  metrics: dict[str, Any] | None = None, device: str | None = None,
                  graphs: bool | None = None) -> LoadedImagingModel:
        config, state_dicts = load_model_file(path)
        return cls(name=name, version=version, model_version_id=model_version_id, metrics=metrics or {},
                   config=config, state_dicts=state_dicts, device=device, graphs=graphs)

    def close(self) -> None:
        for cam in self._cams:
            cam.close()
        self._cams = []
        self._pool.shutdown(wait=False)

    def preprocess(self, images: Sequence[np.ndarray], *, offset: int = 0, shrunk: bool = False) -> torch.Tensor:
        """The normalised batch, on the model's device (converted and resized there on a GPU);
        ``shrunk``: the images are ``modelfile.shrink``'s output (not checked again)."""
        return preprocess(images, self.config, offset=offset, device=self.device, shrunk=shrunk)

    def _autocast(self) -> Any:
        # no cast cache: it holds only weights that need a gradient, and a CUDA graph's capture forbids it
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16",
                              cache_enabled=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bare forward pass of a preprocessed batch: mean member probability (N, L)."""
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            return torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(dim=0)

    def forward_with_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities N x L, heat maps N x L x h x w at the CAM layer's resolution, in [0, 1])."""
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        probs, maps = [], []
        with self._autocast():
            for member, cam in zip(self.members, self._cams, strict=True):
                logits, heat = cam(partial(member, x))
                probs.append(torch.sigmoid(logits.float()))
                maps.append(heat)
        heat = torch.stack(maps).mean(dim=0)
        peak = heat.amax(dim=(2, 3), keepdim=True)
        heat = torch.where(peak > 0, heat / peak.clamp_min(1e-12), heat)
        return torch.stack(probs).mean(dim=0), heat

    @property
    def graphed_shapes(self) -> list[tuple[int, ...]]:
        """The batch shapes whose forward pass runs as a CUDA graph."""
        return sorted(self._graphed)

    def _forward_with_cam_graphed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward_with_cam`` replayed as one CUDA graph per batch shape (at most ``MAX_GRAPHS``
        shapes, captured at their first batch; others, and every batch after a capture failed, run
        eagerly). A forward pass is a few hundred kernels, each launched by this thread, which
        shares the GIL with the pipeline's threads; a replay is one launch. The tensors returned
        are the graph's own and are overwritten by its next replay: the caller (``launch``, under
        the lock) queues what reads them before it returns."""
        key = tuple(x.shape)
        graphed = self._graphed.get(key)
        if graphed is not None:
            return graphed.run(x)
        if self.graph_error or len(self._graphed) >= MAX_GRAPHS:
            return self.forward_with_cam(x)
        try:
            graphed = _Graphed.capture(self.forward_with_cam, x)
        except Exception as exc:  # noqa: BLE001 - any capture failure leaves the eager forward pass
            self.graph_error = f"{type(exc).__name__}: {exc}"[:300]
            logger.warning("imaging model %s: CUDA graph capture failed, eager forward pass kept (%s)",
                           self.name or self.architecture, self.graph_error)
            return self.forward_with_cam(x)
        self._graphed[key] = graphed
        return graphed.run(x)

    def predict(self, images: Sequence[np.ndarray], *, cam: bool = True, batch_size: int = 64) -> list[ImagePrediction]:
        """``images``: float32 2-D arrays in [0, 1] of any size (resized to ``input_size`` inside)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        images = list(images)
        starts = list(range(0, len(images), batch_size))
        out: list[ImagePrediction] = []
        with self._lock:
            pending: Future[torch.Tensor] | None = None
            for n, start in enumerate(starts):
                if pending is None:
                    pending = self._pool.submit(self.preprocess, images[start:start + batch_size], offset=start)
                x = pending.result()
                nxt = starts[n + 1] if n + 1 < len(starts) else None
                pending = (self._pool.submit(self.preprocess, images[nxt:nxt + batch_size], offset=nxt)
                           if nxt is not None else None)
                batch = images[start:start + batch_size]
                if cam:
                    probs_t, heat_t = self.forward_with_cam(x)
                    out.extend(self._results(probs_t, heat_t, batch))
                else:
                    out.extend(self._results(self.forward(x), None, batch))
        return out

    def _results(self, probs_t: torch.Tensor, heat_t: torch.Tensor | None,
                 batch: Sequence[np.ndarray]) -> list[ImagePrediction]:
        probs = probs_t.float().cpu().numpy()
        maps: list[np.ndarray | None] = [None] * len(batch)
        if heat_t is not None:
            heat = heat_t.float().cpu()
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i, image in enumerate(batch):
                by_shape.setdefault(tuple(image.shape), []).append(i)
            for shape, idx in by_shape.items():  # one upsampling per image size
                up = F.interpolate(heat[idx], size=shape, mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
                for j, i in enumerate(idx):
                    maps[i] = up[j].numpy()
        results = []
        for i in range(len(batch)):
            p = {label: float(probs[i, k]) for k, label in enumerate(self.labels)}
            positive = {label: p[label] >= self.thresholds[label] for label in self.labels}
            found = maps[i]
            heatmaps = {} if found is None else {label: found[k] for k, label in enumerate(self.labels)}
            results.append(ImagePrediction(p, positive, heatmaps))
        return results

    def launch(self, images: Sequence[np.ndarray], *, offset: int = 0, shrunk: bool = False,
               sizes: Sequence[tuple[int, int]] | None = None) -> PendingRead:
        """One batch queued on the model's device: preprocessing, the forward pass, the heat maps
        (finished for ``sizes`` as ``read_levels`` does, when given) and the copies of the results
        to pinned host memory. On a GPU it returns once the work is queued, so the caller can
        prepare the next batch while this one runs; ``PendingRead.result`` waits for it. On the CPU
        the work is done when it returns."""
        if sizes is not None and len(sizes) != len(images):
            raise ValueError("one overlay size per image is needed")
        x = self.preprocess(images, offset=offset, shrunk=shrunk)
        with self._lock:
            probs, heat = self._forward_with_cam_graphed(x) if self.graphs else self.forward_with_cam(x)
            if sizes is None:
                return PendingRead([probs.float(), heat.float()], None, len(images))
            groups = _level_groups(heat, sizes)
            return PendingRead([probs.float(), *(levels for _, levels in groups)], [idx for idx, _ in groups],
                               len(images))

    def read(self, images: Sequence[np.ndarray], *, offset: int = 0,
             shrunk: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One batch of float or uint8 images (at most a batch: they are preprocessed and run
        together): (mean member probabilities N x L, Grad-CAM heat maps N x L x h x w at the CAM
        layer's resolution, float32 in [0, 1]). ``heatmap_overlay_png`` takes these maps as they
        are and upsamples them to the image while it encodes."""
        probs, heat = self.launch(images, offset=offset, shrunk=shrunk).result()
        assert isinstance(heat, np.ndarray)
        return probs, heat

    def read_levels(self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], *,
                    offset: int = 0, shrunk: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """``read`` with the heat maps finished on the model's device: each upsampled to its
        image's (width, height) in ``sizes`` and quantised (``heat_levels``), so that only the PNG
        encoding (``overlay_png``) is left for the CPU. For GPU models, whose CPU side would
        otherwise resize every map itself."""
        probs, levels = self.launch(images, offset=offset, shrunk=shrunk, sizes=sizes).result()
        assert isinstance(levels, list)
        return probs, levels


PRECISIONS = ("bf16", "fp32")
MAX_GRAPHS = 2  # batch shapes captured per model: the full batch and, say, a job's usual last one


class _Graphed:
    """A function of one input tensor (a model's forward pass with Grad-CAM) captured as a CUDA
    graph for one input shape: its input copied into a static tensor, replayed, outputs static."""

    def __init__(self, graph: torch.cuda.CUDAGraph, static_x: torch.Tensor,
                 outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.graph = graph
        self.static_x = static_x
        self.outputs = outputs

    @classmethod
    def capture(cls, fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> _Graphed:
        static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuDNN's choice of algorithms, the allocator's pools
            for _ in range(2):
                fn(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the pipeline's threads may allocate pinned memory meanwhile
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = fn(static_x)
        return cls(graph, static_x, outputs)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.static_x.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.outputs


def _weights_to_bf16(model: torch.nn.Module) -> None:
    """The convolutions' and linear layers' weights stored as bfloat16, the type autocast computes
    them in: otherwise autocast casts every one of them again at every forward pass (weights that
    need no gradient are not cached), one more kernel per layer. Norms stay float32, as autocast
    keeps them."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            module.to(torch.bfloat16)


class PendingRead:
    """A batch queued by ``LoadedImagingModel.launch``. Its results are copied into pinned host
    memory behind the work on the GPU's queue, and an event marks their arrival: ``result`` waits
    for that event alone (the GIL released), not for the work queued after it."""

    def __init__(self, parts: list[torch.Tensor], layout: list[list[int]] | None, count: int) -> None:
        self._layout = layout
        self._count = count
        self._event: torch.cuda.Event | None = None
        if parts and parts[0].device.type == "cuda":
            self._host = [torch.empty(part.shape, dtype=part.dtype, pin_memory=True).copy_(part, non_blocking=True)
                          for part in parts]
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = [part.cpu() for part in parts]

    def result(self) -> tuple[np.ndarray, np.ndarray | list[np.ndarray]]:
        """(probabilities N x L, heat maps N x L x h x w) or, for a batch launched with sizes,
        (probabilities, per image its L x height x width uint8 levels)."""
        if self._event is not None:
            self._event.synchronize()
        probs, *rest = (part.numpy() for part in self._host)
        if self._layout is None:
            return probs, rest[0]
        return probs, _placed(self._count, zip(self._layout, rest, strict=True))


_CACHE: dict[str, LoadedImagingModel] = {}
_CACHE_LOCK = threading.Lock()


def get_loaded_model(name: str) -> LoadedImagingModel | None:
    """Active registry version of ``name``, loaded once per process and cached; reloaded when the
    active version changes; None if none is active. A file whose sha256 differs from the
    registered one raises ``cdss.model_registry.ModelFileTampered``."""
    from django.conf import settings

    from cdss.model_registry import model_file_verify, model_version_active

    mv = model_version_active(name)
    with _CACHE_LOCK:
        cached = _CACHE.get(name)
        if mv is None:
            if cached is not None:
                _CACHE.pop(name).close()
            return None
        if cached is not None and cached.model_version_id == mv.pk:
            return cached
        path = model_file_verify(mv)
        graphs = None if getattr(settings, "CDSS_IMAGING_CUDA_GRAPHS", True) else False  # None: on CUDA
        loaded = LoadedImagingModel.from_file(path, name=mv.name, version=mv.version, model_version_id=mv.pk,
                                              metrics=dict(mv.metrics), graphs=graphs)
        if cached is not None:
            cached.close()
        _CACHE[name] = loaded
        return loaded


def require_loaded_model(name: str) -> LoadedImagingModel:
    """``get_loaded_model`` or a ``NoActiveModel`` that says how to make one."""
    loaded = get_loaded_model(name)
    if loaded is None:
        dataset = next((d.name for d in DATASETS.values() if d.registry_name == name), None)
        how = (f"python manage.py train_imaging_model --dataset {dataset}" if dataset
               else "train and activate a version in the model registry")
        raise NoActiveModel(f"no active version of the imaging model {name!r}: run {how}")
    return loaded


def heat_levels(heat: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Heat maps (N, L, h, w) in [0, 1], on any device -> per image an (L, height, width) uint8
    array of colour-map levels at its (width, height): bilinear (antialiased when shrinking), as
    ``heatmap_overlay_png`` resizes with Pillow, then rounded to 0-255; one resize and one copy to
    the host per size, done on the maps' device."""
    return _placed(len(sizes), ((idx, levels.cpu().numpy()) for idx, levels in _level_groups(heat, sizes)))


def _placed(count: int, groups: Iterable[tuple[list[int], np.ndarray]]) -> list[np.ndarray]:
    """Per image its levels, from (the images' indices, their levels) per group of one size."""
    out: list[np.ndarray] = [np.empty(0, np.uint8)] * count  # every place is filled below
    for idx, levels in groups:
        for j, i in enumerate(idx):
            out[i] = levels[j]
    return out


def _level_groups(heat: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[tuple[list[int], torch.Tensor]]:
    """``heat_levels`` left on the maps' device: (the images' indices, their levels) per size."""
    if heat.ndim != 4 or heat.shape[0] != len(sizes):
        raise ValueError(f"expected (N, L, h, w) heat maps for {len(sizes)} sizes, got {tuple(heat.shape)}")
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (width, height) in enumerate(sizes):
        if width < 1 or height < 1:
            raise ValueError("width and height must be positive")
        by_size.setdefault((int(width), int(height)), []).append(i)
    maps = torch.nan_to_num(heat.float()).clamp_(0.0, 1.0)
    groups = []
    for (width, height), idx in by_size.items():
        group = maps if len(idx) == len(sizes) else maps[idx]  # one size: no index to copy to the device
        if group.shape[-2:] != (height, width):
            shrinking = height < group.shape[-2] or width < group.shape[-1]
            group = F.interpolate(group, size=(height, width), mode="bilinear", align_corners=False,
                                  antialias=shrinking).clamp_(0.0, 1.0)
        groups.append((idx, (group * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)))
    return groups
