"""python manage.py train_imaging_model --dataset pneumoniamnist|breastmnist [--arch ...] [--epochs N] [--seed N]

Trains on CDSS_DATA_DIR/imaging/<dataset>.npz (MedMNIST v2): the official train split for
learning (a part of it held out for early stopping and the threshold), the official val split
reported, the official test split (where the file has one) measured once at the end. Saves the
model under CDSS_MODEL_DIR, registers it and makes it the active version. With no option but the
data set it trains the recommended default (``imaging.ml.train.DEFAULTS``), on a CPU in minutes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging.ml.architectures import ARCHITECTURES, STANDARD_STEM_FROM, STEMS, architecture
from imaging.ml.data import DATASETS

# MedMNIST v2 (Yang et al., Sci Data 2023, Table 3): ResNet-18 at 28x28 on the official test split.
PAPER_BASELINE = {"pneumoniamnist": {"auc": 0.944, "accuracy": 0.854},
                  "breastmnist": {"auc": 0.901, "accuracy": 0.863}}


class Command(BaseCommand):
    help = "Train an imaging CNN on a MedMNIST file from CDSS_DATA_DIR, register it and make it active."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="The MedMNIST data set")
        parser.add_argument("--arch", choices=sorted(ARCHITECTURES), help="Architecture (default: the data set's)")
        parser.add_argument("--epochs", type=int, help="Epochs per member (default: the data set's)")
        parser.add_argument("--members", type=int, help="Networks averaged in the ensemble (default: the data set's)")
        parser.add_argument("--input-size", type=int, help="Input pixels per side (default: the architecture's)")
        parser.add_argument("--stem", choices=STEMS,
                            help="ResNet-18 / DenseNet-121 first layers: small (3x3/1, for MedMNIST's 28 px) or "
                                 f"standard (7x7/2 and a pool) (default: standard from {STANDARD_STEM_FROM} px up)")
        parser.add_argument("--max-train-images", type=int, help="Train on a stratified subset of this size")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the held-out part, the order and the weights (0)")
        parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                            help="Where to train (default auto: on a CUDA GPU when there is one and the input is "
                                 "larger than 28 px, else on the CPU)")
        parser.add_argument("--no-activate", action="store_true", help="Register without making it the active version")

    def handle(self, *args: Any, **options: Any) -> None:
        # torch is imported here, not at module level: `manage.py help` should not pay for it.
        import torch

        from imaging.ml.data import DataError
        from imaging.ml.train import DEFAULTS, load_dataset, register_trained, train, training_device

        name = options["dataset"]
        chosen = DEFAULTS[name]
        changes = {key: options[opt] for key, opt in (("arch", "arch"), ("epochs", "epochs"), ("members", "members"),
                                                      ("input_size", "input_size"), ("stem", "stem"),
                                                      ("max_train_images", "max_train_images"))
                   if options[opt] is not None}
        if options["arch"] and options["epochs"] is None and options["arch"] != chosen.arch:
            changes.setdefault("epochs", chosen.epochs)
        chosen = dataclasses.replace(chosen, seed=options["seed"], **changes)
        for key in ("epochs", "members"):
            if getattr(chosen, key) < 1:
                raise CommandError(f"--{key} must be at least 1")
        try:
            data = load_dataset(name)
        except DataError as exc:
            raise CommandError(f"{exc}. Set CDSS_DATA_DIR to the folder that holds imaging/{name}.npz.") from None
        progress = options["verbosity"] > 0 and sys.stderr.isatty()
        n_train = len(data.splits["train"].targets)
        size = chosen.input_size or architecture(chosen.arch).default_input_size
        try:
            device = training_device(options["device"], size, torch.cuda.is_available())
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        where = (f"on {torch.cuda.get_device_name()}" if device == "cuda"
                 else f"on the CPU, {torch.get_num_threads()} threads"
                 f"{' (a GPU is there: --device cuda to use it)' if torch.cuda.is_available() else ''}")
        self.stdout.write(f"Training {name}: {chosen.arch} at {size} px, {chosen.members} member(s) x {chosen.epochs} "
                          f"epochs, {n_train} training images, seed {chosen.seed}, {where} ...")
        try:
            result = train(data, chosen, progress=progress, device=device)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        m = result.metrics
        rows = [("split", "n", "AUC", "accuracy", "sensitivity", "specificity", "accuracy@0.5")]
        for key, label in (("holdout", "held-out train"), ("validation", "val (official)"), ("test", "test (official)")):
            if key in m:
                s = m[key]
                rows.append((label, str(s["n"]), f"{s['auc']:.4f}", f"{s['accuracy']:.4f}", f"{s['sensitivity']:.3f}",
                             f"{s['specificity']:.3f}", f"{s['accuracy_at_0_5']:.4f}"))
        self.stdout.write(_table(rows))
        base = PAPER_BASELINE[name]
        self.stdout.write(f"Threshold (Youden on held-out train): {result.config['thresholds']}. "
                          f"MedMNIST v2 ResNet-18 (28) test baseline: AUC {base['auc']}, accuracy {base['accuracy']}.")
        if "test" not in m:
            self.stdout.write("The file holds no test split: test AUC not measured (evaluate with imaging_predict).")
        self.stdout.write(f"Trained in {result.seconds:.1f} s.")
        command = f"train_imaging_model --dataset {name} --arch {chosen.arch} --epochs {chosen.epochs} " \
                  f"--members {chosen.members} --seed {chosen.seed} --input-size {result.config['input_size']} " \
                  f"--stem {result.config['stem']}"
        mv = register_trained(result, data, activate=not options["no_activate"], command=command)
        state = "active" if mv.active else "not active (--no-activate)"
        self.stdout.write(self.style.SUCCESS(f"Registered {mv.name} {mv.version} ({mv.architecture}, {state})."))


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
