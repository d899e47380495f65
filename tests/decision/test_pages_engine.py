"""The cards of recommendations written by the real evaluation (the starter library, the engine's
traces, ``patients_evaluate``), answered through the page, then evaluated again."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from decision.models import Recommendation, RecommendationAction
from decision.services import patients_evaluate
from patients import models as m
from tests.factories import ObservationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ldl_patient(patient_a: m.Patient) -> m.Patient:
    """45 years old, LDL-C 201 mg/dL ten days ago, no statin: ``statin-ldl-190`` fires (2018
    AHA/ACC cholesterol guideline, recommendation 4.3-1)."""
    call_command("load_starter_rules", stdout=io.StringIO())
    today = timezone.localdate()
    patient_a.birth_date = dt.date(today.year - 45, 1, 1)
    patient_a.save()
    ObservationFactory.create(patient=patient_a, code="18262-6", display="LDL cholesterol", value_quantity=201.0,
                              value_unit="mg/dL", effective_at=timezone.now() - dt.timedelta(days=10))
    patients_evaluate([patient_a.pk])
    return patient_a


def test_a_card_from_the_engine_shows_its_trace_and_accepting_it_survives_re_evaluation(
    client_a: Client, ldl_patient: m.Patient
) -> None:
    rec = Recommendation.objects.get(patient=ldl_patient, rule__slug="statin-ldl-190")
    content = client_a.get(reverse("patient-recommendations", args=[ldl_patient.external_id])).content.decode()
    start = content.index(f'id="rec-{rec.external_id}"')
    card = content[start : content.index("</article>", start)]
    assert "LDL 201 mg/dL" in card and "no statin" in card
    # the LDL condition: threshold, the patient's value with its unit and date, held, evidence link
    assert re.search(r"<td>≥ 190 mg/dL.*?</td>\s*<td class=\"num\">201 mg/dL</td>", card, re.S)
    assert (timezone.now() - dt.timedelta(days=10)).date().isoformat() in card
    assert f'href="{reverse("patient-detail", args=[ldl_patient.external_id])}#latest"' in card
    assert re.search(r"<td>between 20 and 75 years</td>\s*<td class=\"num\">45 years</td>", card)
    assert "Observation:" not in card
    assert "AHA/ACC" in card  # the citation

    suggestion = rec.rule_version.suggested_actions[0]["label"]
    response = client_a.post(reverse("recommendation-accept", args=[rec.external_id]), {"suggestion": suggestion},
                             headers={"HX-Request": "true"})
    assert response.status_code == 200
    patients_evaluate([ldl_patient.pk])  # still fires: the answer stays, no second recommendation
    rec.refresh_from_db()
    assert rec.status == Recommendation.Status.ACCEPTED
    assert Recommendation.objects.filter(patient=ldl_patient, rule__slug="statin-ldl-190").count() == 1
    assert RecommendationAction.objects.get(recommendation=rec).suggestion == suggestion
