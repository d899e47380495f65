"""The risk panel of the patient page: the HTMX fragment, its refresh after a risk job, its gauges."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from cdss.models import AuditEvent, Job
from patients import models as m
from risk.calculators import cardiovascular, prevent
from risk.models import RiskAssessment
from risk.services import risk_compute_for_patients
from risk.views import PERCENT_BANDS, POINTS_MAX, gauge_for, source_label, value_text
from tests.factories import PatientFactory
from tests.risk.test_from_record import AS_OF, goff_patient

S = RiskAssessment.Status

# Session read, user read, SAVEPOINT (the atomic view), the patient (access-checked), the latest
# assessments, the history, the audit INSERT, RELEASE, and the session save with the savepoints
# around it. Whatever the number of assessments.
RISK_PANEL_QUERIES = 11


def risk_url(patient: m.Patient) -> str:
    return reverse("patient-risk", args=[patient.external_id])


def jobs_url(patient: m.Patient) -> str:
    return reverse("patient-jobs", args=[patient.external_id])


def make_assessment(
    patient: m.Patient,
    calculator: str = "pce_ascvd_10y",
    *,
    status: str = S.COMPUTED,
    value: float | None = 2.1,
    as_of: dt.datetime = AS_OF,
    **fields,
) -> RiskAssessment:
    defaults = {
        "unit": "%",
        "category": "low",
        "contributions": {"age": 1.5, "hdl_cholesterol": -0.8},
        "inputs": {"age": {"value": 55, "unit": "a", "source": "Patient.birthDate"}},
        "citation": "A source, 2013.",
    }
    if status != S.COMPUTED:
        defaults.update(unit="", category="", contributions={})
    return RiskAssessment.objects.create(
        patient=patient,
        calculator=calculator,
        calculator_version="1",
        status=status,
        value=value,
        inputs_hash=uuid.uuid4().hex,
        as_of=as_of,
        **{**defaults, **fields},
    )


def chart_data(content: str) -> dict:
    match = re.search(r'<script id="risk-chart-data" type="application/json">(.*?)</script>', content, re.S)
    return json.loads(match.group(1)) if match else {}


# --- The fragment -----------------------------------------------------------------------------


def test_it_shows_a_computed_pce_with_its_category_inputs_sources_and_citation(
    client_a: Client, site_a: m.Site
) -> None:
    patient, obs = goff_patient(site_a)
    risk_compute_for_patients([patient.pk], as_of=AS_OF)

    response = client_a.get(risk_url(patient))
    assert response.status_code == 200
    content = response.content.decode()
    card = content[content.index('id="risk-pce_ascvd_10y"') :]
    card = card[: card.index("</article>")]
    assert "ACC/AHA 2013 Pooled Cohort Equations" in card
    assert "<strong>2.1</strong>" in card and '<span class="risk-unit">%</span>' in card  # Goff 2013 example
    assert 'class="badge risk-level risk-level-low">low</span>' in card  # Grundy 2019: < 5 %
    # the gauge: 0-100 % with the four Grundy 2019 bands, the marker at the value
    assert card.count('class="risk-band ') == 4
    assert 'class="risk-gauge-marker" style="left: 2.' in card
    # every input with its value, unit, date and the kind of its source (never the row's id)
    assert re.search(r"<td>total cholesterol</td>\s*<td class=\"num\">213</td>\s*<td>mg/dL</td>", card)
    assert "2020-05-02" in card  # the observations' date (AS_OF - 30 days)
    # in the calculator's order of inputs, whatever order the database keeps the JSON keys in
    names = re.findall(r"<tr>\s*<td>([^<]+)</td>", card)
    assert names == [
        "age",
        "sex",
        "race",
        "total cholesterol",
        "HDL cholesterol",
        "systolic BP",
        "BP treated",
        "smoker",
        "diabetes",
    ]
    assert "<td>Observation</td>" in card and "<td>Patient record</td>" in card
    assert "no matching active condition" in card  # diabetes: False, and why
    assert f"Observation:{obs['tc'].pk}" not in content
    assert "Goff DC Jr" in card  # the citation
    assert 'data-kind="contributions" data-calculator="pce_ascvd_10y"' in card
    data = chart_data(content)
    assert "total cholesterol" in data["pce_ascvd_10y"]["contributions"]["names"]
    assert "history" not in data["pce_ascvd_10y"]  # one assessment: no history chart
    assert 'data-kind="history"' not in content


def test_missing_inputs_are_listed_plainly(client_a: Client, site_a: m.Site) -> None:
    patient, obs = goff_patient(site_a)
    obs["smoking"].delete()  # a test fixture row, not a clinical correction
    obs["hdl"].delete()
    risk_compute_for_patients([patient.pk], as_of=AS_OF)

    content = client_a.get(risk_url(patient)).content.decode()
    card = content[content.index('id="risk-pce_ascvd_10y"') :]
    card = card[: card.index("</article>")]
    assert "Missing inputs" in card
    assert "<strong>Missing:</strong> HDL cholesterol, smoker — not in the record within the look-back window." in card
    assert "risk-chart" not in card and "risk-gauge" not in card
    assert "Inputs found (7)" in card  # what the record did have, folded away
    assert "Not calculated" in content


def test_inputs_out_of_range_are_listed_with_the_reason(client_a: Client, patient_a: m.Patient) -> None:
    make_assessment(
        patient_a,
        status=S.INVALID_INPUTS,
        value=None,
        problems={"hdl_cholesterol": "15 mg/dL is below the valid range 20-100 mg/dL"},
    )
    content = client_a.get(risk_url(patient_a)).content.decode()
    assert "Inputs out of the source&#x27;s range" in content
    assert "<strong>HDL cholesterol:</strong> 15 mg/dL is below the valid range 20-100 mg/dL" in content


def test_a_patient_without_assessments_gets_an_invitation_to_recalculate(
    client_a: Client, patient_a: m.Patient
) -> None:
    content = client_a.get(risk_url(patient_a)).content.decode()
    assert "No risk assessments yet" in content
    assert "risk-chart-data" not in content


def test_another_sites_patient_is_a_404(client_a: Client, patient_b: m.Patient) -> None:
    make_assessment(patient_b, category="bravo-only")
    response = client_a.get(risk_url(patient_b))
    assert response.status_code == 404
    assert "bravo-only" not in response.content.decode()
    assert not AuditEvent.objects.exists()


def test_anonymous_users_are_sent_to_login(client: Client, patient_a: m.Patient) -> None:
    response = client.get(risk_url(patient_a))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    # HTMX's background request gets a 401 (the page then goes to the login page itself)
    assert client.get(risk_url(patient_a), headers={"HX-Request": "true"}).status_code == 401
    assert not AuditEvent.objects.exists()


def test_every_render_writes_one_audit_row(client_a: Client, clinician_a, patient_a: m.Patient) -> None:
    make_assessment(patient_a)
    client_a.get(risk_url(patient_a))
    event = AuditEvent.objects.get()
    assert (event.action, event.target, event.patient, event.user) == ("view", "risk-panel", patient_a, clinician_a)


def test_the_query_count_does_not_grow_with_the_assessments(
    client_a: Client, patient_a: m.Patient, django_assert_num_queries
) -> None:
    make_assessment(patient_a)
    with django_assert_num_queries(RISK_PANEL_QUERIES):
        assert client_a.get(risk_url(patient_a)).status_code == 200
    for n in range(9):  # ten in all: history points, other calculators, one with missing inputs
        calculator = ("pce_ascvd_10y", "cha2ds2_vasc", "framingham_cvd_10y")[n % 3]
        make_assessment(patient_a, calculator, as_of=AS_OF + dt.timedelta(days=n + 1), value=float(n))
    make_assessment(patient_a, "prevent_hf_10y", status=S.MISSING_INPUTS, value=None, missing=["egfr"])
    assert RiskAssessment.objects.filter(patient=patient_a).count() == 11
    with django_assert_num_queries(RISK_PANEL_QUERIES):
        response = client_a.get(risk_url(patient_a))
    assert len(re.findall(r'class="risk-card[ "]', response.content.decode())) == 4


def test_the_history_chart_needs_two_computed_assessments(client_a: Client, patient_a: m.Patient) -> None:
    make_assessment(patient_a, value=2.0, as_of=AS_OF)
    make_assessment(
        patient_a, status=S.MISSING_INPUTS, value=None, missing=["smoker"], as_of=AS_OF + dt.timedelta(days=1)
    )
    content = client_a.get(risk_url(patient_a)).content.decode()
    assert 'data-kind="history"' not in content  # one computed value (the latest is missing inputs)

    make_assessment(patient_a, value=3.5, as_of=AS_OF + dt.timedelta(days=2))
    content = client_a.get(risk_url(patient_a)).content.decode()
    assert 'data-kind="history" data-calculator="pce_ascvd_10y"' in content
    history = chart_data(content)["pce_ascvd_10y"]["history"]
    assert history["y"] == [2.0, 3.5]
    assert history["x"] == [AS_OF.isoformat(), (AS_OF + dt.timedelta(days=2)).isoformat()]


def test_it_escapes_what_it_shows(client_a: Client, patient_a: m.Patient) -> None:
    make_assessment(
        patient_a,
        "x<script>alert(1)</script>",
        category="<b>high</b>",
        contributions={"</script><script>alert(2)</script>": 1.0},
        inputs={"race": {"value": "<img src=x onerror=alert(3)>", "source": "<i>Observation</i>"}},
        citation="<a href=javascript:alert(4)>cite</a>",
    )
    content = client_a.get(risk_url(patient_a)).content.decode()
    for raw in ("<script>alert(1)", "<b>high</b>", "<script>alert(2)", "<img src=x", "<i>Observation", "<a href=j"):
        assert raw not in content
    assert "&lt;b&gt;high&lt;/b&gt;" in content
    assert "&lt;img src=x onerror=alert(3)&gt;" in content
    assert "\\u003C/script\\u003E" in content  # json_script escapes <, > and & inside the JSON


# --- The patient page and the refresh after a risk job ---------------------------------------


def test_the_patient_page_loads_the_panel_and_offers_recalculate(client_a: Client, patient_a: m.Patient) -> None:
    content = client_a.get(reverse("patient-detail", args=[patient_a.external_id])).content.decode()
    assert f'hx-get="{risk_url(patient_a)}" hx-trigger="load, risk-updated from:body"' in content
    form = content[content.index('<form class="risk-request"') :]
    form = form[: form.index("</form>")]
    assert f'hx-post="{jobs_url(patient_a)}"' in form and 'hx-target="#job-panel"' in form
    assert '<input type="hidden" name="kind" value="risk">' in form
    # No trend here, but the risk panel may draw: Plotly and the panel's script are on the page.
    assert "vendor/plotly/plotly.min.js" in content and "js/risk.js" in content


def test_the_page_offers_no_recalculate_when_the_risk_kind_cannot_run_per_patient(
    client_a: Client, patient_a: m.Patient, monkeypatch
) -> None:
    monkeypatch.setattr("patients.views.job_kind_list_per_patient", list)
    content = client_a.get(reverse("patient-detail", args=[patient_a.external_id])).content.decode()
    assert 'id="risk-panel"' in content and "Recalculate" not in content


def test_the_risk_script_is_found_locally() -> None:
    path = finders.find("js/risk.js")
    assert isinstance(path, str) and Path(path).stat().st_size > 0


@pytest.mark.django_db(transaction=True)
def test_recalculate_with_no_broker_runs_the_job_and_tells_the_page_to_reload_the_panel(
    eager: None, client_a: Client, site_a: m.Site
) -> None:
    patient, _ = goff_patient(site_a)
    response = client_a.post(jobs_url(patient), {"kind": "risk"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    job = Job.objects.get(patient=patient, kind="risk")
    assert job.status == Job.Status.SUCCEEDED  # it ran at commit, before the panel was rendered
    assert response["HX-Trigger"] == "risk-updated"
    assert RiskAssessment.objects.filter(patient=patient, job=job).exists()


def test_recalculate_through_a_worker_reloads_the_panel_when_a_poll_sees_the_job_succeed(
    eager: None, client_a: Client, site_a: m.Site, django_capture_on_commit_callbacks
) -> None:
    patient, _ = goff_patient(site_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_a.post(jobs_url(patient), {"kind": "risk"}, headers={"HX-Request": "true"})
        job = Job.objects.get(patient=patient, kind="risk")
        assert job.status == Job.Status.QUEUED and "HX-Trigger" not in response
        assert f'hx-vals=\'{{"waiting": "{job.external_id}"}}\'' in response.content.decode()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    poll = client_a.get(jobs_url(patient), {"waiting": str(job.external_id)}, headers={"X-Background-Poll": "1"})
    assert poll["HX-Trigger"] == "risk-updated"
    assert RiskAssessment.objects.filter(patient=patient, job=job).exists()


def test_a_poll_that_sees_a_waited_for_risk_job_succeed_sends_risk_updated(
    client_a: Client, patient_a: m.Patient
) -> None:
    job = Job.objects.create(
        kind="risk",
        queue="risk",
        patient=patient_a,
        status=Job.Status.RUNNING,
        available_at=timezone.now(),
        idempotency_key="risk-panel-test",
    )
    polling = client_a.get(jobs_url(patient_a)).content.decode()
    assert f'hx-vals=\'{{"waiting": "{job.external_id}"}}\'' in polling  # the next poll says what it waits for
    assert "HX-Trigger" not in client_a.get(jobs_url(patient_a), {"waiting": str(job.external_id)})

    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, progress=100)
    done = client_a.get(jobs_url(patient_a), {"waiting": str(job.external_id)})
    assert done["HX-Trigger"] == "risk-updated"
    # Later renders (the page loaded again, another job's polls) did not wait for it: no reload.
    assert "HX-Trigger" not in client_a.get(jobs_url(patient_a))
    assert "HX-Trigger" not in client_a.get(jobs_url(patient_a), {"waiting": str(uuid.uuid4())})


def test_other_kinds_send_no_risk_event(client_a: Client, patient_a: m.Patient) -> None:
    job = Job.objects.create(
        kind="test.probe",
        queue="risk",
        patient=patient_a,
        status=Job.Status.SUCCEEDED,
        available_at=timezone.now(),
        idempotency_key="risk-panel-other",
    )
    assert "HX-Trigger" not in client_a.get(jobs_url(patient_a), {"waiting": str(job.external_id)})


# --- Gauges and labels (no database) ----------------------------------------------------------


def unsaved(calculator: str, unit: str, value: float | None) -> RiskAssessment:
    return RiskAssessment(calculator=calculator, unit=unit, value=value, status=S.COMPUTED)


def test_a_percentage_risk_is_drawn_on_0_to_100_with_its_sources_bands() -> None:
    gauge = gauge_for(unsaved("pce_ascvd_10y", "%", 12.0))
    assert gauge is not None and gauge.maximum == 100 and gauge.position == 12.0
    # Grundy 2019: low <5, borderline 5-<7.5, intermediate 7.5-<20, high >=20 %
    assert [(b.name, b.lower, b.upper, b.tone) for b in gauge.bands] == [
        ("low", 0.0, 5.0, 0),
        ("borderline", 5.0, 7.5, 1),
        ("intermediate", 7.5, 20.0, 2),
        ("high", 20.0, 100.0, 3),
    ]
    assert sum(b.width for b in gauge.bands) == pytest.approx(100)
    no_bands = gauge_for(unsaved("framingham_cvd_10y", "%", 150.0))  # D'Agostino 2008 defines no categories
    assert no_bands is not None and no_bands.bands == () and no_bands.position == 100.0


@pytest.mark.parametrize(
    ("calculator", "unit", "value", "position"),
    [
        ("cha2ds2_vasc", "points", 3.0, pytest.approx(33.33)),  # 0-9 (Lip 2010)
        ("qsofa", "points", 3.0, 100.0),  # 0-3 (Singer 2016)
        ("wells_pe", "points", 1.5, 12.0),  # 0-12.5 (Wells 2000)
    ],
)
def test_a_points_score_is_drawn_against_its_maximum(calculator: str, unit: str, value: float, position) -> None:
    gauge = gauge_for(unsaved(calculator, unit, value))
    assert gauge is not None and gauge.maximum == POINTS_MAX[calculator] and gauge.position == position


def test_a_result_with_no_known_scale_has_no_gauge() -> None:
    assert gauge_for(unsaved("ckd_epi_2021", "mL/min/1.73m2", 88.0)) is None
    assert gauge_for(unsaved("some_new_score", "points", 4.0)) is None
    assert gauge_for(unsaved("pce_ascvd_10y", "%", None)) is None


@pytest.mark.parametrize(
    ("calculator", "category_of"),
    [("pce_ascvd_10y", cardiovascular.pce_category), ("prevent_ascvd_10y", prevent.ascvd_category)],
)
def test_the_bands_agree_with_the_calculators_categories(calculator: str, category_of) -> None:
    for lower, name in PERCENT_BANDS[calculator]:
        assert category_of(lower) == name


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("Observation:123", "Observation"),
        ("Condition:9", "Problem list"),
        ("MedicationRequest:5", "Medication list"),
        ("Patient.birthDate", "Patient record"),
        ("Patient.extension us-core-race", "Patient record"),
        ("no matching active condition", "no matching active condition"),
    ],
)
def test_a_source_is_shown_as_its_kind_without_the_row_id(source: str, shown: str) -> None:
    assert source_label(source) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [(True, "yes"), (False, "no"), (213.0, "213"), (1.25, "1.25"), ("african_american", "african american")],
)
def test_input_values_read_plainly(value, shown: str) -> None:
    assert value_text(value) == shown


def test_a_patient_of_mine_with_no_record_still_renders(client_a: Client, site_a: m.Site) -> None:
    patient = PatientFactory.create(site=site_a, birth_date=None)
    risk_compute_for_patients([patient.pk], as_of=timezone.now())
    assert client_a.get(risk_url(patient)).status_code == 200
