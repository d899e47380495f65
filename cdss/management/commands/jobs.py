"""python manage.py jobs status [--json] | jobs enqueue KIND [--patients all|ID...] | jobs kinds
| jobs maintain (reap expired leases and publish pending jobs once)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from cdss.jobs import runner
from cdss.jobs.registry import UnknownJobKind, all_kinds, get_kind
from cdss.models import Job


class Command(BaseCommand):
    help = "Inspect and enqueue analysis jobs."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        status = sub.add_parser("status", help="Counts by kind and status")
        status.add_argument("--json", action="store_true")
        enqueue = sub.add_parser("enqueue", help="Create jobs of one kind")
        enqueue.add_argument("kind")
        enqueue.add_argument("--patients", nargs="+", metavar="all|ID",
                             help="'all', or patient external ids (one job per patient)")
        enqueue.add_argument("--params", default="{}", help="JSON parameters of the job (no patient data)")
        enqueue.add_argument("--no-progress", action="store_true")
        sub.add_parser("kinds", help="List the registered job kinds")
        sub.add_parser("maintain", help="Re-queue expired leases and publish pending jobs, once")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"do_{options['action']}")(options)

    def do_status(self, options: dict[str, Any]) -> None:
        counts = runner.jobs_counts()
        if options["json"]:
            self.stdout.write(json.dumps(counts, indent=2, sort_keys=True))
            return
        statuses = [s.value for s in Job.Status]
        self.stdout.write(f"{'kind':<32}" + "".join(f"{s:>11}" for s in statuses))
        for kind, by_status in counts.items():
            self.stdout.write(f"{kind:<32}" + "".join(f"{by_status.get(s, 0):>11}" for s in statuses))
        if not counts:
            self.stdout.write("(no jobs)")

    def do_kinds(self, options: dict[str, Any]) -> None:
        for kind in all_kinds():
            self.stdout.write(f"{kind.name:<32}{kind.queue:<10}v{kind.version:<6}{kind.description}")

    def do_maintain(self, options: dict[str, Any]) -> None:
        reaped = runner.jobs_reap_expired()
        published = runner.jobs_publish_pending()
        self.stdout.write(f"re-queued {reaped} expired job(s), published {published} pending job(s)")

    def do_enqueue(self, options: dict[str, Any]) -> None:
        from patients.models import Patient

        try:
            spec = get_kind(options["kind"])
        except UnknownJobKind as exc:
            known = ", ".join(k.name for k in all_kinds())
            raise CommandError(f"{exc}. Known kinds: {known}") from None
        try:
            params = json.loads(options["params"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON ({exc})") from None
        if not isinstance(params, dict):
            raise CommandError("--params must be a JSON object")
        selection = options["patients"]
        if not selection:
            if spec.per_patient:
                raise CommandError(f"{spec.name} runs per patient: give --patients all or patient ids")
            with transaction.atomic():
                job = runner.job_enqueue(kind=spec.name, params=params)
            self.stdout.write(f"job {job.external_id} {job.status}")
            return
        if selection == ["all"]:
            patients = Patient.objects.order_by("pk").only("pk")
        else:
            try:
                keys = [uuid.UUID(value) for value in selection]
            except ValueError:
                raise CommandError("--patients takes 'all' or patient external ids (UUIDs)") from None
            patients = Patient.objects.filter(external_id__in=keys).order_by("pk").only("pk")
            found = patients.count()
            if found != len(set(keys)):
                raise CommandError(f"{len(set(keys)) - found} of the patient ids are unknown")
        total = patients.count()
        created = 0
        requested_at = timezone.now().isoformat()  # a new request: not the same work as an earlier run
        bar = tqdm(total=total, unit="patient", disable=options["no_progress"], file=self.stderr._out)
        batch: list[Patient] = []
        chunk = max(spec.batch_size, 1)
        per_transaction = chunk if chunk > 1 else 500  # patients per job, or jobs per transaction

        def flush() -> None:
            nonlocal created
            with transaction.atomic():
                if chunk > 1:  # one job per batch of patients (ids only)
                    job = runner.job_enqueue(kind=spec.name, params={**params, "patient_ids": [p.pk for p in batch]},
                                             inputs={"requested_at": requested_at})
                    created += int(job.status == Job.Status.QUEUED and job.attempts == 0)
                else:
                    for patient in batch:
                        job = runner.job_enqueue(kind=spec.name, patient=patient, params=params,
                                                 inputs={"requested_at": requested_at})
                        created += int(job.attempts == 0 and job.status == Job.Status.QUEUED)
            bar.update(len(batch))
            batch.clear()

        for patient in patients.iterator(chunk_size=500):
            batch.append(patient)
            if len(batch) >= per_transaction:
                flush()
        if batch:
            flush()
        bar.close()
        self.stdout.write(f"{total} patient(s): {created} job(s) queued")
