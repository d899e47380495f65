"""python manage.py train_risk_model heart_disease [--seed N] [--no-activate]

Trains from the local data under CDSS_DATA_DIR, prints validation and test figures of every
architecture tried, saves the chosen model under CDSS_MODEL_DIR and registers it.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from cdss.model_registry import model_dir, model_version_register

MODELS = ("heart_disease",)


class Command(BaseCommand):
    help = "Train a risk model from CDSS_DATA_DIR, save it under CDSS_MODEL_DIR and register it in the model registry."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=MODELS, help="The model to train")
        parser.add_argument("--seed", type=int, default=42, help="Seed of the split, the folds and the MLP (42)")
        parser.add_argument("--no-activate", action="store_true", help="Register without making it the active version")
        parser.add_argument("--cv-repeats", type=int, default=10,
                            help="Repeats of the 10-fold cross-validation of the logistic model (10)")

    def handle(self, *args: Any, **options: Any) -> None:
        # torch is imported here, not at module level: `manage.py help` should not pay for it.
        from risk.models_ml import heart_disease as hd

        data_dir = Path(settings.CDSS_DATA_DIR) / "risk" / "cleveland"
        try:
            dataset = hd.load_cleveland(hd.find_data(data_dir))
        except hd.DataError as exc:
            raise CommandError(f"{exc}. Set CDSS_DATA_DIR to the folder that holds risk/cleveland/ "
                               "(the UCI Heart Disease Cleveland file).") from None
        if options["cv_repeats"] < 1:
            raise CommandError("--cv-repeats must be at least 1")
        progress = options["verbosity"] > 0 and sys.stderr.isatty()
        seed = options["seed"]
        self.stdout.write(f"Training {options['name']} on {dataset.n} rows ({dataset.path}), seed {seed} ...")
        result = hd.train(dataset, seed=seed, cv_repeats=options["cv_repeats"], progress=progress)

        self.stdout.write(_table(hd.metrics_table(result)))
        cv = result.cv
        self.stdout.write(f"Logistic regression, {cv['repeats']}x{cv['folds']}-fold CV AUC: "
                          f"{cv['auc_mean']:.3f} (SD {cv['auc_sd']:.3f}); published figure about 0.91.")
        low, high = result.candidates["mlp"].training["validation_brier_difference_vs_logistic_95ci"]
        self.stdout.write(f"Chosen: {result.chosen} (validation Brier MLP - logistic, paired bootstrap 95% CI "
                          f"{low:+.3f} to {high:+.3f}; the MLP only if the whole interval is below 0). "
                          f"Trained in {result.seconds:.1f} s.")

        trained_at = timezone.now()
        relative = Path(options["name"]) / f"{trained_at:%Y%m%dT%H%M%S}-{result.chosen}-{uuid.uuid4().hex[:8]}.pt"
        saved = hd.save_model(result.model, model_dir() / relative, dataset_sha256=dataset.sha256)
        try:
            shown_path = str(dataset.path.relative_to(Path(settings.CDSS_DATA_DIR)))
        except ValueError:
            shown_path = str(dataset.path)
        try:
            mv = model_version_register(
                name=hd.NAME,
                kind="risk",
                architecture=result.chosen,
                dataset=dataset.describe(shown_path),
                split=result.split_text(),
                features=result.features_json(),
                metrics=result.metrics_json(),
                calibration=result.calibration_json(),
                file_path=relative.as_posix(),
                file_sha256=saved.sha256,
                trained_at=trained_at,
                training_seconds=round(result.seconds, 2),
                notes=(f"train_risk_model {options['name']} --seed {seed}. Label: {hd.LABEL}. Referral population "
                       f"(prevalence {dataset.y.mean():.0%}): the probabilities do not transfer to screening. "
                       f"Sidecar with the preprocessing: {hd.sidecar_path(relative).as_posix()}."),
                activate=not options["no_activate"],
            )
        except Exception:
            saved.weights.unlink(missing_ok=True)  # nothing unregistered is left behind
            saved.sidecar.unlink(missing_ok=True)
            raise
        state = "active" if mv.active else "not active (--no-activate)"
        self.stdout.write(self.style.SUCCESS(
            f"Registered {mv.name} {mv.version} ({mv.architecture}, {state}): {model_dir() / mv.file_path}"))


def _table(rows: list[Any]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
