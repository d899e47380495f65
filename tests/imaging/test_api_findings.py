"""The imaging results over the REST API: a patient's images with their findings and verdicts, and
a clinician's verdict on a finding (the viewer's agree/disagree)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from cdss.models import AuditEvent, Job
from decision.jobs import DECISION_KIND
from imaging.models import ENTERED_IN_ERROR, FindingFeedback
from patients import models as m
from tests.api.conftest import token_client
from tests.factories import clinician_of
from tests.imaging.test_pages import finding_for, model_version, upload

pytestmark = pytest.mark.django_db


def list_url(patient: m.Patient) -> str:
    return reverse("api-patient-imaging", args=[patient.external_id])


def feedback_url(finding) -> str:
    return reverse("api-imaging-finding-feedback", args=[finding.external_id])


def test_a_patients_images_come_with_their_findings_and_verdicts(
    patient_a: m.Patient, patient_b: m.Patient, clinician_a, site_a: m.Site
) -> None:
    api = token_client(clinician_a)
    older, newer = upload(patient_a), upload(patient_a)
    mv = model_version(auc=0.951)
    finding = finding_for(newer[0], mv, p=0.91)
    colleague = clinician_of(site_a, username="clin-a2")
    FindingFeedback.objects.create(finding=finding, user=colleague, verdict="disagree")
    FindingFeedback.objects.create(finding=finding, user=clinician_a, verdict="agree", comment="consolidation")
    body = api.get(list_url(patient_a)).json()
    assert body["count"] == 2
    first, second = body["results"]
    assert (first["id"], second["id"]) == (str(newer[0].external_id), str(older[0].external_id))
    assert first["series"]["modality"] == "CT" and first["study"]["study_instance_uid"] == newer[0].series.study.study_instance_uid
    [f] = first["findings"]
    assert (f["id"], f["label"], f["probability"], f["positive"]) == (str(finding.external_id), "pneumonia", 0.91, True)
    assert f["model"] == {"name": "pneumonia", "version": "2026.11.25-1", "architecture": "resnet18", "auc": 0.951,
                          "auc_split": "test"}
    assert (f["agree"], f["disagree"]) == (1, 1)
    assert f["mine"]["verdict"] == "agree" and f["mine"]["comment"] == "consolidation"
    assert second["findings"] == []
    assert AuditEvent.objects.filter(target="api:imaging", patient=patient_a, action="view").count() == 1
    assert api.get(list_url(patient_b)).status_code == 404  # another site's patient
    assert [r["id"] for r in api.get(list_url(patient_a) + "?limit=1&offset=1").json()["results"]] == [
        str(older[0].external_id)]


def test_the_list_reads_a_fixed_number_of_queries(patient_a: m.Patient, clinician_a) -> None:
    api = token_client(clinician_a)
    mv = model_version()
    finding_for(upload(patient_a)[0], mv)
    with CaptureQueriesContext(connection) as few:
        assert api.get(list_url(patient_a)).status_code == 200
    other = model_version("other")
    for instance in upload(patient_a, 4):
        finding_for(instance, mv)
        finding_for(instance, other, label="nodule", p=0.1, positive=False)
    with CaptureQueriesContext(connection) as many:
        assert len(api.get(list_url(patient_a)).json()["results"]) == 5
    assert len(many) == len(few)


def test_a_verdict_is_recorded_audited_and_queues_an_evaluation(
    patient_a: m.Patient, patient_b: m.Patient, clinician_a
) -> None:
    api = token_client(clinician_a)
    finding = finding_for(upload(patient_a)[0], model_version(), p=0.91)
    response = api.post(feedback_url(finding), {"verdict": "disagree", "comment": "old scarring"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == str(finding.external_id) and (body["agree"], body["disagree"]) == (0, 1)
    assert body["mine"]["verdict"] == "disagree" and body["mine"]["comment"] == "old scarring"
    assert list(FindingFeedback.objects.values_list("verdict", "comment")) == [("disagree", "old scarring")]
    assert AuditEvent.objects.filter(target="imaging-feedback", patient=patient_a, action="create").count() == 1
    assert Job.objects.filter(kind=DECISION_KIND, patient=patient_a).count() == 1

    bad = api.post(feedback_url(finding), {"verdict": "maybe"}, format="json")
    assert bad.status_code == 400 and "verdict" in bad.json()["error"]["details"]
    theirs = finding_for(upload(patient_b)[0], model_version("other"))
    assert api.post(feedback_url(theirs), {"verdict": "agree"}, format="json").status_code == 404
    finding.instance.status = ENTERED_IN_ERROR
    finding.instance.save()
    assert api.post(feedback_url(finding), {"verdict": "agree"}, format="json").status_code == 404
    assert FindingFeedback.objects.count() == 1  # nothing written by the refused ones
