"""The embedded default (SQLite, jobs in-process) end to end, set up as `./run demo` does.

The rest of the suite runs on PostgreSQL in CI, where the decision loader and the CDS Hooks
catalog use PostgreSQL's own SQL; here the same commands run in subprocesses on a SQLite file of
the test's own, so a PostgreSQL-only query or a locking problem of the demo shows up as a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run in the subprocess's `manage.py shell` after the demo is loaded: the import's jobs, the
# recommendations, the CDS Hooks catalog, and the patient page with its panels fetched by eight
# clients at once (each panel reads, then writes its audit row, in one transaction).
PROBE = """
import json, threading
from django.test import Client
from cdss.models import Job
from cdshooks.catalog import catalog_get
from decision.models import Recommendation
from patients.models import Patient

codes, errors = [], []

def fetch(pid):
    try:
        client = Client(HTTP_HOST="127.0.0.1")
        assert client.login(username="demo", password="demo-clinician")
        for _ in range(3):
            for part in ("", "imaging/", "risk/"):
                codes.append(client.get(f"/patients/{pid}/{part}").status_code)
    except Exception as exc:
        errors.append(type(exc).__name__ + ": " + str(exc)[:200])

ids = [str(p) for p in Patient.objects.values_list("external_id", flat=True)[:4]]
threads = [threading.Thread(target=fetch, args=(pid,)) for pid in ids for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
# A CDS Hooks patient-view call by a trusted EHR (a key made here), for every demo patient: the
# service reads the stored record (no prefetch) through the same fact loader.
import time, uuid
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cdshooks.models import TrustedClient
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "use": "sig"}
TrustedClient.objects.create(name="EHR", issuer="https://ehr.example.org", jwks={"keys": [jwk]})
hooks, cards = [], 0
for fhir_id in Patient.objects.values_list("fhir_id", flat=True):
    now = int(time.time())
    token = jwt.encode({"iss": "https://ehr.example.org", "aud": "http://127.0.0.1/cds-services/patient-view",
                        "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}, key, algorithm="RS384",
                       headers={"kid": "k1", "typ": "JWT"})
    answer = Client(HTTP_HOST="127.0.0.1").post(
        "/cds-services/patient-view", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}",
        data=json.dumps({"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                         "context": {"userId": "PractitionerRole/1", "patientId": fhir_id}}))
    hooks.append(answer.status_code)
    cards += len(answer.json().get("cards", [])) if answer.status_code == 200 else 0

# The demo's chest radiograph (demo_imaging): its patient's imaging panel and viewer.
from imaging.models import ImagingInstance
viewer = []
for instance in ImagingInstance.objects.select_related("patient"):
    client = Client(HTTP_HOST="127.0.0.1")
    assert client.login(username="demo", password="demo-clinician")
    pid = instance.patient.external_id
    panel = client.get(f"/patients/{pid}/imaging/")
    page = client.get(f"/patients/{pid}/imaging/{instance.external_id}/")
    preview = client.get(f"/patients/{pid}/imaging/{instance.external_id}/preview.png")
    viewer.append([instance.modality, panel.status_code, page.status_code, preview.status_code,
                   preview["Content-Type"], str(instance.external_id) in panel.content.decode()])

# A finding on it, as a trained model writes one: the review list, a clinician's verdict (its
# evaluation runs in-process), the REST API, the models' statistics, the reading tools.
from django.utils import timezone
from cdss.models import ModelVersion
from imaging.models import ImagingFinding
reviewing = []
for instance in ImagingInstance.objects.select_related("patient"):
    mv = ModelVersion.objects.create(name="pneumonia-probe", version="1", kind="imaging", architecture="resnet18",
                                     dataset="probe", split="probe", metrics={}, file_path="p.pt", file_sha256="0" * 64,
                                     trained_at=timezone.now(), active=True)
    finding = ImagingFinding.objects.create(instance=instance, patient=instance.patient, model_version=mv,
                                            label="pneumonia", probability=0.91, threshold=0.5, positive=True)
    client = Client(HTTP_HOST="127.0.0.1")
    assert client.login(username="demo", password="demo-clinician")
    pid, fid = instance.patient.external_id, finding.external_id
    listed = str(fid) in client.get("/imaging/review/").content.decode()
    verdict = client.post(f"/patients/{pid}/imaging/findings/{fid}/feedback/", {"verdict": "disagree"})
    still = str(fid) in client.get("/imaging/review/").content.decode()
    api = client.get(f"/api/patients/{pid}/imaging/").json()["results"][0]["findings"][0]
    window = client.get(f"/patients/{pid}/imaging/{instance.external_id}/preview.png?center=2000&width=3000&size=full")
    admin = Client(HTTP_HOST="127.0.0.1")
    assert admin.login(username="admin", password="demo-admin")
    stats = admin.get("/imaging/statistics/")
    reviewing.append([listed, verdict.status_code, still, api["disagree"], window.status_code, window["Content-Type"],
                      stats.status_code, 'data-model="pneumonia-probe"' in stats.content.decode()])

print(json.dumps({
    "viewer": viewer,
    "reviewing": reviewing,
    "hooks": sorted(set(hooks)), "cards": cards,
    "jobs": sorted({(kind, status, error[:200]) for kind, status, error in Job.objects.values_list("kind", "status", "error")}),
    "recommendations": Recommendation.objects.count(),
    "catalog_rules": sum(len(rules) for rules in catalog_get().rules.values()),
    "codes": sorted(set(codes)), "fetches": len(codes), "errors": errors[:3],
}))
"""


def manage(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, input=stdin,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def test_the_embedded_default_imports_scores_recommends_and_serves_the_patient_page(tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_"))}
    env = {**base, "DATABASE_URL": f"sqlite:///{tmp_path / 'cdss.sqlite3'}",
           "DJANGO_MEDIA_ROOT": str(tmp_path / "media"), "CDSS_MODEL_DIR": str(tmp_path / "models")}
    manage("migrate", "--noinput", "-v0", env=env)
    manage("load_starter_rules", "--if-no-rules", env=env)  # as ./run demo does
    manage("demo_data", "--patients", "8", env=env)
    manage("demo_imaging", env=env)

    probe = json.loads(manage("shell", env=env, stdin=PROBE).stdout.strip().splitlines()[-1])
    kinds = {kind for kind, _, _ in probe["jobs"]}
    assert {"risk", "nlp", "decision"} <= kinds
    assert {status for _, status, _ in probe["jobs"]} == {"succeeded"}, probe["jobs"]
    assert probe["recommendations"] >= 1  # the starter rules fire for some demo patients
    assert probe["catalog_rules"] >= 1
    assert probe["errors"] == [] and probe["codes"] == [200] and probe["fetches"] == 72, probe
    assert probe["hooks"] == [200] and probe["cards"] >= 1, probe  # CDS Hooks answers from the stored record
    assert probe["viewer"] == [["CR", 200, 200, 200, "image/png", True]], probe["viewer"]  # the demo radiograph
    # a finding on it: listed for review, a verdict takes it off and is counted, a window of one's own
    # at full size, the models' statistics (the verdict's evaluation is among the jobs, succeeded)
    assert probe["reviewing"] == [[True, 200, False, 1, 200, "image/png", 200, True]], probe["reviewing"]

    fired = manage("evaluate_rules", "--patients", "all", "--json", "--dry-run", env=env).stdout.splitlines()
    rules = [json.loads(line)["rule"] for line in fired if line.startswith("{")]
    assert len(rules) == probe["recommendations"], (rules, probe["recommendations"])
