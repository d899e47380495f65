"""Imaging in the Django admin: every page loads read-only, opening a row or searching a list is
audited, and stored files are named, never linked to storage (which is not served, or would be a
pre-signed object store URL past the access check): the pages link the application's viewer and
heat map endpoints instead."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Model
from django.urls import reverse

from cdss.models import AuditEvent
from imaging.models import (
    FindingFeedback,
    HeldImage,
    ImagingFinding,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
    ResultDelivery,
)
from patients import models as m
from tests.imaging.test_pages import heatmap_png, model_version, upload

pytestmark = pytest.mark.django_db


def _url(model: type[Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def rows(patient_a: m.Patient, admin_user) -> dict[type[Model], Any]:
    [instance] = upload(patient_a)
    png = heatmap_png(8, 6)
    pack = default_storage.save("imaging/heatmaps/ab/ab01.pack", ContentFile(b"\0" * 10 + png))
    finding = ImagingFinding.objects.create(instance=instance, patient=patient_a, model_version=model_version(),
                                            label="pneumonia", probability=0.8, threshold=0.5, positive=True,
                                            heatmap=pack, heatmap_offset=10, heatmap_length=len(png))
    return {
        ImagingStudy: instance.series.study,
        ImagingSeries: instance.series,
        ImagingInstance: instance,
        ImagingFinding: finding,
        FindingFeedback: FindingFeedback.objects.create(finding=finding, user=admin_user, verdict="agree"),
        ResultDelivery: ResultDelivery.objects.create(finding=finding, patient=finding.patient,
                                                      destination="PACS@pacs.example:104", sop_instance_uid="2.25.1",
                                                      status="refused", detail="0xA700 Failure: Out of Resources"),
        # held, then filed to the patient: its page is the patient's
        HeldImage: HeldImage.objects.create(site=patient_a.site, patient_identifier=patient_a.mrn,
                                            sop_instance_uid=instance.sop_instance_uid, size_bytes=1, status="filed",
                                            instance=instance),
    }


def test_every_page_loads_read_only_and_opening_or_searching_is_audited(admin_client, admin_user, patient_a,
                                                                        rows) -> None:
    for model, obj in rows.items():
        name = model._meta.model_name
        listing = admin_client.get(_url(model, "changelist"), {"q": patient_a.mrn})
        assert listing.status_code == 200, name
        search = AuditEvent.objects.get(user=admin_user, action="search", target=f"admin:{name}-list")
        assert search.detail == patient_a.mrn and search.patient is None
        page = admin_client.get(_url(model, "change", obj.pk))
        assert page.status_code == 200, name
        assert 'name="_save"' not in page.content.decode(), name
        view = AuditEvent.objects.get(user=admin_user, action="view", target=f"admin:{name}")
        assert view.patient == patient_a, name
        assert admin_client.get(_url(model, "add")).status_code == 403, name
        assert admin_client.get(_url(model, "delete", obj.pk)).status_code == 403, name
        assert admin_client.post(_url(model, "change", obj.pk), {}).status_code == 403, name
    assert admin_client.get(_url(ImagingInstance, "changelist")).status_code == 200  # no words: no search row
    assert AuditEvent.objects.filter(action="search").count() == len(rows)


def test_an_instances_files_are_named_and_the_viewer_linked_never_storage(admin_client, patient_a, rows) -> None:
    instance = rows[ImagingInstance]
    content = admin_client.get(_url(ImagingInstance, "change", instance.pk)).content.decode()
    viewer = reverse("imaging-viewer", args=[patient_a.external_id, instance.external_id])
    assert f'<a href="{viewer}">Open in the imaging viewer</a>' in content
    for field in ("file", "preview", "thumbnail"):
        stored = getattr(instance, field).name
        assert f"<code>{stored}</code>" in content
        assert default_storage.url(stored) not in content
    assert "/media/" not in content
    assert admin_client.get(viewer).status_code == 200  # the link works, through the access check


def test_a_findings_heat_map_links_its_endpoint_which_serves_its_place_in_the_pack(admin_client, patient_a,
                                                                                   rows) -> None:
    finding = rows[ImagingFinding]
    content = admin_client.get(_url(ImagingFinding, "change", finding.pk)).content.decode()
    heatmap = reverse("imaging-heatmap", args=[patient_a.external_id, finding.external_id])
    viewer = reverse("imaging-viewer", args=[patient_a.external_id, finding.instance.external_id])
    assert f'<a href="{heatmap}">PNG</a>' in content
    assert f'<a href="{viewer}?finding={finding.external_id}">in the imaging viewer</a>' in content
    assert f"<code>{finding.heatmap.name}</code>, {finding.heatmap_length} bytes from byte 10" in content
    assert default_storage.url(finding.heatmap.name) not in content and "/media/" not in content
    served = admin_client.get(heatmap)
    assert served.status_code == 200 and served.content == heatmap_png(8, 6)
    assert AuditEvent.objects.filter(target="imaging-heatmap", patient=patient_a).count() == 1


def test_a_finding_without_a_heat_map_says_so(admin_client, rows) -> None:
    finding = rows[ImagingFinding]
    ImagingFinding.objects.filter(pk=finding.pk).update(heatmap="", heatmap_offset=None, heatmap_length=None)
    content = admin_client.get(_url(ImagingFinding, "change", finding.pk)).content.decode()
    assert "heatmap.png" not in content and ".pack" not in content
