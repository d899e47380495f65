"""DICOMweb STOW-RS (imaging.dicomweb): the multipart/related reader, and real pydicom files posted
to the API as a DICOMweb client posts them, answered with the Store Instances Response."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from pydicom.uid import generate_uid

from cdss.models import AuditEvent, Job
from imaging.dicomweb import StowRequestError, multipart_parts
from imaging.models import HeldImage, ImagingInstance
from patients import models as m
from tests.api.conftest import token_client
from tests.imaging.conftest import dicom_bytes

BOUNDARY = "cdss-boundary-42"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def body(*parts: bytes, part_type: str = "application/dicom") -> bytes:
    out = b"preamble to ignore\r\n"
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{BOUNDARY}--\r\nepilogue".encode()


def test_the_reader_gives_each_part_as_it_was_sent() -> None:
    # a boundary string inside a file's bytes, not at the start of a line, is content
    tricky = b"\x00\x01--" + BOUNDARY.encode() + b"\r\n\r\n\xff"
    plain = b"DICM" * 10
    no_headers = f"--{BOUNDARY}   \r\n\r\n".encode() + b"bare" + f"\r\n--{BOUNDARY}--".encode()
    assert multipart_parts(STOW_TYPE, body(tricky, plain)) == [("application/dicom", tricky),
                                                              ("application/dicom", plain)]
    assert multipart_parts(STOW_TYPE, no_headers) == [("application/dicom", b"bare")]  # the root type
    assert multipart_parts(STOW_TYPE, body(plain, part_type="Application/DICOM; transfer-syntax=1.2.840.10008.1.2.1")) \
        == [("application/dicom", plain)]


@pytest.mark.parametrize(("content_type", "payload", "status", "message"), [
    ("application/dicom", b"DICM", 415, "must be multipart/related"),
    ('multipart/related; type="application/dicom+xml"; boundary=b', b"", 415, "only DICOM files"),
    ('multipart/related; type="application/dicom"', b"", 400, "no boundary"),
    (STOW_TYPE, f"--{BOUNDARY}\r\n\r\nunfinished".encode(), 400, "no closing boundary"),
    (STOW_TYPE, f"--{BOUNDARY}--\r\n".encode(), 400, "no parts"),
    (STOW_TYPE, f"--{BOUNDARY}junk\r\n\r\nx\r\n--{BOUNDARY}--".encode(), 400, "boundary line is malformed"),
])
def test_the_reader_names_what_is_not_a_stow_body(content_type: str, payload: bytes, status: int, message: str) -> None:
    with pytest.raises(StowRequestError, match=message) as raised:
        multipart_parts(content_type, payload)
    assert raised.value.status == status


pytestmark_db = pytest.mark.django_db


def stow(client, payload: bytes, study: str = "", **headers: str):
    url = reverse("api-imaging-stow-study", args=[study]) if study else reverse("api-imaging-stow")
    return client.generic("POST", url, payload, content_type=headers.pop("content_type", STOW_TYPE),
                          HTTP_ACCEPT=headers.pop("accept", "application/dicom+json"), **headers)


def _uids(answer: dict, tag: str) -> list[tuple[str, int | None]]:
    items = answer.get(tag, {}).get("Value", [])
    return [(item["00081155"].get("Value", [""])[0], item.get("00081197", {}).get("Value", [None])[0])
            for item in items]


@pytestmark_db
def test_a_dicomweb_client_stores_a_study_and_learns_what_was_kept(
    clinician_a, patient_a: m.Patient, patient_b: m.Patient, media_root
) -> None:
    api = token_client(clinician_a)
    study, series = generate_uid(), generate_uid()
    mine = [dicom_bytes(patient_id=patient_a.mrn, new_instance=True, study_uid=study, series_uid=series)
            for _ in range(2)]
    unknown = dicom_bytes(patient_id="ED-STOW-1", new_instance=True)  # not in the record yet: held
    response = stow(api, body(*mine, unknown, b"not a DICOM file"))
    assert response.status_code == 202 and response["Content-Type"] == "application/dicom+json"
    answer = response.json()
    stored = _uids(answer, "00081199")
    assert len(stored) == 3 and all(reason is None for _, reason in stored)
    assert _uids(answer, "00081198") == [("", 0xC000)]
    instances = ImagingInstance.objects.filter(patient=patient_a)
    assert sorted(i.sop_instance_uid for i in instances) == sorted(uid for uid, _ in stored[:2])
    assert {i.series.study.study_instance_uid for i in instances} == {study}
    [job] = Job.objects.filter(kind="imaging")
    assert sorted(job.params["instance_ids"]) == sorted(i.pk for i in instances)  # one job for the request
    held = HeldImage.objects.get()
    assert (held.site, held.patient_identifier, held.sop_instance_uid) == (patient_a.site, "ED-STOW-1", stored[2][0])
    assert AuditEvent.objects.filter(target="imaging-dicomweb", patient=patient_a, user=clinician_a).count() == 2

    # sent again to its study's URL: already kept, a success, nothing new
    again = stow(api, body(*mine), study=study)
    assert again.status_code == 200 and len(_uids(again.json(), "00081199")) == 2
    assert ImagingInstance.objects.count() == 2 and Job.objects.filter(kind="imaging").count() == 1
    # to another study's URL: refused as not matching, none stored
    wrong = stow(api, body(dicom_bytes(patient_id=patient_a.mrn, new_instance=True)), study=study)
    assert wrong.status_code == 409 and [r for _, r in _uids(wrong.json(), "00081198")] == [0xA900]
    # undecodable pixel data: the upload's check refuses it
    broken = dicom_bytes(patient_id=patient_a.mrn, new_instance=True)
    broken = broken[: len(broken) - 20000]  # CT_small's pixel data cut short
    refused = stow(api, body(broken))
    assert refused.status_code == 409 and [r for _, r in _uids(refused.json(), "00081198")] == [0xC000]
    assert ImagingInstance.objects.count() == 2


@pytestmark_db
def test_what_is_not_a_stow_request_gets_the_apis_error(clinician_a, patient_a: m.Patient, client) -> None:
    api = token_client(clinician_a)
    payload = body(dicom_bytes(patient_id=patient_a.mrn, new_instance=True))
    single = stow(api, payload, content_type="application/dicom")
    assert single.status_code == 415 and "multipart/related" in single.json()["error"]["message"]
    xml = stow(api, payload, accept="application/dicom+xml")
    assert xml.status_code == 406 and xml.json()["error"]["code"] == "not_acceptable"
    assert stow(client, payload).status_code in (401, 403)  # no token
    clerk = User.objects.create_user("clerk", password="pw")
    m.SiteMembership.objects.create(user=clerk, site=patient_a.site)  # sees the site, is no clinician
    assert stow(token_client(clerk), payload).status_code == 403
    assert ImagingInstance.objects.count() == 0


@pytestmark_db
def test_a_user_of_several_sites_cannot_hold_an_unknown_patients_image(
    clinician_a, patient_a: m.Patient, site_b: m.Site, media_root
) -> None:
    """Whose site would hold it is not clear: refused, as the listener refuses when told to."""
    m.SiteMembership.objects.create(user=clinician_a, site=site_b)
    response = stow(token_client(clinician_a), body(dicom_bytes(patient_id="ED-STOW-2", new_instance=True)))
    assert response.status_code == 409 and [r for _, r in _uids(response.json(), "00081198")] == [0xC000]
    assert not HeldImage.objects.exists()
