"""python manage.py imaging_predict --npz FILE --split test --dataset NAME --out preds.csv
python manage.py imaging_predict FILE.dcm [FILE ...] [--overlay-dir DIR]

The first form scores one split of a MedMNIST file with the active model of that data set and writes
``index,label,probability``: one row per image of the split, in the file's order; ``label`` is
the file's own label and ``probability`` the model's probability of file label 1 (for
BreastMNIST, whose finding "malignant" is file label 0, that is 1 - P(malignant)).

The second form reads DICOM (or PNG/JPEG) files through the ingest pixel pipeline
(``imaging.pixels.load_image``), runs every active model that applies to the image's modality and
body part, and prints the findings as JSON (no patient identifiers); ``--overlay-dir`` also writes
each heat map overlay as a PNG.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging.ml.data import DATASETS, SPLITS

CHUNK = 512


class Command(BaseCommand):
    help = "Score a MedMNIST split with the active imaging model and write index,label,probability as CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="*", type=Path, help="DICOM (or PNG/JPEG) files: print findings as JSON")
        parser.add_argument("--npz", type=Path, help="MedMNIST .npz file")
        parser.add_argument("--split", default="test", choices=SPLITS, help="Split of the file (test)")
        parser.add_argument("--dataset", choices=sorted(DATASETS), help="Which data set's model (with --npz)")
        parser.add_argument("--out", type=Path, help="CSV file to write (with --npz)")
        parser.add_argument("--overlay-dir", type=Path, help="With files: write the heat map overlays here")
        parser.add_argument("--batch-size", type=int, default=256, help="Images per forward pass (256)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["files"]:
            if options["npz"]:
                raise CommandError("give either DICOM files or --npz, not both")
            self._files(options["files"], options["overlay_dir"], options["batch_size"])
            return
        missing = [f"--{k}" for k in ("npz", "dataset", "out") if not options[k]]
        if missing:
            raise CommandError(f"{', '.join(missing)} required (or give DICOM files)")
        self._npz(options)

    def _files(self, files: list[Path], overlay_dir: Path | None, batch_size: int) -> None:
        from imaging.dicom import ImageFileError
        from imaging.ml.inference import get_loaded_model, heatmap_overlay_png, model_names_for
        from imaging.pixels import load_image

        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        results: list[dict[str, Any]] = []
        loaded: dict[int, Any] = {}
        by_model: dict[str, list[int]] = {}
        for i, path in enumerate(files):
            entry: dict[str, Any] = {"file": str(path)}
            results.append(entry)
            try:
                image = load_image(path.read_bytes())
            except OSError as exc:
                entry["error"] = f"cannot read: {exc.strerror or exc}"
                continue
            except ImageFileError as exc:
                entry["error"] = f"{exc.code}: {exc.message}"
                continue
            meta = image.meta
            entry.update({"sop_instance_uid": meta.sop_instance_uid, "modality": meta.modality,
                          "body_part": meta.body_part, "rows": image.rendering.height,
                          "columns": image.rendering.width, "findings": []})
            names = model_names_for(meta.modality, meta.body_part)
            if not names:
                entry["note"] = "no model applies to this modality and body part"
            loaded[i] = image
            for name in names:
                by_model.setdefault(name, []).append(i)
        for name, indices in sorted(by_model.items()):
            model = get_loaded_model(name)
            if model is None:
                for i in indices:
                    results[i].setdefault("inactive_models", []).append(name)
                continue
            preds = model.predict([loaded[i].rendering.image for i in indices], cam=True, batch_size=batch_size)
            for i, pred in zip(indices, preds, strict=True):
                for label in model.labels:
                    finding: dict[str, Any] = {
                        "model": model.name, "version": model.version, "architecture": model.architecture,
                        "label": label, "probability": round(pred.probabilities[label], 6),
                        "threshold": round(model.thresholds[label], 6), "positive": pred.positive[label],
                        "test_auc": model.metrics.get("test_auc"),
                    }
                    heat = pred.heatmaps[label]
                    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
                    finding["heatmap_peak"] = {"row": int(peak[0]), "column": int(peak[1])}
                    if overlay_dir is not None:
                        overlay_dir.mkdir(parents=True, exist_ok=True)
                        target = overlay_dir / f"{Path(results[i]['file']).stem}-{i}-{label}.png"
                        target.write_bytes(heatmap_overlay_png(heat, width=heat.shape[1], height=heat.shape[0]))
                        finding["overlay"] = str(target)
                    results[i]["findings"].append(finding)
        self.stdout.write(json.dumps(results, indent=2))

    def _npz(self, options: dict[str, Any]) -> None:
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
