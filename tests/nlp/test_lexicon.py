"""The concept lexicon as data: seeded from nlp/lexicon.json, edited (and checked) in the admin,
read by the workers, part of the pipeline version."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from cdss.jobs import runner
from cdss.models import Job
from nlp import extract
from nlp.lexicon_store import (
    LexiconDataError,
    code_problem,
    lexicon_check,
    lexicon_current,
    lexicon_export,
    lexicon_from_database,
    lexicon_load,
)
from nlp.models import LexiconCode, LexiconConcept, LexiconTerm, NoteExtraction, NoteFact
from patients.models import ClinicalNote
from tests.factories import PatientFactory

LEXICON_FILE = Path(extract.__file__).with_name("lexicon.json")
GOUT = {
    "id": "gout",
    "kind": "problem",
    "preferred": "Gout",
    "synonyms": ["gout", "gouty arthritis"],
    "abbreviations": [],
    "codes": [
        {"system": "http://snomed.info/sct", "code": "90560007", "display": "Gout"},
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M10.9", "display": "Gout, unspecified"},
    ],
}


def file_concepts():
    return json.loads(LEXICON_FILE.read_text(encoding="utf-8"))["concepts"]


@pytest.fixture(autouse=True)
def seeded(request):
    """The migration's seed. Tests on a transactional database (browser, integration) flush
    every table, seed included, so a later test in the same run puts it back."""
    if "db" in request.fixturenames or request.node.get_closest_marker("django_db"):
        request.getfixturevalue("db")
        lexicon_load(file_concepts())


# --- checks of single entries (no database) ----------------------------------------------------


@pytest.mark.parametrize(
    ("system", "code", "ok"),
    [
        ("http://snomed.info/sct", "22298006", True),  # myocardial infarction
        ("http://snomed.info/sct", "195967001", True),  # asthma
        ("http://snomed.info/sct", "0123456", False),  # leading zero
        ("http://snomed.info/sct", "12345", False),  # too short
        ("http://snomed.info/sct", "22298X06", False),
        ("http://snomed.info/sct", "22298026", False),  # partition 02: a relationship, not a concept
        ("http://hl7.org/fhir/sid/icd-10-cm", "E11.9", True),
        ("http://hl7.org/fhir/sid/icd-10-cm", "I10", True),
        ("http://hl7.org/fhir/sid/icd-10-cm", "F32.A", True),
        ("http://hl7.org/fhir/sid/icd-10-cm", "e11.9", False),
        ("http://hl7.org/fhir/sid/icd-10-cm", "E11.", False),
        ("http://hl7.org/fhir/sid/icd-10-cm", "11.9", False),
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "6809", True),  # metformin
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "6809a", False),
        ("http://loinc.org", "2093-3", False),  # not a lexicon system
    ],
)
def test_code_formats_are_checked_per_system(system, code, ok):
    assert (code_problem(system, code) is None) is ok


def test_the_shipped_lexicon_file_has_no_problems():
    assert lexicon_check(file_concepts()) == []


def test_the_check_names_empty_and_shared_terms_and_bad_codes():
    bad = [
        {**GOUT, "synonyms": ["gout", " "]},
        {**GOUT, "id": "gout-2", "synonyms": ["Gout"], "codes": [{"system": "http://snomed.info/sct", "code": "12"}]},
    ]
    problems = lexicon_check(bad)
    assert any("gout" in p and "non-empty" in p for p in problems)
    bad[0]["synonyms"] = ["gout"]
    problems = lexicon_check(bad)
    assert "gout-2: 'Gout' is already a term of gout" in problems
    assert any(p.startswith("gout-2: '12' is not a valid SNOMED CT code") for p in problems)


# --- the database copy -------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migration_seeds_the_file_and_gives_the_files_pipeline_version():
    assert lexicon_from_database() == file_concepts()
    lexicon = lexicon_current()
    assert lexicon.source == "database" and lexicon.version == extract.PIPELINE_VERSION
    assert lexicon_export() == json.loads(LEXICON_FILE.read_text(encoding="utf-8"))


@pytest.mark.django_db
def test_loading_is_idempotent_and_replace_overwrites_edits(capsys):
    assert lexicon_load(file_concepts()) == {"added": 0, "replaced": 0, "unchanged": 78}
    LexiconTerm.objects.filter(concept__concept_id="hypertension", text="HTN").update(text="HT")
    assert lexicon_load(file_concepts())["unchanged"] == 78  # edits made in the admin win
    assert lexicon_load(file_concepts(), replace=True) == {"added": 0, "replaced": 1, "unchanged": 77}
    assert lexicon_from_database() == file_concepts()
    assert lexicon_load([*file_concepts(), GOUT])["added"] == 1
    assert lexicon_from_database()[-1] == GOUT


@pytest.mark.django_db
def test_a_bad_file_loads_nothing_and_says_why(tmp_path):
    path = tmp_path / "lexicon.json"
    broken = {**GOUT, "codes": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "gout"}]}
    path.write_text(json.dumps({"concepts": [broken, {**GOUT, "id": "gout-b", "synonyms": ["HTN"]}]}))
    with pytest.raises(CommandError) as exc:
        call_command("nlp_lexicon", "load", str(path))
    assert "'gout' is not a valid ICD-10-CM code" in str(exc.value)
    assert "gout-b: 'HTN' is already a term of hypertension" in str(exc.value)
    assert not LexiconConcept.objects.filter(concept_id__startswith="gout").exists()
    with pytest.raises(LexiconDataError):
        lexicon_load([{"id": "x", "kind": "disease", "preferred": "X"}])


@pytest.mark.django_db
def test_the_process_copy_costs_one_query_and_is_reloaded_when_the_lexicon_changes():
    first = lexicon_current()
    with CaptureQueriesContext(connection) as queries:
        assert lexicon_current() is first
    assert len(queries) == 1
    LexiconConcept.objects.filter(concept_id="hypertension").update(active=False)  # bypasses updated_at...
    LexiconConcept.objects.filter(concept_id="hypertension").update(updated_at=dt.datetime.now(dt.UTC))
    second = lexicon_current()
    assert second.version != first.version and len(second.concepts) == 77
    assert "hypertension" not in {c["id"] for c in second.concepts}


@pytest.mark.django_db
def test_an_empty_database_falls_back_to_the_file():
    LexiconConcept.objects.all().delete()
    lexicon = lexicon_current()
    assert lexicon.source == "file" and lexicon.version == extract.PIPELINE_VERSION


# --- the admin ---------------------------------------------------------------------------------


def concept_post(**overrides):
    data = {
        "concept_id": "gout", "preferred": "Gout", "kind": "problem", "active": "on",
        "terms-TOTAL_FORMS": "2", "terms-INITIAL_FORMS": "0", "terms-MIN_NUM_FORMS": "0", "terms-MAX_NUM_FORMS": "1000",
        "terms-0-term_type": "synonym", "terms-0-text": "gout",
        "terms-1-term_type": "synonym", "terms-1-text": "gouty arthritis",
        "codes-TOTAL_FORMS": "1", "codes-INITIAL_FORMS": "0", "codes-MIN_NUM_FORMS": "0", "codes-MAX_NUM_FORMS": "1000",
        "codes-0-system": "http://snomed.info/sct", "codes-0-code": "90560007", "codes-0-display": "Gout",
    }
    data.update(overrides)
    return data


@pytest.fixture
def admin_client_(client, django_user_model):
    user = django_user_model.objects.create_superuser("lex-admin", "a@example.org", "pw-lexicon-42")
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_admin_adds_a_concept_that_extraction_then_finds(admin_client_):
    response = admin_client_.post(reverse("admin:nlp_lexiconconcept_add"), concept_post())
    assert response.status_code == 302, response.content.decode()[:2000]
    concept = LexiconConcept.objects.get(concept_id="gout")
    assert [t.text for t in concept.terms.all()] == ["gout", "gouty arthritis"]
    lexicon = lexicon_current()
    facts = extract.extract("Assessment: acute gout of the left toe.", lexicon=lexicon.concepts)["facts"]
    assert [(f["concept_id"], f["codes"][0]["code"]) for f in facts] == [("gout", "90560007")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # A blank row the user touched (an unchanged blank extra row is ignored, as everywhere in the admin)
        ({"terms-1-term_type": "abbreviation", "terms-1-text": "  "}, "This field is required"),
        ({"terms-1-text": " gout flare"}, None),  # stripped by the form: accepted
        ({"terms-1-text": "Gout"}, "is listed twice for this concept"),
        ({"terms-1-text": "HTN"}, "“HTN” is already a term of Hypertension (hypertension)"),
        ({"terms-1-text": "heart  ATTACK"}, "is already a term of Myocardial infarction"),
        ({"terms-1-text": "--"}, "has no letter or digit"),
        ({"codes-0-code": "9056000X"}, "is not a valid SNOMED CT code"),
        ({"codes-0-system": "http://hl7.org/fhir/sid/icd-10-cm", "codes-0-code": "M109X"},
         "is not a valid ICD-10-CM code"),
        ({"terms-TOTAL_FORMS": "0"}, "An active concept needs at least one synonym or abbreviation"),
        ({"kind": "disease"}, "Select a valid choice"),
        ({"concept_id": "hypertension"}, "already exists"),
    ],
)
def test_the_admin_refuses_malformed_entries_with_a_clear_error(admin_client_, overrides, message):
    before = (LexiconConcept.objects.count(), LexiconTerm.objects.count(), LexiconCode.objects.count())
    response = admin_client_.post(reverse("admin:nlp_lexiconconcept_add"), concept_post(**overrides))
    if message is None:
        assert response.status_code == 302
        return
    assert response.status_code == 200
    assert message in response.content.decode()
    assert (LexiconConcept.objects.count(), LexiconTerm.objects.count(), LexiconCode.objects.count()) == before


@pytest.mark.django_db
def test_concepts_are_deactivated_not_deleted(admin_client_):
    concept = LexiconConcept.objects.get(concept_id="hypertension")
    response = admin_client_.post(reverse("admin:nlp_lexiconconcept_delete", args=[concept.pk]), {"post": "yes"})
    assert response.status_code == 403
    admin_client_.post(reverse("admin:nlp_lexiconconcept_changelist"),
                       {"action": "deactivate", "_selected_action": [concept.pk]})
    assert not LexiconConcept.objects.get(pk=concept.pk).active
    assert "hypertension" not in {c["id"] for c in lexicon_current().concepts}


# --- workers use the database lexicon ------------------------------------------------------


NOTE = "Assessment: gout flare and hypertension.\nPlan: colchicine."


def run_nlp_job(patient, n):
    with transaction.atomic():
        job = runner.job_enqueue(kind="nlp", patient=patient, inputs={"n": n})
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    return Job.objects.get(pk=job.pk).result


@pytest.mark.django_db
def test_an_edited_lexicon_adds_a_new_extraction_and_an_unchanged_one_writes_nothing(site_a):
    patient = PatientFactory(site=site_a)
    note = ClinicalNote.objects.create(patient=patient, fhir_id="n1", source_type="typed", status="current",
                                       text=NOTE, written_at=dt.datetime(2024, 5, 1, tzinfo=dt.UTC))
    assert run_nlp_job(patient, 1)["written"] == 1
    first = NoteExtraction.objects.get(note=note)
    assert first.pipeline_version == extract.PIPELINE_VERSION
    assert set(NoteFact.objects.filter(extraction=first).values_list("concept_id", flat=True)) == {"hypertension"}

    assert run_nlp_job(patient, 2) == {"notes": 0, "written": 0, "facts": 0}

    lexicon_load([GOUT])  # what an admin's new concept does
    result = run_nlp_job(patient, 3)
    assert result["written"] == 1
    second = NoteExtraction.objects.exclude(pk=first.pk).get(note=note)
    assert second.pipeline_version == lexicon_current().version != first.pipeline_version
    assert set(NoteFact.objects.filter(extraction=second).values_list("concept_id", flat=True)) == {"hypertension",
                                                                                                  "gout"}
    assert NoteFact.objects.filter(extraction=first).count() == 1  # the old extraction is kept as it was
    assert run_nlp_job(patient, 4)["written"] == 0
