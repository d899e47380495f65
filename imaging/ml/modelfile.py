"""The imaging model file, the preprocessing it was trained with, and the network in memory.

File: ``torch.save`` of ``{"format", "config", "state_dicts"}``, loaded with ``weights_only=True``
(tensors and plain containers, nothing executable). ``config`` is JSON-able: architecture, input
size, labels, thresholds, normalisation, the file label each finding corresponds to. Several state
dicts make an ensemble whose probability is the members' mean. The registry keeps the file's
sha256 (checked before loading) and the same config in the ModelVersion row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .architectures import ArchitectureError, build_model
from .cpuwork import check_image as check_image  # re-exported: defined there, without torch
from .cpuwork import shrink

FORMAT = "cdss.imaging/1"


class ModelFormatError(ValueError):
    pass


def save_model_file(path: Path, config: dict[str, Any], state_dicts: Sequence[dict[str, torch.Tensor]]) -> str:
    """Writes the file and returns its sha256."""
    from cdss.hashing import file_sha256  # here, so that loading and inference import nothing of cdss

    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "config": config,
               "state_dicts": [{k: v.detach().cpu().clone() for k, v in sd.items()} for sd in state_dicts]}
    torch.save(payload, path)
    return file_sha256(path)


def load_model_file(path: Path) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]]]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFormatError(f"{path} is not a {FORMAT} model file")
    config, state_dicts = payload.get("config"), payload.get("state_dicts")
    if not isinstance(config, dict) or not isinstance(state_dicts, list) or not state_dicts:
        raise ModelFormatError(f"{path} lacks its config or weights")
    return config, state_dicts


def build_members(config: dict[str, Any], state_dicts: Sequence[dict[str, torch.Tensor]]) -> list[nn.Module]:
    members = []
    for sd in state_dicts:
        try:  # a config without a stem: the architecture's first (``Architecture.stems``)
            net = build_model(config["architecture"], len(config["labels"]), stem=config.get("stem"), init_weights="")
        except ArchitectureError as exc:
            raise ModelFormatError(str(exc)) from None
        try:
            net.load_state_dict(sd)
        except RuntimeError as exc:
            raise ModelFormatError(f"the weights do not fit {config['architecture']} ({exc})") from None
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        members.append(net)
    return members


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 1, size, size), bilinear, antialiased when shrinking."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def normalise(x: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
    norm = config["normalisation"]
    return (x - float(norm["mean"])) / float(norm["std"])


# Pixels resized in one call at most (64 MiB as float32): same-sized images are resized together.
_RESIZE_PIXELS = 16 * 1024 * 1024


_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32, np.dtype(np.int64): torch.int64}


def _to_device(arrays: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """``arrays`` (one shape and dtype) stacked on ``device``. For a GPU they are stacked straight
    into pinned host memory and copied without waiting: a copy from pageable memory waits until the
    GPU has finished all the work queued before it, which would leave the GPU idle between batches."""
    if device.type != "cuda":
        return torch.from_numpy(np.stack(arrays)).to(device)
    first = arrays[0]
    host = torch.empty((len(arrays), *first.shape), dtype=_TORCH_DTYPES[first.dtype], pin_memory=True)
    np.stack(arrays, out=host.numpy())
    return host.to(device, non_blocking=True)


def preprocess(images: Sequence[np.ndarray], config: dict[str, Any], *, offset: int = 0,
               device: torch.device | str = "cpu", shrunk: bool = False) -> torch.Tensor:
    """Float or uint8 grey images of any size -> the normalised (N, 1, S, S) batch the network
    takes: larger images shrunk one by one (``shrink``), the others converted and resized (up) in
    batches of one size. On another ``device`` (a GPU) each group of one size is stacked here and
    copied as it is (uint8: a quarter of the bytes), then converted, resized and normalised there,
    so the CPU only copies; there a uint8 image larger than the input but no larger in bytes than
    its shrunk copy is shrunk too (``shrink``'s ``keep_uint8``; the same antialiased bilinear
    resize). ``shrunk``: the images came out of ``shrink`` already (checked; none larger than the
    input but those ``keep_uint8`` kept), so they are not checked again: two passes over every image
    saved on the thread that feeds the network."""
    size = int(config["input_size"])
    device = torch.device(device)
    keep = device.type != "cpu"
    arrays = (list(images) if shrunk
              else [shrink(image, size, index=offset + i, keep_uint8=keep) for i, image in enumerate(images)])
    out = torch.empty((len(arrays), 1, size, size), dtype=torch.float32, device=device)
    groups: dict[tuple[tuple[int, ...], str], list[int]] = {}
    for i, arr in enumerate(arrays):
        groups.setdefault((arr.shape, arr.dtype.str), []).append(i)
    for (shape, _), members in groups.items():
        step = max(1, _RESIZE_PIXELS // (shape[0] * shape[1]))
        for start in range(0, len(members), step):
            idx = members[start:start + step]
            batch = _to_device([arrays[i] for i in idx], device)[:, None]
            if batch.dtype == torch.uint8:
                batch = batch.float() / 255.0  # bit for bit the float32 image x / 255 of the decoders
            if idx == list(range(idx[0], idx[0] + len(idx))):
                out[idx[0]:idx[0] + len(idx)] = resize_batch(batch, size)
            else:
                out[_to_device([np.asarray(idx, dtype=np.int64)], device)[0]] = resize_batch(batch, size)
    return normalise(out, config)
