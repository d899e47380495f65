"""Risk assessments from the record: inputs with their sources, missing inputs listed, append-only."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.db import transaction

from cdss.models import Job
from risk.calculators import calculate
from risk.models import RiskAssessment
from risk.services import risk_compute_for_patients
from tests.conftest import require_data
from tests.factories import ConditionFactory, MedicationRequestFactory, ObservationFactory, PatientFactory

AS_OF = dt.datetime(2020, 6, 1, 12, tzinfo=dt.UTC)
WHITE = [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
          "extension": [{"url": "ombCategory", "valueCoding": {"code": "2106-3", "display": "White"}}]}]


def goff_patient(site, **extra):
    """The Goff 2013 example: white woman, 55, TC 213, HDL 50, SBP 120 untreated, non-smoker."""
    patient = PatientFactory(site=site, birth_date=dt.date(1965, 1, 15), sex="female", raw={"extension": WHITE})
    day = AS_OF - dt.timedelta(days=30)
    obs = {
        "tc": ObservationFactory(patient=patient, code="2093-3", value_quantity=213, value_unit="mg/dL", effective_at=day),
        "hdl": ObservationFactory(patient=patient, code="2085-9", value_quantity=50, value_unit="mg/dL", effective_at=day),
        "sbp": ObservationFactory(patient=patient, code="8480-6", value_quantity=120, value_unit="mm[Hg]", effective_at=day),
        "smoking": ObservationFactory(patient=patient, code="72166-2", value_quantity=None, value_unit="",
                                      value_code="266919005", value_display="Never smoked tobacco", effective_at=day),
    }
    return patient, obs


def latest(patient, calculator):
    return RiskAssessment.objects.filter(patient=patient, calculator=calculator).order_by("-computed_at").first()


@pytest.mark.django_db
def test_pce_from_the_record_matches_the_calculator_and_names_its_sources(site_a):
    patient, obs = goff_patient(site_a)
    summary = risk_compute_for_patients([patient.pk], as_of=AS_OF)
    assert summary.patients == 1 and summary.written > 0

    pce = latest(patient, "pce_ascvd_10y")
    assert pce.status == "computed"
    expected = calculate("pce_ascvd_10y", {"age": 55, "sex": "female", "race": "white", "total_cholesterol": 213,
                                           "hdl_cholesterol": 50, "systolic_bp": 120, "bp_treated": False,
                                           "smoker": False, "diabetes": False})
    assert pce.value == pytest.approx(expected.value)
    assert pce.value == pytest.approx(2.1, abs=0.1)  # Goff 2013 Table A worked example
    assert pce.inputs["total_cholesterol"]["source"] == f"Observation:{obs['tc'].pk}"
    assert pce.inputs["smoker"] == {"value": False, "at": obs["smoking"].effective_at.isoformat(),
                                    "source": f"Observation:{obs['smoking'].pk}"}
    assert pce.inputs["diabetes"]["source"] == "no matching active condition"
    assert pce.inputs["age"]["value"] == 55


@pytest.mark.django_db
def test_missing_inputs_are_listed_not_guessed(site_a):
    patient, obs = goff_patient(site_a)
    obs["smoking"].delete()  # a test fixture row, not a clinical correction
    risk_compute_for_patients([patient.pk], as_of=AS_OF)
    pce = latest(patient, "pce_ascvd_10y")
    assert pce.status == "missing-inputs" and pce.missing == ["smoker"] and pce.value is None
    # no egfr: PREVENT cannot run either, and says so
    assert "egfr" in latest(patient, "prevent_cvd_10y").missing


@pytest.mark.django_db
def test_values_outside_the_look_back_window_or_entered_in_error_are_not_used(site_a):
    patient, obs = goff_patient(site_a)
    ObservationFactory(patient=patient, code="2093-3", value_quantity=300, value_unit="mg/dL",
                       effective_at=AS_OF - dt.timedelta(days=10), status="entered-in-error")
    ObservationFactory(patient=patient, code="2085-9", value_quantity=30, value_unit="mg/dL",
                       effective_at=AS_OF + dt.timedelta(days=10))  # after the as-of time
    risk_compute_for_patients([patient.pk], as_of=AS_OF)
    pce = latest(patient, "pce_ascvd_10y")
    assert pce.inputs["total_cholesterol"]["source"] == f"Observation:{obs['tc'].pk}"
    assert pce.inputs["hdl_cholesterol"]["source"] == f"Observation:{obs['hdl'].pk}"
    old = PatientFactory(site=site_a, birth_date=dt.date(1965, 1, 15), sex="female", raw={"extension": WHITE})
    ObservationFactory(patient=old, code="2093-3", value_quantity=213, value_unit="mg/dL",
                       effective_at=AS_OF - dt.timedelta(days=800))  # older than the 2-year window
    risk_compute_for_patients([old.pk], as_of=AS_OF)
    assert "total_cholesterol" in latest(old, "pce_ascvd_10y").missing


@pytest.mark.django_db
def test_si_units_in_the_record_are_converted(site_a):
    patient, obs = goff_patient(site_a)
    obs["tc"].value_quantity, obs["tc"].value_unit = 213 / 38.67, "mmol/L"
    obs["tc"].save()
    risk_compute_for_patients([patient.pk], as_of=AS_OF)
    assert latest(patient, "pce_ascvd_10y").value == pytest.approx(2.05, abs=0.01)


@pytest.mark.django_db
def test_conditions_and_medications_set_the_flags(site_a):
    patient, _ = goff_patient(site_a)
    dm = ConditionFactory(patient=patient, code="44054006", display="Diabetes mellitus type 2")
    statin = MedicationRequestFactory(patient=patient, code="617310", display="atorvastatin 20 MG Oral Tablet")
    MedicationRequestFactory(patient=patient, code="314076", display="lisinopril 10 MG Oral Tablet", status="stopped")
    risk_compute_for_patients([patient.pk], as_of=AS_OF)
    pce = latest(patient, "pce_ascvd_10y")
    assert pce.inputs["diabetes"] == {"value": True, "source": f"Condition:{dm.pk}"}
    assert pce.inputs["bp_treated"]["value"] is False  # the stopped lisinopril does not count
    assert latest(patient, "prevent_cvd_10y").inputs["statin"]["source"] == f"MedicationRequest:{statin.pk}"


@pytest.mark.django_db
def test_context_scores_run_only_in_their_context(site_a):
    patient, _ = goff_patient(site_a)
    risk_compute_for_patients([patient.pk], as_of=AS_OF)
    assert latest(patient, "cha2ds2_vasc") is None
    ConditionFactory(patient=patient, code="49436004", display="Atrial fibrillation")
    risk_compute_for_patients([patient.pk], as_of=AS_OF)
    chads = latest(patient, "cha2ds2_vasc")
    assert chads.status == "computed" and chads.value == 1  # Lip 2010: female sex 1; age 55 and no other item 0
    assert latest(patient, "wells_pe") is None  # needs the clinician's judgement


@pytest.mark.django_db
def test_a_rerun_with_the_same_record_writes_nothing_new_and_a_change_appends(site_a):
    patient, _ = goff_patient(site_a)
    first = risk_compute_for_patients([patient.pk], as_of=AS_OF)
    count = RiskAssessment.objects.count()
    assert risk_compute_for_patients([patient.pk], as_of=AS_OF).written == 0
    assert RiskAssessment.objects.count() == count == first.written
    ObservationFactory(patient=patient, code="8480-6", value_quantity=150, value_unit="mm[Hg]",
                       effective_at=AS_OF - dt.timedelta(days=1))
    again = risk_compute_for_patients([patient.pk], as_of=AS_OF)
    assert again.written >= 1
    history = RiskAssessment.objects.filter(patient=patient, calculator="pce_ascvd_10y").order_by("computed_at", "pk")
    assert [round(h.value, 2) for h in history] == [2.05, round(history.last().value, 2)]
    assert history.last().value > history.first().value


@pytest.mark.django_db
def test_an_import_that_changes_a_record_queues_a_risk_job_in_its_transaction(site_a):
    import orjson

    from patients.services import fhir_import_bundle
    from tests.patients.fhir_samples import valid_bundle

    fhir_import_bundle(orjson.dumps(valid_bundle()), site=site_a)
    job = Job.objects.get(kind="risk")
    assert job.patient is not None and job.status == "queued"
    fhir_import_bundle(orjson.dumps(valid_bundle()), site=site_a)  # unchanged: no new job
    assert Job.objects.filter(kind="risk").count() == 1


@pytest.mark.django_db
def test_the_risk_job_runs_twice_without_duplicates(site_a, settings):
    from cdss.jobs import runner

    patient, _ = goff_patient(site_a)
    with transaction.atomic():
        job = runner.job_enqueue(kind="risk", patient=patient)
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    written = Job.objects.get(pk=job.pk).result["written"]
    assert written == RiskAssessment.objects.filter(patient=patient).count() > 0
    Job.objects.filter(pk=job.pk).update(status="queued")
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    assert Job.objects.get(pk=job.pk).result["written"] == 0


@pytest.mark.django_db
def test_the_synthea_population_is_scored(site_a):
    from patients.services import fhir_import_paths

    assert fhir_import_paths([require_data("fhir/synthea-r4")], site=site_a).ok
    from django.db.models import Max

    from patients.models import Observation, Patient

    ids = list(Patient.objects.values_list("pk", flat=True))
    # Synthea's records end years ago: assess them as of their last observation.
    as_of = Observation.objects.aggregate(m=Max("effective_at"))["m"] + dt.timedelta(days=1)
    summary = risk_compute_for_patients(ids, as_of=as_of)
    assert summary.patients == 32
    assert summary.computed > 0
    computed = RiskAssessment.objects.filter(status="computed")
    assert computed.filter(calculator="ckd_epi_2021").exists()
    for row in computed:
        for item in row.inputs.values():
            assert item["source"]  # every value says where it came from


@pytest.mark.django_db
def test_the_trained_model_runs_only_with_all_its_inputs_and_lists_the_missing_ones(site_a, tmp_path, settings):
    """With an active heart-disease model, a record without the exercise-test inputs gets a row that
    names them; nothing is imputed."""
    from django.core.management import call_command

    settings.CDSS_MODEL_DIR = tmp_path
    require_data("risk/cleveland/processed.cleveland.data")
    call_command("train_risk_model", "heart_disease", "--cv-repeats", "1", stdout=io.StringIO())
    patient, obs = goff_patient(site_a)
    ObservationFactory(patient=patient, code="1558-6", value_quantity=130, value_unit="mg/dL",
                       effective_at=AS_OF - dt.timedelta(days=3))
    risk_compute_for_patients([patient.pk], as_of=AS_OF)
    row = latest(patient, "heart_disease_model")
    assert row.status == "missing-inputs" and row.value is None
    assert set(row.missing) == {"cp", "restecg", "thalach", "exang", "oldpeak", "slope", "ca", "thal"}
    assert row.inputs["chol"] == {"value": 213.0, "unit": "mg/dL", "at": obs["tc"].effective_at.isoformat(),
                                  "source": f"Observation:{obs['tc'].pk}"}
    assert row.inputs["fbs"]["value"] == 1 and row.inputs["sex"]["value"] == 0


@pytest.mark.django_db
def test_a_record_with_every_model_input_gets_the_models_probability(site_a, tmp_path, settings, monkeypatch):
    from django.core.management import call_command

    from risk import services
    from risk.predict import heart_disease_predict
    from risk.record_inputs import InputValue, MappedInputs

    settings.CDSS_MODEL_DIR = tmp_path
    require_data("risk/cleveland/processed.cleveland.data")
    call_command("train_risk_model", "heart_disease", "--cv-repeats", "1", stdout=io.StringIO())
    # The first Cleveland row (63-year-old man, typical angina ...); the record cannot hold the
    # exercise-test inputs yet, so they are supplied here as the mapping would.
    row = dict(age=63, sex=1, cp=1, trestbps=145, chol=233, fbs=1, restecg=2, thalach=150, exang=0, oldpeak=2.3,
               slope=3, ca=0, thal=6)
    monkeypatch.setattr(services, "heart_disease_features", lambda snapshot, as_of, names: MappedInputs(
        values={k: InputValue(v, source="test") for k, v in row.items()}, missing=[], problems={}))
    patient, _ = goff_patient(site_a)
    risk_compute_for_patients([patient.pk], as_of=AS_OF)
    stored = latest(patient, "heart_disease_model")
    expected = heart_disease_predict(row)
    assert stored.status == "computed"
    assert stored.value == pytest.approx(round(100 * expected["probability"], 1))
    assert set(stored.contributions) == set(row)
