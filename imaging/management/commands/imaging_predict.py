"""python manage.py imaging_predict --npz FILE --split test --dataset NAME --out preds.csv

Scores one split of a MedMNIST file with the active model of that data set and writes
``index,label,probability``: one row per image of the split, in the file's order; ``label`` is
the file's own label and ``probability`` the model's probability of file label 1 (for
BreastMNIST, whose finding "malignant" is file label 0, that is 1 - P(malignant)).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging.ml.data import DATASETS, SPLITS

CHUNK = 512


class Command(BaseCommand):
    help = "Score a MedMNIST split with the active imaging model and write index,label,probability as CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--npz", type=Path, required=True, help="MedMNIST .npz file")
        parser.add_argument("--split", default="test", choices=SPLITS, help="Split of the file (test)")
        parser.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="Which data set's model")
        parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
        parser.add_argument("--batch-size", type=int, default=256, help="Images per forward pass (256)")

    def handle(self, *args: Any, **options: Any) -> None:
        import numpy as np
        from tqdm import tqdm

        from imaging.ml.data import DataError, load_npz
        from imaging.ml.inference import NoActiveModel, require_loaded_model
        from imaging.ml.metrics import auc

        spec = DATASETS[options["dataset"]]
        split_name = options["split"]
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            data = load_npz(options["npz"], spec.name, splits=(split_name,), required=(split_name,))
        except DataError as exc:
            raise CommandError(str(exc)) from None
        try:
            model = require_loaded_model(spec.registry_name)
        except NoActiveModel as exc:
            raise CommandError(str(exc)) from None
        split = data.splits[split_name]
        images = [img.astype(np.float32) / 255.0 for img in split.images]
        finding: list[float] = []
        bar = tqdm(total=len(images), desc=f"{spec.name} {split_name}", unit="image",
                   disable=not (options["verbosity"] > 0 and sys.stderr.isatty()))
        for start in range(0, len(images), CHUNK):
            preds = model.predict(images[start:start + CHUNK], cam=False, batch_size=options["batch_size"])
            finding.extend(p.probabilities[spec.label] for p in preds)
            bar.update(len(preds))
        bar.close()
        p_finding = np.asarray(finding, dtype=np.float64)
        p_label1 = p_finding if spec.positive_value == 1 else 1.0 - p_finding
        out: Path = options["out"]
        tmp = out.with_name(out.name + ".part")
        try:
            with tmp.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["index", "label", "probability"])
                for i, (label, prob) in enumerate(zip(split.file_labels, p_label1, strict=True)):
                    writer.writerow([i, int(label), f"{prob:.6f}"])
            tmp.replace(out)  # never a half-written CSV under the requested name
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CommandError(f"cannot write {out}: {exc}") from None
        threshold = model.thresholds[spec.label]
        accuracy = float(((p_finding >= threshold) == (split.targets == 1)).mean())
        self.stdout.write(
            f"{len(p_label1)} rows -> {out} ({model.name} {model.version}, {model.architecture}). "
            f"{split_name}: AUC {auc(split.file_labels, p_label1):.4f}, accuracy {accuracy:.4f} at the model's "
            f"threshold {threshold:.3f} for {spec.label!r}.")
