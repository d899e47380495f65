"""python manage.py evaluate_rules --patients all|MRN... [--json] [--dry-run] [--no-progress]"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from decision.load import fact_plan
from decision.services import active_rules, evaluate_batch, plan_for_rules, recommendations_apply
from patients.models import Patient


class Command(BaseCommand):
    help = ("Bring risk scores and note findings up to date, evaluate the active rules now (in-process) and "
            "print one line per fired rule; recommendations are written unless --dry-run.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patients", nargs="+", required=True, help="'all' or one or more MRNs")
        parser.add_argument("--json", action="store_true", help="One JSON object per fired rule")
        parser.add_argument("--dry-run", action="store_true", help="Evaluate without writing recommendations")
        parser.add_argument("--no-nlp", action="store_true", help="Do not read notes not yet extracted")
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (on stderr)")

    def handle(self, *args: Any, **options: Any) -> None:
        wanted: list[str] = options["patients"]
        patients = Patient.objects.all() if wanted == ["all"] else Patient.objects.filter(mrn__in=wanted)
        rows = list(patients.order_by("pk").values_list("pk", "mrn"))
        if wanted != ["all"]:
            unknown = sorted(set(wanted) - {mrn for _, mrn in rows})
            if unknown:
                raise CommandError(f"no patient with MRN {', '.join(unknown)}")
        mrn_of = dict(rows)
        plan = fact_plan()
        rules = active_rules(value_sets=plan.value_sets)
        if not rules[0]:
            raise CommandError("no active rules (run load_starter_rules)")
        plan = plan_for_rules(plan, rules[0])
        ids = list(mrn_of)
        # on stderr: the fired rules on stdout stay one per line
        bar = tqdm(total=len(ids), unit="patients", disable=options["verbosity"] == 0 or options["no_progress"])
        for i in range(0, len(ids), options["batch_size"]):
            batch = ids[i:i + options["batch_size"]]
            self._compute_inputs(batch, nlp=not options["no_nlp"])
            results = evaluate_batch(batch, rules[0], rules[1], plan=plan)
            if not options["dry_run"]:
                recommendations_apply(results)
            for pk in batch:
                for result in results.get(pk, []):
                    if not result.fired:
                        continue
                    if options["json"]:
                        self.stdout.write(json.dumps(
                            {"patient": mrn_of[pk], "rule": result.rule, "version": result.version,
                             "severity": result.severity, "summary": result.summary, "trace": result.trace,
                             **({"shadow": True} if result.shadow else {})}, default=str))
                    else:
                        self.stdout.write(f"{mrn_of[pk]}\t{result.rule} v{result.version}\t{result.severity}\t"
                                          f"{result.summary}")
            bar.update(len(batch))
        bar.close()

    def _compute_inputs(self, patient_ids: list[int], *, nlp: bool) -> None:
        """Risk assessments and note extractions are append-only: computing them again writes only
        what is new."""
        from risk.services import risk_compute_for_patients

        risk_compute_for_patients(patient_ids)
        if nlp:
            from nlp.extract import PIPELINE_VERSION
            from nlp.services import extractions_write, notes_extract, notes_to_extract

            notes = notes_to_extract(patient_ids, version=PIPELINE_VERSION)
            for i in range(0, len(notes), 50):
                extractions_write(notes_extract(notes[i:i + 50]))
