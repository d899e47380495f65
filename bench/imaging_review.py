#!/usr/bin/env python
"""Benchmark: the imaging review list and the models-in-use statistics at a hospital's scale, on
PostgreSQL, one process, through Django's test client (the full middleware stack).

    .venv/bin/python bench/imaging_review.py [--patients 20000] [--images 5] [--flagged 0.3]
        [--verdicts 0.2] [--repeats 7] [--database-url postgres://.../cdss_bench_imaging_review]

Recreates the scratch database and stores, in bulk, one site with ``--patients`` patients, each
with ``--images`` images (a study, a series and an instance each) analysed by two versions of a
pneumonia model (the newer one on half of the images), ``--flagged`` of the findings flagged, and
verdicts from the clinician on ``--verdicts`` of the flagged ones. Then times, as the clinician,
the review list's first and a middle page (awaiting the clinician's verdict, and all flagged),
and, as staff, the models-in-use page for all time and the last 30 days. Prints the median and
the slowest of ``--repeats`` requests and the SQL queries of each. Asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import production_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=20000)
    parser.add_argument("--images", type=int, default=5, help="images per patient")
    parser.add_argument("--flagged", type=float, default=0.3, help="share of findings flagged")
    parser.add_argument("--verdicts", type=float, default=0.2, help="share of flagged findings with a verdict")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/cdss_bench_imaging_review")
    args = parser.parse_args()

    production_django(args.database_url)
    from django.conf import settings

    # the pages' static addresses without collectstatic's manifest (nothing is served here)
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    from django.contrib.auth.models import Group, Permission, User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from cdss.models import ModelVersion
    from imaging.models import FindingFeedback, ImagingFinding, ImagingInstance, ImagingSeries, ImagingStudy
    from patients.models import Patient, Site, SiteMembership

    call_command("migrate", verbosity=0)
    rng = random.Random(0)
    now = timezone.now()
    started = time.perf_counter()
    site = Site.objects.create(code="bench", name="Bench Hospital")
    clinician = User.objects.create_user("bench-clinician", password="x")
    clinician.groups.add(Group.objects.get(name="clinician"))
    SiteMembership.objects.create(user=clinician, site=site)
    staff = User.objects.create_user("bench-staff", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_imagingfinding"))
    old, new = (ModelVersion.objects.create(
        name="pneumonia", version=v, kind=ModelVersion.Kind.IMAGING, architecture="resnet18", dataset="bench",
        split="bench", metrics={"test_auc": 0.95}, file_path=f"{v}.pt", file_sha256="0" * 64,
        trained_at=now - dt.timedelta(days=days), active=v == "2") for v, days in (("1", 90), ("2", 10)))
    patients = Patient.objects.bulk_create(
        [Patient(site=site, fhir_id=f"p{i}", mrn=f"B{i:07d}", family_name=f"Name{i}", given_names="Bench")
         for i in range(args.patients)], batch_size=5000)
    n = args.patients * args.images
    studies = ImagingStudy.objects.bulk_create(
        [ImagingStudy(patient=patients[i // args.images], study_instance_uid=f"2.25.1{i}",
                      study_date=(now - dt.timedelta(days=rng.randrange(1, 1500))).date()) for i in range(n)],
        batch_size=5000)
    series = ImagingSeries.objects.bulk_create(
        [ImagingSeries(study=s, patient_id=s.patient_id, series_instance_uid=f"2.25.2{i}", modality="CR",
                       body_part="CHEST") for i, s in enumerate(studies)], batch_size=5000)
    instances = ImagingInstance.objects.bulk_create(
        [ImagingInstance(series=s, patient_id=s.patient_id, sop_instance_uid=f"2.25.3{i}", format="dicom",
                         modality="CR", body_part="CHEST", photometric="MONOCHROME2", rows=2048, columns=2048,
                         file=f"imaging/b/{i}.dcm", preview=f"imaging/b/{i}.png", thumbnail=f"imaging/b/{i}t.png",
                         preview_width=1024, preview_height=1024, sha256="0" * 64, size_bytes=1)
         for i, s in enumerate(series)], batch_size=5000)
    findings = []
    for i, instance in enumerate(instances):
        for mv in (old, new) if i % 2 else (old,):
            p = rng.random()
            findings.append(ImagingFinding(instance=instance, patient_id=instance.patient_id, model_version=mv,
                                           label="pneumonia", probability=p, threshold=1 - args.flagged,
                                           positive=p >= 1 - args.flagged))
    findings = ImagingFinding.objects.bulk_create(findings, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE imaging_imagingfinding SET created_at = %s - (id %% 365) * interval '1 day'", [now])
    flagged = [f for f in findings if f.positive]
    FindingFeedback.objects.bulk_create(
        [FindingFeedback(finding=f, user=clinician, verdict=rng.choice(["agree", "disagree"]))
         for f in flagged if rng.random() < args.verdicts], batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"stored {args.patients} patients, {n} images, {len(findings)} findings ({len(flagged)} flagged), "
          f"{FindingFeedback.objects.count()} verdicts in {time.perf_counter() - started:.0f} s")

    def timed(client: Client, url: str) -> None:
        times = []
        queries = 0
        for _ in range(args.repeats):
            with CaptureQueriesContext(connection) as captured:
                t0 = time.perf_counter()
                response = client.get(url, secure=True)
                times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, (url, response.status_code)
            queries = len(captured)
        print(f"  {url:<40} median {statistics.median(times):7.1f} ms   slowest {max(times):7.1f} ms   "
              f"{queries} queries")

    reader = Client()
    reader.force_login(clinician)
    pages = max(1, len(flagged) // 25)
    print("the review list (clinician):")
    for url in ("/imaging/review/", f"/imaging/review/?page={pages // 2}", "/imaging/review/?show=all",
                f"/imaging/review/?show=all&page={pages // 2}"):
        timed(reader, url)
    admin = Client()
    admin.force_login(staff)
    print("models in use (staff):")
    for url in ("/imaging/statistics/", "/imaging/statistics/?days=30"):
        timed(admin, url)


if __name__ == "__main__":
    main()
