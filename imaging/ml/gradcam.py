"""Grad-CAM heat maps (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017, eq. 1-2).

For label ``k`` with logit ``y_k`` and the activations ``A`` (C x h x w) of the last convolutional
block: ``alpha_c = mean_ij dy_k/dA_cij`` and ``L = ReLU(sum_c alpha_c A_c)``, scaled to [0, 1] per
image (divided by its maximum; all zeros when nothing contributes positively).

Where the network after the block is ``[ReLU ->] global average pool -> linear`` (all the
architectures here), the gradient has a closed form and needs no backward pass:
``dy_k/dA_cij = w_kc / (h w)`` (times ``1[A_cij > 0]`` behind a ReLU), so
``alpha_c = w_kc / (h w)`` (times the fraction of positive ``A_c``): for a plain pooled head
Grad-CAM is the class activation map of Zhou et al., "Learning Deep Features for Discriminative
Localization", CVPR 2016, as Selvaraju et al. show (section 3.1). The heat maps then come from the
activation captured in the same inference-mode forward pass as the prediction.

One ``GradCAM`` holds one forward hook on the block for its whole life (created once with the
loaded model, removed by ``close``). The hook does nothing unless a ``__call__`` is running; then
it keeps the block's output. Without a known head it cuts the graph at the block instead: the
output is detached and made the one tensor that requires a gradient, so the layers below run
without recording anything and only the head is differentiated. The captured activation is dropped
when the call ends, so nothing is kept across calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LinearHead:
    """The network after the CAM block is ``[ReLU ->] global average pool -> linear``."""

    linear: nn.Linear
    relu: bool = False  # a ReLU (in place, as torchvision's DenseNet) between the block and the pool


class GradCAM:
    def __init__(self, layer: nn.Module, head: LinearHead | None = None) -> None:
        self._local = threading.local()
        self._head = head
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        mode = getattr(self._local, "mode", None)
        if mode is None:
            return None
        if mode == "keep":
            # the head's in-place ReLU would otherwise overwrite the kept activation
            self._local.activation = output.clone() if self._head is not None and self._head.relu else output
            return None
        leaf = output.detach().requires_grad_(True)
        self._local.activation = leaf
        # A copy goes on: some heads apply an in-place ReLU, which a leaf that requires grad refuses.
        return leaf.clone()

    def __call__(self, forward: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs ``forward`` (which returns logits N x L) and returns (logits detached, heat maps
        N x L x h x w in [0, 1], float32, at the block's resolution)."""
        if self._head is not None:
            return self._closed_form(forward, self._head)
        self._local.mode = "grad"
        try:
            with torch.enable_grad():
                logits = forward()
                activation = self._activation()
                n_labels = logits.shape[1]
                maps = []
                for k in range(n_labels):
                    (grad,) = torch.autograd.grad(logits[:, k].sum(), activation, retain_graph=k < n_labels - 1)
                    weights = grad.float().mean(dim=(2, 3), keepdim=True)
                    maps.append(F.relu((weights * activation.float()).sum(dim=1)))
            return logits.detach(), _scaled(torch.stack(maps, dim=1)).detach()
        finally:
            self._local.mode = None
            self._local.activation = None

    def _closed_form(self, forward: Callable[[], torch.Tensor], head: LinearHead) -> tuple[torch.Tensor, torch.Tensor]:
        self._local.mode = "keep"
        try:
            with torch.inference_mode():
                logits = forward()
                activation = self._activation().float()
                weight = head.linear.weight.float()  # (L, C)
                alpha = weight[None] / (activation.shape[2] * activation.shape[3])  # (1, L, C)
                if head.relu:
                    alpha = alpha * (activation > 0).float().sum(dim=(2, 3))[:, None, :]
                cams = F.relu(torch.einsum("nlc,nchw->nlhw", alpha.expand(len(activation), -1, -1), activation))
                return logits, _scaled(cams)
        finally:
            self._local.mode = None
            self._local.activation = None

    def _activation(self) -> torch.Tensor:
        activation = getattr(self._local, "activation", None)
        if activation is None:
            raise RuntimeError("the Grad-CAM layer did not run in the forward pass")
        return activation

    def close(self) -> None:
        self._handle.remove()


def _scaled(cams: torch.Tensor) -> torch.Tensor:
    peak = cams.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > 0, cams / peak.clamp_min(1e-12), torch.zeros_like(cams))
