"""Single-row truths of the record and the entered-in-error rule."""

from __future__ import annotations

import datetime as dt

import pytest

from cdss.models import AuditEvent
from patients import models as m
from patients.selectors import patient_record
from patients.services import clinical_fact_mark_entered_in_error
from tests.factories import ConditionFactory, ObservationFactory, PatientFactory


@pytest.mark.parametrize(
    ("birth", "on", "age"),
    [
        (dt.date(1960, 5, 17), dt.date(2020, 5, 16), 59),  # the day before the birthday
        (dt.date(1960, 5, 17), dt.date(2020, 5, 17), 60),  # the birthday itself
        (dt.date(2000, 2, 29), dt.date(2021, 2, 28), 20),  # leap-day births age on 1 March
    ],
)
def test_age_counts_whole_years(birth, on, age):
    assert m.Patient(birth_date=birth).age_on(on) == age


def test_age_stops_at_death():
    patient = m.Patient(birth_date=dt.date(1950, 1, 1), deceased_at=dt.datetime(2000, 6, 1, tzinfo=dt.UTC))
    assert patient.age_on(dt.date(2020, 1, 1)) == 50


def test_observation_value_text_carries_the_unit():
    assert m.Observation(value_quantity=7.25, value_unit="%").value_text == "7.25 %"
    assert m.Observation(value_code="LA6576-8", value_display="Positive").value_text == "Positive"


@pytest.mark.django_db
def test_a_fact_marked_entered_in_error_leaves_the_active_record_but_is_not_deleted(clinician_a, site_a):
    patient = PatientFactory(site=site_a)
    condition = ConditionFactory(patient=patient)
    obs = ObservationFactory(patient=patient)
    assert [c.pk for c in patient_record(patient).problems] == [condition.pk]

    clinical_fact_mark_entered_in_error(fact=condition, user=clinician_a, reason="wrong patient")
    clinical_fact_mark_entered_in_error(fact=obs, user=clinician_a)

    record = patient_record(patient)
    assert record.problems == [] and record.trends == {}
    assert m.Condition.objects.filter(pk=condition.pk, status=m.ENTERED_IN_ERROR).exists()
    assert m.Condition.objects.current().count() == 0
    assert AuditEvent.objects.filter(patient=patient, action="update").count() == 2


@pytest.mark.django_db
def test_marking_a_panel_in_error_marks_its_components_too(site_a, clinician_a):
    import orjson

    from patients.services import fhir_import_bundle
    from tests.patients.fhir_samples import valid_bundle

    assert fhir_import_bundle(orjson.dumps(valid_bundle()), site=site_a).ok
    panel = m.Observation.objects.get(code="85354-9")
    clinical_fact_mark_entered_in_error(fact=panel, user=clinician_a)
    assert set(m.Observation.objects.filter(parent=panel).values_list("status", flat=True)) == {m.ENTERED_IN_ERROR}
    assert "8480-6" not in patient_record(panel.patient).trends
