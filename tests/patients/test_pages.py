"""The server-rendered pages: login, worklist, patient page."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from cdss.models import AuditEvent
from patients import models as m
from patients.selectors import TrendPoint
from patients.views import MAX_TREND_CHARTS, WORKLIST_PAGE_SIZE, trend_charts
from tests.factories import (
    AllergyFactory,
    ConditionFactory,
    EncounterFactory,
    MedicationRequestFactory,
    ObservationFactory,
    PatientFactory,
    clinician_of,
)

# Session read, user read, patient read, eight reads of the record (patients.selectors.
# patient_record), the break-glass check (is the page seen through an emergency access?), the
# audit INSERT, and the session save, with the savepoints Django wraps around the atomic view and
# the session save. Whatever the size of the record.
PATIENT_PAGE_QUERIES = 18
# Session read, user read, COUNT, page rows (site joined), the clinician-group check (the
# emergency access link), session save with its savepoints.
WORKLIST_QUERIES = 8

T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def detail_url(patient: m.Patient) -> str:
    return reverse("patient-detail", args=[patient.external_id])


def add_observations(patient: m.Patient, count: int, codes: tuple[str, ...] = ("2093-3", "8480-6")) -> None:
    m.Observation.objects.bulk_create(
        [
            m.Observation(
                patient=patient,
                fhir_id=f"obs-{patient.pk}-{n}",
                status="final",
                category="laboratory",
                code_system="http://loinc.org",
                code=codes[n % len(codes)],
                display=f"Analyte {codes[n % len(codes)]}",
                value_quantity=100.0 + n % 50,
                value_unit="mg/dL",
                effective_at=T0 + dt.timedelta(hours=n),
            )
            for n in range(count)
        ]
    )


# --- Login and logout -------------------------------------------------------------------------


def test_the_login_page_renders_for_anonymous_users(client: Client, db: None) -> None:
    response = client.get("/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password"' in response.content
    assert b"csrfmiddlewaretoken" in response.content


def test_it_logs_in_with_the_login_form(client: Client, clinician_a) -> None:
    response = client.post("/login/", {"username": "clin-a", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert response["Location"] == reverse("worklist")
    assert client.get(reverse("worklist")).status_code == 200


def test_the_worklist_redirects_anonymous_users_to_login(client: Client, db: None) -> None:
    response = client.get(reverse("worklist"))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_the_patient_page_redirects_anonymous_users_to_login(client: Client, patient_a: m.Patient) -> None:
    response = client.get(detail_url(patient_a))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert not AuditEvent.objects.exists()


def test_logout_ends_the_session(client_a: Client) -> None:
    page = client_a.get(reverse("worklist"))
    assert b'action="/logout/"' in page.content
    response = client_a.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert client_a.get(reverse("worklist"))["Location"].startswith("/login/")


def test_the_header_shows_the_user_and_links_staff_to_admin(client: Client, site_a: m.Site) -> None:
    user = clinician_of(site_a, username="dr-who")
    user.first_name, user.last_name, user.is_staff = "Jane", "Doe", True
    user.save()
    client.force_login(user)
    content = client.get(reverse("worklist")).content.decode()
    assert "Jane Doe" in content
    assert 'href="/admin/"' in content


def test_non_staff_users_get_no_admin_link(client_a: Client) -> None:
    assert b'href="/admin/"' not in client_a.get(reverse("worklist")).content


# --- Worklist ---------------------------------------------------------------------------------


def test_the_worklist_shows_only_my_sites_patients(
    client_a: Client, patient_a: m.Patient, patient_b: m.Patient
) -> None:
    content = client_a.get(reverse("worklist")).content.decode()
    assert patient_a.mrn in content
    assert detail_url(patient_a) in content
    assert patient_b.mrn not in content
    assert "Bravo" not in content


def test_the_worklist_searches_by_name(client_a: Client, site_a: m.Site) -> None:
    smith = PatientFactory.create(site=site_a, family_name="Smithers", given_names="Wayland")
    jones = PatientFactory.create(site=site_a, family_name="Jones", given_names="Indiana")
    content = client_a.get(reverse("worklist"), {"q": "smith"}).content.decode()
    assert smith.mrn in content
    assert jones.mrn not in content


def test_the_worklist_searches_by_mrn(client_a: Client, site_a: m.Site) -> None:
    wanted = PatientFactory.create(site=site_a, mrn="ZX-4242")
    other = PatientFactory.create(site=site_a, mrn="ZX-9999")
    content = client_a.get(reverse("worklist"), {"q": "zx-4242"}).content.decode()
    assert wanted.mrn in content
    assert other.mrn not in content


def test_the_worklist_search_does_not_reach_other_sites(client_a: Client, patient_b: m.Patient) -> None:
    response = client_a.get(reverse("worklist"), {"q": patient_b.mrn})
    assert list(response.context["page"].object_list) == []
    assert detail_url(patient_b) not in response.content.decode()
    assert "No patients match" in response.content.decode()


def test_the_worklist_paginates_and_keeps_the_query(client_a: Client, site_a: m.Site) -> None:
    for n in range(WORKLIST_PAGE_SIZE + 5):
        PatientFactory.create(site=site_a, family_name=f"Pagetest{n:02d}", mrn=f"PG{n:04d}")
    PatientFactory.create(site=site_a, family_name="Unrelated", mrn="UN0001")

    first = client_a.get(reverse("worklist"), {"q": "pagetest"})
    assert len(first.context["page"].object_list) == WORKLIST_PAGE_SIZE
    content = first.content.decode()
    assert "Page 1 of 2" in content
    assert "?page=2&amp;q=pagetest" in content
    assert "PG0000" in content
    assert "PG0029" not in content

    second = client_a.get(reverse("worklist"), {"q": "pagetest", "page": "2"})
    content = second.content.decode()
    assert len(second.context["page"].object_list) == 5
    assert "PG0029" in content
    assert "PG0000" not in content
    assert "UN0001" not in content
    assert "?page=1&amp;q=pagetest" in content


def test_the_worklist_query_count_does_not_grow_with_patients(
    client_a: Client, site_a: m.Site, django_assert_num_queries
) -> None:
    for _ in range(3):
        PatientFactory.create(site=site_a)
    with django_assert_num_queries(WORKLIST_QUERIES):
        client_a.get(reverse("worklist"))
    for _ in range(WORKLIST_PAGE_SIZE + 10):
        PatientFactory.create(site=site_a)
    with django_assert_num_queries(WORKLIST_QUERIES):
        client_a.get(reverse("worklist"))


def test_the_worklist_escapes_patient_data(client_a: Client, site_a: m.Site) -> None:
    PatientFactory.create(site=site_a, family_name="<script>alert(1)</script>")
    content = client_a.get(reverse("worklist")).content.decode()
    assert "<script>alert(1)" not in content
    assert "&lt;SCRIPT&gt;ALERT(1)&lt;/SCRIPT&gt;" in content  # display_name upper-cases the family name


# --- Patient page -----------------------------------------------------------------------------


def test_the_patient_page_shows_problems_medications_and_allergies(client_a: Client, patient_a: m.Patient) -> None:
    ConditionFactory.create(patient=patient_a, display="Essential hypertension")
    ConditionFactory.create(patient=patient_a, display="Resolved sprain", clinical_status="resolved")
    MedicationRequestFactory.create(
        patient=patient_a, display="Lisinopril 10 MG Oral Tablet", dosage_text="1 tablet daily"
    )
    AllergyFactory.create(patient=patient_a, display="Allergy to penicillin", reaction="Hives", criticality="high")
    EncounterFactory.create(patient=patient_a, display="Hypertension follow-up encounter")

    response = client_a.get(detail_url(patient_a))
    assert response.status_code == 200
    content = response.content.decode()
    assert "ALPHA, Ann" in content
    assert patient_a.mrn in content
    assert "Essential hypertension" in content
    assert "Resolved sprain" not in content
    assert "Lisinopril 10 MG Oral Tablet" in content
    assert "1 tablet daily" in content
    assert "Allergy to penicillin" in content
    assert "Hives" in content
    assert "high" in content
    assert "Hypertension follow-up encounter" in content


def test_another_sites_patient_is_a_404(client_a: Client, patient_b: m.Patient) -> None:
    response = client_a.get(detail_url(patient_b))
    assert response.status_code == 404
    assert "Bravo" not in response.content.decode()
    assert not AuditEvent.objects.exists()


def test_an_unknown_patient_is_a_404(client_a: Client, db: None) -> None:
    assert client_a.get("/patients/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_every_patient_page_view_writes_one_audit_row(client_a: Client, clinician_a, patient_a: m.Patient) -> None:
    client_a.get(detail_url(patient_a))
    client_a.get(detail_url(patient_a))
    events = list(AuditEvent.objects.order_by("pk"))
    assert len(events) == 2
    for event in events:
        assert event.action == "view"
        assert event.patient == patient_a
        assert event.user == clinician_a
        assert event.ip_address == "127.0.0.1"  # Django's test client sets REMOTE_ADDR


@pytest.mark.parametrize("observations", [10, 1_000])
def test_the_patient_page_query_count_is_fixed(
    client_a: Client, site_a: m.Site, observations: int, django_assert_num_queries
) -> None:
    patient = PatientFactory.create(site=site_a)
    ConditionFactory.create(patient=patient)
    MedicationRequestFactory.create(patient=patient)
    AllergyFactory.create(patient=patient)
    EncounterFactory.create(patient=patient)
    add_observations(patient, observations, codes=("2093-3", "8480-6", "29463-7", "4548-4", "2339-0"))
    with django_assert_num_queries(PATIENT_PAGE_QUERIES):
        response = client_a.get(detail_url(patient))
    assert response.status_code == 200


def test_the_patient_page_embeds_trend_data_and_chart_containers(client_a: Client, patient_a: m.Patient) -> None:
    add_observations(patient_a, 10, codes=("2093-3", "8480-6"))
    ObservationFactory.create(
        patient=patient_a, code="718-7", display="Hemoglobin", value_unit="g/dL", value_quantity=13.5
    )
    response = client_a.get(detail_url(patient_a))
    content = response.content.decode()
    assert 'id="trend-data"' in content
    assert set(re.findall(r'class="trend-chart" data-code="([^"]+)"', content)) == {"2093-3", "8480-6"}
    assert "vendor/plotly/plotly.min.js" in content
    assert "js/trends.js" in content
    # A single point is not a trend, but it is still the latest value.
    assert "Hemoglobin" in content


def test_the_patient_page_escapes_patient_data(client_a: Client, patient_a: m.Patient) -> None:
    ConditionFactory.create(patient=patient_a, display="<img src=x onerror=alert(1)>")
    add_observations(patient_a, 2, codes=("</script><script>alert(2)</script>",))
    content = client_a.get(detail_url(patient_a)).content.decode()
    assert "<img src=x" not in content
    assert "&lt;img src=x onerror=alert(1)&gt;" in content
    assert "<script>alert(2)" not in content  # json_script escapes <, > and & inside the JSON


@pytest.mark.parametrize("asset", ["vendor/plotly/plotly.min.js", "js/trends.js", "css/app.css", "favicon.svg"])
def test_the_page_assets_are_found_locally(asset: str) -> None:
    # How they are served (runserver, WhiteNoise) is the settings' business; that the
    # finders resolve them is what both rely on. The browser test fetches them over HTTP.
    path = finders.find(asset)
    assert isinstance(path, str)
    assert Path(path).stat().st_size > 0


# --- Trend selection (no database) ------------------------------------------------------------


def series(code: str, count: int) -> list[TrendPoint]:
    return [TrendPoint(code, f"Analyte {code}", "mg/dL", float(n), T0 + dt.timedelta(days=n)) for n in range(count)]


def test_trend_charts_skip_single_points_and_put_preferred_codes_first() -> None:
    trends = {
        "718-7": series("718-7", 30),  # frequent, not preferred
        "4548-4": series("4548-4", 3),  # HbA1c: preferred
        "8480-6": series("8480-6", 2),  # systolic BP: preferred, listed first
        "2345-7": series("2345-7", 1),  # a single point is no trend
    }
    charts = trend_charts(trends)
    assert [c["code"] for c in charts] == ["8480-6", "4548-4", "718-7"]
    assert charts[1]["y"] == [0.0, 1.0, 2.0]
    assert charts[1]["x"][0] == "2020-01-01T00:00:00+00:00"
    assert charts[1]["unit"] == "mg/dL"


def test_trend_charts_are_limited_to_the_most_frequent_codes() -> None:
    trends = {f"code-{n}": series(f"code-{n}", 2 + n) for n in range(MAX_TREND_CHARTS + 4)}
    charts = trend_charts(trends)
    assert len(charts) == MAX_TREND_CHARTS
    assert charts[0]["code"] == f"code-{MAX_TREND_CHARTS + 3}"
    assert "code-0" not in {c["code"] for c in charts}
