"""The assertion classifier in the model registry: registration, the active head in extraction,
files checked before use."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from cdss.jobs import runner
from cdss.model_registry import ModelFileTampered, model_version_activate
from cdss.models import AuditEvent, ModelVersion
from nlp.assertion.model import HEAD_JSON, AssertionModelError, head_label, head_version, sha256_file
from nlp.assertion.train import write_artefact
from nlp.assertion_registry import (
    ARCHITECTURE,
    MODEL_NAME,
    assertion_artefact_register,
    assertion_head_current,
)
from nlp.extract import CANDIDATE_KINDS, PIPELINE_VERSION
from nlp.models import NoteExtraction, NoteFact
from tests.conftest import require_data
from tests.factories import PatientFactory
from tests.nlp.test_storage import make_note

# Conditions the shipped heads read with the encoder: the historical head is "or" (the rules'
# positives stand), so a mention the rules call current is decided by the classifier.
NOTE = """History of Present Illness: 70-year-old woman with cough and fever for two days.
Assessment: pneumonia. She has had a stroke. Denies chest pain.
"""


@pytest.fixture
def model_dir(settings, tmp_path):
    settings.CDSS_MODEL_DIR = tmp_path / "models"
    return Path(settings.CDSS_MODEL_DIR)


@pytest.fixture
def shipped_meta():
    return json.loads(HEAD_JSON.read_text(encoding="utf-8"))


def other_head(tmp_path: Path, shift: float = 100.0) -> Path:
    """The shipped artefact with the historical head's intercepts moved by ``shift`` (every mention
    the classifier reads becomes historical), written by the trainer's artefact writer."""
    meta = json.loads(HEAD_JSON.read_text(encoding="utf-8"))
    del meta["npz_sha256"]
    with np.load(HEAD_JSON.with_suffix(".npz"), allow_pickle=False) as loaded:
        arrays = {name: loaded[name].copy() for name in loaded.files}
    arrays["historical_intercept"] = arrays["historical_intercept"] + shift
    path = tmp_path / "other" / "assertion-head.json"
    write_artefact(path, arrays, meta)
    return path


def test_the_head_version_follows_what_decides_the_answers_not_the_description(tmp_path, shipped_meta):
    version = head_version(HEAD_JSON)
    assert version.startswith("assertion-") and len(version) == len("assertion-") + 8

    def variant(name: str, change) -> str:  # the shipped json changed by ``change``, the same npz
        meta = json.loads(json.dumps(shipped_meta))
        change(meta)
        path = tmp_path / name / "assertion-head.json"
        path.parent.mkdir()
        path.write_text(json.dumps(meta))
        return head_version(path)

    assert variant("same", lambda m: None) == version
    # the description and the figures do not decide an answer
    assert variant("figures", lambda m: m["cv"].update(note="measured again")) == version
    assert variant("what", lambda m: m.update(what="another description")) == version
    # a threshold, a mode, the encoder or the weights do
    assert variant("threshold", lambda m: m["flags"]["historical"]["config"].update(threshold=0.9)) != version
    assert variant("mode", lambda m: m["flags"]["historical"].update(mode="model")) != version
    assert variant("encoder", lambda m: m["encoder"].update(max_tokens=128)) != version
    assert variant("weights", lambda m: m.update(npz_sha256="0" * 64)) != version
    assert variant("broken", lambda m: m.pop("flags")) == "assertion-missing"


@pytest.mark.django_db
def test_an_artefact_without_its_heads_settings_is_refused_at_registration(model_dir, tmp_path):
    meta = json.loads(HEAD_JSON.read_text(encoding="utf-8"))
    del meta["npz_sha256"]
    del meta["encoder"]
    with np.load(HEAD_JSON.with_suffix(".npz"), allow_pickle=False) as loaded:
        arrays = {name: loaded[name].copy() for name in loaded.files}
    path = tmp_path / "bare" / "assertion-head.json"
    write_artefact(path, arrays, meta)
    with pytest.raises(AssertionModelError, match="lacks what its heads need"):
        assertion_artefact_register(path)
    assert not ModelVersion.objects.filter(name=MODEL_NAME).exists()


_RUNS = itertools.count()


def run_nlp_job(patient) -> str:
    with transaction.atomic():  # distinct inputs: a job, not the same one enqueued again
        job = runner.job_enqueue(kind="nlp", patient=patient, inputs={"run": next(_RUNS)})
    return runner.job_run(job.pk, worker="w")


@pytest.mark.django_db
def test_registering_the_shipped_artefact_makes_one_active_nlp_version_with_its_figures(model_dir, shipped_meta):
    out = io.StringIO()
    call_command("nlp_assertion_model", "register", stdout=out)
    mv = ModelVersion.objects.get(name=MODEL_NAME)
    assert "registered nlp_assertion" in out.getvalue()
    assert mv.active and mv.kind == ModelVersion.Kind.NLP and mv.architecture == ARCHITECTURE
    assert mv.file_sha256 == sha256_file(HEAD_JSON)
    copied = model_dir / mv.file_path
    assert copied.read_bytes() == HEAD_JSON.read_bytes()
    assert copied.with_suffix(".npz").read_bytes() == HEAD_JSON.with_suffix(".npz").read_bytes()
    assert mv.file_path == f"nlp/assertion-{mv.file_sha256[:8]}/assertion-head.json"
    assert shipped_meta["data"]["file"] in mv.dataset and shipped_meta["data"]["sha256"] in mv.dataset
    assert "nested" in mv.split and str(shipped_meta["seed"]) in mv.split
    for flag, spec in shipped_meta["flags"].items():
        figures = mv.metrics["flags"][flag]
        assert figures["head"] == spec["label"]
        for stage in ("rules", "combined"):
            for key in ("precision", "recall", "f1"):
                assert figures[stage][key] == spec["nested_cv"][stage][key]
    assert mv.metrics["rows"] == shipped_meta["data"]["rows"]
    assert AuditEvent.objects.filter(target="model-registry", detail__startswith=f"activated {MODEL_NAME}").count() == 1

    # The registered copy is the shipped head: same pipeline version, so nothing is read again.
    head = assertion_head_current()
    assert head.source == "registry" and head.registry_version == mv.version and head.head_json == copied
    assert head.version == head_label(shipped_meta) == head_version(HEAD_JSON) and head.version in PIPELINE_VERSION


@pytest.mark.django_db
def test_registering_the_same_artefact_again_changes_nothing(model_dir, tmp_path):
    call_command("nlp_assertion_model", "register", stdout=io.StringIO())
    first = ModelVersion.objects.get(name=MODEL_NAME)
    audits = AuditEvent.objects.count()
    out = io.StringIO()
    call_command("nlp_assertion_model", "register", str(HEAD_JSON), stdout=out)
    assert "already registered" in out.getvalue() and first.version in out.getvalue()
    # A byte-identical copy elsewhere is the same artefact too.
    copy = tmp_path / "copy" / "assertion-head.json"
    copy.parent.mkdir()
    copy.write_bytes(HEAD_JSON.read_bytes())
    copy.with_suffix(".npz").write_bytes(HEAD_JSON.with_suffix(".npz").read_bytes())
    again = assertion_artefact_register(copy)
    assert not again.created and again.model_version.pk == first.pk
    assert ModelVersion.objects.filter(name=MODEL_NAME).count() == 1 and AuditEvent.objects.count() == audits


@pytest.mark.django_db
def test_an_artefact_whose_weights_differ_from_its_json_is_not_registered(model_dir, tmp_path):
    path = other_head(tmp_path)
    path.with_suffix(".npz").write_bytes(HEAD_JSON.with_suffix(".npz").read_bytes())
    with pytest.raises(CommandError, match="not registered"):
        call_command("nlp_assertion_model", "register", str(path), stdout=io.StringIO())
    assert not ModelVersion.objects.filter(name=MODEL_NAME).exists()


@pytest.mark.django_db
def test_extraction_uses_the_active_version_and_a_switch_reads_the_notes_again(model_dir, tmp_path, site_a):
    patient = PatientFactory(site=site_a)
    note = make_note(patient, text=NOTE)
    shipped = assertion_artefact_register(HEAD_JSON).model_version
    assert run_nlp_job(patient) == "succeeded"
    first = NoteExtraction.objects.get(note=note)
    assert first.pipeline_version == PIPELINE_VERSION

    other_json = other_head(tmp_path)
    other = assertion_artefact_register(other_json).model_version
    assert other.active and not ModelVersion.objects.get(pk=shipped.pk).active
    other_version = head_version(other_json)
    assert other_version not in PIPELINE_VERSION
    assert run_nlp_job(patient) == "succeeded"
    second = NoteExtraction.objects.exclude(pk=first.pk).get(note=note)
    assert second.pipeline_version.endswith(f"+{other_version}")
    assert second.pipeline_version.rsplit("+", 1)[0] == first.pipeline_version.rsplit("+", 1)[0]

    # The other head's weights were used: every condition the classifier read is historical now.
    read = [f for f in NoteFact.objects.filter(extraction=second) if f.kind in CANDIDATE_KINDS]
    assert read and all(f.historical for f in read)
    before = {(f.start, f.end): f.historical for f in NoteFact.objects.filter(extraction=first)}
    assert any(not before[(f.start, f.end)] for f in read)

    # The same version again writes nothing; switching back finds the first extraction.
    assert run_nlp_job(patient) == "succeeded"
    assert NoteExtraction.objects.filter(note=note).count() == 2
    model_version_activate(ModelVersion.objects.get(pk=shipped.pk))
    assert assertion_head_current().version in PIPELINE_VERSION
    assert run_nlp_job(patient) == "succeeded"
    assert NoteExtraction.objects.filter(note=note).count() == 2


@pytest.mark.django_db
def test_the_activate_command_switches_versions(model_dir, tmp_path):
    shipped = assertion_artefact_register(HEAD_JSON).model_version
    assertion_artefact_register(other_head(tmp_path), activate=False)
    assert assertion_head_current().registry_version == shipped.version
    other = ModelVersion.objects.get(name=MODEL_NAME, active=False)
    out = io.StringIO()
    call_command("nlp_assertion_model", "activate", other.version, stdout=out)
    assert assertion_head_current().registry_version == other.version
    call_command("nlp_assertion_model", "status", stdout=out)
    assert f"{other.version} (active)" in out.getvalue() and "registry version" in out.getvalue()
    with pytest.raises(CommandError, match="no version"):
        call_command("nlp_assertion_model", "activate", "1999.01.01-1", stdout=out)


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["json", "npz"])
def test_a_changed_registered_file_raises_and_nothing_falls_back(model_dir, tmp_path, site_a, which):
    patient = PatientFactory(site=site_a)
    make_note(patient, text=NOTE)
    mv = assertion_artefact_register(other_head(tmp_path, shift=5.0)).model_version
    registered = model_dir / mv.file_path
    if which == "npz":
        # Another artefact's weights in place of the registered ones (the json still records its own).
        registered.with_suffix(".npz").write_bytes(HEAD_JSON.with_suffix(".npz").read_bytes())
    else:
        meta = json.loads(registered.read_text(encoding="utf-8"))
        meta["seed"] += 1
        registered.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelFileTampered, match=mv.version):
        assertion_head_current()
    assert run_nlp_job(patient) == "failed"
    assert not NoteExtraction.objects.exists()


@pytest.mark.django_db
def test_without_a_registered_version_extraction_uses_the_shipped_artefact(model_dir, site_a):
    head = assertion_head_current()
    assert head.source == "shipped" and head.head_json == HEAD_JSON and head.version in PIPELINE_VERSION
    patient = PatientFactory(site=site_a)
    note = make_note(patient, text=NOTE)
    assert run_nlp_job(patient) == "succeeded"
    assert NoteExtraction.objects.get(note=note).pipeline_version == PIPELINE_VERSION


@pytest.mark.django_db
def test_the_admin_shows_the_nlp_version_with_its_per_flag_figures(model_dir, admin_client, shipped_meta):
    mv = assertion_artefact_register(HEAD_JSON).model_version
    listing = admin_client.get("/admin/cdss/modelversion/").content.decode()
    assert MODEL_NAME in listing and mv.version in listing and ARCHITECTURE in listing
    page = admin_client.get(f"/admin/cdss/modelversion/{mv.pk}/change/").content.decode()
    historical = shipped_meta["flags"]["historical"]["nested_cv"]["combined"]
    assert f"{historical['precision']:.3f} / {historical['recall']:.3f} / {historical['f1']:.3f}" in page
    assert mv.file_sha256 in page and shipped_meta["data"]["sha256"] in page


@pytest.mark.django_db
def test_the_lexicon_copy_notices_another_active_head_in_its_one_query(model_dir, tmp_path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from nlp.lexicon_store import lexicon_current

    first = lexicon_current()
    assert first.head.source == "shipped" and first.version == PIPELINE_VERSION
    other = assertion_artefact_register(other_head(tmp_path)).model_version
    second = lexicon_current()
    assert second.head.registry_version == other.version and second.version != first.version
    with CaptureQueriesContext(connection) as queries:
        assert lexicon_current() is second
    assert len(queries) == 1


@pytest.mark.django_db
def test_the_note_page_says_when_the_active_head_failed_its_check(model_dir, tmp_path, client_a, patient_a):
    from django.urls import reverse

    note = make_note(patient_a, text=NOTE)
    assert run_nlp_job(patient_a) == "succeeded"
    mv = assertion_artefact_register(other_head(tmp_path)).model_version
    (model_dir / mv.file_path).with_suffix(".npz").write_bytes(b"not the registered weights")
    response = client_a.get(reverse("note-detail", args=[patient_a.external_id, note.external_id]))
    assert response.status_code == 200
    assert "failed its file check" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.needs_data
@pytest.mark.filterwarnings("ignore:The least populated class")  # 2 family positives in the whole file
def test_training_registers_and_activates_what_it_wrote_and_the_same_bytes_again_are_a_no_op(model_dir, tmp_path):
    source = require_data("nlp/negex-dev.tsv")
    data = tmp_path / "data" / "nlp" / "negex-dev.tsv"
    data.parent.mkdir(parents=True)
    data.write_text("".join(source.read_text(encoding="utf-8").splitlines(keepends=True)[:301]), encoding="utf-8")
    output = tmp_path / "trained" / "assertion-head.json"
    args = ["train_assertion_model", f"--data-dir={tmp_path / 'data'}", "--no-cv", f"--output={output}"]
    out = io.StringIO()
    call_command(*args, stdout=out)
    mv = ModelVersion.objects.get(name=MODEL_NAME)
    assert mv.active and "registered nlp_assertion" in out.getvalue()
    assert mv.file_sha256 == sha256_file(output) and sha256_file(data) in mv.dataset
    assert mv.training_seconds and mv.training_seconds > 0
    assert mv.metrics["evaluation"].startswith("not evaluated") and mv.metrics["rows"] < 300
    assert assertion_head_current().head_json == model_dir / mv.file_path

    out = io.StringIO()
    call_command(*args, stdout=out)  # deterministic: the same bytes, already registered
    assert "already registered" in out.getvalue()
    assert ModelVersion.objects.filter(name=MODEL_NAME).count() == 1

    call_command(*args, "--no-register", f"--output={tmp_path / 'offline' / 'assertion-head.json'}",
                 stdout=io.StringIO())
    assert ModelVersion.objects.filter(name=MODEL_NAME).count() == 1
