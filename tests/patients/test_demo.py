"""The demo data: a deterministic generator of FHIR bundles, loaded through the real importer."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Model

from cdss.models import AuditEvent
from patients import models as m
from patients.demo import DEMO_SITES, _mdrd_creatinine, _mdrd_egfr, acute_visit_start, demo_bundles
from patients.fhir.mapping import map_unit
from patients.fhir.parse import unit_from_document

AS_OF = dt.date(2025, 6, 1)


def _ids(patients: list) -> list[str]:
    return [e["resource"]["id"] for p in patients for e in p.bundle["entry"]]


# -- the generator (no database) ------------------------------------------------------------------


def test_the_same_seed_gives_the_same_bundles_and_another_seed_other_patients() -> None:
    first = demo_bundles(patients=8, seed=3, as_of=AS_OF)
    again = demo_bundles(patients=8, seed=3, as_of=AS_OF)
    other = demo_bundles(patients=8, seed=4, as_of=AS_OF)
    assert json.dumps([p.bundle for p in first]) == json.dumps([p.bundle for p in again])
    shared = {s.organization_id for s in DEMO_SITES} | {
        s.practitioner_id(n) for s in DEMO_SITES for n in range(len(s.practitioners))}
    assert not (set(_ids(first)) & set(_ids(other))) - shared


def test_a_later_day_moves_the_dates_but_keeps_every_resource() -> None:
    today = demo_bundles(patients=8, seed=3, as_of=AS_OF)
    later = demo_bundles(patients=8, seed=3, as_of=AS_OF + dt.timedelta(days=45))
    assert _ids(today) == _ids(later)
    assert today[0].bundle != later[0].bundle


def test_patient_i_does_not_depend_on_how_many_are_generated() -> None:
    few = demo_bundles(patients=3, seed=5, as_of=AS_OF)
    many = demo_bundles(patients=12, seed=5, as_of=AS_OF)
    assert [p.bundle for p in few] == [p.bundle for p in many[:3]]


def test_every_generated_resource_maps_without_errors_or_skips() -> None:
    for patient in demo_bundles(patients=40, seed=1, as_of=AS_OF):
        mapped = map_unit(unit_from_document(patient.bundle, patient.mrn))
        assert mapped.errors == [], patient.mrn
        assert not mapped.skipped, patient.mrn


def test_the_demo_covers_both_sites_and_the_showcase_cases() -> None:
    patients = demo_bundles(patients=40, seed=1, as_of=AS_OF)
    assert {p.site.code for p in patients} == {"demo-general", "demo-cardiology"}
    resources = [e["resource"] for p in patients for e in p.bundle["entry"]]
    by_type: dict[str, list] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    encounters_per_patient = [sum(1 for e in p.bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
                              for p in patients]
    assert min(encounters_per_patient) >= 6 and max(encounters_per_patient) <= 20
    rxnorm = {r["medicationCodeableConcept"]["coding"][0]["code"] for r in by_type["MedicationRequest"]}
    assert {"314076", "860975", "617310", "309362"} <= rxnorm  # lisinopril, metformin, atorvastatin, clopidogrel
    genes = {c["valueCodeableConcept"]["coding"][0]["display"]
             for r in by_type["Observation"] if r["code"]["coding"][0]["code"] == "69548-6"
             for c in r["component"] if c["code"]["coding"][0]["code"] == "48018-6"}
    assert "CYP2C19" in genes
    assert all(r["meta"]["tag"][0]["code"] == "HTEST" for r in resources)


def _acute_visit(bundle: dict) -> tuple[dict, list[dict]]:
    """The showcase patient's in-progress emergency encounter and its observations."""
    resources = [e["resource"] for e in bundle["entry"]]
    [enc] = [r for r in resources if r["resourceType"] == "Encounter" and r.get("status") == "in-progress"]
    return enc, [r for r in resources
                 if r["resourceType"] == "Observation" and r["encounter"]["reference"].endswith(enc["id"])]


def test_the_acute_visit_starts_when_asked_and_nothing_else_moves() -> None:
    default = demo_bundles(patients=6, seed=2, as_of=AS_OF)
    start = dt.datetime(2025, 6, 1, 14, 45, tzinfo=dt.UTC)
    moved = demo_bundles(patients=6, seed=2, as_of=AS_OF, acute_start=start)
    enc, observations = _acute_visit(default[4].bundle)
    assert enc["period"]["start"].startswith("2025-05-31T21:00:00")  # 3 hours before midnight of as_of
    enc, observations = _acute_visit(moved[4].bundle)
    assert enc["period"]["start"].startswith("2025-06-01T14:45:00")
    assert {o["effectiveDateTime"][:19] for o in observations} == {"2025-06-01T14:55:00"}
    assert len(observations) == 7  # blood pressure and the six bedside observations
    assert [p.bundle for i, p in enumerate(moved) if i != 4] == [p.bundle for i, p in enumerate(default) if i != 4]
    with pytest.raises(ValueError, match="timezone-aware"):
        demo_bundles(patients=1, as_of=AS_OF, acute_start=dt.datetime(2025, 6, 1, 14, 45))


@pytest.mark.parametrize(("now", "start"), [
    (dt.datetime(2025, 6, 1, 22, 7, 31, tzinfo=dt.UTC), dt.datetime(2025, 6, 1, 19, 0, tzinfo=dt.UTC)),
    (dt.datetime(2025, 6, 1, 1, 59, tzinfo=dt.UTC), dt.datetime(2025, 5, 31, 22, 45, tzinfo=dt.UTC)),
    (dt.datetime(2025, 6, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
     dt.datetime(2025, 6, 1, 7, 30, tzinfo=dt.UTC)),
])
def test_the_acute_visit_of_a_load_starts_three_hours_earlier_on_the_quarter_hour(now, start) -> None:
    assert acute_visit_start(now) == start


def test_the_acute_visit_start_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        acute_visit_start(dt.datetime(2025, 6, 1, 12, 0))


@pytest.mark.parametrize(
    ("creatinine", "age", "female", "expected"),
    [
        # IDMS-traceable MDRD (Levey et al., Clin Chem 2007): 175 x 1.0^-1.154 x 60^-0.203 = 76.2
        (1.0, 60, False, 76.2),
        # the same x 0.742 for a woman = 56.6
        (1.0, 60, True, 56.6),
        # 175 x 2.0^-1.154 x 70^-0.203 = 175 x 0.4493 x 0.4227 = 33.2
        (2.0, 70, False, 33.2),
    ],
)
def test_mdrd_egfr_matches_the_published_equation(creatinine: float, age: int, female: bool, expected: float) -> None:
    assert _mdrd_egfr(creatinine, age, female) == pytest.approx(expected, abs=0.1)
    assert _mdrd_creatinine(_mdrd_egfr(creatinine, age, female), age, female) == pytest.approx(creatinine)


# -- the command ------------------------------------------------------------------------------------


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("demo_data", "--no-progress", f"--as-of={AS_OF.isoformat()}", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _counts() -> dict[str, int]:
    models: list[type[Model]] = [*apps.get_app_config("patients").get_models(), User]
    return {model.__name__: model._default_manager.count() for model in models}


def _summary_table(output: str) -> dict[str, tuple[int, int, int]]:
    """The command's table: type -> (created, updated, unchanged)."""
    table = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        *name, created, updated, unchanged = parts
        if created.isdigit() and updated.isdigit() and unchanged.isdigit():
            table[" ".join(name)] = (int(created), int(updated), int(unchanged))
    return table


@pytest.fixture
def debug(settings):
    settings.DEBUG = True


@pytest.mark.django_db
def test_demo_data_creates_the_users_with_their_groups_and_sites(debug) -> None:
    _run("--patients=2")
    demo = User.objects.get(username="demo")
    assert demo.check_password("demo-clinician")
    assert list(demo.groups.values_list("name", flat=True)) == ["clinician"]
    assert set(m.SiteMembership.objects.filter(user=demo).values_list("site__code", flat=True)) == {
        "demo-general", "demo-cardiology"}
    assert not demo.is_staff
    admin = User.objects.get(username="admin")
    assert admin.check_password("demo-admin") and admin.is_superuser and admin.is_staff
    rules = User.objects.get(username="rules")
    assert rules.check_password("demo-rules") and rules.is_staff and not rules.is_superuser
    assert list(rules.groups.values_list("name", flat=True)) == ["rules-admin"]
    assert dict(m.Site.objects.values_list("code", "name")) == {"demo-general": "General Hospital",
                                                                "demo-cardiology": "Cardiology Clinic"}


@pytest.mark.django_db
def test_demo_data_imports_patients_with_their_record(debug) -> None:
    output = _run("--patients=6", "--seed=7")
    assert "6 bundle(s), 0 failed" in output
    assert m.Patient.objects.count() == 6
    assert set(m.Patient.objects.values_list("site__code", flat=True)) == {"demo-general", "demo-cardiology"}
    assert m.Observation.objects.filter(code="4548-4").exists()  # HbA1c
    systolic = m.Observation.objects.filter(code="8480-6").select_related("parent").first()
    assert systolic is not None and systolic.parent is not None and systolic.parent.code == "85354-9"
    assert systolic.value_unit == "mm[Hg]"
    assert m.Condition.objects.filter(code="38341003", clinical_status="active").exists()
    assert m.MedicationRequest.objects.filter(code_system="http://www.nlm.nih.gov/research/umls/rxnorm").exists()
    note = m.ClinicalNote.objects.first()
    assert note is not None and "Assessment and plan:" in note.text and note.raw["resourceType"] == "DocumentReference"
    assert m.ClinicalNote.objects.filter(text__contains="denies").exists()
    poor = m.GenomicResult.objects.get(gene="CYP2C19")  # the showcase patient on clopidogrel
    assert (poor.diplotype, poor.phenotype) == ("*2/*2", "Poor metabolizer")
    assert m.Encounter.objects.filter(service_provider__name="Cardiology Clinic").exists()


@pytest.mark.django_db
def test_running_demo_data_twice_changes_nothing(debug) -> None:
    _run("--patients=5")
    before = _counts()
    hashes = dict(m.Observation.objects.values_list("fhir_id", "content_hash"))
    output = _run("--patients=5")
    assert _counts() == before
    assert dict(m.Observation.objects.values_list("fhir_id", "content_hash")) == hashes
    table = _summary_table(output)
    assert table["Patient"] == (0, 0, 5)
    assert all(created == updated == 0 for created, updated, _ in table.values()), table
    assert AuditEvent.objects.filter(action="import").exists()


@pytest.mark.django_db
def test_the_demo_user_can_log_in(debug, client) -> None:
    _run("--patients=1")
    assert client.login(username="demo", password="demo-clinician")


@pytest.mark.django_db
def test_demo_data_refuses_to_run_without_debug(settings) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG"):
        _run("--patients=1")
    assert not User.objects.filter(username="admin").exists()


@pytest.mark.django_db
def test_loaded_for_today_the_acute_visit_is_hours_old_whatever_the_hour_and_scores(debug) -> None:
    """Without --as-of the emergency visit starts three hours before the load, so its vital signs
    are fresh for the acute scores (24 hours) for most of a day, not only until 21:00 UTC."""
    from risk.models import RiskAssessment
    from risk.services import risk_compute_for_patients

    before = dt.datetime.now(dt.UTC)
    call_command("demo_data", "--no-progress", "--patients=5", stdout=io.StringIO(), stderr=io.StringIO())
    visit = m.Encounter.objects.get(status="in-progress")
    assert visit.period_start is not None
    assert acute_visit_start(before) <= visit.period_start <= acute_visit_start(dt.datetime.now(dt.UTC))
    later = visit.period_start + dt.timedelta(hours=23)  # still within the 24 hours
    risk_compute_for_patients([visit.patient_id], as_of=later)
    scores = dict(RiskAssessment.objects.filter(patient=visit.patient, calculator__in=("qsofa", "news2"))
                  .values_list("calculator", "value"))
    assert scores == {"qsofa": 3, "news2": 14}
