"""The CNN architectures, from torchvision, adapted to one grey channel and small inputs.

No pretrained weights are downloaded (``weights=None`` everywhere). ``CDSS_IMAGING_WEIGHTS`` may
name a local file (a state dict, e.g. ImageNet weights saved earlier) to initialise from; tensors
whose shapes differ after the adaptation (first convolution, classifier) keep their fresh values.

- ``resnet18``: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. For small
  inputs (the MedMNIST 28x28 setting, Yang et al., Sci Data 2023) the 7x7/2 stem becomes a 3x3/1
  convolution; ``resnet18`` keeps the max pool (the residual stages run at 14, 7, 4, 2 pixels:
  cheap enough to train on a CPU in minutes), ``resnet18_full`` drops it as the MedMNIST code does
  (stages at 28, 14, 7, 4; about four times the compute).
- ``densenet121``: Huang et al., "Densely Connected Convolutional Networks", CVPR 2017; the same
  small-input stem (3x3/1 convolution, no pool).
- ``inception_v3``: Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016; no
  auxiliary head; its stride-2 stem and pools need at least 75x75, so inputs are upsampled.

**Stems.** ResNet-18 and DenseNet-121 have two: ``small`` (above) and ``standard``, the papers'
and torchvision's own (a 7x7/2 convolution, then a 3x3/2 max pool), which takes an input to a
quarter of its side before the first stage, as MedMNIST v2 does for its 224 px models (Yang et al.
2023, "ResNet-18 (224)": the standard network on images resized to 224). A new model gets the
standard stem from ``STANDARD_STEM_FROM`` (112) pixels up (``default_stem``): there its stages see
at least the 28 px the small stem gives a MedMNIST image, while the small stem at 224 px would run
every stage at four times the side, 16 times the work (bare forward on 2 CPU cores at 224 px:
DenseNet-121 0.5 against 11.4 images a second, ResNet-18 6.6 against 35.0; imaging/README.md). The stem is part of the model's config (``"stem"``); a model file that names none
was built with ``Architecture.stems[0]``, the only stem there was then.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from .gradcam import LinearHead


@dataclass(frozen=True)
class Architecture:
    name: str
    default_input_size: int
    min_input_size: int
    build: Callable[[int, str], nn.Module]  # (labels, stem) -> a fresh network
    cam_layer: Callable[[nn.Module], nn.Module]  # the last convolutional block, for Grad-CAM
    cam_head: Callable[[nn.Module], LinearHead]  # what follows it: pool and linear (closed-form Grad-CAM)
    # the stems it can be built with; the first is what a model config naming none was built with
    stems: tuple[str, ...] = ("small", "standard")


STEMS = ("small", "standard")
STANDARD_STEM_FROM = 112  # input pixels a side from which a new model gets the standard stem
STANDARD_STEM_MIN_INPUT = 32  # ResNet and DenseNet halve it five times with the standard stem


def _small_stem(channels: int) -> nn.Conv2d:
    return nn.Conv2d(1, channels, kernel_size=3, stride=1, padding=1, bias=False)


def _standard_stem(channels: int, *, fan_out: bool) -> nn.Conv2d:
    """torchvision's first convolution (7x7/2) for one channel, initialised as torchvision
    initialises it (He normal: by fan-out for ResNet, fan-in for DenseNet)."""
    conv = nn.Conv2d(1, channels, kernel_size=7, stride=2, padding=3, bias=False)
    if fan_out:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    else:
        nn.init.kaiming_normal_(conv.weight)
    return conv


def _resnet18(num_labels: int, stem: str, *, maxpool: bool) -> nn.Module:
    model = tvm.resnet18(weights=None, num_classes=num_labels)
    if stem == "standard":  # torchvision's stem, its max pool kept
        model.conv1 = _standard_stem(64, fan_out=True)
        return model
    model.conv1 = _small_stem(64)
    if not maxpool:
        model.maxpool = nn.Identity()  # type: ignore[assignment]
    return model


def _densenet121(num_labels: int, stem: str) -> nn.Module:
    model = tvm.densenet121(weights=None, num_classes=num_labels)
    if stem == "standard":  # torchvision's stem, its max pool kept
        model.features.conv0 = _standard_stem(64, fan_out=False)
        return model
    model.features.conv0 = _small_stem(64)
    model.features.pool0 = nn.Identity()
    return model


class _InceptionV3(nn.Module):
    """torchvision's Inception-V3 with one input channel and no auxiliary head; returns logits only."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        net = tvm.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=num_labels,
                               transform_input=False)
        conv = net.Conv2d_1a_3x3.conv
        net.Conv2d_1a_3x3.conv = nn.Conv2d(1, conv.out_channels, kernel_size=3, stride=2, bias=False)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.logits if hasattr(out, "logits") else out


def _child(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def _head(path: str, *, relu: bool = False) -> Callable[[nn.Module], LinearHead]:
    def get(model: nn.Module) -> LinearHead:
        linear = model.get_submodule(path)
        assert isinstance(linear, nn.Linear)
        return LinearHead(linear, relu=relu)

    return get


ARCHITECTURES: dict[str, Architecture] = {
    # ResNet: layer4 -> average pool -> fc; DenseNet: features -> ReLU -> average pool -> classifier;
    # Inception-V3: Mixed_7c -> average pool -> dropout (identity in eval) -> fc.
    "resnet18": Architecture("resnet18", 28, 8, lambda n, stem: _resnet18(n, stem, maxpool=True),
                             lambda m: _child(m, "layer4"), _head("fc")),
    # the MedMNIST code's 28 px network: the small stem only (without its pool, at 224 px every
    # stage would run at eight times the side of the standard network's)
    "resnet18_full": Architecture("resnet18_full", 28, 8, lambda n, stem: _resnet18(n, stem, maxpool=False),
                                  lambda m: _child(m, "layer4"), _head("fc"), stems=("small",)),
    "densenet121": Architecture("densenet121", 28, 16, _densenet121, lambda m: _child(m, "features"),
                                _head("classifier", relu=True)),
    "inception_v3": Architecture("inception_v3", 75, 75, lambda n, _stem: _InceptionV3(n), lambda m: _child(m, "net.Mixed_7c"),
                                 _head("net.fc"), stems=("standard",)),
}


class ArchitectureError(ValueError):
    pass


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """The (convolution, batch norm) child names of ``module`` where the norm takes the
    convolution's output directly: consecutive children of a ``Sequential`` (ResNet's downsample,
    DenseNet's stem), and the torchvision naming of ``conv``/``bn`` (Inception's BasicConv2d) and
    ``convN``/``bnN`` (ResNet's stem and blocks). DenseNet's layers name theirs ``normN``/``convN``
    and apply the norm first: never paired."""
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        return [(a, b) for a, b in itertools.pairwise(names)
                if isinstance(children[a], nn.Conv2d) and isinstance(children[b], nn.BatchNorm2d)]
    pairs = []
    for name, child in children.items():
        if isinstance(child, nn.Conv2d) and name.startswith("conv"):
            partner = "bn" + name[len("conv"):]
            if isinstance(children.get(partner), nn.BatchNorm2d):
                pairs.append((name, partner))
    return pairs


def fuse_batch_norms(model: nn.Module) -> int:
    """Folds every batch norm that directly follows a convolution into that convolution's weights
    and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``: the same function in eval mode, one
    kernel instead of two) and puts an identity in its place; module names are kept, so Grad-CAM's
    layers are found as before. For inference only (the model must be in eval mode). Returns how
    many were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("batch norms are folded into an evaluating model only (call .eval() first)")
    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in _conv_bn_pairs(module):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ArchitectureError(f"unknown architecture {name!r}; one of {', '.join(ARCHITECTURES)}") from None


def default_stem(name: str, input_size: int) -> str:
    """The stem a new model of architecture ``name`` at ``input_size`` pixels gets: the standard
    one from ``STANDARD_STEM_FROM`` up where the architecture has both, else the small one (or the
    architecture's only stem)."""
    stems = architecture(name).stems
    if len(stems) == 1:
        return stems[0]
    return "standard" if input_size >= STANDARD_STEM_FROM else "small"


def min_input_size(name: str, stem: str) -> int:
    """The smallest input ``name`` built with ``stem`` takes (at least one pixel at its last stage)."""
    arch = architecture(name)
    return max(arch.min_input_size, STANDARD_STEM_MIN_INPUT) if stem == "standard" else arch.min_input_size


def resolve_stem(name: str, stem: str | None) -> str:
    """``stem``, checked against the architecture's (an ArchitectureError names them), or, for
    None (a model config naming none), the architecture's first: what such a model was built with."""
    arch = architecture(name)
    stem = stem or arch.stems[0]
    if stem not in arch.stems:
        raise ArchitectureError(f"{name} has no {stem!r} stem; its stems: {', '.join(arch.stems)}")
    return stem


def build_model(name: str, num_labels: int, *, stem: str | None = None,
                init_weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """A fresh network with ``stem`` (``resolve_stem``); ``init_weights`` (default: the
    CDSS_IMAGING_WEIGHTS environment variable) is a local state-dict file whose matching tensors
    initialise it."""
    model = architecture(name).build(num_labels, resolve_stem(name, stem))
    path = init_weights if init_weights is not None else os.environ.get("CDSS_IMAGING_WEIGHTS") or None
    if path:
        load_matching(model, Path(path))
    return model


def load_matching(model: nn.Module, path: Path) -> int:
    """Copies the tensors of ``path`` whose names and shapes match; returns how many."""
    if not path.is_file():
        raise ArchitectureError(f"initial weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ArchitectureError(f"no tensor of {path} fits this architecture")
    own.update(matched)
    model.load_state_dict(own)
    return len(matched)
