"""The imaging review list: flagged findings on the images of the user's patients, newest first,
awaiting the user's verdict or all; access, audit, a fixed number of queries."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cdss.models import AuditEvent, ModelVersion
from imaging.models import ENTERED_IN_ERROR, FindingFeedback, ImagingFinding
from imaging.views import REVIEW_PAGE_SIZE
from patients import models as m
from tests.factories import PatientFactory
from tests.imaging.test_pages import finding_for, model_version, upload

pytestmark = pytest.mark.django_db

URL = reverse("imaging-review")
REVIEW_QUERIES = 11


def listed(client: Client, query: str = "") -> list[str]:
    content = client.get(URL + query).content.decode()
    return re.findall(r'<tr data-finding="([0-9a-f-]+)">', content)


def test_flagged_findings_of_the_users_patients_are_listed_newest_first(
    client_a: Client, patient_a: m.Patient, patient_b: m.Patient, site_a: m.Site
) -> None:
    mv = model_version()
    other = PatientFactory.create(site=site_a, family_name="Other")
    first = finding_for(upload(patient_a)[0], mv, p=0.91)
    second = finding_for(upload(other)[0], mv, p=0.62)
    finding_for(upload(patient_a)[0], mv, p=0.2, positive=False)  # not flagged
    finding_for(upload(patient_b)[0], mv, p=0.99)  # another site's patient
    gone = finding_for(upload(patient_a)[0], mv, p=0.95)
    gone.instance.status = ENTERED_IN_ERROR
    gone.instance.save()
    ImagingFinding.objects.filter(pk=first.pk).update(created_at=timezone.now() - dt.timedelta(hours=1))
    assert listed(client_a) == [str(second.external_id), str(first.external_id)]
    content = client_a.get(URL).content.decode()
    assert "ALPHA, Ann" in content and "BRAVO" not in content and "0.910" in content and "2 findings." in content
    assert reverse("imaging-viewer", args=[patient_a.external_id, first.instance.external_id]) + \
        f"?finding={first.external_id}" in content


def test_a_newer_model_versions_finding_replaces_the_older_ones_flag(client_a: Client, patient_a: m.Patient) -> None:
    old = model_version()
    [image] = upload(patient_a)
    flagged_by_old = finding_for(image, old, p=0.8)
    assert listed(client_a) == [str(flagged_by_old.external_id)]
    newer = ModelVersion.objects.create(
        name="pneumonia", version="2026.11.26-1", kind=ModelVersion.Kind.IMAGING, architecture="resnet18",
        dataset="PneumoniaMNIST", split="official", metrics={}, file_path="n.pt", file_sha256="1" * 64,
        trained_at=old.trained_at + dt.timedelta(days=1), active=False)
    finding_for(image, newer, p=0.3, positive=False)
    assert listed(client_a) == []  # the newest version does not flag it
    other_label = finding_for(image, old, label="nodule", p=0.7)
    assert listed(client_a) == [str(other_label.external_id)]


def test_a_verdict_moves_a_finding_out_of_awaiting_and_counts_latest_verdicts(
    client_a: Client, patient_a: m.Patient, clinician_a, site_a: m.Site
) -> None:
    from tests.factories import clinician_of

    finding = finding_for(upload(patient_a)[0], model_version())
    colleague = clinician_of(site_a, username="clin-a2")
    FindingFeedback.objects.create(finding=finding, user=colleague, verdict="agree")
    FindingFeedback.objects.create(finding=finding, user=colleague, verdict="disagree")  # changed their mind
    assert listed(client_a) == [str(finding.external_id)]  # a colleague's verdict is not the user's
    client_a.post(reverse("imaging-finding-feedback", args=[patient_a.external_id, finding.external_id]),
                  {"verdict": "agree"})
    assert listed(client_a) == []
    assert "No flagged finding awaits your verdict." in client_a.get(URL).content.decode()
    assert listed(client_a, "?show=all") == [str(finding.external_id)]
    content = client_a.get(URL + "?show=all").content.decode()
    assert "You agreed" in content and "Agree 1 · Disagree 1" in content
    assert listed(client_a, "?show=nonsense") == []  # anything else: awaiting


def test_the_list_is_audited_per_patient_shown_with_a_fixed_number_of_queries(
    client_a: Client, patient_a: m.Patient, site_a: m.Site, django_assert_num_queries
) -> None:
    mv = model_version()
    finding_for(upload(patient_a)[0], mv)
    # session, user, SAVEPOINT, count, page, feedback, audit INSERT, RELEASE, the session save and
    # its SAVEPOINT and RELEASE: whatever the number of findings and patients
    with django_assert_num_queries(REVIEW_QUERIES):
        client_a.get(URL)
    assert list(AuditEvent.objects.filter(target="imaging-review").values_list("patient_id", "action")) == [
        (patient_a.pk, "view")]
    others = [PatientFactory.create(site=site_a) for _ in range(REVIEW_PAGE_SIZE + 2)]
    for patient in others:
        finding_for(upload(patient)[0], mv)
    AuditEvent.objects.all().delete()
    with django_assert_num_queries(REVIEW_QUERIES):
        first_page = listed(client_a)
    assert len(first_page) == REVIEW_PAGE_SIZE
    assert AuditEvent.objects.filter(target="imaging-review").count() == REVIEW_PAGE_SIZE
    assert len(listed(client_a, "?page=2")) == 3
    assert f"{REVIEW_PAGE_SIZE + 3} findings." in client_a.get(URL).content.decode()


def test_a_long_list_is_counted_up_to_its_cap_and_pages_stop_there(
    client_a: Client, patient_a: m.Patient, monkeypatch
) -> None:
    import imaging.views

    monkeypatch.setattr(imaging.views, "REVIEW_PAGE_SIZE", 2)
    mv = model_version()
    findings = [finding_for(instance, mv) for instance in upload(patient_a, 5)]
    assert len(listed(client_a)) == 2 and "5 findings." in client_a.get(URL).content.decode()
    monkeypatch.setattr(imaging.views, "REVIEW_COUNT_CAP", 3)
    content = client_a.get(URL).content.decode()
    assert "More than 3 findings: the newest 3 are listed." in content and "Page 1 of 2" in content
    assert len(listed(client_a, "?page=2")) == 1  # the third; the two older ones are past the cap
    assert set(listed(client_a) + listed(client_a, "?page=2")) <= {str(f.external_id) for f in findings}
    monkeypatch.setattr(imaging.views, "REVIEW_COUNT_CAP", 5)
    assert "5 findings." in client_a.get(URL).content.decode()  # exactly the cap: not "more than"


def test_every_page_links_the_review_list(client_a: Client) -> None:
    assert f'href="{URL}"' in client_a.get(reverse("worklist")).content.decode()


STATS_URL = reverse("imaging-model-statistics")


@pytest.fixture
def findings_reviewed(patient_a: m.Patient, clinician_a, site_a: m.Site) -> dict[str, ImagingFinding]:
    """Three findings of one model version (two flagged), one of an image entered in error, one of
    another label, and verdicts: a change of mind, two clinicians on one finding."""
    from tests.factories import clinician_of

    mv = model_version()
    a = finding_for(upload(patient_a)[0], mv, p=0.9)
    b = finding_for(upload(patient_a)[0], mv, p=0.8)
    c = finding_for(upload(patient_a)[0], mv, p=0.1, positive=False)
    effusion = finding_for(a.instance, mv, label="effusion", p=0.2, positive=False)
    gone = finding_for(upload(patient_a)[0], mv, p=0.99)
    gone.instance.status = ENTERED_IN_ERROR
    gone.instance.save()
    colleague = clinician_of(site_a, username="clin-a2")
    for finding, user, verdict in ((a, clinician_a, "agree"), (a, clinician_a, "disagree"), (a, colleague, "agree"),
                                   (b, clinician_a, "agree"), (c, clinician_a, "disagree"), (gone, clinician_a, "agree")):
        FindingFeedback.objects.create(finding=finding, user=user, verdict=verdict)
    return {"a": a, "b": b, "c": c, "effusion": effusion}


def test_model_statistics_count_images_flags_and_latest_verdicts(findings_reviewed: dict[str, ImagingFinding]) -> None:
    from imaging.selectors import imaging_model_statistics

    [effusion, pneumonia] = imaging_model_statistics()
    assert (effusion.label, effusion.images, effusion.flagged, effusion.flagged_rate) == ("effusion", 1, 0, 0.0)
    assert effusion.flagged_agreement is None and effusion.unflagged_agreement is None
    assert (pneumonia.label, pneumonia.images, pneumonia.findings, pneumonia.flagged) == ("pneumonia", 3, 3, 2)
    # flagged a: clin-a's latest is disagree, clin-a2 agrees; flagged b: agree; unflagged c: disagree
    assert (pneumonia.flagged_agree, pneumonia.flagged_disagree) == (2, 1)
    assert (pneumonia.unflagged_agree, pneumonia.unflagged_disagree) == (0, 1)
    assert pneumonia.flagged_agreement == pytest.approx(2 / 3) and pneumonia.unflagged_agreement == 0.0
    # a period: findings made in it (and their verdicts)
    ImagingFinding.objects.filter(pk=findings_reviewed["a"].pk).update(created_at=timezone.now() - dt.timedelta(days=60))
    [_, recent] = imaging_model_statistics(since=timezone.now() - dt.timedelta(days=30))
    assert (recent.images, recent.flagged, recent.flagged_agree, recent.flagged_disagree) == (2, 1, 1, 0)


def test_the_model_statistics_page_is_for_staff_with_the_findings_permission(
    client: Client, findings_reviewed: dict[str, ImagingFinding], patient_a: m.Patient
) -> None:
    from django.contrib.auth.models import Permission, User

    staff = User.objects.create_user("ops", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(STATS_URL).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_imagingfinding"))
    with CaptureQueriesContext(connection) as few:
        response = client.get(STATS_URL)
    content = response.content.decode()
    assert response.status_code == 200
    row = re.search(r'<tr data-model="pneumonia" data-version="2026.11.25-1" data-label="pneumonia">(.*?)</tr>',
                    content, re.S)
    assert row is not None
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]
    assert cells[1:] == ["pneumonia", "3", "2", "67 %", "2 / 1", "67 %", "0 / 1", "0 %"]
    assert "active" in cells[0]
    assert client.get(STATS_URL + "?days=30").status_code == 200
    other = model_version("nodule")
    for instance in upload(patient_a, 4):
        finding_for(instance, other, label="nodule", p=0.6)
    with CaptureQueriesContext(connection) as more:
        assert 'data-label="nodule"' in client.get(STATS_URL).content.decode()
    assert len(more) == len(few)  # whatever the number of models, labels and findings
    admin_list = client.get(reverse("admin:imaging_imagingfinding_changelist")).content.decode()
    assert f'href="{STATS_URL}"' in admin_list
    client.force_login(User.objects.create_user("clinician-only", password="x"))
    assert client.get(STATS_URL).status_code == 302  # to the admin's login: not staff
