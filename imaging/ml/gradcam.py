"""Grad-CAM heat maps (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017, eq. 1-2).

For label ``k`` with logit ``y_k`` and the activations ``A`` (C x h x w) of the last convolutional
block: ``alpha_c = mean_ij dy_k/dA_cij`` and ``L = ReLU(sum_c alpha_c A_c)``, scaled to [0, 1] per
image (divided by its maximum; all zeros when nothing contributes positively).

One ``GradCAM`` holds one forward hook on the block for its whole life (created once with the
loaded model, removed by ``close``). The hook does nothing unless a ``__call__`` is running; then it
cuts the graph at the block: the block's output is detached and made the one tensor that requires a
gradient, so the layers below run without recording anything and only the head is differentiated.
The captured activation is dropped when the call ends, so nothing is kept across calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class GradCAM:
    def __init__(self, layer: nn.Module) -> None:
        self._local = threading.local()
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if not getattr(self._local, "capturing", False):
            return None
        leaf = output.detach().requires_grad_(True)
        self._local.activation = leaf
        # A copy goes on: some heads apply an in-place ReLU, which a leaf that requires grad refuses.
        return leaf.clone()

    def __call__(self, forward: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs ``forward`` (which returns logits N x L) and returns (logits detached, heat maps
        N x L x h x w in [0, 1], float32, at the block's resolution)."""
        self._local.capturing = True
        try:
            with torch.enable_grad():
                logits = forward()
                activation = getattr(self._local, "activation", None)
                if activation is None:
                    raise RuntimeError("the Grad-CAM layer did not run in the forward pass")
                n_labels = logits.shape[1]
                maps = []
                for k in range(n_labels):
                    (grad,) = torch.autograd.grad(logits[:, k].sum(), activation, retain_graph=k < n_labels - 1)
                    weights = grad.float().mean(dim=(2, 3), keepdim=True)
                    maps.append(F.relu((weights * activation.float()).sum(dim=1)))
            cams = torch.stack(maps, dim=1)
            peak = cams.amax(dim=(2, 3), keepdim=True)
            cams = torch.where(peak > 0, cams / peak.clamp_min(1e-12), torch.zeros_like(cams))
            return logits.detach(), cams.detach()
        finally:
            self._local.capturing = False
            self._local.activation = None

    def close(self) -> None:
        self._handle.remove()
