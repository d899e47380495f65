"""Clinicians' verdicts on imaging findings as facts: ``imaging:<label>.reviewed`` and
``.disputed`` (the latest verdict is a disagreement), as of a time; a verdict queues an evaluation
of the patient, and disputing the finding ends the starter library's prompt to read the image."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.utils import timezone
from pydicom.uid import generate_uid

from cdss.models import Job
from decision.engine import RuleDefinitionError
from decision.jobs import DECISION_KIND
from decision.load import load_facts
from decision.models import Recommendation
from decision.services import patients_evaluate
from imaging.models import FindingFeedback
from imaging.services import UploadFile, finding_feedback_record, imaging_upload
from patients import models as m
from tests.factories import clinician_of
from tests.imaging.conftest import dicom_bytes
from tests.imaging.test_pages import finding_for, model_version, upload

pytestmark = pytest.mark.django_db


def flags(patient: m.Patient, as_of: dt.datetime | None = None) -> tuple[bool, bool]:
    [finding] = load_facts(patient, as_of=as_of).imaging
    return finding.reviewed, finding.disputed


def test_the_latest_verdict_as_of_the_evaluation_makes_a_finding_reviewed_and_disputed(
    patient_a: m.Patient, clinician_a, site_a: m.Site
) -> None:
    finding = finding_for(upload(patient_a)[0], model_version(), p=0.91)
    assert flags(patient_a) == (False, False)
    colleague = clinician_of(site_a, username="clin-a2")
    start = timezone.now() - dt.timedelta(hours=3)

    def verdict(user, verdict: str, hours: float) -> None:
        row = FindingFeedback.objects.create(finding=finding, user=user, verdict=verdict)
        FindingFeedback.objects.filter(pk=row.pk).update(created_at=start + dt.timedelta(hours=hours))

    verdict(clinician_a, "agree", 0)
    assert flags(patient_a) == (True, False)
    verdict(colleague, "disagree", 1)
    assert flags(patient_a) == (True, True)
    assert flags(patient_a, as_of=start + dt.timedelta(minutes=30)) == (True, False)  # before the disagreement
    assert flags(patient_a, as_of=start - dt.timedelta(minutes=1)) == (False, False)  # before any verdict
    verdict(clinician_a, "agree", 2)  # a later agreement: no longer disputed
    assert flags(patient_a) == (True, False)


def test_rules_may_read_the_review_flags_and_nothing_else() -> None:
    from tests.decision.test_engine import facts, fires, rule

    seen = {"imaging": [{"label": "pneumonia", "probability": 0.9, "days_ago": 1, "disputed": True}]}
    for flag, value in (("reported", False), ("reviewed", True), ("disputed", True)):
        assert fires({"all": [{"fact": f"imaging:pneumonia.{flag}", "op": "=", "value": value}]}, facts(**seen)), flag
    assert not fires({"all": [{"fact": "imaging:pneumonia.disputed", "op": "=", "value": True}]},
                     facts(imaging=[{"label": "pneumonia", "probability": 0.9, "days_ago": 1, "reviewed": True}]))
    with pytest.raises(RuleDefinitionError) as err:
        rule({"all": [{"fact": "imaging:pneumonia.agreed", "op": "=", "value": True}]})
    assert "no attribute 'agreed' (reported, reviewed, disputed)" in str(err.value)


def test_a_verdict_queues_one_evaluation_of_the_patient(patient_a: m.Patient, clinician_a) -> None:
    finding = finding_for(upload(patient_a)[0], model_version())
    finding_feedback_record(finding=finding, patient=patient_a, user=clinician_a, verdict="disagree")
    [job] = Job.objects.filter(kind=DECISION_KIND, patient=patient_a)
    assert job.status == Job.Status.QUEUED and job.created_by == clinician_a
    finding_feedback_record(finding=finding, patient=patient_a, user=clinician_a, verdict="agree")
    assert Job.objects.filter(kind=DECISION_KIND, patient=patient_a).count() == 1  # the queued one will read it


def test_disputing_the_finding_ends_the_prompt_to_read_the_image(patient_a: m.Patient, clinician_a) -> None:
    call_command("load_starter_rules", stdout=io.StringIO())
    today = timezone.now().strftime("%Y%m%d")  # the rule reads the last 7 days by the study's date
    [image] = imaging_upload(patient=patient_a, files=[UploadFile("cr.dcm", dicom_bytes(
        patient_id=patient_a.mrn, new_instance=True, study_uid=generate_uid(), StudyDate=today))]).created
    finding = finding_for(image, model_version(), p=0.91)

    def prompt() -> Recommendation | None:
        return Recommendation.objects.filter(patient=patient_a, rule__slug="imaging-pneumonia-unreported").first()

    patients_evaluate([patient_a.pk])
    first = prompt()
    assert first is not None and first.status == Recommendation.Status.ACTIVE and "0.91" in first.summary
    finding_feedback_record(finding=finding, patient=patient_a, user=clinician_a, verdict="agree")
    patients_evaluate([patient_a.pk])
    agreed = prompt()
    assert agreed is not None and agreed.status == Recommendation.Status.ACTIVE  # the report is still to come
    finding_feedback_record(finding=finding, patient=patient_a, user=clinician_a, verdict="disagree")
    patients_evaluate([patient_a.pk])
    disputed = prompt()
    assert disputed is not None and disputed.status == Recommendation.Status.RESOLVED
