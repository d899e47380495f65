"""Integrated gradients (Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks",
ICML 2017), written out because captum is not a dependency.

The attribution of input feature i is ``(x_i - x'_i) * integral_0^1 df/dx_i(x' + a (x - x')) da``
for a baseline x'. The integral is the trapezoidal rule over ``steps`` equal intervals, so by the
completeness axiom the attributions sum to ``f(x) - f(x')`` up to the quadrature error, which
is returned with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Attribution:
    values: torch.Tensor  # one per input feature, same shape as x
    output: float  # f(x)
    baseline_output: float  # f(x')
    completeness_gap: float  # sum(values) - (f(x) - f(x'))


def integrated_gradients(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, baseline: torch.Tensor, *, steps: int = 50
) -> Attribution:
    """``f`` maps a batch (k, d) to k scalar outputs; ``x`` and ``baseline`` have shape (d,)."""
    if x.shape != baseline.shape or x.dim() != 1:
        raise ValueError("x and baseline must be vectors of the same length")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    alphas = torch.linspace(0.0, 1.0, steps + 1, dtype=x.dtype)
    path = (baseline + alphas[:, None] * (x - baseline)).detach().requires_grad_(True)
    outputs = f(path)
    (gradients,) = torch.autograd.grad(outputs.sum(), path)
    weights = torch.full((steps + 1,), 1.0 / steps, dtype=x.dtype)
    weights[0] = weights[-1] = 0.5 / steps
    average_gradient = (weights[:, None] * gradients).sum(dim=0)
    values = ((x - baseline) * average_gradient).detach()
    output, baseline_output = float(outputs[-1].detach()), float(outputs[0].detach())
    gap = float(values.sum()) - (output - baseline_output)
    return Attribution(values=values, output=output, baseline_output=baseline_output, completeness_gap=gap)
