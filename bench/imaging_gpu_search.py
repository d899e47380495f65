#!/usr/bin/env python
"""Recipe search for an imaging default (BreastMNIST by default), on a GPU or a CPU, without Django.

    python bench/imaging_gpu_search.py --device cuda --data-dir DIR [--dataset breastmnist] [--seeds 0,1,2] \\
        --recipe arch=resnet18,epochs=40,members=1,lr=2e-3,batch_size=64,augment=1.0 \\
        --recipe arch=resnet18_full,epochs=60,lr=1e-3,input_size=28,weight_decay=1e-3 ...

Needs only torch, torchvision, numpy and Pillow (imaging.ml.train, imaging.ml.data and their
imports use no Django, pydicom or tqdm). Each recipe is the keyword arguments of
``imaging.ml.train.TrainSettings`` (arch, epochs, members, batch_size, lr, weight_decay,
holdout_fraction, patience, input_size, max_train_images, augment, ema, select, mixup), given as
``key=value`` pairs; the rest keep their defaults, and ``--base default`` starts from the data
set's current default (``imaging.ml.train.DEFAULTS``) instead. Every recipe is trained by
``imaging.ml.train.train``, the code ``train_imaging_model`` runs, once per seed:
- it learns from the official ``train`` split only; a stratified part of it (``holdout_fraction``,
  10%) is held out per member for early stopping and the threshold. Choose recipes by that
  held-out AUC (``holdout``);
- the official ``val`` split is only reported (``val``); a test split is never read.
- ``--cv K``: K-fold cross-validation on the official ``train`` split instead (stratified folds,
  seeded by the run's seed; each fold's network keeps its own held-out part for early stopping):
  the AUC of each fold's images from the networks that did not learn from them, averaged over the
  folds (``cv``), and, from the same networks, the AUC of the first 1, 2, ... members' mean and
  of each member's mean over the image and its mirror image (data sets where flips are sane). A
  fold holds about 110 BreastMNIST images against the 78 of ``val``; the ``val`` split is not read.
  ``--cv 5 --recipe members=1 --seeds 0,1`` on BreastMNIST (CPU, 2 threads, 2026-11-26, about 7
  minutes a seed): CV AUC 0.820 (folds 0.777 0.859 0.766 0.821 0.876) and
  0.829 (0.808 0.815 0.819 0.878 0.827), below the same recipe's figures on its held-out tenth
  (0.86-0.89) and on val (0.86-0.91): one network's figure moves a lot with the images it learns
  from and is judged on, and ranks recipes only with several folds. The default itself (three
  members), ``--cv 5 --seeds 0``: 0.838 (folds 0.859 0.838 0.783 0.829 0.879; 17 minutes). The
  recipes compared this way, and the default they led to, are in imaging/README.md.
Prints one line per run and a summary per recipe (mean and spread over the seeds), and with
``--json FILE`` writes every run's figures. Training on CUDA is float32 (TF32 matmuls allowed);
``train_imaging_model`` trains on the CPU, so time a chosen recipe there before making it a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_recipe(text: str, base: Any) -> Any:
    """``key=value,key=value`` -> a TrainSettings based on ``base``; a clear error for a bad key."""
    fields = {f.name: f for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key == "seed":
            raise ValueError(f"recipe {text!r}: {part!r} is not key=value with a key among "
                             f"{', '.join(k for k in fields if k != 'seed')}")
        current = getattr(base, key)
        if isinstance(current, str):
            changes[key] = value.strip()
        elif value.strip().lower() == "none":
            changes[key] = None
        elif isinstance(current, float) or key in ("lr", "weight_decay", "holdout_fraction", "augment"):
            changes[key] = float(value)
        else:
            changes[key] = int(value)
    return dataclasses.replace(base, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="breastmnist", choices=["breastmnist", "pneumoniamnist"])
    parser.add_argument("--data-dir", type=Path, help="Folder holding imaging/<dataset>.npz "
                                                      "(default: CDSS_DATA_DIR, else ../shared/data)")
    parser.add_argument("--recipe", action="append", default=[], help="key=value,... (repeatable; "
                                                                      "default: one run of the base)")
    parser.add_argument("--base", choices=["default", "plain"], default="default",
                        help="Start each recipe from the data set's default (default) or from TrainSettings()")
    parser.add_argument("--seeds", default="0", help="Comma-separated seeds; each recipe runs once per seed (0)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--json", type=Path, help="Write every run's figures to this file")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="K-fold cross-validation on the train split instead of one run judged on val (0: off)")
    args = parser.parse_args()

    import torch

    from imaging.ml.data import DataError, Dataset, load_npz
    from imaging.ml.train import DEFAULTS, TrainSettings, train

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    data_dir = args.data_dir or Path(os.environ.get("CDSS_DATA_DIR") or ROOT.parent / "shared" / "data")
    try:
        data = load_npz(data_dir / "imaging" / f"{args.dataset}.npz", args.dataset, splits=("train", "val"))
    except DataError as exc:
        parser.error(f"{exc} (give --data-dir, the folder that holds imaging/{args.dataset}.npz)")
    base = DEFAULTS[args.dataset] if args.base == "default" else TrainSettings()
    try:
        recipes = [parse_recipe(r, base) for r in args.recipe] or [base]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.dataset}: {len(data.splits['train'].targets)} train, {len(data.splits['val'].targets)} val images; "
          f"device {name}; torch {torch.__version__}; {len(recipes)} recipe(s) x {len(seeds)} seed(s)", flush=True)
    runs: list[dict[str, Any]] = []
    for k, recipe in enumerate(recipes):
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            settings = dataclasses.replace(recipe, seed=seed)
            started = time.perf_counter()
            if args.cv:
                train_split = data.splits["train"]
                folds, held, best = [], [], []
                curve: list[dict[str, list[float]]] = []
                for test in stratified_folds(train_split.targets, args.cv, seed):
                    fit = np.setdiff1d(np.arange(len(train_split.targets)), test)
                    parts = {"train": train_split.take(fit), "val": train_split.take(test)}
                    result = train(Dataset(data.spec, data.path, data.sha256, parts), settings, device=device)
                    folds.append(result.metrics["validation"]["auc"])
                    held.append(result.metrics["holdout"]["auc"])
                    best += [h["best_epoch"] for h in result.history if "best_epoch" in h]
                    curve.append(ensemble_curve(result, parts["val"], data.spec.hflip, device))
                row: dict[str, Any] = {"recipe": k, "settings": dataclasses.asdict(settings), "cv_folds": folds,
                       "cv_auc": statistics.fmean(folds), "holdout_auc": statistics.fmean(held),
                       "seconds": round(time.perf_counter() - started, 1), "best_epochs": best}
                for variant in curve[0]:
                    row[f"cv_auc_{variant}"] = [round(statistics.fmean(c[variant][n] for c in curve), 4)
                                                for n in range(settings.members)]
                print(f"  recipe {k} seed {seed}: {args.cv}-fold CV AUC {row['cv_auc']:.4f} (folds "
                      + " ".join(f"{f:.3f}" for f in folds) + f")  ({row['seconds']:.1f} s, best epochs {best})",
                      flush=True)
                for variant in curve[0]:
                    print(f"    first 1..{settings.members} members{'' if variant == 'plain' else ', ' + variant}: "
                          + " ".join(f"{a:.4f}" for a in row[f"cv_auc_{variant}"]), flush=True)
            else:
                result = train(data, settings, device=device)
                m = result.metrics
                row = {"recipe": k, "settings": dataclasses.asdict(settings),
                       "seconds": round(time.perf_counter() - started, 1),
                       "holdout_auc": m["holdout"]["auc"], "val_auc": m["validation"]["auc"],
                       "val_accuracy": m["validation"]["accuracy"],
                       "val_accuracy_at_0_5": m["validation"]["accuracy_at_0_5"],
                       "best_epochs": [h["best_epoch"] for h in result.history if "best_epoch" in h]}
                print(f"  recipe {k} seed {seed}: holdout AUC {row['holdout_auc']:.4f}  val AUC {row['val_auc']:.4f}  "
                      f"val acc {row['val_accuracy']:.4f}  ({row['seconds']:.1f} s, best epochs {row['best_epochs']})",
                      flush=True)
            rows.append(row)
            runs.append(row)
        changed = {f: getattr(recipe, f) for f in dataclasses.asdict(recipe) if getattr(recipe, f) != getattr(base, f)}
        figures = (f"{args.cv}-fold CV AUC {_spread([r['cv_auc'] for r in rows])}" if args.cv else
                   f"holdout AUC {_spread([r['holdout_auc'] for r in rows])}, val AUC {_spread([r['val_auc'] for r in rows])}, "
                   f"val acc {_spread([r['val_accuracy'] for r in rows])}")
        print(f"recipe {k} {changed or '(base)'}: {figures}, {statistics.fmean(r['seconds'] for r in rows):.1f} s per run",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"dataset": args.dataset, "device": name, "runs": runs}, indent=1))


def ensemble_curve(result: Any, split: Any, hflip: bool, device: str) -> dict[str, list[float]]:
    """AUC on ``split`` of the mean of the first 1, 2, ... members of ``result`` (``plain``) and,
    where left-right flips are sane, of each member's mean over the image and its mirror image
    (``flip_mean``): what more members or test-time flipping would give, from the same networks."""
    from imaging.ml.metrics import auc
    from imaging.ml.modelfile import build_members, normalise
    from imaging.ml.train import _probabilities, _to_input

    x = normalise(_to_input(split.images, result.config["input_size"]), result.config).to(device)
    per_member: dict[str, list[np.ndarray]] = {"plain": [], "flip_mean": []}
    for net in build_members(result.config, result.state_dicts):
        net.to(device)
        plain = _probabilities([net], x)[:, 0]
        per_member["plain"].append(plain)
        if hflip:
            per_member["flip_mean"].append((plain + _probabilities([net], x.flip(-1))[:, 0]) / 2.0)
    return {variant: [auc(split.targets, np.mean(probs[:n + 1], axis=0)) for n in range(len(probs))]
            for variant, probs in per_member.items() if probs}


def stratified_folds(targets: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint index arrays covering ``targets``, each with about the same share of each class."""
    rng = np.random.default_rng(seed)
    # Each class shuffled, the classes one after the other, dealt to the folds in turn.
    order = np.concatenate([rng.permutation(np.flatnonzero(targets == value)) for value in np.unique(targets)])
    return [np.sort(order[n::k]) for n in range(k)]


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} (sd {statistics.stdev(values):.4f}, min {min(values):.4f})"


if __name__ == "__main__":
    main()
