"""Training of the imaging CNNs on MedMNIST files, and registration of the result.

Protocol (Yang et al., MedMNIST v2, Sci Data 2023, uses the same official splits):
- the official ``train`` split is the only one the network learns from; a stratified 10% of it is
  held out for early stopping (best held-out AUC, with patience) and for the decision threshold
  (Youden's J on the held-out images, so the threshold never sees validation or test images);
- augmentation of the training batches: small rotations (+-10 degrees), shifts (+-8%), scaling
  (0.9-1.1), brightness and contrast (+-10%), left-right flips only where laterality carries no
  meaning (ultrasound, not chest films);
- class weighting: the positive term of the binary cross-entropy is weighted by n_negative /
  n_positive of the training images;
- AdamW (Loshchilov & Hutter, ICLR 2019), one warm-up epoch then a cosine schedule;
- optionally (``ema``), the weights judged and kept are an exponential moving average of the
  trained ones over the steps (Polyak & Juditsky, SIAM J Control Optim 1992), buffers included;
- optionally (``mixup``), each batch is mixed with a shuffled copy of itself, images and labels
  alike, by a weight drawn from Beta(alpha, alpha) (Zhang et al., mixup, ICLR 2018);
- ``select``: a member keeps the epoch with the best held-out AUC (with ``patience``), or the
  last epoch's weights (the held-out part then only sets the threshold);
- the official ``val`` split is only reported; the official ``test`` split, where the file has
  one, is measured once after everything is fixed and never used for a choice.
Several members (different seeds and held-out parts) may be averaged into one ensemble.
"""

from __future__ import annotations

import copy
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .architectures import architecture, build_model, default_stem, min_input_size, resolve_stem
from .data import Dataset, Split, load_npz, stratified_holdout
from .metrics import auc, binary_summary, youden_threshold
from .modelfile import FORMAT, resize_batch, save_model_file

if TYPE_CHECKING:
    from cdss.models import ModelVersion


@dataclass(frozen=True)
class TrainSettings:
    arch: str = "resnet18"
    epochs: int = 12
    members: int = 1
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    holdout_fraction: float = 0.1
    patience: int = 6
    input_size: int | None = None  # default: the architecture's
    stem: str | None = None  # "small" or "standard" (default: architectures.default_stem for the input size)
    max_train_images: int | None = None
    seed: int = 0
    augment: float = 1.0  # scale of the augmentation ranges (0: none)
    ema: float = 0.0  # per-step decay of an exponential moving average of the weights (0: off)
    select: str = "best"  # which epoch's weights a member keeps: "best" held-out AUC, or "last"
    mixup: float = 0.0  # alpha of the Beta(alpha, alpha) mixing weight of mixup (0: off)


# The recommended default per data set: ResNet-18 with the small-input stem, trained on a CPU in
# a few minutes. BreastMNIST has 546 training images, so more epochs and an ensemble of members,
# each the moving average of its weights at the last epoch: under 5-fold CV on the train split this
# beat the best held-out epoch by 0.010 and 0.018 AUC (two seeds; imaging/README.md, "Member
# selection and ensemble size").
DEFAULTS: dict[str, TrainSettings] = {
    "pneumoniamnist": TrainSettings(arch="resnet18", epochs=12, members=1),
    "breastmnist": TrainSettings(arch="resnet18", epochs=40, members=3, batch_size=64, patience=12, ema=0.98,
                                 select="last"),
}


@dataclass
class TrainResult:
    config: dict[str, Any]
    state_dicts: list[dict[str, torch.Tensor]]
    metrics: dict[str, Any]
    seconds: float
    settings: TrainSettings
    history: list[dict[str, Any]] = field(default_factory=list)


def _to_input(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return resize_batch(x, size)


def augment(x: torch.Tensor, gen: torch.Generator, *, hflip: bool, strength: float = 1.0) -> torch.Tensor:
    """Random small affine transforms and intensity changes of a [0, 1] batch (N, 1, S, S); the
    ranges (module docstring) are multiplied by ``strength``. The random numbers come from ``gen``
    on the CPU, whatever the batch's device, so a seed gives the same augmentation everywhere."""
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=gen) * (high - low) * strength + low * strength

    angle = uniform(-10.0, 10.0) * math.pi / 180.0
    scale = 1.0 + uniform(-0.1, 0.1)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(-0.16, 0.16)], dim=1),
                         torch.stack([sin * flip, cos, uniform(-0.16, 0.16)], dim=1)], dim=1).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = (1.0 + uniform(-0.1, 0.1))[:, None, None, None].to(x.device)
    brightness = uniform(-0.1, 0.1)[:, None, None, None].to(x.device)
    mean = out.mean(dim=(2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + brightness).clamp(0.0, 1.0)


def _mix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup: one weight per batch from Beta(alpha, alpha) and a shuffled partner per image, both
    drawn from ``gen`` (on the CPU), so a seed gives the same mixing everywhere."""
    draw = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=gen)))
    weight = float(draw.beta(alpha, alpha))
    order = torch.randperm(len(x), generator=gen).to(x.device)
    return weight * x + (1.0 - weight) * x[order], weight * y + (1.0 - weight) * y[order]


def _batches(n: int, size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for start in range(0, n, size):
        yield order[start:start + size]


@torch.no_grad()
def _probabilities(members: list[nn.Module], x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Mean sigmoid over the members, (N, L)."""
    total = None
    for net in members:
        net.eval()
        out = torch.cat([torch.sigmoid(net(x[idx.to(x.device)]).float()).cpu()
                         for idx in _batches(len(x), batch_size, None)])
        total = out if total is None else total + out
    assert total is not None
    return (total / len(members)).numpy().astype(np.float64)


def _subsample(split: Split, limit: int | None, seed: int) -> Split:
    if limit is None or limit >= len(split.targets):
        return split
    if limit < 4:
        raise ValueError("max_train_images must be at least 4")
    keep, _ = stratified_holdout(split.targets, 1.0 - limit / len(split.targets), seed)
    return split.take(keep)


# Inputs up to MedMNIST's own 28 px train on the CPU unless a GPU is asked for: minutes there,
# and the recommended defaults' figures (imaging/README.md) were measured on the CPU.
CPU_INPUT_MAX = 28


def training_device(requested: str, input_size: int, cuda_available: bool) -> str:
    """Where a model trains: ``requested`` "cpu" or "cuda" (a ValueError naming it when there is no
    CUDA device), or "auto": on CUDA when there is one and the input is larger than
    ``CPU_INPUT_MAX``, else on the CPU."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"the training device is auto, cpu or cuda, not {requested!r}")
    if requested == "cuda" and not cuda_available:
        raise ValueError("training on cuda was asked for, but torch sees no CUDA device here")
    if requested == "auto":
        return "cuda" if cuda_available and input_size > CPU_INPUT_MAX else "cpu"
    return requested


def train(dataset: Dataset, settings: TrainSettings, *, progress: bool = False,
          device: str | torch.device = "cpu") -> TrainResult:
    """Trains ``settings.members`` networks and measures them (see the module docstring). Pure
    computation (no Django): ``bench/imaging_gpu_search.py`` runs it on a GPU with ``device``."""
    started = time.perf_counter()
    dev = torch.device(device)
    arch = architecture(settings.arch)
    size = settings.input_size or arch.default_input_size
    stem = resolve_stem(arch.name, settings.stem or default_stem(arch.name, size))  # ArchitectureError: a ValueError
    smallest = min_input_size(arch.name, stem)
    if size < smallest:
        which = f"{arch.name} with the {stem} stem" if len(arch.stems) > 1 else arch.name
        raise ValueError(f"{which} needs an input of at least {smallest} pixels, not {size}")
    if settings.epochs < 1 or settings.members < 1:
        raise ValueError("epochs and members must be at least 1")
    if settings.select not in ("best", "last"):
        raise ValueError(f"select must be 'best' or 'last', not {settings.select!r}")
    if settings.mixup < 0:
        raise ValueError(f"mixup is a Beta distribution's alpha (0: off), not {settings.mixup}")
    if not 0.0 <= settings.ema < 1.0:
        raise ValueError(f"ema is a decay in [0, 1), not {settings.ema}")
    spec = dataset.spec
    train_split = _subsample(dataset.splits["train"], settings.max_train_images, settings.seed)
    x_all = _to_input(train_split.images, size).to(dev)
    y_all = torch.from_numpy(train_split.targets)[:, None].to(dev)
    norm = {"mean": round(float(x_all.mean()), 6), "std": round(float(x_all.std()), 6)}
    config: dict[str, Any] = {
        "format": FORMAT, "architecture": arch.name, "stem": stem, "input_size": size, "labels": [spec.label],
        "file_label_values": {spec.label: spec.positive_value}, "dataset": spec.name, "normalisation": norm,
        "thresholds": {spec.label: 0.5}, "members": settings.members,
    }

    def norm_x(x: torch.Tensor) -> torch.Tensor:
        return (x - norm["mean"]) / norm["std"]

    members: list[nn.Module] = []
    held_probs = np.zeros(len(y_all))
    held_counts = np.zeros(len(y_all))
    history: list[dict[str, Any]] = []
    steps_total = settings.members * settings.epochs
    bar = _progress_bar(steps_total, f"{spec.name} {arch.name}", progress)
    for m in range(settings.members):
        seed = settings.seed * 1000 + m
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        fit_idx, held_idx = stratified_holdout(train_split.targets, settings.holdout_fraction, seed)
        x_fit, y_fit = x_all[fit_idx], y_all[fit_idx]
        x_held, y_held = norm_x(x_all[held_idx]), y_all[held_idx].cpu().numpy()
        n_pos = float(y_fit.sum())
        pos_weight = torch.tensor([(len(y_fit) - n_pos) / max(n_pos, 1.0)], device=dev)
        net = build_model(arch.name, 1, stem=stem).to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        per_epoch = math.ceil(len(x_fit) / settings.batch_size)
        total, warm = per_epoch * settings.epochs, per_epoch

        def lr_at(step: int, total: int = total, warm: int = warm) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        averaged = (AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(settings.ema), use_buffers=True)
                    if settings.ema else None)
        judged = averaged.module if averaged is not None else net
        best_auc, best_state, best_epoch, stale = -1.0, copy.deepcopy(net.state_dict()), 0, 0
        for epoch in range(settings.epochs):
            net.train()
            loss_sum = 0.0
            for idx in _batches(len(x_fit), settings.batch_size, gen):
                if len(idx) < 2:
                    continue  # batch norm needs two images
                idx = idx.to(dev)
                xb = x_fit[idx] if settings.augment == 0 else augment(x_fit[idx], gen, hflip=spec.hflip,
                                                                      strength=settings.augment)
                xb, yb = norm_x(xb), y_fit[idx]
                if settings.mixup:
                    xb, yb = _mix(xb, yb, gen, settings.mixup)
                loss = F.binary_cross_entropy_with_logits(net(xb), yb, pos_weight=pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if averaged is not None:
                    averaged.update_parameters(net)
                loss_sum += float(loss.detach()) * len(idx)
            held_auc = auc(y_held[:, 0], _probabilities([judged], x_held)[:, 0])
            history.append({"member": m, "epoch": epoch + 1, "loss": round(loss_sum / len(x_fit), 4),
                            "holdout_auc": round(held_auc, 4)})
            bar.update(1)
            bar.set_postfix(member=m + 1, loss=f"{loss_sum / len(x_fit):.3f}", holdout_auc=f"{held_auc:.3f}")
            if settings.select == "last":
                if epoch + 1 == settings.epochs:
                    best_auc, best_state, best_epoch = held_auc, copy.deepcopy(judged.state_dict()), epoch + 1
            elif held_auc > best_auc:
                best_auc, best_state, best_epoch, stale = held_auc, copy.deepcopy(judged.state_dict()), epoch + 1, 0
            else:
                stale += 1
                if stale >= settings.patience:
                    bar.update(settings.epochs - epoch - 1)
                    break
        net.load_state_dict(best_state)
        net.eval()
        members.append(net)
        history.append({"member": m, "best_epoch": best_epoch, "best_holdout_auc": round(best_auc, 4)})
        held_probs[held_idx] += _probabilities([net], x_held)[:, 0]
        held_counts[held_idx] += 1
    bar.close()

    # Threshold on the held-out training images (each scored only by members that did not fit it).
    seen = held_counts > 0
    held_mean = held_probs[seen] / held_counts[seen]
    threshold = youden_threshold(train_split.targets[seen], held_mean)
    config["thresholds"] = {spec.label: round(threshold, 6)}
    metrics: dict[str, Any] = {"holdout": binary_summary(train_split.targets[seen], held_mean, threshold)}
    for split_name, key in (("val", "validation"), ("test", "test")):
        split = dataset.splits.get(split_name)
        if split is None:
            continue
        probs = _probabilities(members, norm_x(_to_input(split.images, size).to(dev)))[:, 0]
        metrics[key] = binary_summary(split.targets, probs, threshold)
    metrics["test_auc"] = metrics["test"]["auc"] if "test" in metrics else None
    metrics["validation_auc"] = metrics["validation"]["auc"]
    metrics["validation_accuracy"] = metrics["validation"]["accuracy"]
    metrics["input_size"] = size
    metrics["stem"] = stem
    metrics["normalisation"] = norm
    metrics["thresholds"] = config["thresholds"]
    seconds = time.perf_counter() - started
    metrics["training"] = {"seconds": round(seconds, 1), "settings": settings.__dict__, "history": history,
                           "train_images": len(y_all), "device": dev.type}
    state_dicts = [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in members]
    return TrainResult(config, state_dicts, metrics, seconds, settings, history)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm  # only for a progress bar on a terminal

    return tqdm(total=total, desc=desc, unit="epoch")


def split_text(result: TrainResult) -> str:
    s = result.settings
    test = "measured once after training" if result.metrics.get("test") else "absent from the file (not measured)"
    return (f"MedMNIST official splits: train ({result.metrics['training']['train_images']} images; a stratified "
            f"{s.holdout_fraction:.0%} per member held out for early stopping and the threshold), val (reported "
            f"only), test ({test}). Seed {s.seed}.")


def train_and_register(
    dataset: str,
    *,
    arch: str = "resnet18",
    epochs: int,
    max_train_images: int | None = None,
    seed: int = 0,
    activate: bool = True,
    user: Any = None,
    members: int = 1,
    settings: TrainSettings | None = None,
    data_path: Path | None = None,
    progress: bool = False,
    command: str = "",
) -> ModelVersion:
    """Trains on ``CDSS_DATA_DIR/imaging/<dataset>.npz`` (or ``data_path``), saves the file under
    CDSS_MODEL_DIR and registers it (active unless ``activate`` is false). A small
    ``max_train_images`` with one epoch trains in seconds (for tests and demos)."""
    data = load_dataset(dataset, data_path)
    chosen = settings or TrainSettings(arch=arch, epochs=epochs, members=members, seed=seed,
                                       max_train_images=max_train_images)
    result = train(data, chosen, progress=progress)
    return register_trained(result, data, activate=activate, user=user, command=command)


def load_dataset(dataset: str, data_path: Path | None = None) -> Dataset:
    """``CDSS_DATA_DIR/imaging/<dataset>.npz`` (or ``data_path``)."""
    from django.conf import settings as django_settings

    from .data import dataset_spec

    spec = dataset_spec(dataset)
    path = data_path or Path(django_settings.CDSS_DATA_DIR) / "imaging" / f"{spec.name}.npz"
    return load_npz(path, spec.name)


def register_trained(result: TrainResult, data: Dataset, *, activate: bool = True, user: Any = None,
                     command: str = "") -> ModelVersion:
    """Saves ``result`` under CDSS_MODEL_DIR and registers it; the file is removed again if the
    registration fails, so nothing unregistered is left behind."""
    from django.conf import settings as django_settings
    from django.utils import timezone

    from cdss.model_registry import model_dir, model_version_register

    spec, chosen = data.spec, result.settings
    trained_at = timezone.now()
    relative = Path(spec.registry_name) / f"{trained_at:%Y%m%dT%H%M%S}-{chosen.arch}-{uuid.uuid4().hex[:8]}.pt"
    sha = save_model_file(model_dir() / relative, result.config, result.state_dicts)
    try:
        shown = str(data.path.relative_to(Path(django_settings.CDSS_DATA_DIR)))
    except ValueError:
        shown = str(data.path)
    features = [{"label": label, "threshold": result.config["thresholds"][label],
                 "file_label_value": result.config["file_label_values"][label]} for label in result.config["labels"]]
    try:
        return model_version_register(
            name=spec.registry_name, kind="imaging", architecture=chosen.arch, dataset=data.describe(shown),
            split=split_text(result), features=features, metrics=result.metrics, file_path=relative.as_posix(),
            file_sha256=sha, trained_at=trained_at, training_seconds=round(result.seconds, 2),
            notes=(command or f"train_and_register({spec.name!r}, arch={chosen.arch!r}, epochs={chosen.epochs})")
            + f". Finding: {spec.label} (file label {spec.positive_value}). Input {result.config['input_size']}px, "
            f"{result.config['stem']} stem, "
            f"{chosen.members} member(s).",
            activate=activate, user=user,
        )
    except Exception:
        (model_dir() / relative).unlink(missing_ok=True)
        raise
